"""Retrieval of Experts (Jang et al. 2023): unlabelled target instances retrieve their nearest source instances;
the embedded source library and its exact nearest-neighbour search (:class:`InstanceIndex`) are shared with
:mod:`insta.methods.hybrid`."""
from __future__ import annotations

from typing import Any, Sequence

import numpy as np

from ..catalogs.base import Catalog
from ..errors import InstaError
from ..records import Example
from ..selection import Scores, SelectionMethod, unit_rows
from .resources import PoolCache, encoder_name, get_encoder, instance_text, library_texts


class InstanceIndex:
    """The embedded source library (RoE's ``"Answer Choices: ..., Instance: ..."`` texts) of a pool, and exact
    nearest-neighbour retrieval for unlabelled target instances, in column chunks of bounded memory."""

    def __init__(self, encoder: Any = None, library_size: int = 100, library_seed: int = 0, chunk: int = 65536):
        self.encoder_name = encoder
        self.library_size = int(library_size)
        self.library_seed = int(library_seed)
        self.chunk = chunk
        if self.library_size < 1:
            raise InstaError("library_size must be at least 1")
        self._cache: PoolCache[tuple[np.ndarray, np.ndarray]] = PoolCache()

    def library(self, pool: Catalog) -> tuple[np.ndarray, np.ndarray]:
        """(owner pool index per library instance, unit embeddings), built once per pool."""
        def build() -> tuple[np.ndarray, np.ndarray]:
            texts, owner = library_texts(pool, self.library_size, self.library_seed, instance_text)
            if not texts:
                raise InstaError("no pool task has instances")
            return np.asarray(owner, dtype=np.int64), unit_rows(get_encoder(self.encoder_name).encode(texts))

        return self._cache.get(pool, build)

    def query(self, pool: Catalog, samples: Sequence[Example], allowed: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Per pool task: how many target instances retrieve one of its instances as their nearest neighbour
        (among the allowed tasks), and the mean over target instances of its best cosine (-1 without instances)."""
        owner, emb = self.library(pool)
        q = unit_rows(get_encoder(self.encoder_name).encode([instance_text(s) for s in samples]))
        n_tasks = len(pool)
        col_ok = np.asarray(allowed, dtype=bool)[owner]
        best_val = np.full(len(q), -np.inf)
        best_col = np.zeros(len(q), dtype=np.int64)
        per_task = np.full((len(q), n_tasks), -np.inf)
        rows = np.arange(len(q))
        for start in range(0, len(owner), self.chunk):
            end = min(start + self.chunk, len(owner))
            block = (q @ emb[start:end].T).astype(np.float64)
            block[:, ~col_ok[start:end]] = -np.inf
            j = np.argmax(block, axis=1)
            v = block[rows, j]
            better = v > best_val
            best_val[better], best_col[better] = v[better], start + j[better]
            present, starts = np.unique(owner[start:end], return_index=True)
            per_task[:, present] = np.maximum(per_task[:, present], np.maximum.reduceat(block, starts, axis=1))
        hit = np.isfinite(best_val)
        votes = np.bincount(owner[best_col[hit]], minlength=n_tasks).astype(float)
        mean_best = np.where(np.isfinite(per_task), per_task, -1.0).mean(axis=0)
        return votes, mean_best


class RoEMethod(SelectionMethod):
    """Retrieval of Experts (Jang et al. 2023, METHOD.md §6).

    A library of ``library_size`` instances per source task is embedded as ``"Answer Choices: ..., Instance:
    ..."`` with the default encoder (all-MiniLM-L6-v2); each unlabelled target instance retrieves its nearest
    library instance (exact search, :class:`InstanceIndex`), whose task gets one vote. Score = vote share; the
    secondary signal (ties, tasks without votes) is the mean over target instances of the task's best cosine.
    """

    name = "roe"
    consumes = ("target_samples", "source_instances")
    shared_encoder = True

    @classmethod
    def why_lines(cls, why: dict[str, Any], n_samples: int | None = None) -> list[str]:
        lines = [f"nearest source instance of {why['votes']}{'/' + str(n_samples) if n_samples else ''} target "
                 f"inputs; mean best cosine {why['mean_best_cosine']:.3f}"] if "votes" in why else []
        return lines + super().why_lines(why, n_samples)

    def __init__(self, label: str | None = None, *, encoder: Any = None, library_size: int = 100,
                 library_seed: int = 0, **options: Any):
        super().__init__(label, **options)
        if int(library_size) < 1:
            raise InstaError("roe: library_size must be at least 1")
        self.encoder_name = encoder
        self.index = InstanceIndex(encoder, library_size, library_seed)

    def params(self) -> dict[str, Any]:
        return {"encoder": encoder_name(self.encoder_name), "library_size": self.index.library_size,
                "library_seed": self.index.library_seed, "text": "Answer Choices: ..., Instance: ..."}

    def _score(self, target, pool, samples, allowed):
        try:
            votes, mean_best = self.index.query(pool, samples, allowed)
        except InstaError as err:
            raise InstaError(f"roe: {err}") from None
        share = votes / len(samples)
        return Scores(share, mean_best, "mean best cosine",
                      lambda i: {"votes": int(votes[i]), "vote_share": round(float(share[i]), 4),
                                 "mean_best_cosine": round(float(mean_best[i]), 4)},
                      {"n_library_instances": len(self.index.library(pool)[0])})

"""INSTA's engine (:class:`Selector`): a catalog's instructions embedded once, scored against target instructions
by cosine similarity and :func:`~insta.selection.aggregation.aggregate`; and :func:`select`, one-call INSTA."""
from __future__ import annotations

from typing import Any, Callable, Iterable, Protocol, Sequence

import numpy as np

from ..catalogs.base import Catalog
from ..errors import InstaError
from ..records import Task
from .aggregation import AGGREGATIONS, aggregate
from .ranking import KRule, Scores
from .result import Selection
from .target import clean_instructions


class TextEncoder(Protocol):
    def encode(self, texts: Sequence[str]) -> np.ndarray: ...

    def describe(self) -> dict: ...


def unit_rows(emb: np.ndarray) -> np.ndarray:
    """Rows scaled to unit length (left as they are when they already are, so cached vectors stay bit-equal)."""
    emb = np.asarray(emb, dtype=np.float32)
    norms = np.linalg.norm(emb, axis=1, keepdims=True)
    if emb.size and np.all(np.abs(norms - 1.0) < 1e-4):
        return emb
    return emb / np.maximum(norms, 1e-12)


class Selector:
    """INSTA's engine: scores a catalog's tasks against target instructions with a sentence encoder.

    ``encoder``: an :class:`insta.encoder.Encoder` (or any object with ``encode`` and ``describe``), a name or
    directory, or a plain ``SentenceTransformer``. The catalog's instructions are embedded once (on first use,
    through the encoder's cache). ``texts_of`` (optional) maps a task to the texts to embed for its
    instructions, one per instruction (format-aware INSTA appends each instruction's output space,
    :mod:`insta.taskformat`).
    """

    def __init__(self, catalog: Catalog, encoder: TextEncoder | Any, aggregation: str = "mean", vote_depth: int = 10,
                 *, texts_of: Callable[[Task], list[str]] | None = None):
        if aggregation not in AGGREGATIONS:
            raise InstaError(f"unknown aggregation {aggregation!r} (choose from {', '.join(AGGREGATIONS)})")
        if len(catalog) == 0:
            raise InstaError(f"catalog {catalog.name!r} has no tasks")
        if isinstance(vote_depth, bool) or not isinstance(vote_depth, int) or vote_depth < 1:
            raise InstaError(f"vote depth must be a positive integer (got {vote_depth!r})")
        from ..encoder import as_text_encoder

        self.catalog = catalog
        self.encoder = as_text_encoder(encoder)
        self.aggregation = aggregation
        self.vote_depth = vote_depth
        self.texts_of = texts_of
        self._texts: list[str] = []
        self._owner: np.ndarray | None = None
        self._emb: np.ndarray | None = None
        self._bounds: np.ndarray | None = None
        self._task_ids = catalog.ids

    def _ensure_embedded(self) -> None:
        if self._emb is not None:
            return
        texts, owner = [], []
        for i, task in enumerate(self.catalog):
            shown = self.texts_of(task) if self.texts_of else task.instructions
            for text in shown:
                if text.strip():
                    texts.append(text)
                    owner.append(i)
        if not texts:
            raise InstaError(f"catalog {self.catalog.name!r} has no instructions")
        self._texts, self._owner = texts, np.asarray(owner, dtype=np.int64)
        self._emb = self.embed(texts)
        self._bounds = np.searchsorted(self._owner, np.arange(len(self._task_ids) + 1))

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        """Unit-length embeddings of ``texts`` (each distinct text encoded once), one row per text."""
        unique = list(dict.fromkeys(texts))
        emb = unit_rows(self.encoder.encode(unique))
        if len(unique) == len(texts):
            return emb
        where = {t: i for i, t in enumerate(unique)}
        return emb[[where[t] for t in texts]]

    @property
    def n_source_instructions(self) -> int:
        self._ensure_embedded()
        return len(self._texts)

    def similarity(self, target_instructions: Sequence[str]) -> np.ndarray:
        """Cosine matrix (target instructions x all source instructions)."""
        self._ensure_embedded()
        return self.embed(list(target_instructions)) @ self._emb.T

    def masked_similarity(self, target_instructions: Sequence[str], allowed: np.ndarray | None = None) -> np.ndarray:
        """:meth:`similarity` with the columns of tasks not ``allowed`` set to NaN (they take no part)."""
        sim = self.similarity(target_instructions)
        if allowed is not None and not np.all(allowed):
            sim[:, ~np.asarray(allowed, dtype=bool)[self._owner]] = np.nan
        return sim

    def aggregate(self, sim: np.ndarray, aggregation: str | None = None) -> np.ndarray:
        """Per catalog task: the score under ``aggregation`` (default this selector's) of a similarity matrix."""
        self._ensure_embedded()
        return aggregate(sim, self._owner, len(self._task_ids), aggregation or self.aggregation, self.vote_depth)

    def mean_cosine(self, sim: np.ndarray) -> np.ndarray:
        """Per catalog task: the mean cosine over all (target, source) instruction pairs."""
        return self.aggregate(sim, "mean")

    def best_pair_cosine(self, sim: np.ndarray) -> np.ndarray:
        """Per catalog task: its closest (target, source) instruction pair's cosine."""
        return self.aggregate(sim, "max")

    def scores(self, target_instructions: Sequence[str] | str) -> dict[str, float]:
        """Aggregated score of every task in the catalog."""
        sim = self.similarity(clean_instructions(target_instructions))
        return dict(zip(self._task_ids, self.aggregate(sim).tolist()))

    def score(self, target_instructions: Sequence[str], allowed: np.ndarray | None = None,
              shown: Sequence[str] | None = None) -> Scores:
        """:class:`Scores` of every catalog task: the aggregation, its tie-breaker and each task's best pair.

        ``allowed`` masks the tasks that take no part (the leakage guard: they cast no top-k vote);
        ``shown`` are the target texts to report in the "why" (default: the instructions themselves).
        """
        instructions = list(target_instructions)
        sim = self.masked_similarity(instructions, allowed)
        primary = self.aggregate(sim)
        secondary_agg = "max" if self.aggregation == "mean" else "mean"
        secondary = self.aggregate(sim, secondary_agg)
        shown = list(shown or instructions)
        bounds, texts = self._bounds, self._texts

        def why(i: int) -> dict[str, Any]:
            block = sim[:, bounds[i]:bounds[i + 1]]
            if not block.size or np.all(np.isnan(block)):
                return {}
            r, c = np.unravel_index(int(np.nanargmax(block)), block.shape)
            return {"best_target_instruction": shown[r], "best_source_instruction": texts[bounds[i] + c],
                    "best_pair_cosine": float(block[r, c]), "mean_cosine": float(np.nanmean(block)),
                    "max_cosine": float(np.nanmax(block))}

        info = {"encoder": self.encoder.describe(), "aggregation": self.aggregation,
                "n_source_instructions": len(texts),
                **({"vote_depth": self.vote_depth} if self.aggregation == "topk-vote" else {})}
        return Scores(primary, secondary, "best-pair cosine" if secondary_agg == "max" else "mean cosine", why, info)

    def select(
        self,
        target_instructions: Sequence[str] | str,
        k: int | str | KRule = 5,
        *,
        exclude: Iterable[str] = (),
        exclude_families: Iterable[str] = (),
        target: dict[str, Any] | None = None,
        ties: str = "first",
    ) -> Selection:
        """The top ``k`` tasks for the target instructions, excluding the named tasks and families (the same
        :class:`SelectionMethod` path as ``load_method("insta-mean", ...)``, with this selector's encoder)."""
        from ..methods import InstaMethod

        method = InstaMethod(encoder=self.encoder, aggregation=self.aggregation, vote_depth=self.vote_depth)
        method.use_selector(self)
        return method.select(clean_instructions(target_instructions), self.catalog, k, exclude=exclude,
                             exclude_families=exclude_families, target_info=target, ties=ties)


def select(
    catalog: Catalog,
    target: Sequence[str] | str | Task,
    k: int | str | KRule = 5,
    *,
    encoder: TextEncoder | str | None = None,
    aggregation: str = "mean",
    exclude: Iterable[str] = (),
    exclude_families: Iterable[str] = (),
) -> Selection:
    """One-call INSTA: the top ``k`` tasks of ``catalog`` for a target task (its relatives excluded) or text(s)."""
    from ..methods import load_method

    method = load_method("insta-mean", encoder=encoder, aggregation=aggregation)
    return method.select(target, catalog, k, exclude=exclude, exclude_families=exclude_families)

"""INSTA selection: score source tasks by the cosine similarity of their instructions to the target's.

For every (target instruction, source instruction) pair the cosine similarity is computed; a source task's
score aggregates its pairs (``mean``, ``max`` or ``topk-vote``, METHOD.md §1); the top k tasks are selected,
never the target itself, its family, or any task the caller excludes (the leakage guard).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Iterable, Protocol, Sequence

import numpy as np

from .catalogs.base import Catalog
from .errors import InstaError
from .records import Task

AGGREGATIONS = ("mean", "max", "topk-vote")


class TextEncoder(Protocol):
    def encode(self, texts: Sequence[str]) -> np.ndarray: ...

    def describe(self) -> dict: ...


@dataclass
class TaskScore:
    """One ranked source task, with the pair of instructions that matched best (the 'why')."""

    rank: int
    task: str
    score: float
    best_target_instruction: str
    best_source_instruction: str
    best_pair_cosine: float
    mean_cosine: float
    max_cosine: float

    def to_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


@dataclass
class Selection:
    """The ranked top-k source tasks for a target, with everything needed to reproduce them."""

    target: dict[str, Any]
    selected: list[TaskScore]
    config: dict[str, Any] = field(default_factory=dict)
    excluded: list[str] = field(default_factory=list)

    @property
    def task_ids(self) -> list[str]:
        return [s.task for s in self.selected]

    def to_dict(self) -> dict[str, Any]:
        return {
            "catalog": self.config.get("catalog"),
            "data_dir": self.config.get("data_dir"),
            "target": self.target,
            "k": len(self.selected),
            "selected": [s.to_dict() for s in self.selected],
            "excluded": self.excluded,
            "config": self.config,
        }


def clean_instructions(instructions: Iterable[str] | str) -> list[str]:
    """Strip and de-duplicate instructions; an error if none is left."""
    if isinstance(instructions, str):
        instructions = [instructions]
    out = list(dict.fromkeys(s.strip() for s in instructions if isinstance(s, str) and s.strip()))
    if not out:
        raise InstaError("the target has no instruction (empty text)")
    return out


def topk_vote_weights(depth: int, n_queries: int) -> np.ndarray:
    """Weights for ranks 1..depth such that one rank-j hit outweighs any number of rank-(j+1) hits.

    With ``n_queries`` target instructions a task can collect at most ``n_queries`` hits per rank, so base
    ``n_queries + 1`` makes the vote lexicographic: rank-1 hits dominate, then rank-2, and so on.
    """
    base = float(n_queries + 1)
    return base ** np.arange(depth - 1, -1, -1, dtype=np.float64)


def ranking_key(score: float, mean_cosine: float, task_id: str) -> tuple[float, float, str]:
    """Sort key of INSTA's ranking: higher score first; ties (e.g. tasks with no top-k vote at all) go to the
    higher mean cosine, then to the task id, so a ranking never depends on catalog order."""
    return (-score, -mean_cosine, task_id)


class Selector:
    """Scores a catalog's tasks against target instructions with a sentence encoder.

    The catalog's instructions are embedded once (on first use, through the encoder's cache).
    """

    def __init__(self, catalog: Catalog, encoder: TextEncoder, aggregation: str = "mean", vote_depth: int = 10):
        if aggregation not in AGGREGATIONS:
            raise InstaError(f"unknown aggregation {aggregation!r} (choose from {', '.join(AGGREGATIONS)})")
        if len(catalog) == 0:
            raise InstaError(f"catalog {catalog.name!r} has no tasks")
        if isinstance(vote_depth, bool) or not isinstance(vote_depth, int) or vote_depth < 1:
            raise InstaError(f"vote depth must be a positive integer (got {vote_depth!r})")
        self.catalog = catalog
        self.encoder = encoder
        self.aggregation = aggregation
        self.vote_depth = vote_depth
        self._texts: list[str] = []
        self._owner: np.ndarray | None = None
        self._emb: np.ndarray | None = None
        self._task_ids = catalog.ids

    def _ensure_embedded(self) -> None:
        if self._emb is not None:
            return
        texts, owner = [], []
        for i, task in enumerate(self.catalog):
            for text in task.instructions:
                if text.strip():
                    texts.append(text)
                    owner.append(i)
        if not texts:
            raise InstaError(f"catalog {self.catalog.name!r} has no instructions")
        self._texts, self._owner = texts, np.asarray(owner)
        self._emb = self.encoder.encode(texts)

    def similarity(self, target_instructions: Sequence[str]) -> np.ndarray:
        """Cosine matrix (target instructions x all source instructions)."""
        self._ensure_embedded()
        q = self.encoder.encode(list(target_instructions))
        return q @ self._emb.T

    def scores(self, target_instructions: Sequence[str] | str) -> dict[str, float]:
        """Aggregated score of every task in the catalog."""
        sim = self.similarity(clean_instructions(target_instructions))
        return dict(zip(self._task_ids, self.aggregate(sim).tolist()))

    def mean_cosine(self, sim: np.ndarray) -> np.ndarray:
        """Per catalog task: the mean cosine over all (target, source) instruction pairs (the tie-breaker)."""
        n_tasks = len(self._task_ids)
        sums = np.zeros(n_tasks)
        np.add.at(sums, self._owner, sim.sum(axis=0))
        counts = np.bincount(self._owner, minlength=n_tasks) * sim.shape[0]
        return np.where(counts > 0, sums / np.maximum(counts, 1), -np.inf)

    def aggregate(self, sim: np.ndarray) -> np.ndarray:
        """Per catalog task: the score under this selector's aggregation, from a :meth:`similarity` matrix."""
        n_tasks = len(self._task_ids)
        owner = self._owner
        if self.aggregation == "mean":
            return self.mean_cosine(sim)
        if self.aggregation == "max":
            return self.best_pair_cosine(sim)
        depth = min(self.vote_depth, sim.shape[1])
        weights = topk_vote_weights(depth, sim.shape[0])
        out = np.zeros(n_tasks)
        for row in sim:
            # stable order on ties: by similarity, then by position in the catalog
            top = np.lexsort((np.arange(len(row)), -row))[:depth]
            np.add.at(out, owner[top], weights)
        return out / weights.sum() / sim.shape[0]

    def select(
        self,
        target_instructions: Sequence[str] | str,
        k: int = 5,
        *,
        exclude: Iterable[str] = (),
        exclude_families: Iterable[str] = (),
        target: dict[str, Any] | None = None,
    ) -> Selection:
        """The top ``k`` tasks for the target, excluding the named tasks and families."""
        instructions = clean_instructions(target_instructions)
        if not isinstance(k, int) or k < 1:
            raise InstaError(f"k must be a positive integer, got {k!r}")
        excluded_ids = self._excluded(exclude, exclude_families)
        pool_size = len(self._task_ids) - len(excluded_ids)
        if k > pool_size:
            raise InstaError(f"k={k} is larger than the pool ({pool_size} tasks after exclusions)")
        sim = self.similarity(instructions)
        agg = self.aggregate(sim)
        tie = agg if self.aggregation == "mean" else self.mean_cosine(sim)
        order = sorted(
            (i for i, tid in enumerate(self._task_ids) if tid not in excluded_ids),
            key=lambda i: ranking_key(agg[i], tie[i], self._task_ids[i]),
        )[:k]
        ranked = [self._explain(rank, i, agg[i], sim, instructions) for rank, i in enumerate(order, 1)]
        config = {
            "catalog": self.catalog.name,
            "n_pool_tasks": len(self._task_ids),
            "n_source_instructions": len(self._texts),
            "encoder": self.encoder.describe(),
            "aggregation": self.aggregation,
            "k": k,
            **({"vote_depth": self.vote_depth} if self.aggregation == "topk-vote" else {}),
        }
        tgt = {"instructions": instructions, **(target or {})}
        return Selection(target=tgt, selected=ranked, config=config, excluded=sorted(excluded_ids))

    def _excluded(self, exclude: Iterable[str], families: Iterable[str]) -> set[str]:
        out = set()
        fams = set(families)
        for tid in exclude:
            if tid in self.catalog:
                task = self.catalog.get(tid)
                out.add(task.id)
            else:
                out.add(tid)
        for task in self.catalog:
            if task.family in fams or task.id in fams:
                out.add(task.id)
        return out & set(self._task_ids)

    def best_pair_cosine(self, sim: np.ndarray) -> np.ndarray:
        """Per catalog task: its closest (target, source) instruction pair's cosine."""
        self._ensure_embedded()
        out = np.full(len(self._task_ids), -np.inf)
        np.maximum.at(out, self._owner, sim.max(axis=0))
        return out

    def _explain(self, rank: int, i: int, score: float, sim: np.ndarray, instructions: list[str]) -> TaskScore:
        cols = np.flatnonzero(self._owner == i)
        block = sim[:, cols]
        r, c = np.unravel_index(int(np.argmax(block)), block.shape)
        return TaskScore(
            rank=rank,
            task=self._task_ids[i],
            score=float(score),
            best_target_instruction=instructions[r],
            best_source_instruction=self._texts[cols[c]],
            best_pair_cosine=float(block[r, c]),
            mean_cosine=float(block.mean()),
            max_cosine=float(block.max()),
        )


def target_from_task(task: Task) -> tuple[list[str], dict[str, Any], list[str], list[str]]:
    """Instructions, target description and leakage exclusions (the task and its family) for a catalog task."""
    info = {"task": task.id, "catalog": task.catalog, "family": task.family}
    exclude_ids = [task.id]
    exclude_fams = [task.family]
    parent = task.meta.get("parent") if isinstance(task.meta, dict) else None
    if parent:
        exclude_fams.append(parent)
    return list(task.instructions), info, exclude_ids, exclude_fams


def select(
    catalog: Catalog,
    target: Sequence[str] | str | Task,
    k: int = 5,
    *,
    encoder: TextEncoder | None = None,
    aggregation: str = "mean",
    exclude: Iterable[str] = (),
    exclude_families: Iterable[str] = (),
) -> Selection:
    """One-call selection: the top ``k`` tasks of ``catalog`` for a target task or instruction text(s)."""
    if encoder is None:
        from .encoder import Encoder

        encoder = Encoder()
    selector = Selector(catalog, encoder, aggregation=aggregation)
    if isinstance(target, Task):
        instructions, info, ex_ids, ex_fams = target_from_task(target)
        return selector.select(
            instructions, k, exclude=[*ex_ids, *exclude], exclude_families=[*ex_fams, *exclude_families], target=info
        )
    return selector.select(target, k, exclude=exclude, exclude_families=exclude_families)

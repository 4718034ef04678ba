"""INSTA's one aggregation of (query x source instruction) cosines into per-task scores, shared by selection and
leave-one-out identification (:mod:`insta.evaluators.identification`), the float tolerance under which scores
tie, and the unit-length rows every cosine is taken over (with the encoder protocol that produces them)."""
from __future__ import annotations

from typing import Protocol, Sequence

import numpy as np

from ..errors import InstaError

AGGREGATIONS = ("mean", "max", "topk-vote")
#: Scores this close (relative, at least absolute for |x| < 1) are equal: float noise must not decide a rank.
TIE_TOLERANCE = 1e-6


def topk_vote_weights(depth: int, n_queries: int) -> np.ndarray:
    """Weights for ranks 1..depth such that one rank-j hit outweighs any number of rank-(j+1) hits.

    With ``n_queries`` target instructions a task can collect at most ``n_queries`` hits per rank, so base
    ``n_queries + 1`` makes the vote lexicographic: rank-1 hits dominate, then rank-2, and so on.
    """
    base = float(n_queries + 1)
    return base ** np.arange(depth - 1, -1, -1, dtype=np.float64)


def scores_close(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Elementwise equality within :data:`TIE_TOLERANCE` (infinities equal themselves)."""
    with np.errstate(invalid="ignore"):
        return (a == b) | (np.abs(a - b) <= TIE_TOLERANCE * np.maximum(1.0, np.maximum(np.abs(a), np.abs(b))))


def aggregate(
    sim: np.ndarray,
    owner: np.ndarray,
    n_tasks: int,
    aggregation: str,
    vote_depth: int = 10,
    *,
    per_row: bool = False,
) -> np.ndarray:
    """Per-task scores from a (queries x source instructions) cosine matrix; the one INSTA aggregation.

    ``owner[j]`` is the task index of column ``j``; a NaN in ``sim`` is not a pair (a masked instruction: an
    excluded task's, or in identification the held-out query's own text). ``per_row=False`` scores every task
    against all rows together (a target's instructions): shape ``(n_tasks,)``; ``per_row=True`` scores each row
    on its own (identification queries): ``(rows, n_tasks)``. A task without pairs scores ``-inf``
    (``0`` under ``topk-vote``).

    * ``mean``: the mean cosine over the task's pairs; ``max``: its best pair.
    * ``topk-vote``: per row, the ``vote_depth`` most similar instructions vote for their tasks with
      :func:`topk_vote_weights`; instructions with equal cosine (the same text in two tasks) share the weights
      of the ranks they span, so no task wins a vote by catalog position. Normalised to [0, 1].
    """
    if aggregation not in AGGREGATIONS:
        raise InstaError(f"unknown aggregation {aggregation!r} (choose from {', '.join(AGGREGATIONS)})")
    sim = np.atleast_2d(np.asarray(sim))
    owner = np.asarray(owner, dtype=np.int64)
    if sim.shape[1] != len(owner):
        raise InstaError("internal error: similarity columns and owners differ in length")  # pragma: no cover
    if len(owner) and np.any(owner[1:] < owner[:-1]):
        order = np.argsort(owner, kind="stable")
        sim, owner = sim[:, order], owner[order]
    n_rows = sim.shape[0] if per_row else 1
    valid = ~np.isnan(sim)
    if aggregation == "topk-vote":
        out = _topk_vote(sim, valid, owner, n_tasks, vote_depth, per_row)
        return out if per_row else out[0]
    out = np.full((n_rows, n_tasks), -np.inf)
    if not len(owner):
        return out if per_row else out[0]
    present, starts = np.unique(owner, return_index=True)
    if aggregation == "mean":
        vals = np.where(valid, sim, 0.0).astype(np.float64)
        counts = valid.astype(np.float64)
        if not per_row:
            vals, counts = vals.sum(axis=0, keepdims=True), counts.sum(axis=0, keepdims=True)
        sums = np.add.reduceat(vals, starts, axis=1)
        cnt = np.add.reduceat(counts, starts, axis=1)
        with np.errstate(invalid="ignore", divide="ignore"):
            out[:, present] = np.where(cnt > 0, sums / np.maximum(cnt, 1), -np.inf)
    else:
        vals = np.where(valid, sim, -np.inf)
        if not per_row:
            vals = vals.max(axis=0, keepdims=True)
        out[:, present] = np.maximum.reduceat(vals, starts, axis=1)
    return out if per_row else out[0]


def _topk_vote(sim, valid, owner, n_tasks, vote_depth, per_row) -> np.ndarray:
    n_rows = sim.shape[0]
    out = np.zeros((n_rows if per_row else 1, n_tasks))
    depth = max(1, min(vote_depth, int(valid.sum(axis=1).max(initial=0))))
    weights = topk_vote_weights(depth, 1 if per_row else n_rows)
    for r in range(n_rows):
        cols = np.flatnonzero(valid[r])
        if not len(cols):
            continue
        vals = sim[r, cols].astype(np.float64)
        d = min(depth, len(vals))
        kth = np.partition(vals, len(vals) - d)[len(vals) - d]  # the d-th largest cosine
        cand = np.flatnonzero(vals >= kth - TIE_TOLERANCE * max(1.0, abs(kth)))
        cand = cand[np.argsort(-vals[cand], kind="stable")]
        pos_w = np.zeros(len(cand))
        pos_w[:d] = weights[:d]
        v = vals[cand]
        new = np.r_[True, ~scores_close(v[1:], v[:-1])]
        gid = np.cumsum(new) - 1
        shared = np.bincount(gid, weights=pos_w) / np.bincount(gid)
        np.add.at(out[r if per_row else 0], owner[cols[cand]], shared[gid])
    return out / weights.sum() / (1 if per_row else n_rows)


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

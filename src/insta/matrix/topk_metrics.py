"""How one method's ranking of a target's sources scores against the gold transfer (higher transfer is better).

Each function takes the gold transfer (or performance) and a method's scores over the same sources (higher score
= ranked first). Ties in a method's scores count at their exact expectation over a random order of the tied
sources (not sampled), so a method that scores every source alike gets exactly the random expectation.

* **NDCG** (TaskWeb's, :func:`ndcg`): relevance of a source = N - its 0-based gold rank (tied sources share the
  best rank of their group), gain ``2^rel - 1``, discount ``1 / log2(position + 2)``, divided by the ideal DCG.
  Dominated by where the single best source lands.
* **Regret@k** (:func:`regret_at_k`): ``(gold top-k mean - method top-k mean) / |gold top-k mean|`` of the
  per-source performance; relative to the target's level (0 is perfect, lower is better).
* **linear-gain NDCG** (:func:`linear_gain_ndcg`): gain = ``max(transfer, 0)``, so a source counts by how much it
  helps, and a source that hurts counts as nothing. Undefined (NaN) for a target where no source helps.
* **precision@k** (:func:`precision_at_k`): the share of the method's top k that are gold top-k sources (a
  source is gold top-k when fewer than k sources have more transfer, so tied gold sources all count).
* **best-of-k regret** (:func:`best_of_k_regret`): the best transfer of any source minus the best transfer among
  the method's top k, in the matrix's units (0: the top k holds a best source). It asks what a user who trains on
  the k picks and keeps the best loses; Regret@k asks about the mean of the k.
* **rank-linear NDCG** (:func:`rank_linear_ndcg`): gain = relevance (N - gold rank). It is the fitting objective
  of :mod:`.prior` (its settings are pre-registered): kept as it is, not a reported score.
"""
from __future__ import annotations

import math
from functools import lru_cache
from math import comb
from typing import Sequence

import numpy as np


def _tie_groups(order_scores: Sequence[float]) -> tuple[np.ndarray, np.ndarray]:
    """Indices sorted by score (descending, stable) and where each group of exact ties starts in that order."""
    sc = np.asarray(order_scores, float)
    idx = np.argsort(-sc, kind="stable")
    s = sc[idx]
    return idx, np.flatnonzero(np.r_[True, s[1:] != s[:-1]])


def gold_relevance(transfer: Sequence[float]) -> np.ndarray:
    """N - 0-based gold rank; tied sources share the best rank of their group."""
    t = np.asarray(transfer, float)
    return np.searchsorted(np.sort(t), t, side="right").astype(float)  # N - #(sources with more transfer)


@lru_cache(maxsize=8)
def _discounts(n: int) -> np.ndarray:
    """1 / log2(position + 2) for positions 0..n-1 (math.log2, as the values were always computed)."""
    return np.array([1.0 / math.log2(p + 2) for p in range(n)])


def _expected_discounts(scores: Sequence[float]) -> np.ndarray:
    """Each item's expected discount 1/log2(pos+2) when tied items take their group's positions in random order."""
    idx, starts = _tie_groups(scores)
    by_pos = _discounts(len(idx)).copy()
    ends = np.r_[starts[1:], len(idx)]
    for a, e in zip(starts[ends - starts > 1], ends[ends - starts > 1]):  # tie groups share their mean
        by_pos[a:e] = np.mean(by_pos[a:e])
    out = np.zeros(len(idx))
    out[idx] = by_pos
    return out


def _gains(rel: np.ndarray) -> np.ndarray:
    """The exponential gains ``2^rel - 1``, divided by ``2^max(rel)`` (NDCG is a ratio: the scale cancels).

    Scaling by a power of two is exact, so below ~1,000 sources the NDCG is bit for bit the unscaled one; above,
    ``2^rel`` itself would overflow float64 (NaN for every method) while the scaled gains stay in [0, 1).
    """
    top = float(rel.max()) if len(rel) else 0.0
    return np.power(2.0, rel - top) - np.power(2.0, -top)


def _dcg_ratio(gains: np.ndarray, scores: Sequence[float]) -> float:
    """DCG of the method's order (ties at their expected discounts) over the ideal DCG; NaN when every gain is 0."""
    dcg = float(np.sum(gains * _expected_discounts(scores)))
    ideal = float(np.sum(np.sort(gains)[::-1] / np.log2(np.arange(len(gains)) + 2)))
    return dcg / ideal if ideal > 0 else float("nan")


def ndcg(transfer: Sequence[float], scores: Sequence[float]) -> float:
    """TaskWeb's exponential-gain NDCG of a method's scores against the gold transfer (same source order)."""
    return _dcg_ratio(_gains(gold_relevance(transfer)), scores)


def linear_gain_ndcg(transfer: Sequence[float], scores: Sequence[float]) -> float:
    """NDCG with gain ``max(transfer, 0)``; NaN when no transfer is above 0 (nothing to find).

    The gains are divided by the largest first (the ratio does not change), so transfers near the float64 limit
    do not overflow the sums."""
    gains = np.maximum(np.asarray(transfer, float), 0.0)
    top = float(gains.max()) if len(gains) else 0.0
    if not top > 0:
        return float("nan")
    return _dcg_ratio(gains / top, scores)


def _expected_topk_mean(values: np.ndarray, scores: Sequence[float], k: int) -> float:
    """Mean of ``values`` over a method's top-k, ties at the cut taken by their inclusion probability."""
    idx, starts = _tie_groups(scores)
    total, slots = 0.0, k
    for a, e in zip(starts, np.r_[starts[1:], len(idx)]):
        if slots <= 0:
            break
        g = idx[a:e]
        take = min(slots, len(g))
        total += take / len(g) * float(np.sum(values[g]))
        slots -= take
    return total / k


def regret_at_k(performance: Sequence[float], scores: Sequence[float], k: int) -> float:
    """Relative regret of a method's top-k against the gold top-k (higher performance is better).

    Performances near the float64 limit are divided by their largest magnitude first (the relative regret does
    not change): their top-k sums would otherwise overflow (NaN)."""
    perf = np.asarray(performance, float)
    scale = float(np.max(np.abs(perf))) if len(perf) else 0.0
    if math.isfinite(scale) and scale > np.finfo(float).max / max(1, len(perf)):  # a sum could overflow
        perf = perf / scale
    k = min(k, len(perf))
    gold = float(np.mean(np.sort(perf)[::-1][:k]))
    got = _expected_topk_mean(perf, scores, k)
    return (gold - got) / abs(gold) if gold != 0 else float("nan")


def score_groups(scores: Sequence[float]) -> list[list[int]]:
    """Indices by score, descending (stable), grouped into exact ties."""
    sc = np.asarray(scores, float)
    idx = np.argsort(-sc, kind="stable")
    groups: list[list[int]] = []
    for i in idx:
        if groups and sc[groups[-1][0]] == sc[i]:
            groups[-1].append(int(i))
        else:
            groups.append([int(i)])
    return groups


def rank_linear_ndcg(transfer: Sequence[float], scores: Sequence[float]) -> float:
    """NDCG with linear gains on the gold rank (relevance = N - gold rank, ties share the best rank) and
    tie-expected discounts: :mod:`.prior`'s fitting objective, computed as it was when its settings were fixed."""
    rel = gold_relevance(transfer)
    disc = 1.0 / np.log2(np.arange(len(rel)) + 2)
    dcg, pos = 0.0, 0
    for g in score_groups(scores):
        dcg += float(np.sum(rel[g])) * float(np.mean(disc[pos: pos + len(g)]))
        pos += len(g)
    ideal = float(np.sum(np.sort(rel)[::-1] * disc))
    return dcg / ideal if ideal > 0 else float("nan")


def _cut(scores: Sequence[float], k: int) -> tuple[np.ndarray, np.ndarray, int]:
    """The sources surely in the top k, the tie group the cut splits (empty if none) and how many it gives."""
    idx, starts = _tie_groups(scores)
    ends = np.r_[starts[1:], len(idx)]
    g = int(np.searchsorted(ends, k, side="left"))  # the first group that reaches position k
    if g >= len(ends) or ends[g] == k:
        return idx[:k], idx[:0], 0
    return idx[:starts[g]], idx[starts[g]:ends[g]], int(k - starts[g])


def precision_at_k(transfer: Sequence[float], scores: Sequence[float], k: int) -> float:
    """Expected share of the method's top ``k`` that are gold top-``k`` sources."""
    t = np.asarray(transfer, float)
    k = min(k, len(t))
    gold = (len(t) - gold_relevance(t)) < k  # fewer than k sources with more transfer
    sure, group, take = _cut(scores, k)
    hits = int(np.sum(gold[sure])) + (take / len(group) * int(np.sum(gold[group])) if len(group) else 0.0)
    return hits / k


def best_of_k_regret(transfer: Sequence[float], scores: Sequence[float], k: int) -> float:
    """Best transfer overall minus the expected best transfer within the method's top ``k``."""
    t = np.asarray(transfer, float)
    k = min(k, len(t))
    sure, group, take = _cut(scores, k)
    above = float(np.max(t[sure])) if len(sure) else -np.inf
    if not len(group):
        got = above
    else:  # ``take`` drawn from the tied group: P(their best is its i-th best) = C(n-i, take-1) / C(n, take)
        vals = np.sort(t[group])[::-1]
        n = len(vals)
        got = sum(comb(n - i, take - 1) / comb(n, take) * max(above, vals[i - 1]) for i in range(1, n - take + 2))
    return float(t.max() - got)


__all__ = ["best_of_k_regret", "gold_relevance", "linear_gain_ndcg", "ndcg", "precision_at_k", "rank_linear_ndcg",
           "regret_at_k", "score_groups"]

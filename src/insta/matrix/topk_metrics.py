"""Ranking metrics beyond :mod:`.scoring`'s NDCG and Regret@k: linear-gain NDCG, precision@k, best-of-k regret.

Each takes the gold transfer and a method's scores over the same sources (higher score = ranked first) and treats
ties in the scores as :mod:`.scoring` does: their exact expectation over a random order of the tied sources.

* **linear-gain NDCG**: :func:`.scoring.ndcg` with gain = relevance (N - gold rank) instead of ``2^rel - 1``, so
  the whole order counts, not mostly the position of the single best source.

* **precision@k**: the share of the method's top k that are gold top-k sources (a source is gold top-k when
  fewer than k sources have more transfer, so tied gold sources all count).
* **best-of-k regret**: the best transfer of any source minus the best transfer among the method's top k, in
  the matrix's units (0: the top k holds a best source). It asks what a user who trains on the k picks and keeps
  the best loses; the relative Regret@k of :mod:`.scoring` asks about the mean of the k.
"""
from __future__ import annotations

from math import comb
from typing import Sequence

import numpy as np

from .scoring import gold_relevance


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


def linear_ndcg(transfer: Sequence[float], scores: Sequence[float]) -> float:
    """NDCG with linear gains (relevance = N - gold rank, ties share the best rank) and tie-expected discounts."""
    rel = gold_relevance(transfer)
    disc = 1.0 / np.log2(np.arange(len(rel)) + 2)
    dcg, pos = 0.0, 0
    for g in score_groups(scores):
        dcg += float(np.sum(rel[g])) * float(np.mean(disc[pos: pos + len(g)]))
        pos += len(g)
    ideal = float(np.sum(np.sort(rel)[::-1] * disc))
    return dcg / ideal if ideal > 0 else float("nan")


def _cut(scores: Sequence[float], k: int) -> tuple[list[int], list[int], int]:
    """The sources surely in the top k, the tie group the cut splits (empty if none) and how many it gives."""
    sure: list[int] = []
    for g in score_groups(scores):
        left = k - len(sure)
        if left <= 0:
            break
        if len(g) <= left:
            sure += g
        else:
            return sure, g, left
    return sure, [], 0


def precision_at_k(transfer: Sequence[float], scores: Sequence[float], k: int) -> float:
    """Expected share of the method's top ``k`` that are gold top-``k`` sources."""
    t = np.asarray(transfer, float)
    k = min(k, len(t))
    gold = {i for i in range(len(t)) if int(np.sum(t > t[i])) < k}
    sure, group, take = _cut(scores, k)
    hits = sum(i in gold for i in sure) + (take / len(group) * sum(i in gold for i in group) if group else 0.0)
    return hits / k


def best_of_k_regret(transfer: Sequence[float], scores: Sequence[float], k: int) -> float:
    """Best transfer overall minus the expected best transfer within the method's top ``k``."""
    t = np.asarray(transfer, float)
    k = min(k, len(t))
    sure, group, take = _cut(scores, k)
    above = max((t[i] for i in sure), default=-np.inf)
    if not group:
        got = above
    else:  # ``take`` drawn from the tied group: P(their best is its i-th best) = C(n-i, take-1) / C(n, take)
        vals = np.sort(t[group])[::-1]
        n = len(vals)
        got = sum(comb(n - i, take - 1) / comb(n, take) * max(above, vals[i - 1]) for i in range(1, n - take + 2))
    return float(t.max() - got)

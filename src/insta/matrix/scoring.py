"""Score selection methods against a measured transfer matrix (TaskWeb / TaskShop style, METHOD.md section 7).

For each target, a method ranks the matrix's sources from what it may see; the ranking is compared with the gold
order (sources sorted by measured transfer, best first):

* **NDCG** over the whole list: relevance of a source = N - its 0-based gold rank (tied sources share the best
  rank of their group), gain ``2^rel - 1``, discount ``1 / log2(position + 2)``, divided by the ideal DCG.
* **Regret@k**: ``(gold top-k mean - method top-k mean) / |gold top-k mean|`` of the per-source performance
  (the trained model's metric where the matrix has it, oriented so that higher is better; else the transfer).
  0 is perfect, lower is better.

Ties in a method's scores are scored as their expectation over a random order of the tied sources (exact, not
sampled), so a method that scores every source alike (``all``) gets exactly the random expectation. ``random``
is the mean over ``draws`` seeded random permutations. Means over targets carry a percentile bootstrap CI
(:func:`insta.report.stats.bootstrap_mean_ci`, the report's bootstrap).
"""
from __future__ import annotations

import math
from functools import lru_cache
from typing import Any, Sequence

import numpy as np

from ..report.stats import bootstrap_mean_ci


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


def ndcg(transfer: Sequence[float], scores: Sequence[float]) -> float:
    """NDCG of a method's scores against the gold transfer (same source order in both sequences)."""
    gains = _gains(gold_relevance(transfer))
    dcg = float(np.sum(gains * _expected_discounts(scores)))
    ideal = float(np.sum(np.sort(gains)[::-1] / np.log2(np.arange(len(gains)) + 2)))
    return dcg / ideal if ideal > 0 else float("nan")


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


def random_expectation(transfer: Sequence[float], performance: Sequence[float], k: int, draws: int = 1000,
                       seed: int = 0) -> dict[str, float]:
    """NDCG and Regret@k of a random ranking, averaged over ``draws`` seeded permutations."""
    rng = np.random.default_rng(seed)
    n = len(transfer)
    nd, rg = [], []
    for _ in range(draws):
        scores = rng.permutation(n).astype(float)
        nd.append(ndcg(transfer, scores))
        rg.append(regret_at_k(performance, scores, k))
    return {"ndcg": float(np.mean(nd)), "regret": float(np.mean(rg))}


def score_rankings(gold: dict[str, dict[str, float]], performance: dict[str, dict[str, float]],
                   method_scores: dict[str, dict[str, dict[str, float]]], k: int = 5, draws: int = 1000,
                   n_boot: int = 10000, seed: int = 0) -> dict[str, Any]:
    """NDCG and Regret@k per (method, target), averages with bootstrap CIs over targets, paired differences.

    ``gold[target][source]`` is the mean transfer, ``performance[target][source]`` the oriented performance for
    regret, ``method_scores[method][target][source]`` a method's score (higher = ranked first). A source a
    method did not score (e.g. removed by its leakage guard) is left out of that target for that method.
    """
    per: dict[str, dict[str, dict[str, float]]] = {}
    targets = list(gold)
    for t in targets:
        sources = sorted(gold[t])
        tr = [gold[t][s] for s in sources]
        pf = [performance[t].get(s, gold[t][s]) for s in sources]
        rnd = random_expectation(tr, pf, k, draws, seed)
        per.setdefault("random", {})[t] = rnd
        for m, by_target in method_scores.items():
            sc = by_target.get(t)
            if sc is None:
                continue
            keep = [i for i, s in enumerate(sources) if s in sc]
            if len(keep) < 2:
                continue
            tr_k, pf_k = [tr[i] for i in keep], [pf[i] for i in keep]
            scores = [sc[sources[i]] for i in keep]
            per.setdefault(m, {})[t] = {"ndcg": ndcg(tr_k, scores), "regret": regret_at_k(pf_k, scores, k)}
    summary: dict[str, Any] = {}
    for m, by_t in per.items():
        row = {}
        for metric in ("ndcg", "regret"):
            mean, lo, hi = bootstrap_mean_ci([v[metric] for v in by_t.values()], n_boot, seed=seed)
            row[metric] = {"mean": mean, "lo": lo, "hi": hi}
        row["n_targets"] = len(by_t)
        summary[m] = row
    paired: dict[str, dict[str, Any]] = {}
    methods = list(per)
    for a in methods:
        for b in methods:
            if a == b:
                continue
            common = [t for t in per[a] if t in per[b]]
            row = {}
            for metric in ("ndcg", "regret"):
                d = [per[a][t][metric] - per[b][t][metric] for t in common]
                mean, lo, hi = bootstrap_mean_ci(d, n_boot, seed=seed)
                row[metric] = {"mean": mean, "lo": lo, "hi": hi}
            row["n_targets"] = len(common)
            paired[f"{a} - {b}"] = row
    return {"k": k, "draws": draws, "bootstrap": n_boot, "per_target": per, "summary": summary,
            "paired": paired}

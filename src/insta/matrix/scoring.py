"""Score selection methods against a measured transfer matrix (TaskWeb / TaskShop style, METHOD.md section 7).

For each target, a method ranks the matrix's sources from what it may see; each ranking gets every score of
:data:`SCORES` (defined in :mod:`.topk_metrics`, ties in a method's scores at their exact expectation over random
orders). ``random`` is the mean over ``draws`` seeded random permutations of the same scores. Means over targets
carry a percentile bootstrap CI (:func:`insta.report.stats.bootstrap_mean_ci`, the report's bootstrap), and every
pair of methods gets the per-target paired difference with its bootstrap CI, on every score.

Every method is scored on the same targets and the same sources, so that its mean and its paired differences
compare like with like:

* A method that cannot score a target (no scores there: RoE without unlabelled inputs, fewer than 2 sources)
  gets that target's ``random`` values there, and the result lists where (``filled``).
* A target whose transfers are all <= 0 has no linear-gain NDCG: it is left out of that score for every method
  (``undefined``), and counts for the others.
* The sources of a target are the gold's. The caller removes the sources no method may select (the target's
  relatives, the leakage guard) from the gold for every method alike, so the old rule of leaving a source out of
  one method's scoring when that method did not score it is no longer needed: a source a method leaves unscored
  is ranked after every source it scored (tied among themselves), as a user of its ranking would take it.
"""
from __future__ import annotations

import math
from typing import Any, Sequence

import numpy as np

from ..report.stats import bootstrap_mean_ci
from .topk_metrics import best_of_k_regret, linear_gain_ndcg, ndcg, precision_at_k, regret_at_k

#: score key -> (what it is, with ``{k}`` for the cut; higher is better), in the order tables show them
SCORES: dict[str, tuple[str, bool]] = {
    "ndcg": ("TaskWeb's exponential-gain NDCG (relevance from the gold rank)", True),
    "ndcg_linear": ("linear-gain NDCG, gain max(transfer, 0)", True),
    "precision": ("precision@{k}: share of the method's top {k} in the gold top {k}", True),
    "best_regret": ("best-of-{k} regret: best transfer minus the best in the method's top {k} (transfer units)",
                    False),
    "regret": ("Regret@{k}: relative regret of the top-{k} mean performance", False),
}

#: the methods every other is compared with in the tables, those scored (transfer matrix v2's pre-registration)
REFERENCE_METHODS: tuple[str, ...] = ("insta-mean", "popular-source-loo", "roe", "hybrid-0.5")


def _finite_or_none(x: float) -> float | None:
    return x if math.isfinite(x) else None


def ranking_scores_of(transfer: Sequence[float], performance: Sequence[float], scores: Sequence[float],
                      k: int) -> dict[str, float | None]:
    """Every score of :data:`SCORES` for one ranking (linear-gain NDCG None where no transfer is above 0)."""
    return {"ndcg": ndcg(transfer, scores), "ndcg_linear": _finite_or_none(linear_gain_ndcg(transfer, scores)),
            "precision": precision_at_k(transfer, scores, k), "best_regret": best_of_k_regret(transfer, scores, k),
            "regret": regret_at_k(performance, scores, k)}


def random_expectation(transfer: Sequence[float], performance: Sequence[float], k: int, draws: int = 1000,
                       seed: int = 0) -> dict[str, float | None]:
    """Every score of a random ranking, averaged over ``draws`` seeded permutations."""
    rng = np.random.default_rng(seed)
    n = len(transfer)
    got: dict[str, list[float]] = {s: [] for s in SCORES}
    for _ in range(draws):
        for s, v in ranking_scores_of(transfer, performance, rng.permutation(n).astype(float), k).items():
            if v is not None:
                got[s].append(v)
    return {s: float(np.mean(v)) if v else None for s, v in got.items()}


def _method_scores_on(sources: list[str], sc: dict[str, float]) -> list[float]:
    """The method's score per gold source; a source it did not score ranks after every one it did (tied)."""
    floor = min(sc.values()) - 1.0 if sc else 0.0
    return [sc.get(s, floor) for s in sources]


def _ci(values: list[float | None], n_boot: int, seed: int) -> dict[str, Any]:
    kept = [v for v in values if v is not None and math.isfinite(v)]
    mean, lo, hi = bootstrap_mean_ci(kept, n_boot, seed=seed)
    return {"mean": mean, "lo": lo, "hi": hi, "n": len(kept)}


def score_rankings(gold: dict[str, dict[str, float]], performance: dict[str, dict[str, float]],
                   method_scores: dict[str, dict[str, dict[str, float]]], k: int = 5, draws: int = 1000,
                   n_boot: int = 10000, seed: int = 0) -> dict[str, Any]:
    """Every score per (method, target), means with bootstrap CIs over targets, and paired differences.

    ``gold[target][source]`` is the mean transfer (its sources are the ones scored), ``performance[target][source]``
    the oriented performance for Regret@k (the transfer where missing), ``method_scores[method][target][source]``
    a method's score (higher = ranked first; no or empty scores for a target: filled with random's values there).
    """
    per: dict[str, dict[str, dict[str, float | None]]] = {"random": {}}
    filled: dict[str, list[str]] = {m: [] for m in method_scores}
    undefined: list[str] = []
    for t in gold:
        sources = sorted(gold[t])
        tr = [gold[t][s] for s in sources]
        pf = [performance[t].get(s, gold[t][s]) for s in sources]
        per["random"][t] = rnd = random_expectation(tr, pf, k, draws, seed)
        if rnd["ndcg_linear"] is None:
            undefined.append(t)
        for m, by_target in method_scores.items():
            sc = by_target.get(t)
            if not sc or len(sources) < 2:
                per.setdefault(m, {})[t] = dict(rnd)
                filled[m].append(t)
                continue
            per.setdefault(m, {})[t] = ranking_scores_of(tr, pf, _method_scores_on(sources, sc), k)
    targets = list(gold)
    summary: dict[str, Any] = {}
    for m, by_t in per.items():
        summary[m] = {s: _ci([by_t[t][s] for t in targets], n_boot, seed) for s in SCORES}
        summary[m].update(n_targets=len(by_t), n_filled=len(filled.get(m, [])))
    paired: dict[str, dict[str, Any]] = {}
    for a in per:
        for b in per:
            if a == b:
                continue
            row: dict[str, Any] = {}
            for s in SCORES:
                d = [None if per[a][t][s] is None or per[b][t][s] is None else per[a][t][s] - per[b][t][s]
                     for t in targets]
                row[s] = _ci(d, n_boot, seed)
            row["n_targets"] = len(targets)
            paired[f"{a} - {b}"] = row
    return {"k": k, "draws": draws, "bootstrap": n_boot, "seed": seed,
            "scores": {s: {"what": what.format(k=k), "higher_is_better": hib} for s, (what, hib) in SCORES.items()},
            "per_target": per, "summary": summary, "paired": paired,
            "filled": {m: ts for m, ts in filled.items() if ts}, "undefined": {"ndcg_linear": undefined}}

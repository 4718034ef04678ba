"""A measured transfer matrix as evidence for targets it does not hold: the arithmetic of ``prior-transfer``.

The selection method (:mod:`insta.methods.prior_transfer`) scores a pool's sources for a new target from three
components, each computed here from a :class:`PriorMatrix` (targets x sources, mean transfer over seeds):

* **prior** (popular sources): a source's mean per-target percentile over the matrix's targets. Each target's
  transfers are turned into percentiles among the sources measured on it (0 = worst, 1 = best, ties share
  their mean rank), so no target's units or outliers dominate.
* **pivot** (transitivity, after TaskShop, Kim et al. 2023, "TaskWeb"): the same percentiles, weighted per
  target by how similar the new target is to it: ``softmax(z(similarity) / temperature)`` over the matrix's
  targets, where the similarity is the mean of the z-scored signals the caller has (instructions, output space,
  unlabelled inputs).
* **similarity**: the direct INSTA score of the target and each source (the caller's), so a source the matrix
  does not hold is still ranked.

Each component is z-scored over the candidate sources that have it (a source absent from the matrix gets 0 in
the prior and pivot components: pushed neither way) and the score is ``w_prior z(prior) + w_pivot z(pivot) +
w_similarity z(similarity)``. The weights and the temperature are chosen on the matrix itself, leave one target
out (:func:`fit_weights`): each matrix target in turn is a pretend new target, scored from the other targets'
columns, and the setting with the best mean linear-gain NDCG over those folds wins. The caller drops a held-out
target's column (:meth:`PriorMatrix.without`) before anything is computed, so its own column never informs its
weights (nested leave-one-target-out).

The search is fixed: weights on a simplex grid with step :data:`WEIGHT_STEP`, temperatures :data:`TEMPERATURES`,
objective :func:`~.topk_metrics.rank_linear_ndcg` (the exponential-gain NDCG of TaskWeb is dominated by the
single best source and too noisy for a dozen folds), ties between settings broken by grid order.
"""
from __future__ import annotations

import hashlib
import itertools
import json
import math
from dataclasses import dataclass, field
from typing import Any, Iterable, Sequence

import numpy as np

from ..errors import InstaError
from .matrix import TransferMatrix
from .topk_metrics import rank_linear_ndcg

WEIGHT_STEP = 0.25
TEMPERATURES = (0.25, 0.5, 1.0)
COMPONENTS = ("prior", "pivot", "similarity")
#: a matrix target needs this many measured sources to count (percentiles of fewer say little)
MIN_SOURCES_PER_TARGET = 3
#: fitting by leave-one-target-out needs this many usable targets
MIN_TARGETS_TO_FIT = 3


def weight_grid(step: float = WEIGHT_STEP) -> list[tuple[float, float, float]]:
    """Every (prior, pivot, similarity) weight triple on the simplex with ``step`` (non-negative, sum 1)."""
    n = round(1 / step)
    return [(a / n, b / n, (n - a - b) / n) for a in range(n + 1) for b in range(n + 1 - a)]


@dataclass
class PriorMatrix:
    """Mean transfer per (target, source) of one metric: ``transfer[i, j]`` for ``targets[i]``, ``sources[j]``
    (NaN: not measured). ``dropped``: matrix targets left out, with why; ``n_missing``: unmeasured cells."""

    targets: list[str]
    sources: list[str]
    transfer: np.ndarray
    metric: str
    eval_ids: dict[str, list[str]] = field(default_factory=dict)
    dropped: dict[str, str] = field(default_factory=dict)

    @classmethod
    def from_matrix(cls, matrix: TransferMatrix, metric: str | None = None, where: str = "prior matrix"
                    ) -> "PriorMatrix":
        """The dense view of ``matrix`` for ``metric`` (default: ``nll_per_token`` if present, else its only
        metric); one clear error for a matrix that cannot serve (non-finite values, unknown metric)."""
        from .cells import PRIMARY

        names = matrix.metrics
        if metric is None:
            if PRIMARY in names or len(names) != 1:
                metric = PRIMARY
            else:
                metric = names[0]
        if metric not in names:
            raise InstaError(f"{where} has no metric {metric!r} (it has: {', '.join(names) or 'none'}): "
                             "pick one with -o metric=NAME")
        for r in matrix.rows:
            if r.get("metric") != metric:
                continue
            v = r.get("transfer")
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
                raise InstaError(f"{where}: target {r.get('target')!r}, source {r.get('source')!r}: transfer "
                                 f"{v!r} is not a finite number")
        targets = [t for t in matrix.targets if any(r["target"] == t and r["metric"] == metric for r in matrix.rows)]
        sources = list(dict.fromkeys(r["source"] for r in matrix.rows if r["metric"] == metric))
        col = {s: j for j, s in enumerate(sources)}
        arr = np.full((len(targets), len(sources)), np.nan)
        for i, t in enumerate(targets):
            for s, v in matrix.mean_transfer(t, metric).items():
                arr[i, col[s]] = v
        meta = matrix.meta or {}
        eval_ids = meta.get("eval_ids") if isinstance(meta.get("eval_ids"), dict) else {}
        pm = cls(targets, sources, arr, metric, {str(k): list(v) for k, v in eval_ids.items()
                                                  if isinstance(v, list)})
        thin = [t for i, t in enumerate(targets) if np.isfinite(arr[i]).sum() < MIN_SOURCES_PER_TARGET]
        if thin:
            pm = pm.without(thin, f"fewer than {MIN_SOURCES_PER_TARGET} sources measured")
        if not pm.targets:
            raise InstaError(f"{where}: no target with at least {MIN_SOURCES_PER_TARGET} measured sources")
        return pm

    def without(self, targets: Iterable[str], why: str = "the selection target itself") -> "PriorMatrix":
        """A copy without the columns of ``targets`` (their values are not copied: nothing later can read them)."""
        gone = set(targets) & set(self.targets)
        keep = [i for i, t in enumerate(self.targets) if t not in gone]
        return PriorMatrix([self.targets[i] for i in keep], list(self.sources), self.transfer[keep].copy(),
                           self.metric, {t: v for t, v in self.eval_ids.items() if t not in gone},
                           {**self.dropped, **{t: why for t in sorted(gone)}})

    @property
    def n_missing(self) -> int:
        return int(np.isnan(self.transfer).sum())

    def percentiles(self) -> np.ndarray:
        """Per target, each source's percentile among the sources measured on it (0 worst, 1 best; NaN: missing)."""
        from scipy.stats import rankdata

        out = np.full(self.transfer.shape, np.nan)
        for i, row in enumerate(self.transfer):
            ok = np.isfinite(row)
            n = int(ok.sum())
            if n >= 2:
                out[i, ok] = (rankdata(row[ok]) - 1) / (n - 1)
            elif n == 1:
                out[i, ok] = 0.5
        return out

    def fingerprint(self) -> str:
        """A short hash of what the method reads (metric, targets, sources, values): part of its parameters."""
        blob = json.dumps([self.metric, self.targets, self.sources,
                           [[None if not math.isfinite(v) else round(float(v), 9) for v in row]
                            for row in self.transfer]])
        return hashlib.sha256(blob.encode()).hexdigest()[:12]


def zscore(x: np.ndarray, mask: np.ndarray | None = None) -> np.ndarray:
    """``x`` standardised over the finite entries inside ``mask``; NaN and entries outside stay 0 (neutral)."""
    x = np.asarray(x, float)
    ok = np.isfinite(x) & (np.ones(len(x), bool) if mask is None else np.asarray(mask, bool))
    out = np.zeros(len(x))
    if ok.sum() >= 2:
        sd = float(x[ok].std())
        if sd > 0:
            out[ok] = (x[ok] - float(x[ok].mean())) / sd
    return out


def pivot_similarity(signals: Sequence[np.ndarray]) -> np.ndarray:
    """One similarity per matrix target: the mean of the z-scored signals that are known (NaN: not known)."""
    zs = []
    for s in signals:
        s = np.asarray(s, float)
        if np.isfinite(s).sum() >= 2:
            z = zscore(s)
            z[~np.isfinite(s)] = np.nan
            zs.append(z)
    if not zs:
        return np.zeros(len(signals[0]) if len(signals) else 0)
    stack = np.vstack(zs)
    n = np.isfinite(stack).sum(axis=0)
    return np.where(n > 0, np.nansum(stack, axis=0) / np.maximum(n, 1), 0.0)


def pivot_weights(similarity: np.ndarray, temperature: float) -> np.ndarray:
    """Softmax of the similarities over the matrix targets at ``temperature`` (in SD units of the similarity)."""
    s = np.asarray(similarity, float) / temperature
    e = np.exp(s - s.max()) if len(s) else s
    return e / e.sum() if len(s) else e


def prior_and_pivot(pct: np.ndarray, weights: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per source column of ``pct`` (targets x sources percentiles): the mean percentile (prior) and the
    ``weights``-weighted mean (pivot), each over the targets that measured the source (NaN: none did)."""
    ok = np.isfinite(pct)
    vals = np.where(ok, pct, 0.0)
    n = ok.sum(axis=0)
    w = np.where(ok, np.asarray(weights, float)[:, None], 0.0)
    wsum = w.sum(axis=0)
    with np.errstate(invalid="ignore", divide="ignore"):
        prior = np.where(n > 0, vals.sum(axis=0) / np.maximum(n, 1), np.nan)
        pivot = np.where(wsum > 0, (w * vals).sum(axis=0) / np.where(wsum > 0, wsum, 1), np.nan)
    return prior, pivot


def combine(weights: Sequence[float], prior: np.ndarray, pivot: np.ndarray, similarity: np.ndarray,
            allowed: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Scores of the candidates (``-inf`` elsewhere) and the per-component contributions (3 x n)."""
    allowed = np.asarray(allowed, bool)
    parts = np.vstack([w * zscore(c, allowed) for w, c in zip(weights, (prior, pivot, similarity))])
    return np.where(allowed, parts.sum(axis=0), -np.inf), parts


@dataclass
class Fold:
    """One pretend-new matrix target: the other targets' percentiles mapped onto the pool (targets x pool), its
    similarity to each of them (z-mean, :func:`pivot_similarity`), its direct similarity to every pool source,
    the candidates (its relatives left out) and its measured transfer per pool source (NaN: not measured)."""

    target: str
    pct: np.ndarray
    pivot_sim: np.ndarray
    similarity: np.ndarray
    allowed: np.ndarray
    gold: np.ndarray


@dataclass
class Fit:
    """The chosen weights and temperature, with the evidence: the objective per fold and the folds used."""

    weights: tuple[float, float, float]
    temperature: float
    objective: float
    per_fold: dict[str, float]
    n_settings: int

    def to_dict(self) -> dict[str, Any]:
        return {"weights": dict(zip(COMPONENTS, self.weights)), "temperature": self.temperature,
                "objective": "mean linear-gain NDCG over the matrix's targets, each scored from the others",
                "objective_value": round(self.objective, 6),
                "folds": {t: round(v, 6) for t, v in self.per_fold.items()},
                "grid": {"weight_step": WEIGHT_STEP, "temperatures": list(TEMPERATURES),
                         "settings": self.n_settings}}


def fit_weights(folds: Sequence[Fold], grid: Sequence[tuple[float, float, float]] | None = None,
                temperatures: Sequence[float] = TEMPERATURES) -> Fit:
    """The (weights, temperature) with the best mean linear-gain NDCG over ``folds`` (first in grid order on a
    tie); each fold scores only the sources it measured among its candidates."""
    grid = list(grid or weight_grid())
    usable = [f for f in folds if (np.isfinite(f.gold) & f.allowed).sum() >= 2]
    if len(usable) < 2:
        raise InstaError(f"the prior matrix leaves {len(usable)} target(s) to fit the weights on (need at least "
                         f"{MIN_TARGETS_TO_FIT - 1} besides the target; or give weights=[prior, pivot, similarity])")
    best: tuple[float, tuple[float, float, float], float, dict[str, float]] | None = None
    for temp, w in itertools.product(temperatures, grid):
        per = {}
        for f in usable:
            prior, pivot = prior_and_pivot(f.pct, pivot_weights(f.pivot_sim, temp))
            score, _ = combine(w, prior, pivot, f.similarity, f.allowed)
            keep = np.isfinite(f.gold) & f.allowed
            per[f.target] = rank_linear_ndcg(f.gold[keep], score[keep])
        obj = float(np.mean(list(per.values())))
        if best is None or obj > best[0] + 1e-12:
            best = (obj, w, temp, per)
    assert best is not None
    return Fit(best[1], best[2], best[0], best[3], len(grid) * len(temperatures))

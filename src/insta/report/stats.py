"""Bootstrap inference: resamples, confidence intervals and p-values, one implementation for the experiment report
(:mod:`insta.report.summary`) and the transfer scores (:mod:`insta.matrix.scoring`).

A sample's resamples are drawn once (:func:`resample_indices`) and reused by every statistic on that sample, so a
paired comparison applies the same resamples to both methods. Two intervals, from the same resamples:

* ``percentile``: the ``(1 - confidence) / 2`` and ``(1 + confidence) / 2`` quantiles of the bootstrap values.
* ``bca`` (bias-corrected and accelerated; Efron & Tibshirani 1993, section 14.3, as
  ``scipy.stats.bootstrap(method="BCa")``): the quantile levels move by the bias ``z0`` (the share of bootstrap
  values below the estimate, ties counted half) and the acceleration ``a`` (the skewness of the jackknife values,
  summed over independent samples). Second-order accurate, where the percentile interval is first-order: it
  matters at 30-60 examples per target. Where BCa is undefined (every resample gives the same value, the estimate
  lies outside the bootstrap values, or the jackknife values do not vary) :func:`interval` returns the percentile
  interval and names the reason.

``scipy.stats.bootstrap`` cross-checks both in ``tests/test_report_stats.py``; insta does not call it because it
draws its own resamples, and the report needs one set shared by every comparison, its p-value and both intervals.
"""
from __future__ import annotations

import math
from statistics import NormalDist
from typing import Any, Sequence

import numpy as np

INTERVALS = ("percentile", "bca")


def resample_indices(n: int, n_boot: int, rng: np.random.Generator) -> np.ndarray:
    """``n_boot`` x ``n`` bootstrap resamples (example indices drawn with replacement)."""
    return rng.integers(0, n, size=(n_boot, n))


def jackknife_indices(n: int) -> np.ndarray:
    """``n`` x ``n - 1`` jackknife rows: row ``i`` holds every example index but ``i``."""
    keep = ~np.eye(n, dtype=bool)
    return np.broadcast_to(np.arange(n), (n, n))[keep].reshape(n, n - 1)


def percentile_interval(boots: np.ndarray, confidence: float = 0.95) -> tuple[float, float]:
    """The percentile interval of bootstrap values."""
    alpha = (1 - confidence) / 2
    return float(np.quantile(boots, alpha)), float(np.quantile(boots, 1 - alpha))


def bootstrap_p_value(boots: np.ndarray) -> float:
    """Two-sided bootstrap p-value of "the statistic is zero": twice the smaller share of bootstrap values on
    either side of zero (zero counted on both), capped at 1."""
    return min(1.0, 2 * min(float((boots <= 0).mean()), float((boots >= 0).mean())))


def _bca_constants(boots: np.ndarray, estimate: float, jackknife: Sequence[np.ndarray]) -> tuple[float, float] | str:
    """``(z0, a)`` of BCa, or the reason it is undefined."""
    if not np.isfinite(boots).all() or not math.isfinite(estimate):
        return "bootstrap values not finite"
    if float(np.ptp(boots)) == 0.0:
        return "every resample gives the same value"
    share = _share_below(boots, estimate)
    if share <= 0.0 or share >= 1.0:
        return "the estimate lies outside the bootstrap values"
    num = den = 0.0
    for values in jackknife:
        v = np.asarray(values, dtype=float)
        n = float(v.size)
        u = (n - 1) * (v.mean() - v)
        num += float(np.sum(u ** 3)) / n ** 3
        den += float(np.sum(u ** 2)) / n ** 2
    if den <= 0.0:
        return "the jackknife values do not vary"
    return NormalDist().inv_cdf(share), num / (6 * den ** 1.5)


def _share_below(boots: np.ndarray, value: float) -> float:
    """Share of bootstrap values below ``value``, ties counted half. A tie is equality within rounding: on a
    discrete statistic (accuracy differences) a resample equal to the estimate in exact arithmetic often differs
    from it in the last bits, which would bias z0."""
    tol = 1e-9 * max(1.0, abs(value))
    return (np.count_nonzero(boots < value - tol) + np.count_nonzero(boots <= value + tol)) / (2 * boots.size)


def bca_levels(boots: np.ndarray, estimate: float, jackknife: Sequence[np.ndarray],
               confidence: float = 0.95) -> tuple[float, float] | str:
    """The BCa quantile levels for ``boots``, or the reason BCa is undefined.

    ``jackknife`` holds, for each independently resampled sample (one per target for an average over targets),
    the statistic's leave-one-out values over that sample's examples.
    """
    consts = _bca_constants(np.asarray(boots, dtype=float), estimate, jackknife)
    if isinstance(consts, str):
        return consts
    z0, accel = consts
    normal = NormalDist()
    levels = []
    for z in (normal.inv_cdf((1 - confidence) / 2), normal.inv_cdf((1 + confidence) / 2)):
        shifted = z0 + z
        if 1 - accel * shifted <= 0:
            return "the acceleration is too large"
        levels.append(normal.cdf(z0 + shifted / (1 - accel * shifted)))
    return levels[0], levels[1]


def bca_p_value(boots: np.ndarray, estimate: float, jackknife: Sequence[np.ndarray]) -> float | None:
    """Two-sided p-value of "the statistic is zero" consistent with the BCa interval (the smallest ``1 -
    confidence`` whose BCa interval reaches zero), or None where BCa is undefined."""
    boots = np.asarray(boots, dtype=float)
    consts = _bca_constants(boots, estimate, jackknife)
    if isinstance(consts, str):
        return None
    z0, accel = consts
    share = _share_below(boots, 0.0)
    if share <= 0.0 or share >= 1.0:
        return 0.0
    w = NormalDist().inv_cdf(share) - z0  # solve  cdf(z0 + (z0 + z) / (1 - a (z0 + z))) = share  for z
    if 1 + accel * w <= 0:
        return None
    level = NormalDist().cdf(w / (1 + accel * w) - z0)
    return min(1.0, 2 * min(level, 1 - level))


def interval(boots: np.ndarray, estimate: float, confidence: float = 0.95, method: str = "percentile",
             jackknife: Sequence[np.ndarray] | None = None, p_value: bool = False) -> dict[str, Any]:
    """``{"low", "high"}`` (and ``"p_value"`` when asked) by ``method`` (:data:`INTERVALS`); where BCa is undefined
    the percentile interval and p-value are returned with ``"interval_note"`` giving the reason."""
    if method not in INTERVALS:
        raise ValueError(f"interval must be one of {', '.join(INTERVALS)} (got {method!r})")
    out: dict[str, Any] = {}
    if method == "bca":
        levels = bca_levels(boots, estimate, jackknife or [], confidence)
        if isinstance(levels, str):
            out["interval_note"] = f"percentile (BCa undefined: {levels})"
        else:
            out = {"low": float(np.quantile(boots, levels[0])), "high": float(np.quantile(boots, levels[1]))}
            if p_value:
                p = bca_p_value(boots, estimate, jackknife or [])
                out["p_value"] = bootstrap_p_value(boots) if p is None else p
            return out
    low, high = percentile_interval(boots, confidence)
    out = {"low": low, "high": high, **out}
    if p_value:
        out["p_value"] = bootstrap_p_value(boots)
    return out


def bootstrap_mean_ci(values: Sequence[float | None], n_boot: int = 10000, confidence: float = 0.95,
                      seed: int = 0, method: str = "percentile") -> tuple[float, float, float]:
    """Mean of the finite ``values`` and its bootstrap CI over them (e.g. over targets): ``(mean, low, high)``;
    NaN bounds for fewer than two values."""
    v = np.asarray([x for x in values if x is not None and math.isfinite(x)], float)
    if len(v) == 0:
        return float("nan"), float("nan"), float("nan")
    if len(v) == 1:
        return float(v[0]), float("nan"), float("nan")
    means = v[resample_indices(len(v), n_boot, np.random.default_rng(seed))].mean(axis=1)
    jack = v[jackknife_indices(len(v))].mean(axis=1) if method == "bca" else None
    ci = interval(means, float(v.mean()), confidence, method, None if jack is None else [jack])
    return float(v.mean()), ci["low"], ci["high"]


__all__ = ["INTERVALS", "bca_levels", "bca_p_value", "bootstrap_mean_ci", "bootstrap_p_value", "interval",
           "jackknife_indices", "percentile_interval", "resample_indices"]

"""Ranking the candidates of a selection: the scores a method returns (:class:`Scores`), exact tie groups and
their order, and how many to keep (a fixed k or a :class:`KRule` read off the score curve)."""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Callable, Sequence

import numpy as np

from ..catalogs.base import Catalog
from ..errors import InstaError
from ..records import Task
from .aggregation import TIE_TOLERANCE, scores_close

K_RULES = ("gap", "elbow", "threshold")
TIE_MODES = ("first", "include")


@dataclass
class Scores:
    """What a method's scoring step returns, one entry per pool task (pool order).

    ``score``: higher is better; ``secondary``: the method's documented tie-breaker (higher first), named by
    ``secondary_name``; ``why(i)``: the evidence for pool task ``i``; ``info``: method configuration to report.
    """

    score: np.ndarray
    secondary: np.ndarray | None = None
    secondary_name: str | None = None
    why: Callable[[int], dict[str, Any]] | None = None
    info: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class KRule:
    """Choose k from the ranked scores: ``gap``, ``elbow`` or ``threshold`` (``z`` standard deviations above the
    candidates' mean), bounded by ``[k_min, k_max]`` (``k_max`` default: 20, or the pool if smaller)."""

    rule: str = "gap"
    k_min: int = 1
    k_max: int | None = None
    z: float = 1.0

    def __post_init__(self) -> None:
        if self.rule not in K_RULES:
            raise InstaError(f"unknown k rule {self.rule!r} (choose a number or one of {', '.join(K_RULES)})")
        if not math.isfinite(self.z):
            raise InstaError(f"the threshold rule's z must be a finite number (got {self.z})")
        if self.k_min < 1 or (self.k_max is not None and self.k_max < self.k_min):
            raise InstaError(f"k rule bounds must satisfy 1 <= k_min <= k_max (got {self.k_min}, {self.k_max})")

    def to_dict(self) -> dict[str, Any]:
        return {"rule": self.rule, "k_min": self.k_min, "k_max": self.k_max,
                **({"z": self.z} if self.rule == "threshold" else {})}


def parse_k(k: int | str | KRule | None, default: int | str | KRule = 5) -> int | KRule:
    """``k`` as a positive int or a :class:`KRule` (``"gap"``, ``"elbow"``, ``"threshold"``, or digits)."""
    if k is None:
        k = default
    if isinstance(k, KRule):
        return k
    if isinstance(k, str):
        if k.strip().isdigit():
            k = int(k.strip())
        elif k.strip().lower() in K_RULES:
            return KRule(k.strip().lower())
        else:
            raise InstaError(f"k must be a positive integer or one of {', '.join(K_RULES)}, got {k!r}")
    if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 1:
        raise InstaError(f"k must be a positive integer or one of {', '.join(K_RULES)}, got {k!r}")
    return int(k)


def choose_k(scores: Sequence[float], rule: KRule) -> tuple[int, str]:
    """How many of the ranked ``scores`` (best first, every candidate) to select under ``rule``, and why."""
    s = np.asarray(scores, dtype=np.float64)
    s = np.where(np.isfinite(s), s, np.nan)
    n = int(np.sum(~np.isnan(s)))
    if n == 0:
        return min(rule.k_min, len(s)), "no finite score: k_min"
    s = s[:n]
    k_max = min(rule.k_max or 20, n)
    k_min = min(rule.k_min, k_max)
    sd = float(np.std(s)) or 1.0
    if k_min >= n or k_max == k_min:
        return k_min, f"the bounds leave one choice (k_min={rule.k_min}, k_max={k_max})"
    if rule.rule in ("gap", "elbow"):
        cuts = np.arange(k_min, min(k_max, n - 1) + 1)  # select the first c tasks
        between = cuts[~scores_close(s[cuts - 1], s[cuts])]  # only between distinct scores: never inside a tie
        if not len(between):
            return k_min, (f"ranks {k_min}-{min(k_max, n - 1) + 1} all tie: no cut between distinct scores, k_min "
                           "(--ties decides the tie group)")
    if rule.rule == "gap":
        gaps = s[between - 1] - s[between]
        c = int(between[int(np.argmax(gaps))])
        return c, (f"largest score drop within ranks {k_min}-{k_max}: after rank {c} ({s[c - 1]:.4g} -> {s[c]:.4g}, "
                   f"{(s[c - 1] - s[c]) / sd:.2f} SD of the {n} candidates' scores)")
    if rule.rule == "elbow":
        span = s[0] - s[-1]
        if span <= 0:
            return k_min, "every candidate scores the same: k_min"
        x = np.arange(n) / max(1, n - 1)
        y = (s - s[-1]) / span
        below = (1.0 - x) - y  # how far the curve lies below the chord from the best to the worst candidate
        c = int(between[int(np.argmax(below[between]))])  # 0-based knee position: select the tasks above it
        return c, (f"knee of the sorted score curve (farthest below the chord from rank 1 to rank {n}) at rank "
                   f"{c + 1}: the {c} tasks above it")
    mu = float(np.mean(s))
    t = mu + rule.z * sd
    c = int(np.sum(s >= t - TIE_TOLERANCE * max(1.0, abs(t))))
    c = max(k_min, min(k_max, c))
    return c, (f"scores at least {rule.z:g} SD above the candidates' mean "
               f"({mu:.4g} + {rule.z:g} x {sd:.4g} = {t:.4g}), "
               f"bounded to {k_min}-{k_max}")


def rank_candidates(pool: Catalog, sc: Scores, allowed: np.ndarray) -> tuple[list[int], list[int]]:
    """Pool indices of the allowed tasks, best first, and the tie-group number of each (0: not tied).

    Order: score, then the secondary signal, higher first; exact ties (equal on both) by more distinct
    instructions, more examples (``meta["n_examples"]`` where recorded), then task id.
    """
    tasks = list(pool)
    score = np.nan_to_num(np.asarray(sc.score, dtype=np.float64), nan=-np.inf)
    sec = (np.nan_to_num(np.asarray(sc.secondary, dtype=np.float64), nan=-np.inf) if sc.secondary is not None
           else np.zeros(len(tasks)))
    idx = np.flatnonzero(np.asarray(allowed, dtype=bool))
    idx = idx[np.lexsort((-sec[idx], -score[idx]))]  # score first, then the secondary signal; stable
    s, t = score[idx], sec[idx]
    starts = np.flatnonzero(np.r_[True, ~(scores_close(s[1:], s[:-1]) & scores_close(t[1:], t[:-1]))])
    ends = np.r_[starts[1:], len(idx)]
    order = idx.tolist()
    group_of = [0] * len(order)
    g = 0
    for a, e in zip(starts[ends - starts > 1], ends[ends - starts > 1]):
        members = sorted(order[a:e], key=lambda i: (-len(set(tasks[i].instructions)), -_n_examples(tasks[i]),
                                                    tasks[i].id))
        g += 1
        order[a:e] = members
        group_of[a:e] = [g] * (e - a)
    return order, group_of


def _n_examples(task: Task) -> int:
    n = task.meta.get("n_examples") if isinstance(task.meta, dict) else None
    return int(n) if isinstance(n, (int, np.integer)) and not isinstance(n, bool) else 0

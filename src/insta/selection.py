"""Task selection: one interface for every method, and INSTA's instruction-similarity engine.

**The interface.** Every selection method (INSTA and its variants, lexical BM25, RoE, DSIR, random, all: see
:mod:`insta.methods`, ``load_method(name, **options)``) is a :class:`SelectionMethod`:
``method.select(target, pool, k)`` returns a :class:`Selection` (ranked :class:`TaskScore` s with the "why" of
each pick, tie groups, how k was chosen, what the method consumed, its configuration; ``to_dict``/``from_dict``).
The base class applies the leakage guard *before* any scoring (the target, its family, its BIG-bench parent and
anything excluded never reach the method: they cast no top-k vote, enter no BM25 statistics, are retrieved by
no target instance), ranks, marks ties and chooses k.

**Ranking and ties.** Tasks are ranked by the method's score, then by its secondary signal (INSTA: mean cosine
under ``max``/``topk-vote``, best-pair cosine under ``mean``; RoE: mean best cosine; hybrid: the instruction
part). Tasks equal on both (within :data:`TIE_TOLERANCE`) are an exact **tie group**: the method cannot tell
them apart (P3 datasets that share every template, e.g. anli / cb / mnli / snli). Within a group the task with
more distinct instructions comes first (more templates to render its training instances with: T0 found more
prompts per dataset to help zero-shot generalisation), then the one with more examples where the catalog
records a count, then the task id. Tie groups are marked in the table and in the JSON; ``ties="include"``
selects the whole group when the cut at k would split it.

**k.** A fixed ``k`` (default 5), or a rule that reads it off the scores (:class:`KRule`): ``gap`` (the largest
drop between consecutive scores), ``elbow`` (the knee of the sorted score curve) or ``threshold`` (scores at
least ``z`` standard deviations above the candidates' mean), within ``[k_min, k_max]``; the Selection reports
the chosen k and why.

**INSTA** (:class:`Selector`): cosine similarity over every (target instruction, source instruction) pair,
aggregated per source task by :func:`aggregate` (``mean``, ``max`` or ``topk-vote``, METHOD.md §1); the same
function scores leave-one-out identification (:mod:`insta.identification`).
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field, replace
from typing import Any, Callable, Iterable, Protocol, Sequence

import numpy as np

from .catalogs.base import Catalog
from .errors import InstaError
from .records import Example, Task

AGGREGATIONS = ("mean", "max", "topk-vote")
#: Scores this close (relative, at least absolute for |x| < 1) are equal: float noise must not decide a rank.
TIE_TOLERANCE = 1e-6
K_RULES = ("gap", "elbow", "threshold")
TIE_MODES = ("first", "include")
#: What a method may consume, in words (reported with every selection).
CONSUMPTIONS = {
    "instructions": "target and source task instructions",
    "target_samples": "unlabelled target instances (inputs with their answer options, no labels)",
    "source_instances": "instances of every source task (a fixed-size library per task)",
    "seed": "a random seed only",
    "nothing": "nothing but the pool",
}


class TextEncoder(Protocol):
    def encode(self, texts: Sequence[str]) -> np.ndarray: ...

    def describe(self) -> dict: ...


# ---------------------------------------------------------------- the result type


@dataclass
class TaskScore:
    """One ranked source task: its score, the evidence behind it (``why``) and its tie group (if tied)."""

    rank: int
    task: str
    score: float
    why: dict[str, Any] = field(default_factory=dict)
    tie_group: int | None = None

    # INSTA's "why" fields, as attributes (``None`` for other methods)
    @property
    def best_target_instruction(self) -> str | None:
        return self.why.get("best_target_instruction")

    @property
    def best_source_instruction(self) -> str | None:
        return self.why.get("best_source_instruction")

    @property
    def best_pair_cosine(self) -> float | None:
        return self.why.get("best_pair_cosine")

    @property
    def mean_cosine(self) -> float | None:
        return self.why.get("mean_cosine")

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"rank": self.rank, "task": self.task, "score": self.score, "why": dict(self.why)}
        if self.tie_group is not None:
            out["tie_group"] = self.tie_group
        return out

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "TaskScore":
        why = d.get("why", d.get("detail"))
        if why is None:  # an `insta select` file written before the "why" field: INSTA's pair at the top level
            why = {k: d[k] for k in ("best_target_instruction", "best_source_instruction", "best_pair_cosine",
                                     "mean_cosine", "max_cosine") if k in d}
        return cls(int(d["rank"]), str(d["task"]), float(d["score"]), dict(why or {}), d.get("tie_group"))


@dataclass
class Selection:
    """The ranked selection of one method for one target, with everything needed to reproduce and explain it.

    ``target``: what the target was (``task``/``catalog``/``family`` for a catalog task, ``instructions``,
    ``n_samples``); ``selected``: the ranked picks; ``ties``: the tie groups that touch the selection (every
    member, selected or not); ``k_choice``: how many and why; ``consumed``: what the method read;
    ``config``: the method, its parameters and the pool.
    """

    target: dict[str, Any]
    selected: list[TaskScore]
    config: dict[str, Any] = field(default_factory=dict)
    excluded: list[str] = field(default_factory=list)
    method: str = "insta-mean"
    label: str = ""
    consumed: list[str] = field(default_factory=list)
    n_pool: int = 0
    seconds: float = 0.0
    ties: list[dict[str, Any]] = field(default_factory=list)
    k_choice: dict[str, Any] = field(default_factory=dict)

    @property
    def task_ids(self) -> list[str]:
        return [s.task for s in self.selected]

    @property
    def params(self) -> dict[str, Any]:
        return self.config.get("params", {})

    @property
    def target_id(self) -> str | None:
        return self.target.get("id") or self.target.get("task")

    def to_dict(self) -> dict[str, Any]:
        return {
            "method": self.method,
            "label": self.label or self.method,
            "catalog": self.config.get("catalog"),
            "data_dir": self.config.get("data_dir"),
            "target": self.target,
            "k": len(self.selected),
            "k_choice": self.k_choice,
            "selected": [s.to_dict() for s in self.selected],
            "ties": self.ties,
            "consumed": list(self.consumed),
            "consumed_described": [CONSUMPTIONS.get(c, c) for c in self.consumed],
            "excluded": self.excluded,
            "n_pool": self.n_pool,
            "config": self.config,
            "seconds": round(self.seconds, 3),
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "Selection":
        """Read :meth:`to_dict` output (also the JSON of earlier versions: ``insta select`` files and the
        experiment's cached method results)."""
        target = d.get("target")
        if not isinstance(target, dict):
            target = {"task": target} if target else {}
        config = dict(d.get("config") or {})
        if "params" in d and "params" not in config:
            config["params"] = d["params"]
        for key in ("catalog", "data_dir"):
            if d.get(key) is not None:
                config.setdefault(key, d[key])
        return cls(
            target=target, selected=[TaskScore.from_dict(s) for s in d.get("selected", [])], config=config,
            excluded=list(d.get("excluded", [])), method=d.get("method") or config.get("method", "insta-mean"),
            label=d.get("label") or d.get("method") or "", consumed=list(d.get("consumed", ["instructions"])),
            n_pool=int(d.get("n_pool", config.get("n_pool_tasks", 0)) or 0), seconds=float(d.get("seconds", 0.0)),
            ties=list(d.get("ties", [])), k_choice=dict(d.get("k_choice") or {}),
        )


# ---------------------------------------------------------------- aggregation (selection and identification)


def topk_vote_weights(depth: int, n_queries: int) -> np.ndarray:
    """Weights for ranks 1..depth such that one rank-j hit outweighs any number of rank-(j+1) hits.

    With ``n_queries`` target instructions a task can collect at most ``n_queries`` hits per rank, so base
    ``n_queries + 1`` makes the vote lexicographic: rank-1 hits dominate, then rank-2, and so on.
    """
    base = float(n_queries + 1)
    return base ** np.arange(depth - 1, -1, -1, dtype=np.float64)


def tied(a: np.ndarray, b: np.ndarray) -> np.ndarray:
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
        new = np.r_[True, ~tied(v[1:], v[:-1])]
        gid = np.cumsum(new) - 1
        shared = np.bincount(gid, weights=pos_w) / np.bincount(gid)
        np.add.at(out[r if per_row else 0], owner[cols[cand]], shared[gid])
    return out / weights.sum() / (1 if per_row else n_rows)


# ---------------------------------------------------------------- ranking, ties and k


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
    if rule.rule == "gap":
        cuts = np.arange(k_min, min(k_max, n - 1) + 1)
        gaps = s[cuts - 1] - s[cuts]
        c = int(cuts[int(np.argmax(gaps))])
        return c, (f"largest score drop within ranks {k_min}-{k_max}: after rank {c} ({s[c - 1]:.4g} -> {s[c]:.4g}, "
                   f"{(s[c - 1] - s[c]) / sd:.2f} SD of the {n} candidates' scores)")
    if rule.rule == "elbow":
        span = s[0] - s[-1]
        if span <= 0:
            return k_min, "every candidate scores the same: k_min"
        x = np.arange(n) / max(1, n - 1)
        y = (s - s[-1]) / span
        below = (1.0 - x) - y  # how far the curve lies below the chord from the best to the worst candidate
        idx = np.arange(k_min, min(k_max, n - 1) + 1)  # 0-based knee positions: select the tasks above it
        c = int(idx[int(np.argmax(below[idx]))])
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
    starts = np.flatnonzero(np.r_[True, ~(tied(s[1:], s[:-1]) & tied(t[1:], t[:-1]))])
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


# ---------------------------------------------------------------- the interface


def leakage_guard(pool: Catalog, target: Task | None, exclude: Iterable[str] = (),
                  exclude_families: Iterable[str] = ()) -> list[str]:
    """Pool task ids never to select: the target task, its family and BIG-bench parent (for a catalog task),
    the tasks in ``exclude`` (ids or aliases) and every task of ``exclude_families`` (a family or task name)."""
    ids = {pool.resolve(t) if t in pool else t for t in exclude}
    fams = set(exclude_families)
    if target is not None:
        names = {target.id, target.family}
        parent = target.meta.get("parent") if isinstance(target.meta, dict) else None
        if parent:
            names.add(str(parent))
        ids |= names
        fams |= names
    return sorted(t.id for t in pool if t.id in ids or t.family in fams or t.id in fams)


FREE_TEXT_TARGET = "<target instructions>"


def as_target(target: Task | Sequence[str] | str) -> tuple[Task, bool]:
    """``(task, is_catalog_task)``: a catalog Task as is, instruction text(s) as a Task with no relatives."""
    if isinstance(target, Task):
        return target, True
    return Task(id=FREE_TEXT_TARGET, instructions=clean_instructions(target), catalog="",
                family=FREE_TEXT_TARGET), False


class SelectionMethod:
    """Base class of every selection method (the protocol: ``name``, ``label``, ``consumes``, ``params()``,
    ``describe()``, ``check(pool, k)``, ``select(target, pool, k, ...) -> Selection``).

    Subclasses set ``name`` / ``consumes`` / ``depends_on_target`` / ``uses_k`` and implement :meth:`_score`.
    Options common to all: ``label`` (a name for reports) and ``k`` (the default k of :meth:`select`: a number
    or a :class:`KRule` name).
    """

    name: str = ""
    consumes: tuple[str, ...] = ()
    depends_on_target: bool = True
    uses_k: bool = True
    #: its ``encoder`` option defaults to a configuration's shared encoder (experiment configs, transfer scoring)
    shared_encoder: bool = False

    def __init__(self, label: str | None = None, *, k: int | str | None = None, **options: Any):
        self.label = label or self.name
        if options:
            raise InstaError(f"method {self.name!r}: unknown option(s) {', '.join(sorted(options))}")
        self.default_k = parse_k(k) if k is not None else None

    def params(self) -> dict[str, Any]:
        """Everything that changes this method's output (for cache keys and the report)."""
        return {}

    def _all_params(self) -> dict[str, Any]:
        out = self.params()
        if self.default_k is not None:
            out["k"] = self.default_k.to_dict() if isinstance(self.default_k, KRule) else self.default_k
        return out

    def describe(self) -> dict[str, Any]:
        return {"method": self.name, "label": self.label, "consumes": list(self.consumes),
                "depends_on_target": self.depends_on_target, "params": self._all_params()}

    def check(self, pool: Catalog, k: int | str | KRule | None = None) -> None:
        """Raise a clear error if the method cannot run on this pool (before any work)."""
        kk = parse_k(k, self.default_k or 5)
        if self.uses_k and isinstance(kk, int) and kk > len(pool):
            raise InstaError(f"k={kk} is larger than the pool ({len(pool)} tasks)")

    def select(
        self,
        target: Task | Sequence[str] | str,
        pool: Catalog,
        k: int | str | KRule | None = None,
        *,
        target_samples: Sequence[Example] | None = None,
        exclude: Iterable[str] = (),
        exclude_families: Iterable[str] = (),
        ties: str = "first",
        target_info: dict[str, Any] | None = None,
    ) -> Selection:
        """Rank ``pool`` for ``target`` (a catalog Task, or instruction text(s)) and keep ``k`` tasks.

        ``k``: a number, a :class:`KRule` or its name (default: the method's ``k`` option, else 5);
        ``target_samples``: unlabelled target instances, for methods that consume them; ``exclude`` /
        ``exclude_families``: more tasks for the leakage guard; ``ties``: ``"first"`` keeps exactly k,
        ``"include"`` extends the cut to the end of a tie group it would split.
        """
        t0 = time.perf_counter()
        kk = parse_k(k, self.default_k or 5)
        if ties not in TIE_MODES:
            raise InstaError(f"ties must be one of {', '.join(TIE_MODES)} (got {ties!r})")
        task, is_task = as_target(target)
        excluded = leakage_guard(pool, task if is_task else None, exclude, exclude_families)
        gone = set(excluded)
        allowed = np.asarray([t not in gone for t in pool.ids], dtype=bool)
        n_cand = int(allowed.sum())
        who = f"target {task.id!r}" if is_task else "the target"
        if n_cand == 0:
            raise InstaError(f"the pool has no task left for {who} after the leakage guard")
        if self.uses_k and isinstance(kk, int) and kk > n_cand:
            raise InstaError(f"k={kk} is larger than the pool ({n_cand} tasks after excluding "
                             f"{'the target and its relatives' if is_task else 'the excluded tasks'})")
        samples = list(target_samples or [])
        if "target_samples" in self.consumes and not samples:
            raise InstaError(f"method {self.name!r} needs unlabelled target instances of {who} "
                             "(insta select: --target-examples FILE, or --task with examples)")
        sc = self._score(task, pool, samples, allowed)
        order, group_of = rank_candidates(pool, sc, allowed)
        ids = pool.ids
        if not self.uses_k:  # a method that takes every task does not rank them: list them by id
            order, group_of = map(list, zip(*sorted(zip(order, group_of), key=lambda p: ids[p[0]])))
            n_sel, k_choice = len(order), {"rule": "all", "k": len(order), "why": "the method takes every pool task"}
        elif isinstance(kk, int):
            n_sel, k_choice = kk, {"rule": "fixed", "k": kk}
        else:
            if not self.depends_on_target:
                raise InstaError(f"method {self.name!r} does not score by relevance: give a fixed k, not {kk.rule!r}")
            n_sel, why = choose_k([sc.score[i] for i in order], kk)
            k_choice = {**kk.to_dict(), "k": n_sel, "why": why}
        if self.uses_k and ties == "include" and 0 < n_sel < len(order) and group_of[n_sel - 1] \
                and group_of[n_sel] == group_of[n_sel - 1]:
            end = n_sel
            while end < len(order) and group_of[end] == group_of[n_sel - 1]:
                end += 1
            k_choice["extended_for_tie"] = {"from": n_sel, "to": end}
            n_sel = end
        k_choice["k"] = n_sel
        numbering: dict[int, int] = {}
        for g in group_of[:n_sel]:
            if g and g not in numbering:
                numbering[g] = len(numbering) + 1
        chosen = order[:n_sel]
        why = sc.why or (lambda i: {})
        selected = [TaskScore(pos + 1, ids[i], float(sc.score[i]), why(i), numbering.get(group_of[pos]))
                    for pos, i in enumerate(chosen)]
        tie_groups = []
        if self.uses_k:
            chosen_ids = {ids[i] for i in chosen}
            for g, num in numbering.items():
                first = group_of.index(g)
                members = [ids[order[p]] for p in range(first, len(order)) if group_of[p] == g]
                tie_groups.append({"group": num, "score": float(sc.score[order[first]]), "tasks": members,
                                   "selected": [m for m in members if m in chosen_ids],
                                   "order_within": "more distinct instructions, more examples, then task id"})
        tinfo = {"instructions": list(task.instructions)}
        if is_task:
            tinfo.update({"task": task.id, "catalog": task.catalog, "family": task.family})
        if samples:
            tinfo["n_samples"] = len(samples)
        tinfo.update(target_info or {})
        config = {"method": self.name, "label": self.label, "params": self._all_params(), "catalog": pool.name,
                  "n_pool_tasks": len(pool), "k": n_sel,
                  **({"secondary": sc.secondary_name} if sc.secondary_name else {}), **sc.info}
        return Selection(target=tinfo, selected=selected, config=config, excluded=excluded, method=self.name,
                         label=self.label, consumed=list(self.consumes), n_pool=n_cand,
                         seconds=time.perf_counter() - t0, ties=tie_groups, k_choice=k_choice)

    def _score(self, target: Task, pool: Catalog, samples: list[Example], allowed: np.ndarray) -> Scores:
        """Scores of every pool task; ``allowed`` marks the candidates (excluded tasks must not influence them)."""
        raise NotImplementedError


# ---------------------------------------------------------------- INSTA


def clean_instructions(instructions: Iterable[str] | str) -> list[str]:
    """Strip and de-duplicate instructions; an error if none is left."""
    if isinstance(instructions, str):
        instructions = [instructions]
    out = list(dict.fromkeys(s.strip() for s in instructions if isinstance(s, str) and s.strip()))
    if not out:
        raise InstaError("the target has no instruction (empty text)")
    return out


def unit_rows(emb: np.ndarray) -> np.ndarray:
    """Rows scaled to unit length (left as they are when they already are, so cached vectors stay bit-equal)."""
    emb = np.asarray(emb, dtype=np.float32)
    norms = np.linalg.norm(emb, axis=1, keepdims=True)
    if emb.size and np.all(np.abs(norms - 1.0) < 1e-4):
        return emb
    return emb / np.maximum(norms, 1e-12)


class Selector:
    """INSTA's engine: scores a catalog's tasks against target instructions with a sentence encoder.

    The catalog's instructions are embedded once (on first use, through the encoder's cache). ``texts_of``
    (optional) maps a task to the texts to embed for its instructions, one per instruction (format-aware
    INSTA appends each instruction's output space, :mod:`insta.taskformat`).
    """

    def __init__(self, catalog: Catalog, encoder: TextEncoder, aggregation: str = "mean", vote_depth: int = 10,
                 *, texts_of: Callable[[Task], list[str]] | None = None):
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
        """Unit-length embeddings of ``texts`` (each distinct text encoded once)."""
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
        from .methods import InstaMethod

        method = InstaMethod(encoder=self.encoder, aggregation=self.aggregation, vote_depth=self.vote_depth)
        method.use_selector(self)
        return method.select(clean_instructions(target_instructions), self.catalog, k, exclude=exclude,
                             exclude_families=exclude_families, target_info=target, ties=ties)


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
    k: int | str | KRule = 5,
    *,
    encoder: TextEncoder | str | None = None,
    aggregation: str = "mean",
    exclude: Iterable[str] = (),
    exclude_families: Iterable[str] = (),
) -> Selection:
    """One-call INSTA: the top ``k`` tasks of ``catalog`` for a target task (its relatives excluded) or text(s)."""
    from .methods import load_method

    method = load_method("insta-mean", encoder=encoder, aggregation=aggregation)
    return method.select(target, catalog, k, exclude=exclude, exclude_families=exclude_families)


def with_instructions(task: Task, n: int | None) -> Task:
    """``task`` with only its first ``n`` (distinct, non-empty) instructions (all when ``n`` is ``None``)."""
    return task if n is None else replace(task, instructions=clean_instructions(task.instructions)[:n])

"""The interface every selection method implements: :class:`SelectionMethod` (leakage guard before scoring,
ranking, tie groups, the k rule) returning a :class:`~insta.selection.result.Selection`."""
from __future__ import annotations

import time
from typing import Any, Iterable, Sequence

import numpy as np

from ..catalogs.base import Catalog
from ..errors import InstaError
from ..records import Example, Task
from .ranking import TIE_MODES, KRule, Scores, choose_k, parse_k, rank_candidates
from .result import Selection, TaskScore
from .target import as_target, leakage_guard


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

    @classmethod
    def why_lines(cls, why: dict[str, Any], n_samples: int | None = None) -> list[str]:
        """The evidence of one pick in words (the "why" column of ``insta select``): each method renders the keys
        of its own ``why``; every method may give a ``reason``."""
        return [str(why["reason"])] if "reason" in why else []

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
        samples = list(target_samples or [])
        self._check_candidates(kk, int(allowed.sum()), task, is_task, samples)
        sc = self._score(task, pool, samples, allowed)
        order, group_of = rank_candidates(pool, sc, allowed)
        if not self.uses_k:  # a method that takes every task does not rank them: list them by id
            ids = pool.ids
            order, group_of = map(list, zip(*sorted(zip(order, group_of), key=lambda p: ids[p[0]])))
        n_sel, k_choice = self._choose_k(kk, [sc.score[i] for i in order], group_of, ties)
        selected, tie_groups = self._picks(pool.ids, sc, order, group_of, n_sel)
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
                         label=self.label, consumed=list(self.consumes), n_pool=int(allowed.sum()),
                         seconds=time.perf_counter() - t0, ties=tie_groups, k_choice=k_choice)

    def _check_candidates(self, kk: int | KRule, n_cand: int, task: Task, is_task: bool,
                          samples: list[Example]) -> None:
        """Clear errors before any scoring: no candidate left, k above the candidates, missing target samples."""
        who = f"target {task.id!r}" if is_task else "the target"
        if n_cand == 0:
            raise InstaError(f"the pool has no task left for {who} after the leakage guard")
        if self.uses_k and isinstance(kk, int) and kk > n_cand:
            raise InstaError(f"k={kk} is larger than the pool ({n_cand} tasks after excluding "
                             f"{'the target and its relatives' if is_task else 'the excluded tasks'})")
        if "target_samples" in self.consumes and not samples:
            raise InstaError(f"method {self.name!r} needs unlabelled target instances of {who} "
                             "(insta select: --target-examples FILE, or --task with examples)")

    def _choose_k(self, kk: int | KRule, ranked_scores: list[float], group_of: list[int],
                  ties: str) -> tuple[int, dict[str, Any]]:
        """How many of the ranked candidates to keep, and the ``k_choice`` record saying why."""
        if not self.uses_k:
            n = len(group_of)
            return n, {"rule": "all", "k": n, "why": "the method takes every pool task"}
        if isinstance(kk, int):
            n_sel, k_choice = kk, {"rule": "fixed", "k": kk}
        else:
            if not self.depends_on_target:
                raise InstaError(f"method {self.name!r} does not score by relevance: give a fixed k, not {kk.rule!r}")
            n_sel, why = choose_k(ranked_scores, kk)
            k_choice = {**kk.to_dict(), "k": n_sel, "why": why}
        if (ties == "include" and 0 < n_sel < len(group_of) and group_of[n_sel - 1]
                and group_of[n_sel] == group_of[n_sel - 1]):
            end = n_sel
            while end < len(group_of) and group_of[end] == group_of[n_sel - 1]:
                end += 1
            k_choice["extended_for_tie"] = {"from": n_sel, "to": end}
            n_sel = end
        k_choice["k"] = n_sel
        return n_sel, k_choice

    def _picks(self, ids: list[str], sc: Scores, order: list[int], group_of: list[int],
               n_sel: int) -> tuple[list[TaskScore], list[dict[str, Any]]]:
        """The first ``n_sel`` ranked tasks, and the tie groups that touch them (numbered in rank order)."""
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
        return selected, tie_groups

    def _score(self, target: Task, pool: Catalog, samples: list[Example], allowed: np.ndarray) -> Scores:
        """Scores of every pool task; ``allowed`` marks the candidates (excluded tasks must not influence them)."""
        raise NotImplementedError


def ranking_scores(method: Any, target: Task, pool: Catalog, samples: Sequence[Example] = ()) -> dict[str, float]:
    """Scores that reproduce ``method``'s own ranking of the whole pool (its target's relatives left out), equal
    only within a tie group.

    A method ranks by its score, then by its secondary signal (INSTA: mean or best-pair cosine); tasks equal on
    both form a tie group (:class:`~insta.selection.result.Selection`), which it orders by a fixed rule, not by
    relevance: they stay tied here. Scoring against a transfer matrix and identification both read rankings so.
    """
    n = len(pool) - len(leakage_guard(pool, target))
    if n < 2:
        return {}
    res = method.select(target, pool, n, target_samples=list(samples))
    out: dict[str, float] = {}
    rank, prev = -1, None
    for s in res.selected:
        if not (s.tie_group and s.tie_group == prev):
            rank += 1
        prev = s.tie_group
        out[s.task] = float(-rank)
    return out

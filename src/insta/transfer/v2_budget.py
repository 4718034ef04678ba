"""Matrix v2's training budget per (source, seed), chosen from a learnability screen's learning curve.

The pre-registered rule (``experiments/transfer-v2-bigbench-smollm2/PREREGISTRATION.md``, "Sources", "Budget per
(source, seed)"): among the curve's budgets with at least ``min_instances`` instances, the cheapest (fewest
instances; then the lower learning rate) whose oracle change of ``metric`` (``margin_z``), averaged over the
curve's targets, is at least ``fraction`` (0.9) of the largest such average among those budgets.
:func:`choose_budget` applies it to the ``curve`` rows of a ``screen.json``; a transfer config's ``budget``
section (:class:`insta.transfer.config.BudgetRule`) makes a run use the choice in place of ``instances`` and
``train.learning_rate``, before the cost rule, frozen with the targets (:mod:`insta.transfer.v2_decision`).

What the pre-registration leaves open, decided before the curve's first cell:

- a row whose verdict is ``fail`` (its CI reaches 0) still counts: the rule reads the oracle's change, not the
  verdict;
- with several seeds, a target's value at a budget is the mean over its seeds' rows;
- a needed row (a candidate budget, any curve target, any seed) that is ``pending``: no choice yet (``pending``);
  the plan lists the rows and costs the cheapest candidate, the run refuses unless told to go on with that
  provisional choice (``--allow-partial-screen``);
- a needed row missing from the curve, or with no value of ``metric`` (its base model is constant, or the change
  is not finite): the rule cannot average over the curve's targets as pre-registered (``unusable``); the run
  refuses whatever the flags, and the message says how to go on (other ``curve.targets`` in the screen, or an
  explicit ``instances`` / ``train.learning_rate`` without ``budget``, stated as a deviation);
- the largest average is 0 or below: no budget raises the metric on average, "90% of the largest" would ask for
  more than the largest, and more training buys nothing measurable: the cheapest candidate is taken, with a note;
- averages are compared with a tolerance of 1e-9 (relative to the largest), so a value exactly at ``fraction`` of
  the largest qualifies whatever the float rounding.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Sequence

from ..errors import InstaError

#: averages this close to the threshold (relative to the largest) count as reaching it
TOLERANCE = 1e-9


@dataclass
class BudgetChoice:
    """The budget rule applied to one state of a learning curve (see the module docstring)."""

    instances: int  # the choice (while not final: the cheapest candidate, provisional)
    learning_rate: float
    status: str  # final | pending | unusable
    rule: dict[str, Any]  # min_instances, fraction, metric
    targets: list[str]  # the curve's targets, whose values are averaged
    table: list[dict[str, Any]]  # every budget of the curve: per-target values, mean, candidate / qualifies / chosen
    best: float | None = None  # the largest candidate average (final only)
    threshold: float | None = None
    pending: list[str] = field(default_factory=list)  # needed rows without a verdict yet
    unusable: list[str] = field(default_factory=list)  # needed rows missing or without a value, and why
    notes: list[str] = field(default_factory=list)
    screen: str = ""  # where the curve was read (for the plan and the report)

    @property
    def final(self) -> bool:
        return self.status == "final"

    def to_dict(self) -> dict[str, Any]:
        return {"instances": self.instances, "learning_rate": self.learning_rate, "status": self.status,
                "final": self.final, "rule": dict(self.rule), "targets": list(self.targets), "table": self.table,
                "best": self.best, "threshold": self.threshold, "pending": list(self.pending),
                "unusable": list(self.unusable), "notes": list(self.notes), "screen": self.screen}


def _budget(row: dict[str, Any]) -> tuple[int, float]:
    b = row.get("budget") or {}
    try:
        return int(b["instances"]), float(b["learning_rate"])
    except (KeyError, TypeError, ValueError):
        raise InstaError(f"learning curve: a row of {row.get('task')!r} has no budget (instances, learning_rate)"
                         ) from None


def budget_name(instances: int, learning_rate: float) -> str:
    """``400 inst, lr 5e-05``: one budget, as the screen writes it."""
    return f"{instances} inst, lr {learning_rate:g}"


def _value(row: dict[str, Any], metric: str) -> float | None:
    """The oracle's change of ``metric`` in one curve row (``None``: not measured, or not finite)."""
    d = row.get(metric)
    v = d.get("change") if isinstance(d, dict) else None
    return float(v) if isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) else None


def _mean(xs: Sequence[float]) -> float:
    return sum(xs) / len(xs)


def _curve_table(rows: dict[tuple[str, tuple[int, float]], list[dict[str, Any]]], targets: list[str],
                 budgets: list[tuple[int, float]], cands: set[tuple[int, float]], metric: str
                 ) -> tuple[list[dict[str, Any]], list[str], list[str]]:
    """Per budget: each target's value (mean over seeds) and the mean over targets; plus the rows the rule needs
    (``cands``) that are pending, and those missing or without a value (with why)."""
    pending: list[str] = []
    unusable: list[str] = []
    table = []
    for b in budgets:
        needed = b in cands
        per: dict[str, float | None] = {}
        for t in targets:
            here = rows.get((t, b), [])
            name = f"{t} at {budget_name(*b)}"
            if not here:
                per[t] = None
                if needed:
                    unusable.append(f"{name}: no row in the curve")
                continue
            waiting = [r for r in here if r.get("status") == "pending"]
            values = [_value(r, metric) for r in here]
            if waiting:
                per[t] = None
                if needed:
                    pending += [f"{name} (seed {r.get('seed')})" for r in waiting]
            elif any(v is None for v in values):
                per[t] = None
                if needed:
                    bad = next(r for r, v in zip(here, values) if v is None)
                    unusable.append(f"{name}: no {metric} change ({bad.get('status')}: {bad.get('why', '?')})")
            else:
                per[t] = _mean([v for v in values if v is not None])
        known = [v for v in per.values() if v is not None]
        table.append({"instances": b[0], "learning_rate": b[1], "candidate": needed, "per_target": per,
                      "mean": _mean(known) if len(known) == len(targets) else None, "qualifies": None,
                      "chosen": False})
    return table, pending, unusable


def choose_budget(curve: Sequence[dict[str, Any]], *, min_instances: int = 400, fraction: float = 0.9,
                  metric: str = "margin_z", targets: Sequence[str] | None = None) -> BudgetChoice:
    """The pre-registered budget rule on a learning curve's rows (``screen.json``'s ``curve``: ``task``,
    ``budget`` {instances, learning_rate}, ``seed``, ``status`` and the metric's ``change``). ``targets``: the
    curve's targets as the screen config lists them (default: the rows' tasks, in order); every one of them must
    have a value at every candidate budget. One error when the curve has no budget of ``min_instances`` or more."""
    if not 0 < fraction <= 1:
        raise InstaError(f"budget.fraction must be in (0, 1] (got {fraction!r})")
    if not isinstance(curve, (list, tuple)) or not all(isinstance(r, dict) for r in curve):
        raise InstaError("the learning curve must be a list of rows (screen.json's 'curve')")
    targets = list(targets) if targets else list(dict.fromkeys(str(r.get("task")) for r in curve))
    rows: dict[tuple[str, tuple[int, float]], list[dict[str, Any]]] = {}
    for r in curve:
        if r.get("task") in targets:
            rows.setdefault((r["task"], _budget(r)), []).append(r)
    budgets = sorted({b for _, b in rows})
    cands = [b for b in budgets if b[0] >= min_instances]
    if not targets or not cands:
        have = ", ".join(budget_name(*b) for b in budgets) or "no rows"
        raise InstaError(f"the learning curve has no budget with at least {min_instances} instances ({have})")
    rule = {"min_instances": min_instances, "fraction": fraction, "metric": metric}
    table, pending, unusable = _curve_table(rows, targets, budgets, set(cands), metric)
    cheapest = cands[0]
    status = "unusable" if unusable else "pending" if pending else "final"
    choice = BudgetChoice(instances=cheapest[0], learning_rate=cheapest[1], status=status, rule=rule,
                          targets=targets, table=table, pending=pending, unusable=unusable)
    if status != "final":
        choice.notes.append(f"no choice yet: the cheapest candidate ({budget_name(*cheapest)}) stands in, "
                            "provisionally")
        return choice
    means = {(r["instances"], r["learning_rate"]): r["mean"] for r in table if r["candidate"]}
    best = max(means.values())
    choice.best = best
    if best <= 0:
        chosen = cheapest
        choice.notes.append(f"no candidate budget raises {metric} on average (largest {best:+.4g}): "
                            f"{fraction:.0%} of it has no meaning, and more training buys nothing measurable; the "
                            "cheapest candidate is taken")
    else:
        choice.threshold = fraction * best
        slack = TOLERANCE * max(1.0, abs(best))
        chosen = next(b for b in cands if means[b] >= choice.threshold - slack)
        for r in table:
            if r["candidate"]:
                r["qualifies"] = means[(r["instances"], r["learning_rate"])] >= choice.threshold - slack
    choice.instances, choice.learning_rate = chosen
    for r in table:
        r["chosen"] = (r["instances"], r["learning_rate"]) == chosen
    return choice


def curve_budget(src: Any, *, min_instances: int = 400, fraction: float = 0.9, metric: str = "margin_z"
                 ) -> BudgetChoice:
    """The rule on a screen's learning curve (``src``: :func:`insta.transfer.v2_targets.read_screen`'s
    :class:`~insta.transfer.v2_targets.ScreenSource`): the ``curve`` rows of its ``screen.json``, averaged over its
    config's ``curve.targets``. For a notebook too: ``curve_budget(read_screen("configs/screen-....yaml"))``."""
    try:
        choice = choose_budget(src.summary.get("curve") or [], min_instances=min_instances, fraction=fraction,
                               metric=metric, targets=src.screen.cfg.curve.targets)
    except InstaError as err:
        raise InstaError(f"{src.folder / 'screen.json'}: {err}") from None
    choice.screen = str(src.folder)
    return choice


def budget_lines(d: dict[str, Any]) -> list[str]:
    """A budget choice (:meth:`BudgetChoice.to_dict`, as frozen) as printable lines: the rule, the curve's table,
    the choice or what it waits for."""
    rule = d["rule"]
    metric = rule["metric"]
    short = [t.split(":", 1)[-1] for t in d["targets"]]
    lines = [f"budget per (source, seed) from the learning curve of {d.get('screen') or 'the screen'}: the cheapest "
             f"of the budgets with >= {rule['min_instances']} instances whose mean {metric} change over "
             f"{len(short)} target(s) is >= {rule['fraction']:g} x the largest"]

    def num(v: float | None) -> str:
        return "n/a" if v is None else f"{v:+.3f}"

    measured = any(v is not None for r in d["table"] for v in r["per_target"].values())
    if not measured:
        every = "; ".join(budget_name(r["instances"], r["learning_rate"]) for r in d["table"])
        lines.append(f"  no row of the curve is measured yet ({every})")
    for r in d["table"] if measured else []:
        tags = [] if r["candidate"] else [f"below {rule['min_instances']} instances"]
        if r.get("qualifies") is not None:
            tags.append(f">= {rule['fraction']:g} x largest" if r["qualifies"] else "below the threshold")
        if r.get("chosen"):
            tags.append("CHOSEN")
        per = ", ".join(f"{s} {num(r['per_target'].get(t))}" for s, t in zip(short, d["targets"]))
        lines.append(f"  {budget_name(r['instances'], r['learning_rate'])}: {per}; mean {num(r['mean'])}"
                     + (f" ({'; '.join(tags)})" if tags else ""))
    now = budget_name(d["instances"], d["learning_rate"])
    if d["status"] == "final":
        best = ("" if d.get("threshold") is None
                else f" (largest mean {d['best']:+.3f}, threshold {d['threshold']:+.3f})")
        lines.append(f"  -> {now}{best}")
    elif d["status"] == "pending":
        shown = ", ".join(d["pending"][:3]) + (f" and {len(d['pending']) - 3} more" if len(d["pending"]) > 3 else "")
        lines.append(f"  -> NOT final: {len(d['pending'])} curve row(s) the rule needs are pending: {shown}")
    else:
        lines.append("  -> unusable: the rule cannot average over the curve's targets: " + "; ".join(d["unusable"]))
    lines += ["  " + n for n in d.get("notes", [])]
    return lines


def check_budget_final(d: dict[str, Any] | None, allow_partial: bool) -> None:
    """Refuse a budget the rule has not chosen: an unusable curve always, a pending one unless ``allow_partial``
    (the cheapest candidate then stands in, and is frozen with the targets)."""
    if d is None:
        return
    if d["status"] == "unusable":
        raise InstaError(f"training budget: the learning curve cannot give the pre-registered choice ("
                         f"{'; '.join(d['unusable'])}): rerun the screen with other curve.targets, or set instances "
                         "and train.learning_rate without `budget` and state the deviation")
    if d["status"] == "pending" and not allow_partial:
        raise InstaError(f"training budget is not final: the screen's learning curve has {len(d['pending'])} "
                         "pending row(s) the rule needs; run when it is complete (or pass --allow-partial-screen "
                         f"to train at {budget_name(d['instances'], d['learning_rate'])})")


__all__ = ["BudgetChoice", "budget_lines", "budget_name", "check_budget_final", "choose_budget", "curve_budget"]

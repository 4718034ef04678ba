"""The target decision of a matrix-v2 run (``targets: {from_screen: ...}``), made before its first cell.

:func:`decide_targets` applies the screen rule (:mod:`insta.transfer.v2_targets`), evaluates each target on the
screen's own split, then applies the cost rule (:mod:`insta.transfer.v2_cost`). The run refuses while the screen's
targets are not final (:func:`check_targets_final`, unless ``--allow-partial-screen``) and writes the decision to
``<out>/targets.json`` before its first cell (:func:`freeze_targets`): a resumed run keeps it, whatever the screen
or the measured costs say later, so nothing is decided after a v2 cell exists. With a ``budget`` section the
decision also holds the training budget chosen from the screen's learning curve (:mod:`insta.transfer.v2_budget`):
the config applies it to ``instances`` / ``train.learning_rate`` before the cost rule reads them, and a resumed
run takes it from the frozen file. A ``targets.json`` frozen by another configuration is replaced only while
``<out>`` holds no cell (and the log says so); with cells, the run refuses: two designs would share one folder.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..errors import InstaError
from ..util.helpers import content_hash

if TYPE_CHECKING:  # pragma: no cover
    from .config import TransferConfig

#: ``run`` below is a :class:`insta.transfer.runner.TransferRun` (typed ``Any``: the runner imports this module)

FROZEN_TARGETS = "targets.json"
#: the config keys the decision depends on (another value: the next run decides again)
DECISION_KEYS = ("targets", "cost", "instances", "sources", "seeds", "subset_seeds", "model", "train", "eval", "pool")


def decision_identity(cfg: TransferConfig) -> str:
    """What a frozen decision depends on: the config keys that choose the targets, the budget and the cost
    (``budget`` only when the config has one, so a config without it keeps the identity it had before)."""
    keys = DECISION_KEYS + (("budget",) if cfg.raw.get("budget") is not None else ())
    return content_hash({k: cfg.raw.get(k) for k in keys})


def read_frozen_targets(out: str | Path, identity: str, log: Any = None) -> dict[str, Any] | None:
    """The decision a run of this configuration froze under ``out`` (``None``: none yet). A file frozen by
    another configuration (or unreadable) is refused while ``out`` holds cells (replacing it would mix two
    designs in one folder); with no cell it is replaced by the next run, and ``log`` says so."""
    path = Path(out) / FROZEN_TARGETS
    if not path.exists():
        return None
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError, RecursionError):
        data, why = None, "cannot be read"
    else:
        why = "" if isinstance(data, dict) and isinstance(data.get("targets"), list) else "is not a target decision"
    if not why and data.get("identity") == identity:
        return data
    why = why or f"was frozen by another configuration (at {data.get('frozen_at', 'an unknown time')})"
    cells = Path(out) / "cells"
    n_cells = sum(1 for _ in cells.glob("*.json")) if cells.is_dir() else 0
    if n_cells:
        raise InstaError(f"{path} {why}, and {Path(out)} holds {n_cells} cell(s) of a run: deciding again would "
                         "mix two designs in one folder; give this configuration another --out (or move "
                         f"{Path(out)} away to start over)")
    if log is not None:
        log(f"targets: {path} {why}; {Path(out)} holds no cell yet, so this configuration decides again and its "
            "run replaces the file")
    return None


def apply_budget(cfg: TransferConfig, budget: dict[str, Any]) -> None:
    """Train every (source, seed) at a budget choice's instances and learning rate (before the cost rule)."""
    cfg.instances = int(budget["instances"])
    cfg.train.learning_rate = float(budget["learning_rate"])
    written = cfg.written.setdefault("train", [])
    if "learning_rate" not in written:
        written.append("learning_rate")


def decide_targets(run: Any, prior: tuple[float, float]) -> None:
    """Set the run's targets (and ``cfg.targets``) from the screen rule and the cost rule, or from the frozen
    decision; each target keeps the screen's evaluation examples (its oracle was evaluated on them). ``prior``:
    a-priori seconds per training instance and per evaluated example, for what the screen has not measured."""
    from .v2_targets import screen_candidate

    cfg = run.cfg
    frozen = read_frozen_targets(run.out, decision_identity(cfg), run.log)
    if frozen is not None:
        cfg.targets = list(frozen["targets"])
        if frozen.get("budget"):
            apply_budget(cfg, frozen["budget"])
    elif cfg.budget_choice is not None:
        apply_budget(cfg, cfg.budget_choice.to_dict())
    run.load_targets()
    cands = {t.id: screen_candidate(cfg.screen, t.id, t.task, t.catalog) for t in run.targets}
    for t in run.targets:
        t.eval_examples = list(cands[t.id].eval_examples)
    if frozen is not None:
        run.target_decision = {**frozen, "frozen": True}
        if frozen["rule"]["targets"] != cfg.target_choice.targets:
            run.log(f"targets: kept as frozen in {run.out / FROZEN_TARGETS} ({frozen.get('frozen_at')}); the "
                    "screen rule now gives another list")
        now = cfg.budget_choice
        if frozen.get("budget") and now is not None and (now.instances, now.learning_rate) != (
                frozen["budget"]["instances"], frozen["budget"]["learning_rate"]):
            run.log(f"budget: kept as frozen in {run.out / FROZEN_TARGETS}; the learning curve now gives "
                    f"{now.instances} instances at lr {now.learning_rate:g}")
        return
    decision = cost_decision(run, cands, prior)
    kept = set(decision["kept"])
    run.targets = [t for t in run.targets if t.id in kept]
    cfg.targets = [t.id for t in run.targets]
    run.target_decision = {"targets": list(cfg.targets), "rule": cfg.target_choice.to_dict(), "cost": decision,
                           "screen": str(cfg.screen.folder), "frozen": False}
    if cfg.budget_choice is not None:
        run.target_decision["budget"] = cfg.budget_choice.to_dict()


def cost_decision(run: Any, cands: dict[str, Any], prior: tuple[float, float]) -> dict[str, Any]:
    """The cost rule on the rule's targets (``cands``: target -> its screen candidate)."""
    from .v2_cost import apply_cost_rule, eval_tokens, gpu_inputs, measured_inputs, n_trainings

    cfg = run.cfg
    if cfg.cost.estimate == "gpu":
        src = run.catalog(cfg.pool.catalog, cfg.pool.split)
        inputs = gpu_inputs(cfg.model, cands, [t for t in src if t.has_examples],
                            (cfg.train.max_source_length, cfg.train.max_target_length), cfg.eval.max_source_length)
    else:
        tokens = eval_tokens(cfg.model, cands, cfg.eval.max_source_length) if cfg.cost.rank_by == "tokens" else None
        inputs = measured_inputs(cfg.screen, cands, *prior, tokens=tokens)
    n_src = cfg.sources.n or len(cfg.sources.list)
    trainings = n_trainings(n_src, cfg.seeds, cfg.subset_seeds.seeds, cfg.subset_seeds.every)
    floor = min(cfg.target_rule.min, len(cands))
    decision = apply_cost_rule(list(cands), inputs, trainings, cfg.instances, cfg.cost.budget_hours, floor)
    subset = trainings - n_src * len(cfg.seeds)
    if subset:  # the cost of the reliability seeds: each is one more training and one more model to evaluate
        per_model = (cfg.instances * inputs.train_s_per_instance
                     + sum(inputs.n_eval[t] * inputs.eval_s[t] for t in decision["kept"]))
        decision["subset_seeds"] = {"trainings": subset, "hours": round(subset * per_model / 3600, 2)}
    return decision


def check_targets_final(run: Any) -> None:
    """Refuse targets, or a training budget, that are not final yet (unless ``allow_partial_screen``; a budget
    the learning curve cannot give, always); a frozen decision stands."""
    from .v2_budget import check_budget_final

    d = run.target_decision
    if d is None or d.get("frozen"):
        return
    choice = run.cfg.target_choice
    if not choice.final and not run.allow_partial_screen:
        raise InstaError(f"targets are not final: the screen has {len(choice.pending)} pending candidate(s); "
                         "run when it is complete (or pass --allow-partial-screen)")
    check_budget_final(d.get("budget"), run.allow_partial_screen)


def freeze_targets(run: Any) -> None:
    """Write the decision to ``<out>/targets.json`` (before the first cell; a frozen one is kept as it is)."""
    from ..util.helpers import timestamp
    from ..util.paths import atomic_write_json

    d = run.target_decision
    if d is None or d.get("frozen"):
        return
    run.out.mkdir(parents=True, exist_ok=True)
    atomic_write_json(run.out / FROZEN_TARGETS, {**{k: v for k, v in d.items() if k != "frozen"},
                                                 "identity": decision_identity(run.cfg), "frozen_at": timestamp()})


def decision_lines(run: Any) -> list[str]:
    """The target rule, the cost rule, the source rule and the seeds of a matrix-v2 run, as printable lines."""
    from .v2_cost import cost_lines

    d, cfg = run.target_decision, run.cfg
    assert d is not None
    choice = cfg.target_choice
    lines = [choice.status_line() if not d.get("frozen") else
             f"targets frozen in {run.out / FROZEN_TARGETS} at {d.get('frozen_at')} (decided before the first cell)"]
    lines += ["  " + n for n in choice.notes]
    lines.append(f"  rule's targets ({len(choice.targets)}; screen order, v1's last): " + ", ".join(choice.targets))
    if choice.pending:
        lines.append(f"  pending in the screen ({len(choice.pending)}): " + ", ".join(choice.pending))
    if d.get("budget"):
        from .v2_budget import budget_lines

        lines += budget_lines(d["budget"])
    lines += cost_lines(d["cost"])
    budget_status = (d.get("budget") or {}).get("status", "final")
    if not d.get("frozen") and budget_status == "unusable":
        lines.append("the run refuses: the learning curve cannot give the budget (see above)")
    elif not d.get("frozen") and (not choice.final or budget_status == "pending"):
        lines.append("the run refuses until the screen is complete (--allow-partial-screen overrides)")
    near = [s for s, r in run.source_rules.items() if r.get("rule") == "nearest"]
    if near:
        lines.append(f"sources: {len(near)} keyword-nearest ({cfg.sources.nearest} per target), "
                     f"{len(run.sources) - len(near)} by spread")
    if cfg.subset_seeds.seeds:
        lines.append(f"seeds: {cfg.seeds} on every source, {cfg.subset_seeds.seeds} also on one source in "
                     f"{cfg.subset_seeds.every} (positions 0, {cfg.subset_seeds.every}, ... of the source order; "
                     f"{len(run.units()) - 1} trainings)")
    return lines


def oracle_line(oracle: dict[str, Any]) -> str:
    """The oracle reference row of a plan in one line."""
    if oracle.get("why"):
        return f"oracle reference row: none ({oracle['why']})"
    rows = oracle["targets"]
    have = [t for t, r in rows.items() if "transfer" in r]
    return (f"oracle reference row (not a source): the screen's oracle of {len(have)} of {len(rows)} targets, on the "
            "same evaluation examples")


__all__ = ["DECISION_KEYS", "FROZEN_TARGETS", "apply_budget", "check_targets_final", "cost_decision", "decide_targets",
           "decision_identity", "decision_lines", "freeze_targets", "oracle_line", "read_frozen_targets"]

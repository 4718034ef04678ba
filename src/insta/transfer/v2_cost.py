"""The pre-registered cost rule of matrix v2, and the per-target costs it reads.

Rule (``PREREGISTRATION.md``, "Targets", as revised before any v2 cell): the run should fit
``cost.budget_hours`` of compute; while it does not, the most expensive target (by the base model's measured
evaluation seconds in the screen; ties: the later one in the screen's order) is dropped, never evaluation
examples, down to a floor of 12 targets (or every one the target rule gives, if fewer), which wins over the budget:
the overrun is stated. The estimate of a set of targets is

    trainings x instances x (s per training instance) + models x sum over the targets of
    (evaluation examples x s per example of that target)

(models = trainings + the base model; every model is evaluated on every target). Costs come from measurement
where there is some: ``estimate: measured`` reads the screen's base-model cells (seconds per example, per target:
long prompts cost more) and its oracles' training records (seconds per instance), the same model and options on
the same machine; what is not measured yet takes the transfer run's a-priori figures. ``estimate: gpu`` is the
one-GPU estimate of :mod:`insta.engine.gpu_cost` (FLOPs per token counted on the model's meta-device graph,
an H100 at a stated share of its bf16 peak), with tokens measured on the targets' evaluation examples and on the
pool's instances.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Sequence


@dataclass
class CostInputs:
    """Seconds per training instance and, per target, per evaluated example, with where each figure comes from."""

    train_s_per_instance: float
    train_from: str
    eval_s: dict[str, float]
    eval_from: dict[str, str]
    n_eval: dict[str, int]
    notes: list[str] = field(default_factory=list)


def run_hours(targets: Sequence[str], inputs: CostInputs, n_trainings: int, instances: int) -> dict[str, float]:
    """Training, evaluation and total hours of a run over ``targets``."""
    train_h = n_trainings * instances * inputs.train_s_per_instance / 3600
    eval_h = (n_trainings + 1) * sum(inputs.n_eval[t] * inputs.eval_s[t] for t in targets) / 3600
    return {"train_hours": round(train_h, 2), "eval_hours": round(eval_h, 2), "hours": round(train_h + eval_h, 2)}


def apply_cost_rule(targets: Sequence[str], inputs: CostInputs, n_trainings: int, instances: int,
                    budget_hours: float | None, floor: int = 1) -> dict[str, Any]:
    """The pre-registered cost rule as revised before any v2 cell: while the estimate is over ``budget_hours``
    and more than ``floor`` targets remain, drop the most expensive target (its evaluation examples x measured
    seconds per example; ties: the later one in the screen's order). The floor wins over the budget: the overrun
    is stated, not cut. Every step is a choice with its cost (``choices``, first: all the rule's targets)."""
    kept = list(targets)
    steps = [{"k": len(kept), "dropped": None, **run_hours(kept, inputs, n_trainings, instances)}]
    while budget_hours is not None and steps[-1]["hours"] > budget_hours and len(kept) > floor:
        per = {t: inputs.n_eval[t] * inputs.eval_s[t] for t in kept}
        worst = max(reversed(kept), key=lambda t: per[t])  # the first maximum of the reversed order: the latest
        kept.remove(worst)
        steps.append({"k": len(kept), "dropped": worst, **run_hours(kept, inputs, n_trainings, instances)})
    hours = steps[-1]["hours"]
    over = budget_hours is not None and hours > budget_hours
    return {"budget_hours": budget_hours, "floor": floor, "n_trainings": n_trainings, "n_models": n_trainings + 1,
            "instances": instances, "choices": steps, "kept": kept,
            "dropped": [s["dropped"] for s in steps[1:]], "hours": hours, "fits": not over,
            "overrun_hours": round(hours - budget_hours, 2) if over else 0.0,
            "train_s_per_instance": round(inputs.train_s_per_instance, 4), "train_from": inputs.train_from,
            "eval_s_per_example": {t: round(inputs.eval_s[t], 4) for t in targets},
            "eval_from": {t: inputs.eval_from[t] for t in targets}, "n_eval": {t: inputs.n_eval[t] for t in targets},
            "floor_hours": run_hours([], inputs, n_trainings, instances)["hours"], "notes": list(inputs.notes)}


def eval_tokens(model: str, cands: dict[str, Any], max_source_length: int) -> dict[str, int]:
    """Per target, the tokens packed scoring runs on its evaluation examples (model-free, load-free)."""
    from ..evaluate.packing import packed_token_count
    from ..lm import load_tokenizer, resolve_model

    tok = load_tokenizer(resolve_model(model))
    return {t: packed_token_count(tok, c.eval_examples, max_source_length) for t, c in cands.items()}


def seconds_per_token(src: Any, cands: dict[str, Any], tokens: dict[str, int]) -> tuple[float | None, str]:
    """Median seconds per evaluated token of the screen's base cells of ``cands`` scored packed (all of their
    base cells, said so, when none was: those ran before packed scoring and are pessimistic)."""
    import statistics

    packed, other = [], []
    for t, c in cands.items():
        base = src.screen.read_cell("base", c)
        if not base or not tokens.get(t):
            continue
        try:
            rate = float(base["seconds"]) / tokens[t]
        except (KeyError, TypeError, ValueError):
            continue
        (packed if base.get("scoring_path") == "packed" else other).append(rate)
    if packed:
        return statistics.median(packed), f"median of {len(packed)} packed base evaluation(s) in the screen"
    if other:
        return statistics.median(other), (f"median of {len(other)} base evaluation(s) in the screen, all from "
                                          "before packed scoring (pessimistic)")
    return None, ""


def measured_inputs(src: Any, cands: dict[str, Any], default_train_s: float, default_eval_s: float,
                    tokens: dict[str, int] | None = None) -> CostInputs:
    """Costs measured by the screen (``src``: :class:`~insta.transfer.v2_targets.ScreenSource`; ``cands``: target
    -> its screen candidate): oracles' seconds per training instance; per target, with ``tokens`` (its evaluation
    tokens, :func:`eval_tokens`): tokens per example x the screen's seconds per token (:func:`seconds_per_token`),
    so targets rank by their tokens; without: the base cell's seconds per example."""
    from .v2_targets import base_seconds_per_example, train_seconds_per_instance

    eval_s, eval_from = {}, {}
    if tokens is not None:
        s_tok, rate_from = seconds_per_token(src, cands, tokens)
        if s_tok is None:  # the a-priori seconds per example, spread over the targets' mean tokens per example
            mean_tokens = sum(tokens.values()) / max(1, sum(len(c.eval_examples) for c in cands.values()))
            s_tok, rate_from = default_eval_s / max(1.0, mean_tokens), "a-priori: no base cell in the screen"
        for t, c in cands.items():
            per_ex = tokens[t] / max(1, len(c.eval_examples))
            eval_s[t] = per_ex * s_tok
            eval_from[t] = f"{per_ex:.0f} tokens/example x {s_tok:.3g} s/token ({rate_from})"
    else:
        for t, c in cands.items():
            s = base_seconds_per_example(src, c)
            if s is not None:
                eval_s[t], eval_from[t] = s, "the screen's base cell"
            else:
                eval_s[t], eval_from[t] = default_eval_s, "a-priori (no base cell in the screen)"
    train = train_seconds_per_instance(src)
    return CostInputs(
        train_s_per_instance=train if train is not None else default_train_s,
        train_from="the screen's oracles' training records" if train is not None else "a-priori",
        eval_s=eval_s, eval_from=eval_from, n_eval={t: len(c.eval_examples) for t, c in cands.items()})


def gpu_inputs(model: str, cands: dict[str, Any], pool_tasks: Sequence[Any], train_caps: tuple[int, int],
               eval_max_source: int) -> CostInputs:
    """One-GPU costs (:mod:`insta.engine.gpu_cost`'s model): per target, the forward FLOPs of its mean
    evaluation example (the prompt once plus every option); per training instance, 3x the forward FLOPs of the
    pool's mean instance (prompt and target capped at the training lengths)."""
    from ..engine.gpu_cost import (CHARS_PER_TOKEN, EVAL_UTILISATION, H100_BF16_PEAK, TRAIN_UTILISATION,
                                   mean_lengths, measured_flops)

    eval_s, eval_from = {}, {}
    for t, c in cands.items():
        tokens = [min(len(ex.input) / CHARS_PER_TOKEN, eval_max_source)
                  + sum(len(o) for o in (ex.options or [])) / CHARS_PER_TOKEN for ex in c.eval_examples]
        mean = sum(tokens) / max(1, len(tokens))
        flops = measured_flops(model, max(1, round(mean)))["forward_flops_per_token"] * mean
        eval_s[t] = flops / (H100_BF16_PEAK * EVAL_UTILISATION)
        eval_from[t] = f"GPU estimate: {mean:.0f} tokens per example"
    lengths = mean_lengths(list(pool_tasks)[:50])
    if lengths:
        tok = min(lengths[0] / CHARS_PER_TOKEN, train_caps[0]) + min(lengths[1] / CHARS_PER_TOKEN, train_caps[1]) + 1
        train_from = f"GPU estimate: {tok:.0f} tokens per instance (measured on {min(50, len(pool_tasks))} pool tasks)"
    else:
        tok = float(sum(train_caps)) / 2
        train_from = f"GPU estimate: {tok:.0f} tokens per instance (ASSUMED: no pool instances here)"
    fl = measured_flops(model, max(1, round(tok)))
    train_s = 3 * fl["forward_flops_per_token"] * tok / (H100_BF16_PEAK * TRAIN_UTILISATION)
    note = (f"one H100 at {H100_BF16_PEAK / 1e12:.0f} TFLOP/s dense bf16, {TRAIN_UTILISATION:.0%} of peak training, "
            f"{EVAL_UTILISATION:.0%} evaluating; {model}: {fl['params'] / 1e9:.2f}B parameters "
            f"({fl['config_source']}); FLOPs counted on the meta device")
    return CostInputs(train_s_per_instance=train_s, train_from=train_from, eval_s=eval_s, eval_from=eval_from,
                      n_eval={t: len(c.eval_examples) for t, c in cands.items()}, notes=[note])


def n_trainings(n_sources: int, seeds: Sequence[int], subset_seeds: Sequence[int], every: int) -> int:
    """Trainings of a run: every source at each of ``seeds``, every ``every``-th source also at ``subset_seeds``."""
    return n_sources * len(seeds) + math.ceil(n_sources / every) * len(subset_seeds) if n_sources else 0


def cost_lines(decision: dict[str, Any], unit: str = "h") -> list[str]:
    """The rule's decision and every choice's cost, as printable lines."""
    d = decision
    budget = "no budget" if d["budget_hours"] is None else f"budget {d['budget_hours']:g} {unit}"
    lines = [f"cost rule ({budget}, floor {d['floor']} targets): {d['n_trainings']} trainings x {d['instances']} "
             f"instances x {d['train_s_per_instance']:.3g} s/instance ({d['train_from']}) = {d['floor_hours']:.2f} "
             f"{unit} of training; evaluation: {d['n_models']} models x each target's examples x its s/example"]
    per = [f"{t.split(':', 1)[-1]} {d['n_eval'][t]} x {d['eval_s_per_example'][t]:.3g}s"
           for t in d["eval_s_per_example"]]
    if per:
        lines.append("  per target (examples x s/example): " + ", ".join(per))
    lines.append("  choices (most expensive target dropped first while over budget, down to the floor): " + "; ".join(
        f"{c['k']} targets{'' if c['dropped'] is None else ' without ' + c['dropped'].split(':', 1)[-1]}: "
        f"{c['hours']:.2f} {unit}" for c in d["choices"]))
    kept = len(d["kept"])
    if d["fits"]:
        lines.append(f"  -> {kept} targets, {d['hours']:.2f} {unit}"
                     + (f" (dropped: {', '.join(d['dropped'])})" if d["dropped"] else ""))
    else:
        lines.append(f"  -> {kept} targets, {d['hours']:.2f} {unit}: the floor of {d['floor']} targets wins over the "
                     f"budget, {d['overrun_hours']:.1f} {unit} over it"
                     + (f" (dropped: {', '.join(d['dropped'])})" if d["dropped"] else ""))
    if d.get("subset_seeds"):
        sub = d["subset_seeds"]
        lines.append(f"  of which the second seed on a subset of the sources: {sub['trainings']} models, "
                     f"{sub['hours']:.2f} {unit}")
    lines += ["  " + n for n in d["notes"]]
    return lines


__all__ = ["CostInputs", "apply_cost_rule", "cost_lines", "eval_tokens", "gpu_inputs", "measured_inputs",
           "n_trainings", "run_hours", "seconds_per_token"]

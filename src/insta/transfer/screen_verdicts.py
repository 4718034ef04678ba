"""The verdicts of a learnability screen (see :mod:`insta.transfer.screen`): base vs oracle per candidate with
paired bootstrap CIs, the pass rule, and the screen's table (``screen.md`` / ``screen.json``)."""
from __future__ import annotations

import json
import math
from collections import Counter
from dataclasses import asdict
from typing import TYPE_CHECKING, Any, Sequence

from ..errors import InstaError
from ..matrix.cells import constant_share, margins, per_example
from .screen_config import REPORTED

if TYPE_CHECKING:  # pragma: no cover
    from .screen import Budget, Candidate, Screen

# ---------------------------------------------------------------- the verdicts


def paired_change(base: dict[str, list], tuned: dict[str, list], metric: str, n_boot: int, confidence: float,
                  seed: int = 0) -> dict[str, float]:
    """Mean per-example change (tuned minus base, on the same examples) and its paired bootstrap CI."""
    from ..report.stats import bootstrap_mean_ci

    if base["ids"] != tuned["ids"]:
        raise InstaError("paired change: the two cells were evaluated on different examples")
    b, t = per_example(base, metric), per_example(tuned, metric)
    diffs = [x - y for x, y in zip(t, b)]
    mean, low, high = bootstrap_mean_ci(diffs, n_boot=n_boot, confidence=confidence, seed=seed)
    return {"base": _mean(b), "tuned": _mean(t), "change": mean, "low": low, "high": high}


def _mean(xs: Sequence[float]) -> float:
    v = [x for x in xs if x is not None and math.isfinite(x)]
    return sum(v) / len(v) if v else float("nan")


def verdict(screen: Screen, cand: Candidate, budget: Budget, seed: int) -> dict[str, Any]:
    """One candidate at one budget and seed: base vs oracle on accuracy, margin and gold NLL, and the decision."""
    cfg = screen.cfg
    row: dict[str, Any] = {"task": cand.spec, "n_eval": len(cand.eval_examples),
                           "n_train": min(budget.instances, len(cand.train_pool)), "budget": asdict(budget),
                           "seed": seed}
    base = screen.read_cell("base", cand)
    if base is None:
        return {**row, "status": "pending", "why": "base model not evaluated yet"}
    row["base_constant_share"] = round(constant_share(base["samples"]), 4)
    row["eval_s_per_example"] = round(float(base.get("seconds", 0.0)) / max(1, len(base["samples"]["ids"])), 3)
    row["n_options"] = round(_mean(base["samples"]["n_options"]), 2)
    if row["base_constant_share"] >= cfg.constant_share:
        return {**row, "status": "fail", "why": f"base model constant ({row['base_constant_share']:.0%} one answer)"}
    tuned = screen.read_cell(screen.model_key(cand, budget, seed), cand)
    if tuned is None:
        return {**row, "status": "pending", "why": "oracle not trained yet"}
    if margins(base["samples"]) is None or margins(tuned["samples"]) is None:
        raise InstaError(f"screen cells of {cand.spec} have no per-option scores (written by an older insta)")
    row["oracle_constant_share"] = round(constant_share(tuned["samples"]), 4)
    for metric in REPORTED:
        row[metric] = {k: round(v, 4) if math.isfinite(v) else None
                       for k, v in paired_change(base["samples"], tuned["samples"], metric, cfg.bootstrap,
                                                 cfg.confidence).items()}
    low = row[cfg.metric]["low"]
    passed = low is not None and low > 0
    row["status"] = "pass" if passed else "fail"
    row["why"] = (f"oracle beats base: {cfg.metric} change CI above 0" if passed
                  else f"{cfg.metric} change CI reaches 0 or below")
    return row


def summarise(screen: Screen) -> dict[str, Any]:
    """Every candidate's verdict at the screen budget (first seed; the others when present) and the curve."""
    budget = screen.screen_budget()
    rows = [verdict(screen, c, budget, s) for c in screen.candidates for s in screen.cfg.seeds]
    curve = [verdict(screen, screen._cand(t), b, s) for t in screen.cfg.curve.targets
             for b in sorted(set(screen.curve_budgets()) | {budget}, key=lambda b: (b.learning_rate, b.instances))
             for s in screen.cfg.seeds]
    counts = Counter(r["status"] for r in rows if r["seed"] == screen.cfg.seeds[0])
    return {"name": screen.cfg.name, "model": screen.cfg.model, "budget": asdict(budget),
            "train": screen.cfg.key_options("train"), "eval": screen.cfg.key_options("eval"),
            "constant_share": screen.cfg.constant_share,
            "confidence": screen.cfg.confidence, "metric": screen.cfg.metric, "counts": dict(counts), "rows": rows,
            "curve": curve,
            "left_out": screen.left_out, "passed": [r["task"] for r in rows if r["status"] == "pass"]}


def _ci(d: dict[str, Any] | None, digits: int = 2) -> str:
    if not d or d.get("change") is None:
        return ""
    lo, hi = d.get("low"), d.get("high")
    band = f" [{lo:+.{digits}f}, {hi:+.{digits}f}]" if lo is not None and hi is not None else ""
    return f"{d['change']:+.{digits}f}{band}"


def _acc(d: dict[str, Any] | None) -> str:
    return "" if not d or d.get("base") is None else f"{d['base']:.3f} -> {d['tuned']:.3f}"


def screen_markdown(summary: dict[str, Any]) -> str:
    """The screen as a Markdown document: the verdicts, the learning curve, the tasks left out."""
    from ..util.textsafe import safe_text

    b = summary["budget"]
    c = summary["counts"]
    lines = [f"# Learnability screen: {summary['name']}", "",
             f"Model `{summary['model']}`; oracle budget {b['instances']} in-task instances, learning rate "
             f"{b['learning_rate']:g}, train options `{json.dumps(summary['train'], sort_keys=True)}`; evaluation "
             f"`{json.dumps(summary['eval'], sort_keys=True)}`. A target passes when the oracle's change of "
             f"`{summary['metric']}` has a paired {summary['confidence']:.0%} bootstrap CI above 0 and the base "
             f"model's most frequent answer covers less than {summary['constant_share']:.0%} of the examples. "
             "margin: the gold option's summed log-likelihood minus the best distractor's; margin_z: the margin "
             "divided by the model's spread of option scores on the target (a flattening of the scores alone does "
             "not move it).", "",
             f"**{c.get('pass', 0)} pass, {c.get('fail', 0)} fail, {c.get('pending', 0)} pending.**", "",
             "| task | n eval | n train | base top-answer share | accuracy base -> oracle | accuracy change [CI] "
             "| margin_z change [CI] | margin change [CI] | gold NLL/token base -> oracle | eval s/example "
             "| verdict |",
             "|---|---|---|---|---|---|---|---|---|---|---|"]

    def row_line(r: dict[str, Any]) -> str:
        nll = r.get("nll_per_token")
        nll_s = "" if not nll or nll.get("base") is None else f"{nll['base']:.2f} -> {nll['tuned']:.2f}"
        share = r.get("base_constant_share")
        return (f"| {safe_text(r['task'], newlines=False)} | {r['n_eval']} | {r['n_train']} | "
                f"{'' if share is None else f'{share:.0%}'} | {_acc(r.get('acc'))} | {_ci(r.get('acc'), 3)} | "
                f"{_ci(r.get('margin_z'))} | {_ci(r.get('margin'))} | {nll_s} | {r.get('eval_s_per_example', '')} | "
                f"**{r['status']}**: {r['why']} |")

    order = {"pass": 0, "fail": 1, "pending": 2}
    for r in sorted(summary["rows"], key=lambda r: (order[r["status"]], r["task"], r["seed"])):
        lines.append(row_line(r))
    if summary["curve"]:
        lines += ["", "## Learning curve", "", "| task | budget | seed | accuracy base -> oracle "
                  "| margin_z change [CI] | margin change [CI] | gold NLL/token base -> oracle | verdict |",
                  "|---|---|---|---|---|---|---|---|"]
        for r in summary["curve"]:
            nll = r.get("nll_per_token")
            nll_s = "" if not nll or nll.get("base") is None else f"{nll['base']:.2f} -> {nll['tuned']:.2f}"
            bud = f"{r['budget']['instances']} inst, lr {r['budget']['learning_rate']:g}"
            lines.append(f"| {r['task']} | {bud} | {r['seed']} | {_acc(r.get('acc'))} | {_ci(r.get('margin_z'))} | "
                         f"{_ci(r.get('margin'))} | "
                         f"{nll_s} | {r['status']} |")
    if summary["left_out"]:
        lines += ["", f"## Tasks left out ({len(summary['left_out'])})", ""]
        lines += [f"- {safe_text(r['task'], newlines=False)}: {r['why']}" for r in summary["left_out"]]
    return "\n".join(lines) + "\n"


def write_summary(screen: Screen) -> dict[str, Any]:
    """Write ``screen.json`` and ``screen.md`` under the output folder; returns the summary."""
    from ..util.paths import atomic_write_json, atomic_write_text

    summary = summarise(screen)
    atomic_write_json(screen.out / "screen.json", summary)
    atomic_write_text(screen.out / "screen.md", screen_markdown(summary))
    return summary


__all__: Sequence[str] = ["paired_change", "screen_markdown", "summarise", "verdict", "write_summary"]

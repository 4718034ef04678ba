"""The report's tables and sentences, as plain header + rows of strings (rendered by :mod:`insta.report.render`)."""
from __future__ import annotations

import json
import math
import statistics
from typing import Any

from ..util.helpers import format_duration
from .summary import normalisation_of

Table = tuple[list[str], list[list[str]]]

METRIC_NAMES = {
    "bal_acc_norm": "balanced accuracy (per-character normalisation)",
    "bal_acc_norm_token": "balanced accuracy (per-token normalisation)",
    "bal_acc": "balanced accuracy (summed log-likelihood)",
    "bal_acc_calibrated": "balanced accuracy (calibrated)",
    "acc_norm": "acc_norm: accuracy, per-character normalisation (as lm-evaluation-harness)",
    "acc_norm_token": "acc_norm_token: accuracy, per-token normalisation",
    "acc": "acc: accuracy, summed log-likelihood",
    "acc_calibrated": "acc_calibrated: accuracy, calibrated",
    "gold_logprob": "gold log-prob (sum)",
    "exact_match": "exact match",
    "rouge_l": "ROUGE-L (x100)",
}
SECONDARY = ("acc", "acc_norm", "acc_norm_token", "bal_acc", "bal_acc_calibrated", "gold_logprob")
BETTER, WORSE = "▲", "▼"


def fmt(x: float | None, digits: int = 3, signed: bool = False) -> str:
    """A number for a table: fixed digits, ``–`` for missing or non-finite values."""
    if x is None or (isinstance(x, float) and not math.isfinite(x)):
        return "–"
    return f"{x:+.{digits}f}" if signed else f"{x:.{digits}f}"


def fmt_ci(row: dict[str, Any], digits: int = 3) -> str:
    """``+0.012 [-0.030, +0.051]`` from a comparison row."""
    return f"{fmt(row['diff'], digits, True)} [{fmt(row['low'], digits, True)}, {fmt(row['high'], digits, True)}]"


def fmt_time(s: float | None) -> str:
    """Seconds as ``1 h 02 min 03 s`` or ``4 min 05 s``."""
    return "?" if s is None else format_duration(s, "words")


def cell_text(entry: dict[str, Any] | None, digits: int = 3) -> str:
    """``mean`` or ``mean ± sd`` of a summary table entry."""
    if not entry:
        return "–"
    if entry.get("sd") is not None:
        return f"{fmt(entry['mean'], digits)} ± {fmt(entry['sd'], digits)}"
    return fmt(entry["mean"], digits)


def short_target(tid: str) -> str:
    """``bigbench:navigate`` -> ``navigate``."""
    return tid.split(":", 1)[1] if ":" in tid else tid


def digits_of(metric: str) -> int:
    return 2 if metric == "gold_logprob" else 3


def primary_definition(summary: dict[str, Any]) -> str:
    """One sentence saying what the primary metric is, with the normalisation it uses."""
    name = summary.get("normalisation", "char")
    suffix, unit = normalisation_of(name)
    how = ("as lm-evaluation-harness's `acc_norm` (`report.normalisation: char`; `acc_norm_token` divides by tokens "
           "instead)" if name == "char" else "(`report.normalisation: token`; lm-evaluation-harness's `acc_norm`, "
           "and insta's, divide by the length in characters instead)")
    return (f"Primary: balanced accuracy of rank classification where a target has one label set "
            f"(`bal_acc{suffix}`), accuracy where options vary per example (`acc{suffix}`); each option's summed "
            f"log-likelihood is divided by its length in **{unit}** {how}, and the highest-scoring option is the "
            "prediction.")


def interval_sentence(summary: dict[str, Any]) -> str:
    """How the confidence intervals were computed."""
    conf = int(round(summary["confidence"] * 100))
    how = ("BCa (bias-corrected and accelerated)" if summary.get("interval") == "bca" else "percentile")
    return (f"Differences are paired over the same evaluation examples: {summary['n_boot']} bootstrap resamples, "
            f"{conf}% {how} intervals; the average over targets resamples each target independently. "
            f"{BETTER} better / {WORSE} worse: the interval excludes zero. A seeded baseline (random) enters as the "
            "mean over its seeds; (N sd) compares a difference with that baseline's sd over seeds.")


def main_table(summary: dict[str, Any], results: dict[str, Any], metric: str | None = None) -> Table:
    """Header and rows: one row per target (+ the average), one column per method group."""
    groups = summary["groups"]
    header = ["target", "metric", *groups]
    rows = []
    for t in results["targets"]:
        m = metric or summary["primary"][t["id"]]
        rows.append([short_target(t["id"]), m,
                     *[cell_text(summary["table"][t["id"]][g].get(m), digits_of(m)) for g in groups]])
    if metric is None:
        rows.append(["**average**", "primary", *[cell_text(summary["average"].get(g)) for g in groups]])
    else:
        avg = []
        for g in groups:
            vals = [summary["table"][t["id"]][g].get(metric, {}).get("mean") for t in results["targets"]]
            avg.append(fmt(statistics.mean(vals), digits_of(metric))
                       if vals and all(v is not None for v in vals) else "–")
        rows.append(["**average**", metric, *avg])
    return header, rows


def comparison_table(summary: dict[str, Any], which: str = "all",
                     comparisons: list[dict[str, Any]] | None = None) -> Table:
    """``which``: ``average`` (one row per pair), ``per-target``, or ``all``; ``comparisons`` defaults to the
    primary metric's."""
    conf = int(round(summary["confidence"] * 100))
    header = ["method", "vs", "target", "difference", f"{conf}% CI (paired bootstrap)", "p", "verdict",
              "baseline sd over seeds"]
    rows = []
    for comp in summary["comparisons"] if comparisons is None else comparisons:
        avg = [comp["average"]] if comp["average"] and which in ("average", "all") else []
        per = comp["per_target"] if which in ("per-target", "all") else []
        for r in avg + per:
            verdict = r["verdict"] + (f" ({r['interval_note']})" if r.get("interval_note") else "")
            rows.append([comp["method"], comp["baseline"],
                         "**average**" if r["target"] == "average" else short_target(r["target"]),
                         fmt(r["diff"], 3, True), f"[{fmt(r['low'], 3, True)}, {fmt(r['high'], 3, True)}]",
                         fmt(r["p_value"], 3), verdict, fmt(r["baseline_seed_sd"])])
    return header, rows


def _verdict_cell(row: dict[str, Any], digits: int) -> str:
    if row["verdict"].startswith("same model"):
        return "= same model"
    nbsp = "\u00a0"  # a narrow column breaks between the difference and its interval, not inside either
    text = f"{fmt(row['diff'], digits, True)} [{fmt(row['low'], digits, True)},{nbsp}{fmt(row['high'], digits, True)}]"
    text += {"better": f"{nbsp}{BETTER}", "worse": f"{nbsp}{WORSE}"}.get(row["verdict"], "")
    sd = row.get("baseline_seed_sd")
    if sd:
        text += f" ({abs(row['diff']) / sd:.1f}{nbsp}sd)"
    return text


def verdict_table(summary: dict[str, Any]) -> Table:
    """The compact verdict: one row per (focus method, metric), one column per baseline; each cell the average
    difference over targets with its CI and a mark where the CI excludes zero."""
    blocks = [("primary", 3, [c for c in summary["comparisons"] if c.get("focus", True)])]
    second = summary.get("secondary")
    if second:
        blocks.append((METRIC_NAMES.get(second["metric"], second["metric"]), digits_of(second["metric"]),
                       second["comparisons"]))
    baselines = list(dict.fromkeys(c["baseline"] for _, _, comps in blocks for c in comps))
    methods = list(dict.fromkeys(c["method"] for _, _, comps in blocks for c in comps))
    rows = []
    for m in methods:
        for name, digits, comps in blocks:
            by_b = {c["baseline"]: c for c in comps if c["method"] == m}
            if by_b:
                rows.append([m, name, *[_verdict_cell(by_b[b]["average"], digits) if b in by_b and by_b[b]["average"]
                                        else "–" for b in baselines]])
    return ["method", "metric", *[f"vs {b}" for b in baselines]], rows


def significant_lines(summary: dict[str, Any]) -> list[str]:
    """The per-target differences of a focus method whose CI excludes zero: listed for the primary metric,
    counted for the secondary one."""
    def hits(comps: list[dict[str, Any]]) -> list[tuple[dict[str, Any], dict[str, Any]]]:
        return [(c, r) for c in comps if c.get("focus", True) for r in c["per_target"]
                if r["verdict"] in ("better", "worse")]

    listed = [f"{c['method']} vs {c['baseline']} on {short_target(r['target'])} {fmt(r['diff'], 3, True)} "
              f"({r['verdict']})" for c, r in hits(summary["comparisons"])]
    out = ["Per target, primary metric: " + ("; ".join(listed) if listed else "no interval excludes zero") + "."]
    second = summary.get("secondary") or {}
    if second.get("comparisons"):
        found = hits(second["comparisons"])
        n = sum(len(c["per_target"]) for c in second["comparisons"])
        better = sum(r["verdict"] == "better" for _, r in found)
        out.append(f"Per target, {METRIC_NAMES.get(second['metric'], second['metric'])}: {len(found)} of {n} "
                   f"differences exclude zero ({better} better, {len(found) - better} worse; see Gold "
                   "log-probability).")
    return out


def selections_table(results: dict[str, Any]) -> Table:
    """What each method selected for each target."""
    header = ["target", "method", "selected source tasks (best first)"]
    rows = []
    for c in results["cells"]:
        if c["label"] == "base":
            continue
        sel = c["selected"]
        text = (", ".join(sel) if len(sel) <= 10
                else f"all {len(sel)} pool tasks (budget over {len(c['allocation'] or {})})")
        rows.append([short_target(c["target"]), c["label"], text])
    return header, rows


def overlap_table(overlap: dict[str, Any]) -> Table:
    """The method x method Jaccard matrix as a table."""
    labels = overlap["labels"]
    return ["", *labels], [[a, *[fmt(v, 2) for v in row]] for a, row in zip(labels, overlap["jaccard"])]


def p3_rows(table: dict[str, Any]) -> Table:
    """The P3 selection table: one row per T0 held-out target, one column per INSTA variant."""
    names = [v["name"] for v in table["variants"]]
    header = ["target", *[f"{n} top-{table['k']}" for n in names]]
    rows = [[r["target"], *[", ".join(f"{x['task']} ({x['score']:.3f})" for x in r[n]) for n in names]]
            for r in table["rows"]]
    return header, rows


def targets_table(results: dict[str, Any], summary: dict[str, Any]) -> Table:
    """The targets: evaluation size, labels, chance, primary metric, RoE/DSIR samples."""
    header = ["target", "n eval", "of", "labels", "chance", "primary metric", "RoE/DSIR samples"]
    rows = []
    for t in results["targets"]:
        labels = ", ".join(t["label_set"]) if t.get("label_set") else "options vary per example"
        samp = (f"{t['n_samples']} (drawn from the evaluation inputs: too few examples)" if t["samples_overlap_eval"]
                else f"{t['n_samples']} held out")
        rows.append([short_target(t["id"]), str(t["n_eval"]), str(t["n_available"]), labels[:80], fmt(t.get("chance")),
                     summary["primary"][t["id"]], samp])
    return header, rows


def methods_table(summary: dict[str, Any]) -> Table:
    """The method groups, their seeds, what they consumed and their parameters."""
    from ..selection import CONSUMPTIONS

    header = ["method", "seeds", "consumes", "parameters"]
    rows = []
    for g in summary["group_info"]:
        cons = "; ".join(CONSUMPTIONS.get(c, c) for c in g["consumes"]) or "– (no training)"
        params = ", ".join(f"{k}={v}" for k, v in g["params"].items() if k != "seed")
        rows.append([g["group"], str(len(g["labels"])) if len(g["labels"]) > 1 else "", cons, params[:160]])
    return header, rows


def training_table(results: dict[str, Any]) -> Table:
    """The trained models: users, size of the mixture, steps, loss, time."""
    header = ["model", "used by", "tasks", "instances", "steps", "loss first → last", "train s"]
    rows = []
    for r in results.get("trained_models", []):
        m = r.get("metrics") or {}
        rows.append([r["model_key"][:8], ", ".join(r.get("labels", [])), str(len(r.get("allocation", {}))),
                     str(sum((r.get("allocation") or {}).values())), str(m.get("global_step", "–")),
                     f"{fmt(m.get('first_loss'))} → {fmt(m.get('last_loss'))}", fmt(r.get("seconds"), 0)])
    return header, rows


def pool_lines(results: dict[str, Any]) -> list[str]:
    """The source pool's size and what was removed, by reason."""
    pool = results.get("pool") or {}
    if not pool:
        return []
    return [f"{pool['n']} source units in the pool. Removed: " +
            ", ".join(f"{v} ({k})" for k, v in sorted(pool.get("removed_by_reason", {}).items())) + "."]


def status_lines(results: dict[str, Any]) -> list[str]:
    """Banners that must be read first: a dry run, a partial grid (with the command that resumes it)."""
    lines = []
    if results.get("backend") == "dry-run":
        lines.append("**DRY RUN: no model was trained or evaluated; every number below is a deterministic fake.**")
    if results.get("partial"):
        done, todo = len(results.get("cells") or []), len(results.get("missing_cells") or [])
        lines.append(f"**PARTIAL: {done} of {done + todo} cells finished so far; the run resumes where it stopped "
                     "(rerun the command). Averages over targets need every cell of a method.**")
        lines.append(f"Command that resumes the run: `insta experiment {results.get('config_path') or 'CONFIG'}`")
        if todo:
            lines.append(f"Missing cells: {', '.join(results['missing_cells'])}")
    return lines


def run_lines(results: dict[str, Any]) -> list[str]:
    """The run's command, machine, model, budget, work done and compute (empty for a partial grid)."""
    if results.get("partial"):
        return []
    cfg = results.get("config") or {}
    run = results.get("working_run") or {}
    m = run.get("machine") or results.get("machine") or {}
    cmd = run.get("command") or results.get("command")
    stats = run.get("stats") or results.get("stats") or {}
    lines = [
        f"Command: `{cmd}`" if cmd else "Command: (library call)",
        f"Wall time of the run that did the work: {fmt_time(run.get('seconds_total', results.get('seconds_total')))} "
        f"on {m.get('cpus_available', m.get('cpus'))} CPU core(s), torch {m.get('torch', '?')}, CUDA "
        f"{m.get('cuda', False)}; finished {run.get('finished') or results.get('finished')}.",
        f"Model: {results.get('model')}; k = {results.get('k')}; training budget: exactly {results.get('n_total')} "
        f"instances for every method (all tasks included), training options {json.dumps(cfg.get('train') or {})}; "
        f"evaluation: rank classification on up to {(cfg.get('eval') or {}).get('n', 100)} examples per target.",
        f"Work done by that run: {stats.get('trained', 0)} models trained, {stats.get('evaluated', 0)} evaluations, "
        f"{stats.get('cells_cached', 0)} cells reused from the cache.",
    ]
    compute = compute_line(results)
    if compute:
        lines.append(compute)
    if results.get("missing_cells"):
        lines.append(f"Missing cells: {', '.join(results['missing_cells'])}")
    return lines


def compute_line(results: dict[str, Any], gap_hours: float = 1.0) -> str | None:
    """The model compute recorded in the cells and when it happened: a resumed grid's cells come from several
    invocations, so the last invocation's wall time alone understates the cost of the results."""
    from datetime import datetime

    trained = results.get("trained_models") or []
    # two grid entries that trained the same model read one evaluation cell: count each cell once
    cells = list({c.get("eval_key", i): c for i, c in enumerate(results.get("cells") or [])}.values())
    if not cells:
        return None
    t_train = sum(t.get("seconds") or 0 for t in trained)
    t_eval = sum(c.get("eval_seconds") or 0 for c in cells)
    stamps = sorted(datetime.fromisoformat(x["finished"]) for x in [*trained, *cells] if x.get("finished"))
    spans: list[list[datetime]] = []
    for st in stamps:
        if spans and (st - spans[-1][1]).total_seconds() <= gap_hours * 3600:
            spans[-1][1] = st
        else:
            spans.append([st, st])
    when = "; ".join(f"{a:%Y-%m-%d %H:%M}-{b:%H:%M}" for a, b in spans)
    line = (f"Model compute recorded in the cells: {len(trained)} trainings ({fmt_time(t_train)}) and {len(cells)} "
            f"evaluations ({fmt_time(t_eval)}), {fmt_time(t_train + t_eval)} in all")
    if len(spans) > 1:
        line += (f"; the cells were finished in {len(spans)} stretches ({when}): the run was interrupted and "
                 "resumed from its cache, so the wall time above covers only the last invocation")
    elif spans:
        line += f"; cells finished {when}"
    return line + "."


__all__ = ["BETTER", "METRIC_NAMES", "SECONDARY", "WORSE", "cell_text", "comparison_table", "compute_line", "fmt",
           "fmt_ci", "fmt_time", "interval_sentence", "main_table", "methods_table", "overlap_table", "p3_rows",
           "pool_lines", "primary_definition", "run_lines", "selections_table", "short_target",
           "significant_lines", "status_lines", "targets_table", "training_table", "verdict_table"]

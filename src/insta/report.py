"""The comparison report: results JSON, a markdown table, plots and a self-contained HTML page.

Metrics are recomputed from the per-example arrays of every cell (so the point estimates and the paired
bootstrap use one code path); their names are lm-evaluation-harness's (:mod:`insta.metrics`):

* The **primary** metric of a target whose examples all share one label set (True/False/Neither, yes/no,
  (A)/(B), ...) is the balanced accuracy of length-normalised rank classification: a mixture that only pushes the
  model toward one answer word cannot raise it (PILOT.md, label-prior drift). Targets whose options change from
  example to example use the accuracy of the same rule; generation targets ``exact_match``. The length is the
  option's length in characters (``bal_acc_norm`` / ``acc_norm``, lm-eval's ``acc_norm``) unless the config's
  ``report.normalisation`` is ``token`` (``bal_acc_norm_token`` / ``acc_norm_token``; cells written before insta
  stored per-character predictions have only these). The report states which.
* Also reported: ``acc`` (summed log-likelihood: the T0 / INSTA protocol number), ``acc_norm`` and
  ``acc_norm_token`` where the cells have them, ``bal_acc``, ``bal_acc_calibrated`` (content-free calibration)
  and ``gold_logprob`` (mean summed log-probability of the gold option, a continuous metric that moves before
  accuracy does).
* Methods with several seeds (``random``) are shown as mean ± sd over seeds.
* Comparisons are **paired**: the same bootstrap resamples of a target's evaluation examples are applied to both
  methods (``n_boot`` resamples, percentile CI); the average over targets resamples each target independently
  and averages the per-target differences. A seeded group (random) enters as the mean over its seeds.
"""
from __future__ import annotations

import base64
import html
import io
import json
import math
import statistics
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

from .errors import InstaError
from .metrics import rank_rule
from .paths import atomic_write_bytes, atomic_write_json, atomic_write_text

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
}
SECONDARY = ("acc", "acc_norm", "acc_norm_token", "bal_acc", "bal_acc_calibrated", "gold_logprob")
#: report.normalisation -> (its suffix on acc_norm / bal_acc_norm, what it divides by)
NORMALISATIONS = {"char": ("_norm", "characters"), "token": ("_norm_token", "tokens")}
DEFAULT_BASELINES = ("random", "all", "lexical", "roe", "dsir", "base")


# ---------------------------------------------------------------- metrics on per-example arrays


def _arrays(s: dict[str, Any], metric: str) -> dict[str, np.ndarray] | None:
    """The per-example arrays a metric needs, or None when the cell lacks them."""
    if metric == "exact_match":
        em = s.get("exact_match") or []
        if not em or any(x is None for x in em):
            return None
        return {"value": np.asarray(em, dtype=float)}
    if metric in ("gold_logprob", "gold_nll_per_token"):
        v = s.get(metric) or []
        if not v or any(x is None for x in v):
            return None
        return {"value": np.asarray(v, dtype=float)}
    rule = rank_rule(metric)
    if rule is None:
        return None
    preds, labels = s.get(f"pred_{rule}") or [], s.get("label") or []
    if not preds or any(p is None for p in preds) or any(x is None for x in labels):
        return None
    correct = np.asarray([p == lab for p, lab in zip(preds, labels)], dtype=float)
    if metric == "acc" or metric.startswith("acc_"):
        return {"value": correct}
    golds = s.get("gold") or []
    classes = sorted(set(golds))
    cls = np.asarray([classes.index(g) for g in golds])
    return {"correct": correct, "cls": cls, "n_classes": np.asarray(len(classes))}


def metric_on(s: dict[str, Any], metric: str, idx: np.ndarray | None = None) -> np.ndarray | float | None:
    """The metric of one cell's samples; with ``idx`` (B x n resample indices) one value per resample."""
    arr = _arrays(s, metric)
    if arr is None:
        return None
    n = len(next(iter(arr.values())) if "value" in arr else arr["correct"])
    single = idx is None
    if single:
        idx = np.arange(n)[None, :]
    if "value" in arr:
        out = arr["value"][idx].mean(axis=1)
    else:
        correct, cls, k = arr["correct"][idx], arr["cls"][idx], int(arr["n_classes"])
        recalls = []
        for c in range(k):
            m = cls == c
            sup = m.sum(axis=1)
            hits = (correct * m).sum(axis=1)
            recalls.append(np.where(sup > 0, hits / np.maximum(sup, 1), np.nan))
        with np.errstate(all="ignore"):
            out = np.nanmean(np.vstack(recalls), axis=0)
    return float(out[0]) if single else out


def primary_metric_of(target: dict[str, Any], setting: str | None = None, normalisation: str = "char") -> str:
    """``bal_acc_norm`` for a fixed label set, ``acc_norm`` for per-example options, ``exact_match`` else;
    ``normalisation="token"`` gives the per-token variants (``bal_acc_norm_token``, ``acc_norm_token``)."""
    if setting and setting != "auto":
        return setting
    if not target.get("rank_classification"):
        return "exact_match"
    suffix = _normalisation(normalisation)[0]
    return ("bal_acc" if target.get("fixed_labels") else "acc") + suffix


def _normalisation(name: str) -> tuple[str, str]:
    if name not in NORMALISATIONS:
        raise InstaError(f"report.normalisation must be one of {', '.join(NORMALISATIONS)} (got {name!r})")
    return NORMALISATIONS[name]


# ---------------------------------------------------------------- summary


def _groups(results: dict[str, Any]) -> list[dict[str, Any]]:
    """Method groups in config order: ``{"group", "labels", "method", "consumes", ...}``."""
    out: dict[str, dict[str, Any]] = {}
    for m in results["methods"]:
        g = out.setdefault(m["group"], {"group": m["group"], "labels": [], "method": m["method"],
                                        "consumes": m["consumes"], "depends_on_target": m["depends_on_target"],
                                        "params": m["params"]})
        g["labels"].append(m["label"])
    return list(out.values())


def _cell_index(results: dict[str, Any]) -> dict[tuple[str, str], dict[str, Any]]:
    return {(c["target"], c["label"]): c for c in results["cells"]}


def summarize(results: dict[str, Any]) -> dict[str, Any]:
    """Point estimates per (target, group), the average over targets, and the paired comparisons."""
    rcfg = (results.get("config") or {}).get("report") or {}
    n_boot = int(rcfg.get("bootstrap", 2000))
    conf = float(rcfg.get("confidence", 0.95))
    seed = int(rcfg.get("seed", 0))
    groups = _groups(results)
    cells = _cell_index(results)
    samples = results["samples"]
    targets = results["targets"]
    metrics_all = ("bal_acc_norm", "bal_acc_norm_token", "acc_norm", "acc_norm_token", "acc", "bal_acc",
                   "bal_acc_calibrated", "acc_calibrated", "gold_logprob", "exact_match")

    def values(tid: str, g: dict[str, Any], metric: str) -> list[float]:
        out = []
        for lab in g["labels"]:
            c = cells.get((tid, lab))
            if c is None:
                continue
            v = metric_on(samples[c["eval_key"]], metric)
            if v is not None:
                out.append(v)
        return out

    table: dict[str, dict[str, dict[str, Any]]] = {}
    for t in targets:
        tid = t["id"]
        table[tid] = {}
        for g in groups:
            table[tid][g["group"]] = {}
            for metric in metrics_all:
                vals = values(tid, g, metric)
                if not vals:
                    continue
                table[tid][g["group"]][metric] = {
                    "mean": statistics.mean(vals), "sd": statistics.stdev(vals) if len(vals) > 1 else None,
                    "n_seeds": len(vals), "values": vals}
    normalisation = rcfg.get("normalisation", "char")
    primary = {t["id"]: primary_metric_of(t, rcfg.get("primary"), normalisation) for t in targets}
    _check_primary_available(results, primary, normalisation)
    # average over targets of each target's primary metric (per seed for seeded groups)
    average: dict[str, dict[str, Any]] = {}
    complete = [t["id"] for t in targets]
    for g in groups:
        per_seed = []
        for lab in g["labels"]:
            vals = []
            for tid in complete:
                c = cells.get((tid, lab))
                v = metric_on(samples[c["eval_key"]], primary[tid]) if c else None
                if v is None:
                    break
                vals.append(v)
            else:
                per_seed.append(statistics.mean(vals))
        if per_seed:
            average[g["group"]] = {"mean": statistics.mean(per_seed),
                                   "sd": statistics.stdev(per_seed) if len(per_seed) > 1 else None,
                                   "n_seeds": len(per_seed), "values": per_seed}
    comparisons = _comparisons(results, groups, cells, samples, targets, primary, n_boot, conf, seed, rcfg)
    # a continuous secondary metric: the gold answer's log-probability moves with small training effects that
    # leave the argmax (and so accuracy) unchanged; INSTA variants against the baselines only
    secondary = None
    second = rcfg.get("secondary_metric", "gold_logprob")
    if second:
        secondary = {"metric": second, "comparisons": _comparisons(
            results, groups, cells, samples, targets, {t["id"]: second for t in targets}, n_boot, conf, seed, rcfg,
            focus_only=True)}
    return {"primary": primary, "normalisation": normalisation, "table": table, "average": average,
            "comparisons": comparisons,
            "secondary": secondary, "groups": [g["group"] for g in groups], "group_info": groups,
            "n_boot": n_boot, "confidence": conf}


def _check_primary_available(results: dict[str, Any], primary: dict[str, str], normalisation: str) -> None:
    """A clear error when a finished cell lacks the predictions its target's primary metric needs."""
    for c in results["cells"]:
        s = results["samples"].get(c["eval_key"]) or {}
        rule = rank_rule(primary.get(c["target"], ""))
        if rule and s.get("label") and any(x is not None for x in s["label"]) and not s.get(f"pred_{rule}"):
            hint = (" (cells written before insta stored per-character predictions hold per-token ones: set "
                    "report.normalisation: token in the config, or rerun those cells)" if rule == "norm" else "")
            raise InstaError(f"cell {c['target']}/{c['label']} has no {primary[c['target']]} predictions{hint}")


def _comparisons(results, groups, cells, samples, targets, primary, n_boot, conf, seed, rcfg,
                 focus_only: bool = False) -> list[dict[str, Any]]:
    """Paired differences: each focus method (INSTA variants) against every baseline and, unless ``focus_only``,
    every other method against random and all."""
    names = [g["group"] for g in groups]
    focus = rcfg.get("focus") or [g for g in names if g.startswith("insta")]
    baselines = rcfg.get("baselines") or [b for b in DEFAULT_BASELINES if b in names]
    by_name = {g["group"]: g for g in groups}
    alpha = (1 - conf) / 2
    out = []
    rng = np.random.default_rng(seed)
    idx_by_target = {}
    for t in targets:
        n = t["n_eval"]
        idx_by_target[t["id"]] = rng.integers(0, n, size=(n_boot, n)) if n else None

    def group_boot(tid: str, g: dict[str, Any], metric: str):
        vals, point = [], []
        for lab in g["labels"]:
            c = cells.get((tid, lab))
            if c is None:
                return None, None
            s = samples[c["eval_key"]]
            v = metric_on(s, metric, idx_by_target[tid])
            if v is None:
                return None, None
            vals.append(v)
            point.append(metric_on(s, metric))
        return np.mean(vals, axis=0), float(np.mean(point))

    pairs = [(f, b, True) for f in focus if f in by_name for b in baselines if b in by_name and b != f]
    # every other method against the two target-independent baselines too
    others = [] if focus_only else [g for g in names if g not in focus and g not in ("base", "random")]
    pairs += [(f, b, False) for f in others for b in ("random", "all") if b in by_name and b != f]
    for f, b, is_focus in pairs:
        if True:
            per_target = []
            diffs_all = []
            for t in targets:
                tid = t["id"]
                metric = primary[tid]
                fa, fp = group_boot(tid, by_name[f], metric)
                ba, bp = group_boot(tid, by_name[b], metric)
                if fa is None or ba is None:
                    continue
                d = fa - ba
                diffs_all.append(d)
                same = [cells[(tid, x)]["eval_key"] for x in by_name[f]["labels"]] == \
                    [cells[(tid, x)]["eval_key"] for x in by_name[b]["labels"]]
                sd_seeds = None
                if len(by_name[b]["labels"]) > 1:
                    vals = [metric_on(samples[cells[(tid, lab)]["eval_key"]], metric) for lab in by_name[b]["labels"]]
                    sd_seeds = statistics.stdev(vals)
                row = _diff_row(tid, metric, fp - bp, d, alpha, sd_seeds)
                if same:
                    row["verdict"] = "same model (identical selection)"
                per_target.append(row)
            if not per_target:
                continue
            avg = None
            if len(diffs_all) == len(targets):
                d = np.mean(diffs_all, axis=0)
                sd_seeds = None
                if len(by_name[b]["labels"]) > 1:
                    sd_seeds = _seed_sd_of_average(by_name[b], targets, cells, samples, primary)
                avg = _diff_row("average", "primary", float(np.mean([r["diff"] for r in per_target])), d, alpha,
                                sd_seeds)
                if all(r["verdict"].startswith("same model") for r in per_target):
                    avg["verdict"] = "same models (identical selections)"
            out.append({"method": f, "baseline": b, "focus": is_focus, "per_target": per_target, "average": avg})
    return out


def _seed_sd_of_average(g, targets, cells, samples, primary) -> float | None:
    per_seed = []
    for lab in g["labels"]:
        vals = []
        for t in targets:
            c = cells.get((t["id"], lab))
            v = metric_on(samples[c["eval_key"]], primary[t["id"]]) if c else None
            if v is None:
                return None
            vals.append(v)
        per_seed.append(statistics.mean(vals))
    return statistics.stdev(per_seed) if len(per_seed) > 1 else None


def _diff_row(tid: str, metric: str, point: float, boots: np.ndarray, alpha: float, sd_seeds: float | None) -> dict:
    low, high = float(np.quantile(boots, alpha)), float(np.quantile(boots, 1 - alpha))
    p = min(1.0, 2 * min(float((boots <= 0).mean()), float((boots >= 0).mean())))
    verdict = "better" if low > 0 else ("worse" if high < 0 else "no detectable difference")
    return {"target": tid, "metric": metric, "diff": point, "low": low, "high": high, "p_value": p,
            "verdict": verdict, "baseline_seed_sd": sd_seeds}


# ---------------------------------------------------------------- text


def _f(x: float | None, digits: int = 3, signed: bool = False) -> str:
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return "–"
    return f"{x:+.{digits}f}" if signed else f"{x:.{digits}f}"


def _cell_text(entry: dict[str, Any] | None, digits: int = 3) -> str:
    if not entry:
        return "–"
    if entry.get("sd") is not None:
        return f"{_f(entry['mean'], digits)} ± {_f(entry['sd'], digits)}"
    return _f(entry["mean"], digits)


def _short(tid: str) -> str:
    return tid.split(":", 1)[1] if ":" in tid else tid


def main_table(summary: dict[str, Any], results: dict[str, Any], metric: str | None = None) -> tuple[list[str], list[list[str]]]:
    """Header and rows: one row per target (+ the average), one column per method group."""
    groups = summary["groups"]
    header = ["target", "metric", *groups]
    rows = []
    for t in results["targets"]:
        m = metric or summary["primary"][t["id"]]
        digits = 2 if m == "gold_logprob" else 3
        rows.append([_short(t["id"]), m, *[_cell_text(summary["table"][t["id"]][g].get(m), digits) for g in groups]])
    if metric is None:
        rows.append(["**average**", "primary", *[_cell_text(summary["average"].get(g)) for g in groups]])
    else:
        avg = []
        for g in groups:
            vals = [summary["table"][t["id"]][g].get(metric, {}).get("mean") for t in results["targets"]]
            avg.append(_f(statistics.mean(vals), 2 if metric == "gold_logprob" else 3)
                       if vals and all(v is not None for v in vals) else "–")
        rows.append(["**average**", metric, *avg])
    return header, rows


def comparison_table(summary: dict[str, Any], which: str = "all",
                     comparisons: list[dict[str, Any]] | None = None) -> tuple[list[str], list[list[str]]]:
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
            rows.append([comp["method"], comp["baseline"], "**average**" if r["target"] == "average" else _short(r["target"]),
                         _f(r["diff"], 3, True), f"[{_f(r['low'], 3, True)}, {_f(r['high'], 3, True)}]",
                         _f(r["p_value"], 3), r["verdict"], _f(r["baseline_seed_sd"])])
    return header, rows


def verdict_lines(summary: dict[str, Any]) -> list[str]:
    """Plain sentences: for each INSTA variant and baseline, the average difference and where it stands."""
    lines = []
    for comp in summary["comparisons"]:
        if not comp.get("focus", True):
            continue
        avg = comp["average"]
        wins = sum(r["verdict"] == "better" for r in comp["per_target"])
        losses = sum(r["verdict"] == "worse" for r in comp["per_target"])
        n = len(comp["per_target"])
        pos = sum(r["diff"] > 0 for r in comp["per_target"])
        if avg:
            s = (f"**{comp['method']} vs {comp['baseline']}**: average difference {_f(avg['diff'], 3, True)} "
                 f"(95% CI [{_f(avg['low'], 3, True)}, {_f(avg['high'], 3, True)}]): {avg['verdict']}")
            sd = avg.get("baseline_seed_sd")
            if sd:
                s += (f"; the sd of {comp['baseline']} over its seeds is {_f(sd)}, so the "
                      f"difference is {abs(avg['diff']) / sd:.1f}x that spread")
            elif sd is not None:
                s += f"; {comp['baseline']} scored the same under every seed (sd 0)"
        else:
            s = f"**{comp['method']} vs {comp['baseline']}**: no average (some cells missing)"
        s += (f". Per target: higher on {pos}/{n}, significantly better on {wins}, significantly worse on {losses}.")
        lines.append(s)
    return lines


def secondary_verdict_lines(summary: dict[str, Any]) -> list[str]:
    """One sentence per INSTA variant: its average difference on the secondary metric against each baseline."""
    second = summary.get("secondary")
    if not second:
        return []
    name = METRIC_NAMES.get(second["metric"], second["metric"])
    by_method: dict[str, list[str]] = {}
    for comp in second["comparisons"]:
        avg = comp["average"]
        if not avg:
            continue
        part = f"vs {comp['baseline']} {_f(avg['diff'], 2, True)} ({avg['verdict']}"
        if avg.get("baseline_seed_sd"):
            part += f", {abs(avg['diff']) / avg['baseline_seed_sd']:.1f}x its sd over seeds"
        by_method.setdefault(comp["method"], []).append(part + ")")
    return [f"**{m}, {name} (secondary)**: " + "; ".join(parts) + "." for m, parts in by_method.items()]


def _md_table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    def esc(x: Any) -> str:
        return str(x).replace("|", "\\|").replace("\n", " ")

    out = ["| " + " | ".join(map(esc, header)) + " |", "|" + "|".join("---" for _ in header) + "|"]
    out += ["| " + " | ".join(map(esc, r)) + " |" for r in rows]
    return "\n".join(out)


def selections_table(results: dict[str, Any]) -> tuple[list[str], list[list[str]]]:
    header = ["target", "method", "selected source tasks (best first)"]
    rows = []
    for c in results["cells"]:
        if c["label"] == "base":
            continue
        sel = c["selected"]
        text = ", ".join(sel) if len(sel) <= 10 else f"all {len(sel)} pool tasks (budget over {len(c['allocation'] or {})})"
        rows.append([_short(c["target"]), c["label"], text])
    return header, rows


def p3_rows(table: dict[str, Any]) -> tuple[list[str], list[list[str]]]:
    names = [v["name"] for v in table["variants"]]
    header = ["target", *[f"{n} top-{table['k']}" for n in names]]
    rows = []
    for r in table["rows"]:
        rows.append([r["target"], *[", ".join(f"{x['task']} ({x['score']:.3f})" for x in r[n]) for n in names]])
    return header, rows


def _targets_table(results, summary) -> tuple[list[str], list[list[str]]]:
    header = ["target", "n eval", "of", "labels", "chance", "primary metric", "RoE/DSIR samples"]
    rows = []
    for t in results["targets"]:
        labels = ", ".join(t["label_set"]) if t.get("label_set") else "options vary per example"
        samp = (f"{t['n_samples']} (drawn from the evaluation inputs: too few examples)" if t["samples_overlap_eval"]
                else f"{t['n_samples']} held out")
        rows.append([_short(t["id"]), str(t["n_eval"]), str(t["n_available"]), labels[:80], _f(t.get("chance")),
                     summary["primary"][t["id"]], samp])
    return header, rows


def _methods_table(summary) -> tuple[list[str], list[list[str]]]:
    from .methods import CONSUMPTIONS

    header = ["method", "seeds", "consumes", "parameters"]
    rows = []
    for g in summary["group_info"]:
        cons = "; ".join(CONSUMPTIONS.get(c, c) for c in g["consumes"]) or "– (no training)"
        params = ", ".join(f"{k}={v}" for k, v in g["params"].items() if k != "seed")
        rows.append([g["group"], str(len(g["labels"])) if len(g["labels"]) > 1 else "", cons, params[:160]])
    return header, rows


def _training_table(results) -> tuple[list[str], list[list[str]]]:
    header = ["model", "used by", "tasks", "instances", "steps", "loss first → last", "train s"]
    rows = []
    for r in results.get("trained_models", []):
        m = r.get("metrics") or {}
        rows.append([r["model_key"][:8], ", ".join(r.get("labels", [])), str(len(r.get("allocation", {}))),
                     str(sum((r.get("allocation") or {}).values())), str(m.get("global_step", "–")),
                     f"{_f(m.get('first_loss'))} → {_f(m.get('last_loss'))}", _f(r.get("seconds"), 0)])
    return header, rows


def _pool_lines(results) -> list[str]:
    pool = results.get("pool") or {}
    if not pool:
        return []
    lines = [f"{pool['n']} source units in the pool. Removed: " +
             ", ".join(f"{v} ({k})" for k, v in sorted(pool.get("removed_by_reason", {}).items())) + "."]
    return lines


# ---------------------------------------------------------------- plots


def _png(fig) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110, bbox_inches="tight")
    import matplotlib.pyplot as plt

    plt.close(fig)
    return buf.getvalue()


def plot_bars(summary: dict[str, Any], results: dict[str, Any], metric: str | None = None) -> bytes:
    """One panel per target (+ the average): a bar per method group, random as mean ± sd with its seeds."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    groups = summary["groups"]
    panels = [t["id"] for t in results["targets"]] + ([None] if metric is None else [])
    ncol = min(4, len(panels))
    nrow = math.ceil(len(panels) / ncol)
    fig, axes = plt.subplots(nrow, ncol, figsize=(3.6 * ncol, 3.0 * nrow), squeeze=False)
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for ax, tid in zip(axes.flat, panels):
        if tid is None:
            entries = [summary["average"].get(g) for g in groups]
            title, m = "average (primary metrics)", "primary"
        else:
            m = metric or summary["primary"][tid]
            entries = [summary["table"][tid][g].get(m) for g in groups]
            title = _short(tid)
        xs = np.arange(len(groups))
        for i, (g, e) in enumerate(zip(groups, entries)):
            if not e:
                continue
            col = "#999999" if g == "base" else (colors[0] if g.startswith("insta") else colors[1 + i % 8])
            ax.bar(i, e["mean"], color=col, yerr=e["sd"] if e.get("sd") else None, capsize=3)
            if len(e.get("values", [])) > 1:
                ax.scatter([i] * len(e["values"]), e["values"], s=8, color="black", zorder=3)
        tgt = next((t for t in results["targets"] if t["id"] == tid), None)
        if tgt and tgt.get("chance") and m != "gold_logprob":
            ax.axhline(tgt["chance"], ls="--", lw=0.8, color="black")
        ax.set_title(f"{title}\n{m}", fontsize=9)
        ax.set_xticks(xs)
        ax.set_xticklabels(groups, rotation=60, ha="right", fontsize=7)
        ax.tick_params(axis="y", labelsize=7)
        vals = [e["mean"] for e in entries if e]
        if vals and m != "gold_logprob":
            lo, hi = min(vals), max(vals)
            pad = max(0.05, (hi - lo) * 0.3)
            ax.set_ylim(max(0.0, lo - pad), min(1.0, hi + pad) if hi <= 1 else hi + pad)
    for ax in list(axes.flat)[len(panels):]:
        ax.axis("off")
    fig.suptitle(f"{results['name']}: {'per-target primary metric' if metric is None else metric} "
                 "(dashed: chance; dots: seeds)", fontsize=10)
    fig.tight_layout()
    return _png(fig)


def plot_selection_heatmap(results: dict[str, Any], max_rows: int = 60) -> bytes:
    """Source tasks (rows) x methods (columns): for how many targets each method picked the task."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    labels = [m["label"] for m in results["methods"] if m["method"] not in ("base", "all")]
    counts: dict[str, dict[str, int]] = {}
    for c in results["cells"]:
        if c["label"] not in labels:
            continue
        for t in c["selected"]:
            counts.setdefault(t, {}).setdefault(c["label"], 0)
            counts[t][c["label"]] += 1
    seeded = {m["label"] for m in results["methods"] if m.get("seed") is not None}
    tasks = sorted(counts, key=lambda t: (-sum(v for k, v in counts[t].items() if k not in seeded),
                                          -sum(counts[t].values()), t))[:max_rows]
    n_targets = len(results["targets"])
    if not tasks or not labels:
        fig, ax = plt.subplots(figsize=(4, 1))
        ax.text(0.5, 0.5, "no selections", ha="center")
        ax.axis("off")
        return _png(fig)
    mat = np.array([[counts[t].get(lab, 0) for lab in labels] for t in tasks], dtype=float)
    fig, ax = plt.subplots(figsize=(max(5.0, 2.5 + 0.55 * len(labels)), 1.6 + 0.2 * len(tasks)))
    im = ax.imshow(mat, aspect="auto", cmap="Blues", vmin=0, vmax=max(1, n_targets))
    ax.set_xticks(range(len(labels)))
    ax.set_xticklabels(labels, rotation=60, ha="right", fontsize=7)
    ax.set_yticks(range(len(tasks)))
    ax.set_yticklabels(tasks, fontsize=6)
    for i in range(len(tasks)):
        for j in range(len(labels)):
            if mat[i, j]:
                ax.text(j, i, int(mat[i, j]), ha="center", va="center", fontsize=6,
                        color="white" if mat[i, j] > n_targets / 2 else "black")
    cb = fig.colorbar(im, ax=ax, fraction=0.04)
    cb.set_label(f"# targets (of {n_targets})", fontsize=7)
    cb.ax.tick_params(labelsize=7)
    ax.set_title(f"Source tasks picked per method\n(top {len(tasks)} rows; 'all' takes every pool unit)", fontsize=9)
    fig.tight_layout()
    return _png(fig)


# ---------------------------------------------------------------- writers


def _run_lines(results: dict[str, Any]) -> list[str]:
    cfg = results.get("config") or {}
    train = cfg.get("train") or {}
    run = results.get("working_run") or {}
    m = run.get("machine") or results.get("machine") or {}
    secs = run.get("seconds_total", results.get("seconds_total"))
    cmd = run.get("command") or results.get("command")
    stats = run.get("stats") or results.get("stats") or {}
    lines = []
    if results.get("backend") == "dry-run":
        lines.append("**DRY RUN: no model was trained or evaluated; every number below is a deterministic fake.**")
    if results.get("partial"):
        done, todo = len(results.get("cells") or []), len(results.get("missing_cells") or [])
        lines.append(f"**PARTIAL: {done} of {done + todo} cells finished so far; the run resumes where it stopped "
                     "(rerun the command). Averages over targets need every cell of a method.**")
        cmd_line = "insta experiment " + (results.get("config_path") or "CONFIG")
        lines.append(f"Command that resumes the run: `{cmd_line}`")
        return lines + ([f"Missing cells: {', '.join(results['missing_cells'])}"] if todo else [])
    lines += [
        f"Command: `{cmd}`" if cmd else "Command: (library call)",
        f"Wall time of the run that did the work: {_fmt_time(secs)} on {m.get('cpus_available', m.get('cpus'))} "
        f"CPU core(s), torch {m.get('torch', '?')}, CUDA {m.get('cuda', False)}; finished "
        f"{run.get('finished') or results.get('finished')}.",
        f"Model: {results.get('model')}; k = {results.get('k')}; training budget: exactly {results.get('n_total')} "
        f"instances for every method (all tasks included), training options {json.dumps(train)}; "
        f"evaluation: rank classification on up to {(cfg.get('eval') or {}).get('n', 100)} examples per target.",
        f"Work done by that run: {stats.get('trained', 0)} models trained, {stats.get('evaluated', 0)} evaluations, "
        f"{stats.get('cells_cached', 0)} cells reused from the cache.",
    ]
    compute = _compute_line(results)
    if compute:
        lines.append(compute)
    if results.get("missing_cells"):
        lines.append(f"Missing cells: {', '.join(results['missing_cells'])}")
    return lines


def _compute_line(results: dict[str, Any], gap_hours: float = 1.0) -> str | None:
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
    line = (f"Model compute recorded in the cells: {len(trained)} trainings ({_fmt_time(t_train)}) and {len(cells)} "
            f"evaluations ({_fmt_time(t_eval)}), {_fmt_time(t_train + t_eval)} in all")
    if len(spans) > 1:
        line += (f"; the cells were finished in {len(spans)} stretches ({when}): the run was interrupted and "
                 "resumed from its cache, so the wall time above covers only the last invocation")
    elif spans:
        line += f"; cells finished {when}"
    return line + "."


def _fmt_time(s: float | None) -> str:
    if s is None:
        return "?"
    s = int(round(s))
    return f"{s // 3600} h {s % 3600 // 60:02d} min {s % 60:02d} s" if s >= 3600 else f"{s // 60} min {s % 60:02d} s"


def build_sections(results: dict[str, Any], summary: dict[str, Any], images: dict[str, str]) -> list[dict[str, Any]]:
    """The report as sections of paragraphs, tables and images (rendered to markdown and HTML)."""
    secs: list[dict[str, Any]] = []
    secs.append({"title": "Run", "paragraphs": _run_lines(results)})
    secs.append({"title": "Verdict", "paragraphs": verdict_lines(summary) + secondary_verdict_lines(summary) + [
        "Differences are paired over the same evaluation examples (bootstrap over examples, "
        f"{summary['n_boot']} resamples); 'better'/'worse' means the 95% CI excludes zero. A seeded baseline "
        "(random) enters as the mean over its seeds; compare each difference with that baseline's sd over seeds."]})
    h, r = main_table(summary, results)
    secs.append({"title": "Primary metric per target", "paragraphs": [
        primary_definition(summary) + " Seeded methods: mean ± sd over seeds. The average row averages each "
        "target's primary metric."], "tables": [(h, r)], "images": ["bars_primary.png"]})
    h, r = comparison_table(summary, "average")
    h2, r2 = comparison_table(summary, "per-target")
    secs.append({"title": "Paired comparisons", "paragraphs": [
        "Difference of the primary metric (method minus baseline), averaged over targets; INSTA variants against "
        "every baseline, the other methods against random and all. Per-target rows below."],
        "tables": [(h, r)], "details": ("per-target comparisons", [h2, r2])})
    for metric in SECONDARY:
        if not any(metric in by_group for row in summary["table"].values() for by_group in row.values()):
            continue  # e.g. per-character predictions in cells that predate them
        h, r = main_table(summary, results, metric)
        secs.append({"title": f"{METRIC_NAMES.get(metric, metric)}", "tables": [(h, r)], "level": 3})
    sec = {"title": "Gold log-probability", "images": ["bars_gold_logprob.png"], "level": 3}
    second = summary.get("secondary")
    if second and second["comparisons"]:
        name = METRIC_NAMES.get(second["metric"], second["metric"])
        sec["paragraphs"] = [
            f"Secondary comparison on {name} (higher is better): it moves with training effects too small to change "
            "which option wins, so it shows whether a selection taught the target's answers at all. Same paired "
            "bootstrap as above; INSTA variants against every baseline, averaged over targets."]
        sec["tables"] = [comparison_table(summary, "average", second["comparisons"])]
        sec["details"] = (f"per-target comparisons on {name}",
                          list(comparison_table(summary, "per-target", second["comparisons"])))
    secs.append(sec)
    h, r = selections_table(results)
    secs.append({"title": "Selections", "tables": [(h, r)], "images": ["selection_heatmap.png"]})
    h, r = _targets_table(results, summary)
    secs.append({"title": "Targets", "tables": [(h, r)]})
    h, r = _methods_table(summary)
    secs.append({"title": "Methods and what they consumed", "tables": [(h, r)]})
    removed = (results.get("pool") or {}).get("removed", [])
    secs.append({"title": "Source pool", "paragraphs": _pool_lines(results),
                 "details": ("removed units and why", [["task", "reason"], [[x["task"], x["reason"]] for x in removed]])})
    h, r = _training_table(results)
    secs.append({"title": "Trained models", "tables": [(h, r)]})
    p3 = results.get("p3_table")
    if p3:
        h, r = p3_rows(p3)
        paras = [f"INSTA on P3 (no training: P3 instances are not available offline): the top-{p3['k']} of the "
                 f"{p3['pool_size']}-dataset T0 training pool for each T0 held-out target. {p3.get('anli', '')}. "
                 "Scores in brackets: mean cosine for mean aggregation; for top-k vote, the share of the top-10 "
                 "votes of the target's instructions (0.000 = no vote; such ties are ranked by mean cosine)."]
        if p3.get("note"):
            paras.append(p3["note"])
        secs.append({"title": "P3 selection table", "paragraphs": paras, "tables": [(h, r)]})
    return secs


def primary_definition(summary: dict[str, Any]) -> str:
    """One sentence saying what the primary metric is, with the normalisation it uses."""
    name = summary.get("normalisation", "char")
    suffix, unit = _normalisation(name)
    how = ("as lm-evaluation-harness's `acc_norm` (`report.normalisation: char`; `acc_norm_token` divides by tokens "
           "instead)" if name == "char" else "(`report.normalisation: token`; lm-evaluation-harness's `acc_norm`, "
           "and insta's, divide by the length in characters instead)")
    return (f"Primary: balanced accuracy of rank classification where a target has one label set "
            f"(`bal_acc{suffix}`), accuracy where options vary per example (`acc{suffix}`); each option's summed "
            f"log-likelihood is divided by its length in **{unit}** {how}, and the highest-scoring option is the "
            "prediction.")


def render_markdown(title: str, sections: list[dict[str, Any]]) -> str:
    out = [f"# {title}", ""]
    for s in sections:
        out += [("#" * s.get("level", 2)) + " " + s["title"], ""]
        for p in s.get("paragraphs", []):
            out += [p, ""]
        for h, rows in s.get("tables", []):
            out += [_md_table(h, rows), ""]
        if s.get("details"):
            label, (h, rows) = s["details"]
            out += [f"<details><summary>{label} ({len(rows)})</summary>", "", _md_table(h, rows), "", "</details>", ""]
        for img in s.get("images", []):
            out += [f"![{img}]({img})", ""]
    return "\n".join(out).rstrip() + "\n"


def _inline_md(text: str) -> str:
    import re

    t = html.escape(text)
    t = re.sub(r"\*\*(.+?)\*\*", r"<b>\1</b>", t)
    t = re.sub(r"`(.+?)`", r"<code>\1</code>", t)
    return t


def _html_table(h: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    head = "".join(f"<th>{_inline_md(x)}</th>" for x in h)
    body = "".join("<tr>" + "".join(f"<td>{_inline_md(str(x))}</td>" for x in r) + "</tr>" for r in rows)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


CSS = """body{font-family:system-ui,-apple-system,Segoe UI,sans-serif;max-width:1200px;margin:2em auto;padding:0 1em;
color:#222}table{border-collapse:collapse;margin:.8em 0;font-size:.85em}th,td{border:1px solid #ccc;padding:3px 7px;
text-align:left;vertical-align:top}th{background:#f2f2f2}img{max-width:100%;border:1px solid #eee;margin:.5em 0}
code{background:#f5f5f5;padding:1px 4px}details{margin:.5em 0}h2{border-bottom:1px solid #ddd;padding-bottom:.2em}"""


def render_html(title: str, sections: list[dict[str, Any]], images: dict[str, str]) -> str:
    parts = [f"<!DOCTYPE html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title>"
             f"<style>{CSS}</style></head><body><h1>{html.escape(title)}</h1>"]
    for s in sections:
        lvl = s.get("level", 2)
        parts.append(f"<h{lvl}>{html.escape(s['title'])}</h{lvl}>")
        for p in s.get("paragraphs", []):
            parts.append(f"<p>{_inline_md(p)}</p>")
        for h, rows in s.get("tables", []):
            parts.append(_html_table(h, rows))
        if s.get("details"):
            label, (h, rows) = s["details"]
            parts.append(f"<details><summary>{html.escape(label)} ({len(rows)})</summary>{_html_table(h, rows)}</details>")
        for img in s.get("images", []):
            if img in images:
                parts.append(f"<img alt='{html.escape(img)}' src='data:image/png;base64,{images[img]}'>")
    parts.append("</body></html>")
    return "\n".join(parts)


NOTES_FILE = "notes.md"  # hand-written interpretation in an experiment's output folder, shown after "Run"


def write_report(results: dict[str, Any], out_dir: str | Path, log: Callable[[str], None] = lambda m: None,
                 plots: bool = True, summary: dict[str, Any] | None = None) -> dict[str, Path]:
    """Write ``results.json`` (with the summary), ``results.md``, ``*.png`` and ``report.html`` into ``out_dir``;
    a hand-written ``notes.md`` there is included as the report's second section."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    summary = summary or summarize(results)
    results = {**results, "summary": summary}
    images: dict[str, str] = {}
    paths: dict[str, Path] = {}
    if plots:
        for name, fn in (("bars_primary.png", lambda: plot_bars(summary, results)),
                         ("bars_gold_logprob.png", lambda: plot_bars(summary, results, "gold_logprob")),
                         ("selection_heatmap.png", lambda: plot_selection_heatmap(results))):
            data = fn()
            atomic_write_bytes(out / name, data)
            images[name] = base64.b64encode(data).decode("ascii")
            paths[name] = out / name
    title = f"insta experiment: {results['name']}"
    sections = build_sections(results, summary, images)
    notes = out / NOTES_FILE
    if notes.is_file():  # the experimenters' reading of the numbers, kept next to them in every rendering
        paras = [p.strip() for p in notes.read_text(encoding="utf-8").split("\n\n") if p.strip()]
        sections.insert(1, {"title": "Reading these results", "paragraphs": paras})
    atomic_write_json(out / "results.json", results, indent=None)  # per-example arrays: keep it compact
    atomic_write_text(out / "results.md", render_markdown(title, sections))
    atomic_write_text(out / "report.html", render_html(title, sections, images))
    paths.update({"results.json": out / "results.json", "results.md": out / "results.md",
                  "report.html": out / "report.html"})
    log(f"report: {', '.join(str(p) for p in paths.values())}")
    return paths


def load_results(path: str | Path) -> dict[str, Any]:
    """A results.json (one-line error when unreadable), with cells of earlier formats read in today's form
    (:func:`insta.experiment.upgrade_results`)."""
    from .experiment import upgrade_results
    from .fileio import load_json

    return upgrade_results(load_json(path, "results file"))


__all__ = ["load_results", "main_table", "metric_on", "plot_bars", "plot_selection_heatmap", "primary_definition",
           "primary_metric_of", "summarize", "write_report"]

"""The experiment's numbers: each metric per (target, method group) from the cells' per-example arrays, the average
over targets, and paired bootstrap comparisons (:mod:`insta.report.stats`).

* The **primary** metric of a target whose examples all share one label set (True/False/Neither, yes/no,
  (A)/(B), ...) is the balanced accuracy of length-normalised rank classification: a mixture that only pushes the
  model toward one answer word cannot raise it (PILOT.md, label-prior drift). Targets whose options change from
  example to example use the accuracy of the same rule; generation targets ``exact_match``. The length is the
  option's length in characters (``bal_acc_norm`` / ``acc_norm``, lm-eval's ``acc_norm``) unless the config's
  ``report.normalisation`` is ``token`` (``bal_acc_norm_token`` / ``acc_norm_token``; cells written before insta
  stored per-character predictions have only these).
* Methods with several seeds (``random``) are the mean (± sd) over seeds.
* Comparisons are **paired**: the same bootstrap resamples of a target's evaluation examples are applied to both
  methods (``report.bootstrap`` resamples, ``report.interval`` CI); the average over targets resamples each target
  independently and averages the per-target differences. A seeded group enters as the mean over its seeds.
"""
from __future__ import annotations

import statistics
from typing import Any

import numpy as np

from ..errors import InstaError
from ..metrics import balanced_accuracy_of, class_indices, rank_rule
from .stats import INTERVALS, interval, jackknife_indices, resample_indices

#: report.normalisation -> (its suffix on acc_norm / bal_acc_norm, what it divides by)
NORMALISATIONS = {"char": ("_norm", "characters"), "token": ("_norm_token", "tokens")}
DEFAULT_BASELINES = ("random", "all", "lexical", "roe", "dsir", "base")
#: every metric the summary table holds (where the cells have what it needs)
TABLE_METRICS = ("bal_acc_norm", "bal_acc_norm_token", "acc_norm", "acc_norm_token", "acc", "bal_acc",
                 "bal_acc_calibrated", "acc_calibrated", "gold_logprob", "exact_match", "rouge_l")


def _arrays(s: dict[str, Any], metric: str) -> dict[str, np.ndarray] | None:
    """The per-example arrays a metric needs, or None when the cell lacks them."""
    if metric in ("exact_match", "rouge_l", "gold_logprob", "gold_nll_per_token"):
        v = s.get(metric) or []
        return None if not v or any(x is None for x in v) else {"value": np.asarray(v, dtype=float)}
    rule = rank_rule(metric)
    if rule is None:
        return None
    preds, labels = s.get(f"pred_{rule}") or [], s.get("label") or []
    if not preds or any(p is None for p in preds) or any(x is None for x in labels):
        return None
    correct = np.asarray([p == lab for p, lab in zip(preds, labels)], dtype=float)
    if metric == "acc" or metric.startswith("acc_"):
        return {"value": correct}
    return {"correct": correct, "cls": class_indices(s.get("gold") or [])}


def metric_on(s: dict[str, Any], metric: str, idx: np.ndarray | None = None) -> np.ndarray | float | None:
    """The metric of one cell's samples; with ``idx`` (R x m example indices) one value per row."""
    arr = _arrays(s, metric)
    if arr is None:
        return None
    if "value" in arr:
        rows = np.arange(len(arr["value"]))[None, :] if idx is None else idx
        out = arr["value"][rows].mean(axis=1)
        return float(out[0]) if idx is None else out
    return balanced_accuracy_of(arr["correct"], arr["cls"], idx)


def primary_metric_of(target: dict[str, Any], setting: str | None = None, normalisation: str = "char") -> str:
    """``bal_acc_norm`` for a fixed label set, ``acc_norm`` for per-example options, ``exact_match`` else;
    ``normalisation="token"`` gives the per-token variants (``bal_acc_norm_token``, ``acc_norm_token``)."""
    if setting and setting != "auto":
        return setting
    if not target.get("rank_classification"):
        return "exact_match"
    suffix = normalisation_of(normalisation)[0]
    return ("bal_acc" if target.get("fixed_labels") else "acc") + suffix


def normalisation_of(name: str) -> tuple[str, str]:
    """``report.normalisation`` -> (metric suffix, unit); a one-line error for an unknown name."""
    if name not in NORMALISATIONS:
        raise InstaError(f"report.normalisation must be one of {', '.join(NORMALISATIONS)} (got {name!r})")
    return NORMALISATIONS[name]


def method_groups(results: dict[str, Any]) -> list[dict[str, Any]]:
    """Method groups in config order: ``{"group", "labels", "method", "consumes", ...}``."""
    out: dict[str, dict[str, Any]] = {}
    for m in results["methods"]:
        g = out.setdefault(m["group"], {"group": m["group"], "labels": [], "method": m["method"],
                                        "consumes": m["consumes"], "depends_on_target": m["depends_on_target"],
                                        "params": m["params"]})
        g["labels"].append(m["label"])
    return list(out.values())


def _mean_sd(vals: list[float]) -> dict[str, Any]:
    return {"mean": statistics.mean(vals), "sd": statistics.stdev(vals) if len(vals) > 1 else None,
            "n_seeds": len(vals), "values": vals}


class _Grid:
    """The cells of a results dict, looked up by (target, label), with the shared bootstrap resamples."""

    def __init__(self, results: dict[str, Any], n_boot: int, seed: int):
        self.cells = {(c["target"], c["label"]): c for c in results["cells"]}
        self.samples = results["samples"]
        self.targets = results["targets"]
        rng = np.random.default_rng(seed)
        self.idx = {t["id"]: resample_indices(t["n_eval"], n_boot, rng) if t["n_eval"] else None
                    for t in self.targets}

    def sample(self, tid: str, label: str) -> dict[str, Any] | None:
        c = self.cells.get((tid, label))
        return None if c is None else self.samples[c["eval_key"]]

    def point(self, tid: str, label: str, metric: str) -> float | None:
        s = self.sample(tid, label)
        return None if s is None else metric_on(s, metric)

    def group_values(self, tid: str, g: dict[str, Any], metric: str) -> list[float]:
        """The metric of each of the group's cells on a target (one per seed; missing cells left out)."""
        vals = [self.point(tid, lab, metric) for lab in g["labels"]]
        return [v for v in vals if v is not None]

    def group_stat(self, tid: str, g: dict[str, Any], metric: str, idx: np.ndarray):
        """The group's metric on each row of ``idx`` (mean over seeds) and at the full sample; ``(None, None)``
        when a cell or the metric is missing."""
        vals, point = [], []
        for lab in g["labels"]:
            s = self.sample(tid, lab)
            v = None if s is None else metric_on(s, metric, idx)
            if v is None:
                return None, None
            vals.append(v)
            point.append(metric_on(s, metric))
        return np.mean(vals, axis=0), float(np.mean(point))

    def same_models(self, tid: str, a: dict[str, Any], b: dict[str, Any]) -> bool:
        return ([self.cells[(tid, x)]["eval_key"] for x in a["labels"]]
                == [self.cells[(tid, x)]["eval_key"] for x in b["labels"]])

    def seed_sd(self, tid: str, g: dict[str, Any], metric: str) -> float | None:
        if len(g["labels"]) < 2:
            return None
        return statistics.stdev([self.point(tid, lab, metric) for lab in g["labels"]])

    def seed_sd_of_average(self, g: dict[str, Any], primary: dict[str, str]) -> float | None:
        if len(g["labels"]) < 2:
            return None
        per_seed = []
        for lab in g["labels"]:
            vals = [self.point(t["id"], lab, primary[t["id"]]) for t in self.targets]
            if any(v is None for v in vals):
                return None
            per_seed.append(statistics.mean(vals))
        return statistics.stdev(per_seed)


def summarize(results: dict[str, Any]) -> dict[str, Any]:
    """Point estimates per (target, group), the average over targets, the paired comparisons, per-method CIs and
    the overlap of the methods' selections."""
    rcfg = (results.get("config") or {}).get("report") or {}
    opts = {"n_boot": int(rcfg.get("bootstrap", 2000)), "confidence": float(rcfg.get("confidence", 0.95)),
            "interval": rcfg.get("interval", "percentile")}
    if opts["interval"] not in INTERVALS:
        raise InstaError(f"report.interval must be one of {', '.join(INTERVALS)} (got {opts['interval']!r})")
    groups = method_groups(results)
    grid = _Grid(results, opts["n_boot"], int(rcfg.get("seed", 0)))
    table = {t["id"]: {g["group"]: {m: _mean_sd(vals) for m in TABLE_METRICS
                                    if (vals := grid.group_values(t["id"], g, m))} for g in groups}
             for t in grid.targets}
    normalisation = rcfg.get("normalisation", "char")
    primary = {t["id"]: primary_metric_of(t, rcfg.get("primary"), normalisation) for t in grid.targets}
    _check_primary_available(results, primary, normalisation)
    average: dict[str, dict[str, Any]] = {}
    for g in groups:  # average over targets of each target's primary metric (per seed for seeded groups)
        per_seed = []
        for lab in g["labels"]:
            vals = [grid.point(t["id"], lab, primary[t["id"]]) for t in grid.targets]
            if all(v is not None for v in vals):
                per_seed.append(statistics.mean(vals))
        if per_seed:
            average[g["group"]] = _mean_sd(per_seed)
    pairs = comparison_pairs(groups, rcfg)
    comparisons = _comparisons(grid, groups, pairs, primary, opts)
    # a continuous secondary metric: the gold answer's log-probability moves with small training effects that
    # leave the argmax (and so accuracy) unchanged; INSTA variants against the baselines only
    secondary = None
    second = rcfg.get("secondary_metric", "gold_logprob")
    if second:
        secondary = {"metric": second, "comparisons": _comparisons(
            grid, groups, [p for p in pairs if p[2]], {t["id"]: second for t in grid.targets}, opts)}
    out = {"primary": primary, "normalisation": normalisation, "table": table, "average": average,
           "comparisons": comparisons, "secondary": secondary, "groups": [g["group"] for g in groups],
           "group_info": groups, "n_boot": opts["n_boot"], "confidence": opts["confidence"],
           "interval": opts["interval"]}
    out["method_intervals"] = {"primary": _method_intervals(grid, groups, primary, opts)}
    if second:
        out["method_intervals"][second] = _method_intervals(grid, groups, {t["id"]: second for t in grid.targets},
                                                            opts)
    out["selection_overlap"] = selection_overlap(results)
    return out


def _check_primary_available(results: dict[str, Any], primary: dict[str, str], normalisation: str) -> None:
    """A clear error when a finished cell lacks the predictions its target's primary metric needs."""
    for c in results["cells"]:
        s = results["samples"].get(c["eval_key"]) or {}
        rule = rank_rule(primary.get(c["target"], ""))
        if rule and s.get("label") and any(x is not None for x in s["label"]) and not s.get(f"pred_{rule}"):
            hint = (" (cells written before insta stored per-character predictions hold per-token ones: set "
                    "report.normalisation: token in the config, or rerun those cells)" if rule == "norm" else "")
            raise InstaError(f"cell {c['target']}/{c['label']} has no {primary[c['target']]} predictions{hint}")


def comparison_pairs(groups: list[dict[str, Any]], rcfg: dict[str, Any]) -> list[tuple[str, str, bool]]:
    """``(method, baseline, focus)``: each focus method (INSTA variants) against every baseline, then every other
    method against the two target-independent baselines (random, all)."""
    names = [g["group"] for g in groups]
    focus = rcfg.get("focus") or [g for g in names if g.startswith("insta")]
    baselines = rcfg.get("baselines") or [b for b in DEFAULT_BASELINES if b in names]
    pairs = [(f, b, True) for f in focus if f in names for b in baselines if b in names and b != f]
    others = [g for g in names if g not in focus and g not in ("base", "random")]
    return pairs + [(f, b, False) for f in others for b in ("random", "all") if b in names and b != f]


def _comparisons(grid: _Grid, groups: list[dict[str, Any]], pairs: list[tuple[str, str, bool]],
                 metric_of: dict[str, str], opts: dict[str, Any]) -> list[dict[str, Any]]:
    """Paired differences of ``metric_of[target]`` for each pair: per target and averaged over targets."""
    by_name = {g["group"]: g for g in groups}
    out = []
    for f, b, is_focus in pairs:
        fg, bg = by_name[f], by_name[b]
        per_target, boots, jacks = [], [], []
        for t in grid.targets:
            tid, metric = t["id"], metric_of[t["id"]]
            fa, fp = grid.group_stat(tid, fg, metric, grid.idx[tid])
            ba, bp = grid.group_stat(tid, bg, metric, grid.idx[tid])
            if fa is None or ba is None:
                continue
            d = fa - ba
            jack = _jackknife_diff(grid, tid, fg, bg, metric) if opts["interval"] == "bca" else None
            boots.append(d)
            jacks.append(jack)
            row = _diff_row(tid, metric, fp - bp, d, opts, [jack] if jack is not None else None,
                            grid.seed_sd(tid, bg, metric))
            if grid.same_models(tid, fg, bg):
                row["verdict"] = "same model (identical selection)"
            per_target.append(row)
        if not per_target:
            continue
        avg = None
        if len(boots) == len(grid.targets):
            point = float(np.mean([r["diff"] for r in per_target]))
            jack_avg = None
            if opts["interval"] == "bca":  # leaving one example of target t out moves the average by 1/T of it
                jack_avg = [point + (j - r["diff"]) / len(jacks) for j, r in zip(jacks, per_target)]
            avg = _diff_row("average", "primary", point, np.mean(boots, axis=0), opts, jack_avg,
                            grid.seed_sd_of_average(bg, metric_of))
        out.append({"method": f, "baseline": b, "focus": is_focus, "per_target": per_target, "average": avg})
    return out


def _jackknife_diff(grid: _Grid, tid: str, fg: dict[str, Any], bg: dict[str, Any], metric: str) -> np.ndarray:
    rows = jackknife_indices(len(grid.idx[tid][0]))
    return grid.group_stat(tid, fg, metric, rows)[0] - grid.group_stat(tid, bg, metric, rows)[0]


def _diff_row(tid: str, metric: str, point: float, boots: np.ndarray, opts: dict[str, Any],
              jackknife: list[np.ndarray] | None, sd_seeds: float | None) -> dict[str, Any]:
    ci = interval(boots, point, opts["confidence"], opts["interval"], jackknife, p_value=True)
    verdict = "better" if ci["low"] > 0 else ("worse" if ci["high"] < 0 else "no detectable difference")
    row = {"target": tid, "metric": metric, "diff": point, "low": ci["low"], "high": ci["high"],
           "p_value": ci["p_value"], "verdict": verdict, "baseline_seed_sd": sd_seeds}
    if "interval_note" in ci:
        row["interval_note"] = ci["interval_note"]
    return row


def _method_intervals(grid: _Grid, groups: list[dict[str, Any]], metric_of: dict[str, str],
                      opts: dict[str, Any]) -> dict[str, dict[str, list[float]]]:
    """``{target or "average": {group: [low, high]}}``: each method's own bootstrap CI (for the figures)."""
    out: dict[str, dict[str, list[float]]] = {}
    for g in groups:
        boots, jacks, points = [], [], []
        for t in grid.targets:
            tid = t["id"]
            vals, point = grid.group_stat(tid, g, metric_of[tid], grid.idx[tid])
            if vals is None:
                continue
            jack = None
            if opts["interval"] == "bca":
                jack = grid.group_stat(tid, g, metric_of[tid], jackknife_indices(len(grid.idx[tid][0])))[0]
            ci = interval(vals, point, opts["confidence"], opts["interval"], None if jack is None else [jack])
            out.setdefault(tid, {})[g["group"]] = [ci["low"], ci["high"]]
            boots.append(vals)
            jacks.append(jack)
            points.append(point)
        if boots and len(boots) == len(grid.targets):
            mean = float(np.mean(points))
            jack_avg = (None if opts["interval"] != "bca" else
                        [mean + (j - p) / len(jacks) for j, p in zip(jacks, points)])
            ci = interval(np.mean(boots, axis=0), mean, opts["confidence"], opts["interval"], jack_avg)
            out.setdefault("average", {})[g["group"]] = [ci["low"], ci["high"]]
    return out


def selection_overlap(results: dict[str, Any]) -> dict[str, Any]:
    """Jaccard overlap of the methods' selected source tasks, averaged over the targets both selected for:
    ``{"labels", "jaccard"}`` (labels: every selecting method but ``all``, which takes the whole pool)."""
    labels = [m["label"] for m in results["methods"] if m["method"] not in ("base", "all")]
    chosen: dict[str, dict[str, set[str]]] = {}
    for c in results["cells"]:
        if c["label"] in labels:
            chosen.setdefault(c["label"], {})[c["target"]] = set(c.get("selected") or [])
    labels = [lab for lab in labels if lab in chosen]
    mat = []
    for a in labels:
        row = []
        for b in labels:
            common = [t for t in chosen[a] if t in chosen[b]]
            vals = [len(chosen[a][t] & chosen[b][t]) / len(chosen[a][t] | chosen[b][t])
                    for t in common if chosen[a][t] | chosen[b][t]]
            row.append(round(statistics.mean(vals), 4) if vals else None)
        mat.append(row)
    return {"labels": labels, "jaccard": mat}


__all__ = ["DEFAULT_BASELINES", "NORMALISATIONS", "TABLE_METRICS", "comparison_pairs", "method_groups",
           "metric_on", "normalisation_of", "primary_metric_of", "selection_overlap", "summarize"]

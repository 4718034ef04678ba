"""From per-sample records to metrics (per template, averaged over templates as T0 does) and result files."""
from __future__ import annotations

import json
import math
import os
import re
from pathlib import Path
from typing import Any, Sequence

from ..metrics import RANK_RULES, rank_metric

def argmax(xs: Sequence[float]) -> int:
    """The index of the first largest value (the prediction of a rank-classification rule)."""
    best = 0
    for i, x in enumerate(xs):
        if x > xs[best]:
            best = i
    return best


def _rank_metrics(samples: list[dict[str, Any]]) -> dict[str, float]:
    from ..metrics import accuracy, balanced_accuracy, gold_score, macro_f1

    out: dict[str, float] = {"n": len(samples)}
    golds = [s["reference"] for s in samples]
    for rule in RANK_RULES:
        key = f"pred_{rule}"
        if any(s.get(key) is None for s in samples):
            continue
        preds = [s["options"][s[key]] for s in samples]
        out[rank_metric("acc", rule)] = accuracy([s[key] == s["label"] for s in samples], [True] * len(samples))
        out[rank_metric("bal_acc", rule)] = balanced_accuracy(preds, golds)
        out[rank_metric("macro_f1", rule)] = macro_f1(preds, golds)
    gold = [gold_score(s) for s in samples]
    out["gold_logprob"] = sum(lp for lp, _ in gold) / len(samples)
    out["gold_nll_per_token"] = sum(nll for _, nll in gold) / len(samples)
    out["n_classes"] = len(set(golds))
    return out


def _gen_metrics(samples: list[dict[str, Any]]) -> dict[str, float]:
    n = len(samples)
    return {"n": n, "rouge_l": sum(s["rouge_l"] for s in samples) / n,
            "exact_match": sum(s["exact_match"] for s in samples) / n}


def _metrics(samples: list[dict[str, Any]]) -> dict[str, float]:
    rank = [s for s in samples if s["type"] == "rank"]
    gen = [s for s in samples if s["type"] == "generate"]
    out: dict[str, float] = {}
    if rank:
        out.update(_rank_metrics(rank))
    if gen:
        g = _gen_metrics(gen)
        if rank:
            out["n_generate"] = g.pop("n")
        out.update(g)
    if rank and gen:
        out["n"] = len(samples)
    return out


def _average(per_group: dict[str, dict[str, float]]) -> dict[str, float]:
    keys = set.intersection(*(set(m) for m in per_group.values()))
    out = {}
    for k in sorted(keys):
        if k in ("n", "n_generate", "n_classes"):
            continue
        vals = [m[k] for m in per_group.values() if isinstance(m[k], (int, float)) and not math.isnan(m[k])]
        if vals:
            out[k] = sum(vals) / len(vals)
    out["n"] = sum(m["n"] for m in per_group.values())
    out["n_templates"] = len(per_group)
    return out


def metrics_by_template(samples: list[dict[str, Any]], average_over_templates: bool | None = None
                        ) -> dict[str, Any]:
    """``{"metrics": ...}`` of the samples; averaged over templates (T0) when ``average_over_templates`` (``None``:
    when every sample carries a template id and there are two or more), with ``metrics_pooled`` and
    ``per_template``."""
    pooled = _metrics(samples)
    groups: dict[str, list[dict[str, Any]]] = {}
    for s in samples:
        groups.setdefault(s["template_id"] or "", []).append(s)
    use_templates = average_over_templates
    if use_templates is None:
        use_templates = len(groups) > 1 and "" not in groups
    if use_templates and len(groups) > 0:
        per_template = {t: _metrics(g) for t, g in groups.items()}
        return {"metrics": _average(per_template), "metrics_pooled": pooled, "per_template": per_template}
    return {"metrics": pooled}


def task_slug(task_id: str) -> str:
    """A task id as a folder name."""
    return re.sub(r"[^A-Za-z0-9._-]+", "__", task_id).strip("_") or "task"


def write_results(result: dict[str, Any], out_dir: str | os.PathLike) -> Path:
    """Write ``<out_dir>/<task>/results.json`` (without samples) and ``samples.jsonl``; returns the folder."""
    from ..util.paths import atomic_write_json, atomic_write_text

    folder = Path(out_dir) / task_slug(result.get("task") or "task")
    body = {k: v for k, v in result.items() if k != "samples"}
    if result.get("samples") is not None and result.get("config", {}).get("samples", True):
        lines = [json.dumps(s, ensure_ascii=False) for s in result["samples"]]
        atomic_write_text(folder / "samples.jsonl", "\n".join(lines) + ("\n" if lines else ""))
        body["samples_file"] = str(folder / "samples.jsonl")
    atomic_write_json(folder / "results.json", body)
    return folder

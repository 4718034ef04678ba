"""A cell's per-example arrays (``samples``): what the report's paired bootstrap reads, compacted from an
evaluation result, and older cells and ``results.json`` files brought to today's form (numbers kept)."""
from __future__ import annotations

from typing import Any

#: the form of a cell's per-example arrays (``samples``). Format 1 (no ``format`` key) predates the
#: lm-evaluation-harness names: its ``pred_norm`` divided by tokens and it has no per-character predictions.
SAMPLES_FORMAT = 2
PRED_KEYS = ("pred_sum", "pred_norm", "pred_norm_token", "pred_calibrated")


def compact_samples(result: dict[str, Any]) -> dict[str, Any]:
    """The per-example arrays the report needs (paired bootstrap), from an evaluation result."""
    from ..metrics import gold_score

    samples = result.get("samples") or []
    out: dict[str, Any] = {"format": SAMPLES_FORMAT, "ids": [], "gold": [], "label": [],
                           **{k: [] for k in PRED_KEYS}, "gold_logprob": [], "gold_nll_per_token": [],
                           "n_options": [], "exact_match": [], "rouge_l": []}
    for s in samples:
        out["ids"].append(s["id"])
        if s.get("type", "rank") == "rank":
            lab = s["label"]
            out["gold"].append(s.get("reference", s["options"][lab]))
            out["label"].append(lab)
            for key in PRED_KEYS:
                out[key].append(s.get(key))
            logprob, nll = gold_score(s)
            out["gold_logprob"].append(round(logprob, 5))
            out["gold_nll_per_token"].append(round(nll, 5))
            out["n_options"].append(len(s["options"]))
            out["exact_match"].append(None)
            out["rouge_l"].append(None)
        else:
            for key in ("label", *PRED_KEYS, "gold_logprob", "gold_nll_per_token", "n_options"):
                out[key].append(None)
            out["gold"].append(s.get("reference"))
            out["exact_match"].append(float(s.get("exact_match", 0.0)))
            out["rouge_l"].append(float(s.get("rouge_l", 0.0)))  # NIV2's headline metric (x100)
    return out


def upgrade_samples(samples: dict[str, Any]) -> dict[str, Any]:
    """A cell's per-example arrays in the current :data:`SAMPLES_FORMAT`: format 1's ``pred_norm`` (per token)
    becomes ``pred_norm_token``, and per-character predictions stay absent (they were never computed)."""
    if samples.get("format", 1) >= SAMPLES_FORMAT:
        return samples
    out = {"format": SAMPLES_FORMAT}
    for key, value in samples.items():
        out["pred_norm_token" if key == "pred_norm" else key] = value
    return out


def upgrade_cell(cell: dict[str, Any]) -> dict[str, Any]:
    """A cell (or a results.json cell entry) with its samples and metric names in today's form (see
    :data:`insta.metrics.LEGACY_RANK_METRICS`)."""
    from ..metrics import LEGACY_RANK_METRICS

    out = dict(cell)
    if isinstance(out.get("samples"), dict):
        out["samples"] = upgrade_samples(out["samples"])
    for key in ("metrics", "evaluate_metrics"):  # the old names: rank metrics with acc_sum among them
        if isinstance(out.get(key), dict) and "acc_sum" in out[key]:
            out[key] = {LEGACY_RANK_METRICS.get(k, k): v for k, v in out[key].items()}
            if out.get("primary_metric_evaluate") in LEGACY_RANK_METRICS:
                out["primary_metric_evaluate"] = LEGACY_RANK_METRICS[out["primary_metric_evaluate"]]
    return out


def upgrade_results(results: dict[str, Any]) -> dict[str, Any]:
    """A results.json of any cell format in today's form (samples and cell metrics renamed, numbers kept)."""
    out = dict(results)
    out["samples"] = {k: upgrade_samples(v) for k, v in (results.get("samples") or {}).items()}
    out["cells"] = [upgrade_cell(c) for c in results.get("cells") or []]
    return out


__all__ = ["PRED_KEYS", "SAMPLES_FORMAT", "compact_samples", "upgrade_cell", "upgrade_results", "upgrade_samples"]

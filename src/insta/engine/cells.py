"""One cell format for every run: a cell is one model evaluated on one target's evaluation set, written once as
``<out>/cells/<key>.json`` (atomically, when complete) by :func:`write_cell`. Every cell carries ``v``, ``key``,
``model_key``, ``target``, ``metrics``, ``samples`` (per-example arrays, what paired statistics read), ``seconds``,
``load_seconds``, ``train`` (the record of the model's training) and ``finished``, plus what the run adds
(the transfer matrix: ``source``, ``seed``) and, where the evaluation reports it, ``scoring_path`` (how its
log-likelihoods were scored: ``packed``, ``kv-cache``, ``whole``; cells without it predate packed scoring).

Also here: the per-example arrays of an evaluation result (:func:`compact_samples`), and the upgrader that brings
older cells and ``results.json`` files to today's form, numbers kept (:func:`upgrade_cell`,
:func:`upgrade_results`)."""
from __future__ import annotations

from pathlib import Path
from typing import Any

#: the version of every cell and model key (a change recomputes every cell)
CACHE_VERSION = 1

#: the form of a cell's per-example arrays (``samples``). Format 1 (no ``format`` key) predates the
#: lm-evaluation-harness names: its ``pred_norm`` divided by tokens and it has no per-character predictions.
#: Format 3 adds every option's text, summed log-likelihood and token count (``options``, ``scores_sum``,
#: ``n_tokens``; ``None`` for generation examples), the arrays :mod:`insta.matrix.cells` computes margins from;
#: older cells simply lack them (their margins are ``None``).
SAMPLES_FORMAT = 3
PRED_KEYS = ("pred_sum", "pred_norm", "pred_norm_token", "pred_calibrated")


def compact_samples(result: dict[str, Any]) -> dict[str, Any]:
    """The per-example arrays the report needs (paired bootstrap), from an evaluation result."""
    from ..metrics import gold_score

    samples = result.get("samples") or []
    out: dict[str, Any] = {"format": SAMPLES_FORMAT, "ids": [], "gold": [], "label": [],
                           **{k: [] for k in PRED_KEYS}, "gold_logprob": [], "gold_nll_per_token": [],
                           "n_options": [], "exact_match": [], "rouge_l": [], "options": [], "scores_sum": [],
                           "n_tokens": []}
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
            sums = s.get("scores_sum")
            out["options"].append(list(s["options"]) if sums is not None else None)
            out["scores_sum"].append([round(float(x), 5) for x in sums] if sums is not None else None)
            ntok = s.get("n_tokens")
            out["n_tokens"].append([int(n) for n in ntok] if ntok is not None and sums is not None else None)
        else:
            for key in ("label", *PRED_KEYS, "gold_logprob", "gold_nll_per_token", "n_options", "options",
                        "scores_sum", "n_tokens"):
                out[key].append(None)
            out["gold"].append(s.get("reference"))
            out["exact_match"].append(float(s.get("exact_match", 0.0)))
            out["rouge_l"].append(float(s.get("rouge_l", 0.0)))  # NIV2's headline metric (x100)
    return out


def upgrade_samples(samples: dict[str, Any]) -> dict[str, Any]:
    """A cell's per-example arrays in the current :data:`SAMPLES_FORMAT`: format 1's ``pred_norm`` (per token)
    becomes ``pred_norm_token``, and per-character predictions stay absent (they were never computed); formats 1
    and 2 have no per-option arrays, so their margins stay ``None``."""
    fmt = samples.get("format", 1)
    if fmt >= SAMPLES_FORMAT:
        return samples
    out = {"format": SAMPLES_FORMAT}
    for key, value in samples.items():
        if key != "format":
            out["pred_norm_token" if fmt == 1 and key == "pred_norm" else key] = value
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


def write_cell(out: Path, key: str, model_key: str, target: str, scored: dict[str, Any], *, seconds: float,
               load_seconds: float, train: dict[str, Any] | None, fields: dict[str, Any] | None = None
               ) -> dict[str, Any]:
    """Write the cell ``<out>/cells/<key>.json`` (see the module docstring); ``scored`` holds its ``metrics`` and
    ``samples`` (and any other field of the run's scoring); returns the cell."""
    from ..util.helpers import timestamp
    from ..util.paths import atomic_write_json

    cell = {"v": CACHE_VERSION, "key": key, "model_key": model_key, **(fields or {}), "target": target, **scored,
            "seconds": round(seconds, 3), "load_seconds": round(load_seconds, 3), "train": train or {},
            "finished": timestamp()}
    atomic_write_json(Path(out) / "cells" / f"{key}.json", cell, indent=None)
    return cell


def read_cell(path: Path) -> dict[str, Any] | None:
    """A cell file's content (``None``: not written yet, or unreadable: it is computed again)."""
    import json

    if not Path(path).is_file():
        return None
    try:
        return json.loads(Path(path).read_text())
    except ValueError:
        return None


def margin_metrics(samples: dict[str, Any]) -> dict[str, float]:
    """``margin`` and ``margin_z`` (the transfer matrix's rank metrics, :func:`insta.metrics.margins`) of a cell's
    per-example arrays, when every example is a rank example with its option scores; else nothing."""
    from ..metrics import margins, standardized_margins

    scores = samples.get("scores_sum") or []
    if not scores or any(sc is None for sc in scores):
        return {}
    m, z = margins(samples), standardized_margins(samples)
    out = {}
    if m:
        out["margin"] = sum(m) / len(m)
    if z:
        out["margin_z"] = sum(z) / len(z)
    return out


def score_evaluation(result: dict[str, Any]) -> dict[str, Any]:
    """A cell's scored fields from an :func:`insta.evaluate.evaluate_examples` result: its metrics (with the
    margins of :func:`margin_metrics` for rank targets), its primary metric and the per-example arrays
    (:func:`compact_samples`)."""
    samples = compact_samples(result)
    return {"metrics": {**(result.get("metrics") or {}), **margin_metrics(samples)},
            "primary_metric_evaluate": result.get("primary_metric"), "samples": samples}


__all__ = ["CACHE_VERSION", "PRED_KEYS", "SAMPLES_FORMAT", "compact_samples", "margin_metrics", "score_evaluation",
           "upgrade_cell", "upgrade_results", "upgrade_samples", "write_cell"]

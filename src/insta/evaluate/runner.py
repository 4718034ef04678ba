"""Running an evaluation: :func:`evaluate_examples` (a loaded model on examples), :func:`evaluate_task` (a model
by name on a catalog task) and :func:`simple_evaluate` (one model, several tasks)."""
from __future__ import annotations

import os
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any, Sequence

from ..errors import InstaError
from ..util.helpers import timestamp
from ..metrics import RANK_METRICS, rank_rule
from ..util.options import apply_overrides
from ..prompt_format import join_prompt_target
from ..records import Example, Task
from ..eval_config import GEN_METRICS, EvalConfig
from .prompting import content_free_prompt, cut_at_stop, gold_label, limit_examples, template_of
from .results import argmax, metrics_by_template, write_results
from .scoring import Scorer


# long: mostly its docstring; the body is one pass over the examples
def evaluate_examples(lm: Any, examples: Sequence[Example], config: EvalConfig | None = None, task_id: str = "",
                      catalog: str = "") -> dict[str, Any]:
    """Evaluate a loaded model on examples; returns the results dict with ``samples`` (per-sample records).

    ``catalog`` names the catalog the examples come from (reported, and it decides the default headline metric
    of generation: :func:`insta.catalogs.generation_metric`)."""
    config = config or EvalConfig()
    config.validate()
    examples = limit_examples(examples, config.limit, config.limit_per_template)
    if not examples:
        raise InstaError(f"task {task_id or '?'} has no instances to evaluate")
    t0 = time.perf_counter()
    if config.mode == "rank":
        rank_ex, gen_ex = list(examples), []
    elif config.mode == "generate":
        rank_ex, gen_ex = [], list(examples)
    else:
        rank_ex = [ex for ex in examples if ex.options]
        gen_ex = [ex for ex in examples if not ex.options]
    labels = [gold_label(ex, task_id) for ex in rank_ex]
    for ex in gen_ex:
        if not ex.references or not any(r.strip() for r in ex.references):
            raise InstaError(f"example {ex.id!r} of {task_id or 'the task'} has no reference answer to compare with")
    primary = _primary_metric(config, rank_ex, gen_ex, task_id, catalog)
    rule = rank_rule(primary) or "sum"
    scorer = Scorer(lm, config.batch_size, config.max_source_length, config.progress, config.share_prefix)
    samples, n_requests = _rank_samples(scorer, rank_ex, labels, config) if rank_ex else ([], 0)
    if gen_ex:
        samples += _generation_samples(scorer, gen_ex, config)
    seconds = time.perf_counter() - t0
    for s in samples:
        if s["type"] == "rank":
            p = s[f"pred_{rule}"]
            s["prediction"] = s["options"][p]
            s["correct"] = p == s["label"]
        else:
            s["correct"] = bool(s["exact_match"])
    result: dict[str, Any] = {"task": task_id, "catalog": catalog, "n": len(samples),
                              **metrics_by_template(samples, config.average_over_templates)}
    if primary not in result["metrics"]:
        raise InstaError(f"primary metric {primary!r} does not apply to task {task_id or '?'} "
                         f"(available: {', '.join(k for k in result['metrics'] if not k.startswith('n'))})")
    result["primary_metric"] = primary
    result["primary"] = result["metrics"][primary]
    result["mode"] = "rank" if rank_ex and not gen_ex else ("generate" if gen_ex and not rank_ex else "mixed")
    result["model"] = getattr(lm, "name", "")
    result["model_location"] = getattr(lm, "location", "")
    result["model_kind"] = getattr(lm, "kind", "")
    result["adapter"] = getattr(lm, "adapter", None)
    cfg = asdict(config)
    cfg["stop"] = list(config.stop)
    result["config"] = cfg
    result["timings"] = {
        "seconds": round(seconds, 3),
        "examples_per_second": round(len(samples) / seconds, 3) if seconds > 0 else None,
        "n_sequences_scored": n_requests,
        "n_forward": scorer.n_forward,
        "scoring_path": "+".join(sorted(scorer.paths)) or None,  # packed, kv-cache, whole (Scorer.paths)
    }
    result["created"] = timestamp()
    result["samples"] = samples
    return result


def _primary_metric(config: EvalConfig, rank_ex: list[Example], gen_ex: list[Example], task_id: str,
                    catalog: str) -> str:
    """The headline metric: the configured one, else ``acc`` with answer options, else the catalog's generation
    metric; an error when it cannot apply to these examples."""
    from ..catalogs import generation_metric

    primary = config.primary_metric or ("acc" if rank_ex else generation_metric(catalog))
    if (primary in RANK_METRICS and not rank_ex) or (primary in GEN_METRICS and not gen_ex):
        raise InstaError(f"primary metric {primary!r} does not apply to task {task_id or '?'} "
                         f"({'no examples with answer options' if not rank_ex else 'no generation examples'})")
    if (rank_rule(primary) or "sum") == "calibrated" and config.calibration == "none":
        raise InstaError(f"primary metric {primary!r} needs calibration (it is 'none')")
    return primary


def _rank_samples(scorer: Scorer, rank_ex: list[Example], labels: list[int],
                  config: EvalConfig) -> tuple[list[dict[str, Any]], int]:
    """Per-sample records of rank classification (every rule's option scores and prediction), and how many
    sequences were scored: each option after its prompt, and after its content-free prompt (calibration)."""
    reqs: list[tuple[str, str]] = []
    spans = []
    for ex in rank_ex:
        start = len(reqs)
        reqs.extend((ex.input, opt) for opt in ex.options)
        spans.append((start, len(reqs)))
    cf_index: dict[tuple[str, str], int] = {}
    cf_of: list[list[int]] = []
    if config.calibration != "none":
        for ex in rank_ex:
            cfp = content_free_prompt(ex, config)
            row = []
            for opt in ex.options:
                # unconditional: the option as it follows this prompt (lm-eval: delimiter + choice)
                key = (cfp, join_prompt_target(ex.input, opt)[1] if not cfp else opt)
                if key not in cf_index:
                    cf_index[key] = len(reqs)
                    reqs.append(key)
                row.append(cf_index[key])
            cf_of.append(row)
    scores = scorer.loglikelihood(reqs)
    samples = []
    for j, (ex, lab, (a, b)) in enumerate(zip(rank_ex, labels, spans)):
        sums = [scores[i][0] for i in range(a, b)]
        ntok = [scores[i][1] for i in range(a, b)]
        rule_scores = {
            "sum": sums,
            "norm": [s / max(1, len(o)) for s, o in zip(sums, ex.options)],  # lm-eval: per character
            "norm_token": [s / max(1, n) for s, n in zip(sums, ntok)],
            "calibrated": [s - scores[c][0] for s, c in zip(sums, cf_of[j])] if cf_of else None,
        }
        rec = {"type": "rank", "id": ex.id, "input": ex.input, "options": list(ex.options), "label": lab,
               "reference": ex.options[lab], "n_tokens": ntok}
        for r, sc in rule_scores.items():
            rec[f"scores_{r}"] = sc
            rec[f"pred_{r}"] = argmax(sc) if sc else None
        rec["template_id"] = template_of(ex)
        samples.append(rec)
    return samples, len(reqs)


def _generation_samples(scorer: Scorer, gen_ex: list[Example], config: EvalConfig) -> list[dict[str, Any]]:
    """Per-sample records of greedy generation: the output cut at the first stop string, ROUGE-L and exact
    match against the references."""
    from ..metrics import exact_match, rouge_l

    outs = scorer.generate([ex.input for ex in gen_ex], config.max_new_tokens)
    samples = []
    for ex, raw in zip(gen_ex, outs):
        pred = cut_at_stop(raw, config.stop)
        refs = [r for r in ex.references if r.strip()]
        samples.append({
            "type": "generate", "id": ex.id, "input": ex.input, "options": None, "references": refs,
            "reference": refs[0], "raw_output": raw, "prediction": pred,
            "exact_match": exact_match(pred, refs), "rouge_l": rouge_l(pred, refs), "template_id": template_of(ex),
        })
    return samples


def evaluate_task(model: Any, task: Task | Sequence[Example], config: EvalConfig | None = None,
                  out_dir: str | os.PathLike | None = None, **overrides: Any) -> dict[str, Any]:
    """Evaluate a model (a name/path, or a :class:`~insta.lm.LoadedModel`) on a task (or a list of Examples).

    Keyword overrides set :class:`EvalConfig` fields. With ``out_dir`` the results are written there
    (:func:`write_results`). Returns the results dict (per-sample records under ``"samples"``).
    """
    from ..lm import LoadedModel, load_model

    config = apply_overrides(config or EvalConfig(), overrides, "evaluation")
    if isinstance(task, Task):
        task_id, catalog = task.id, task.catalog
        if not task.has_examples:
            raise InstaError(f"task {task.id!r} has no instances to evaluate (the catalog holds no data for it)")
        n = None
        if config.limit is not None and config.limit_per_template is None:
            n = config.limit
        examples = task.examples(n)
    else:
        examples = list(task)
        task_id = examples[0].provenance.get("task", "") if examples else ""
        catalog = ""
    if not examples:
        raise InstaError(f"task {task_id or '?'} has no instances to evaluate")
    t_load = time.perf_counter()
    lm = model if isinstance(model, LoadedModel) else load_model(model)
    load_s = time.perf_counter() - t_load
    result = evaluate_examples(lm, examples, config, task_id=task_id, catalog=catalog)
    result["timings"]["load_seconds"] = round(load_s, 3)
    if out_dir is not None:
        write_results(result, out_dir)
    return result


def simple_evaluate(
    model: Any = "smollm2",
    tasks: Sequence[str | Task] = (),
    catalog: str | Any = "bigbench",
    data_dir: str | os.PathLike | None = None,
    out_dir: str | os.PathLike | None = None,
    config: EvalConfig | None = None,
    **overrides: Any,
) -> dict[str, Any]:
    """Load the model once and evaluate it on several tasks of a catalog (ids, or Task objects).

    Returns ``{"model": ..., "results": {task: results-without-samples}, "summary": {task: primary}}`` and
    writes each task's files plus ``<out_dir>/summary.json`` when ``out_dir`` is given.
    """
    from ..lm import LoadedModel, load_model

    if not tasks:
        raise InstaError("no task to evaluate")
    config = apply_overrides(config or EvalConfig(), overrides, "evaluation")
    cat = None
    task_objs: list[Task] = []
    for t in tasks:
        if isinstance(t, Task):
            task_objs.append(t)
            continue
        if cat is None:
            if isinstance(catalog, str):
                from ..catalogs import load_catalog

                cat = load_catalog(catalog, data_dir)
            else:
                cat = catalog
        task_objs.append(cat.get(t))
    t0 = time.perf_counter()
    lm = model if isinstance(model, LoadedModel) else load_model(model)
    load_s = time.perf_counter() - t0
    results: dict[str, Any] = {}
    for task in task_objs:
        res = evaluate_task(lm, task, config, out_dir=out_dir)
        results[task.id] = {k: v for k, v in res.items() if k != "samples"}
    summary = {
        "model": getattr(lm, "name", str(model)),
        "model_location": getattr(lm, "location", ""),
        "adapter": getattr(lm, "adapter", None),
        "load_seconds": round(load_s, 3),
        "summary": {tid: {"primary_metric": r["primary_metric"], "primary": r["primary"], "n": r["n"]}
                    for tid, r in results.items()},
        "results": results,
    }
    if out_dir is not None:
        from ..util.paths import atomic_write_json

        atomic_write_json(Path(out_dir) / "summary.json", {k: v for k, v in summary.items() if k != "results"})
    return summary

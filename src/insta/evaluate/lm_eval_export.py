"""A target task as an lm-evaluation-harness task: a YAML config and a JSONL data file with insta's exact prompts.

``insta export-lm-eval TASK --out DIR`` (:func:`export_lm_eval_task`) writes ``DIR/<name>.yaml`` and
``DIR/<name>.jsonl``; score any model with ``lm-eval run --model hf --model_args pretrained=... --tasks <name>
--include_path DIR``.

* **Rank classification** (examples with options): ``output_type: multiple_choice``; each document holds the
  prompt (``text``), the options (``choices``) and the gold index (``label``), read by column name (no Jinja, so
  the text is passed through as is). lm-eval joins a choice to its prompt with ``target_delimiter``, one string per
  task, where insta joins with a space unless the prompt ends in whitespace: a task whose prompts all end in
  whitespace gets ``""``, any other ``" "`` (a prompt ending in exactly one space then loses it in ``text``, so the
  scored string is the same). A task that mixes prompts ending in other whitespace with prompts that do not, or
  options starting with whitespace after prompts that do not end in it, cannot be written as one lm-eval task and
  is refused. Metrics: ``acc`` and ``acc_norm``, which equal insta's (tests/test_lm_eval_parity.py).
* **Generation** (examples without options): ``output_type: generate_until`` with insta's stop strings
  (``until``), greedy decoding, ``max_gen_toks`` = insta's ``max_new_tokens``, the prompt without trailing spaces
  (as insta generates) and every reference as a target; metric ``exact_match`` ignoring case, punctuation and
  surrounding whitespace (insta's also collapses inner whitespace and drops Unicode punctuation).
* **Templates** (P3): examples of several promptsource templates become one task per template and a group that
  averages them unweighted, as insta (and T0) do.

The data file path inside the YAML is absolute (``datasets`` resolves relative paths against the working
directory): move the folder and the YAML needs the new path.
"""
from __future__ import annotations

import json
import os
import re
from pathlib import Path
from typing import Any, Sequence

from ..errors import InstaError
from ..records import Example, Task

OUTPUT_TYPES = {"rank": "multiple_choice", "generate": "generate_until"}


def lm_eval_task_name(task_id: str) -> str:
    """``insta_`` + the task id with every run of characters other than letters, digits and ``_`` as ``_``."""
    return "insta_" + (re.sub(r"[^A-Za-z0-9_]+", "_", task_id).strip("_") or "task")


def _delimiter(examples: Sequence[Example], task_id: str) -> str:
    """lm-eval's task-wide ``target_delimiter`` that reproduces insta's join of every (prompt, option)."""
    if all(ex.input and ex.input[-1].isspace() for ex in examples):
        return ""
    for ex in examples:
        if ex.input and ex.input[-1].isspace() and not (ex.input.endswith(" ") and not ex.input[-2:-1].isspace()):
            raise InstaError(f"example {ex.id!r} of {task_id}: its prompt ends in {ex.input[-1]!r} while others end "
                             "in no whitespace; lm-eval joins every option with one task-wide delimiter, so this "
                             "task cannot be exported as is")
        if ex.input and not ex.input[-1].isspace() and any(o[:1].isspace() for o in ex.options or []):
            raise InstaError(f"example {ex.id!r} of {task_id}: an option starts with whitespace, so insta joins it "
                             "to the prompt without a space; lm-eval's task-wide delimiter cannot do that")
    return " "


def _mc_doc(ex: Example, delimiter: str, task_id: str) -> dict[str, Any]:
    from . import gold_label

    text = ex.input[:-1] if delimiter == " " and ex.input.endswith(" ") else ex.input
    return {"id": ex.id, "text": text, "choices": list(ex.options or []), "label": gold_label(ex, task_id)}


def _gen_doc(ex: Example, task_id: str) -> dict[str, Any]:
    refs = [r for r in ex.references if r.strip()]
    if not refs:
        raise InstaError(f"example {ex.id!r} of {task_id} has no reference answer to compare with")
    return {"id": ex.id, "text": ex.input.rstrip(" "), "references": refs}


def _task_yaml(name: str, data_path: Path, kind: str, delimiter: str, stop: Sequence[str], max_new_tokens: int,
               source: dict[str, Any]) -> dict[str, Any]:
    cfg: dict[str, Any] = {
        "task": name,
        "dataset_path": "json",
        "dataset_kwargs": {"data_files": {"test": str(data_path.resolve())}},
        "test_split": "test",
        "output_type": OUTPUT_TYPES[kind],
        "doc_to_text": "text",
    }
    if kind == "rank":
        cfg.update({"doc_to_choice": "choices", "doc_to_target": "label", "target_delimiter": delimiter,
                    "metric_list": [{"metric": m, "aggregation": "mean", "higher_is_better": True}
                                    for m in ("acc", "acc_norm")]})
    else:
        cfg.update({"doc_to_target": "references", "target_delimiter": "",
                    "generation_kwargs": {"until": list(stop), "do_sample": False, "max_gen_toks": max_new_tokens},
                    "metric_list": [{"metric": "exact_match", "aggregation": "mean", "higher_is_better": True,
                                     "ignore_case": True, "ignore_punctuation": True,
                                     "regexes_to_ignore": ["^\\s+", "\\s+$"]}]})
    cfg["metadata"] = {"version": 1.0, "insta": source}
    return cfg


def _write_yaml(path: Path, obj: dict[str, Any], header: str) -> None:
    import yaml

    from ..util.paths import atomic_write_text

    body = yaml.safe_dump(obj, sort_keys=False, allow_unicode=True, width=1000)
    atomic_write_text(path, header + body)


def _write_jsonl(path: Path, docs: list[dict[str, Any]]) -> None:
    from ..util.paths import atomic_write_text

    atomic_write_text(path, "".join(json.dumps(d, ensure_ascii=False) + "\n" for d in docs))


def _examples_to_export(task: Task | Sequence[Example], limit: int | None, limit_per_template: int | None
                        ) -> tuple[str, str, list[Example]]:
    """(task id, catalog, the examples picked as ``EvalConfig``'s limits pick them); none is an error."""
    from . import limit_examples

    if isinstance(task, Task):
        task_id, catalog = task.id, task.catalog
        examples = task.examples(limit if limit_per_template is None else None)
    else:
        examples = list(task)
        task_id = (examples[0].provenance or {}).get("task", "task") if examples else "task"
        catalog = ""
    examples = limit_examples(examples, limit, limit_per_template)
    if not examples:
        raise InstaError(f"task {task_id} has no instances to export")
    return task_id, catalog, examples


def _output_mode(examples: Sequence[Example], mode: str, task_id: str) -> str:
    """``rank`` or ``generate``: ``auto`` reads it from the examples (all with options, or none)."""
    if mode == "auto":
        with_options = sum(1 for ex in examples if ex.options)
        if 0 < with_options < len(examples):
            raise InstaError(f"task {task_id} mixes examples with and without answer options: an lm-eval task has "
                             "one output type (choose --mode rank or --mode generate)")
        mode = "rank" if with_options else "generate"
    if mode not in OUTPUT_TYPES:
        raise InstaError(f"unknown mode {mode!r} (choose from auto, {', '.join(OUTPUT_TYPES)})")
    return mode


def _write_part(out: Path, sub: str, exs: Sequence[Example], template_id: str, mode: str, task_id: str,
                stop: Sequence[str], max_new_tokens: int, src: dict[str, Any], header: str) -> list[str]:
    """One lm-eval task (data JSONL + YAML) for ``exs``; returns the two paths."""
    if mode == "rank":
        delim = _delimiter(exs, task_id)
        docs = [_mc_doc(ex, delim, task_id) for ex in exs]
    else:
        delim = ""
        docs = [_gen_doc(ex, task_id) for ex in exs]
    for d in docs:
        if template_id:
            d["template_id"] = template_id
    data = out / f"{sub}.jsonl"
    _write_jsonl(data, docs)
    _write_yaml(out / f"{sub}.yaml", _task_yaml(sub, data, mode, delim, stop, max_new_tokens, src), header)
    return [str(data), str(out / f"{sub}.yaml")]


#: what insta wrote into an export folder: file name -> SHA-256, so a hand-edited file is never replaced silently
MANIFEST = ".insta-export.json"


def _sha256(path: Path) -> str | None:
    import hashlib

    try:
        return hashlib.sha256(path.read_bytes()).hexdigest()
    except OSError:
        return None


def _refuse_edited(out: Path, names: Sequence[str], overwrite: bool) -> dict[str, str]:
    """The export manifest of ``out``; one error line (before anything is written) when a file among ``names``
    exists and is not byte for byte what insta last wrote there, unless ``overwrite``."""
    try:
        written = json.loads((out / MANIFEST).read_text(encoding="utf-8"))
    except (OSError, ValueError, RecursionError):
        written = {}
    written = {k: v for k, v in written.items() if isinstance(v, str)} if isinstance(written, dict) else {}
    if not overwrite:
        changed = [n for n in names if (out / n).exists() and written.get(n) != _sha256(out / n)]
        if changed:
            raise InstaError(f"{out / changed[0]} was edited after insta wrote it, or insta did not write it: pass "
                             "--overwrite to replace it, or choose another --out or --name")
    return written


def _record_written(out: Path, written: dict[str, str], names: Sequence[str]) -> None:
    from ..util.paths import atomic_write_json

    atomic_write_json(out / MANIFEST, {**written, **{n: _sha256(out / n) for n in names}})


# long: a wide keyword signature and its docstring; the body writes one task folder
def export_lm_eval_task(
    task: Task | Sequence[Example],
    out_dir: str | os.PathLike,
    name: str | None = None,
    *,
    limit: int | None = None,
    limit_per_template: int | None = None,
    mode: str = "auto",
    stop: Sequence[str] = ("\n",),
    max_new_tokens: int = 32,
    average_over_templates: bool | None = None,
    overwrite: bool = False,
) -> dict[str, Any]:
    """Write a task as an lm-eval task (see the module docstring) into ``out_dir``; returns what was written:
    ``{"name", "output_type", "n", "files", "tasks", "include_path", "command"}``.

    ``limit`` / ``limit_per_template`` pick the same examples as :class:`insta.evaluate.EvalConfig`'s;
    ``mode`` is ``auto`` (rank classification when every example has options, generation when none has),
    ``rank`` or ``generate``. A file of the same name that insta did not write, or that was edited since, is
    refused unless ``overwrite`` (see :func:`_refuse_edited`).
    """
    from . import template_of

    task_id, catalog, examples = _examples_to_export(task, limit, limit_per_template)
    mode = _output_mode(examples, mode, task_id)
    name = name or lm_eval_task_name(task_id)
    if not re.fullmatch(r"[A-Za-z0-9_][A-Za-z0-9_.-]*", name):
        raise InstaError(f"lm-eval task name {name!r}: use letters, digits, '_', '.', '-'")
    out = Path(out_dir)
    groups: dict[str, list[Example]] = {}
    for ex in examples:
        groups.setdefault(template_of(ex) or "", []).append(ex)
    per_template = average_over_templates
    if per_template is None:
        per_template = len(groups) > 1 and "" not in groups
    parts = list(groups.items()) if per_template else [("", examples)]
    source = {"task": task_id, "catalog": catalog, "mode": mode, "n": len(examples)}
    header = (f"# lm-evaluation-harness task written by `insta export-lm-eval` from {catalog or 'examples'}:{task_id} "
              f"({len(examples)} examples, insta's exact prompts).\n")
    subs = [name if not per_template else f"{name}__t{i}" for i in range(len(parts))]
    planned = [f"{sub}{ext}" for sub in subs for ext in (".jsonl", ".yaml")] + ([f"{name}.yaml"] if per_template
                                                                                 else [])
    written = _refuse_edited(out, planned, overwrite)
    files, task_names = [], []
    for i, (tid, exs) in enumerate(parts):
        sub = name if not per_template else f"{name}__t{i}"
        src = {**source, "n": len(exs), **({"template_id": tid} if tid else {})}
        files += _write_part(out, sub, exs, tid, mode, task_id, stop, max_new_tokens, src, header)
        task_names.append(sub)
    if per_template:
        metrics = ["acc", "acc_norm"] if mode == "rank" else ["exact_match"]
        group = {"group": name, "task": task_names,
                 "aggregate_metric_list": [{"metric": m, "aggregation": "mean", "weight_by_size": False}
                                           for m in metrics],
                 "metadata": {"version": 1.0, "insta": {**source, "templates": [t for t, _ in parts]}}}
        _write_yaml(out / f"{name}.yaml", group, header.replace("task written", "group (one task per template, "
                                                                "averaged unweighted as T0 does) written"))
        files.append(str(out / f"{name}.yaml"))
    _record_written(out, written, planned)
    return {"name": name, "output_type": OUTPUT_TYPES[mode], "n": len(examples), "tasks": task_names,
            "files": files, "include_path": str(out),
            "command": f"lm-eval run --model hf --model_args pretrained=MODEL --tasks {name} --include_path {out}"}


__all__ = ["export_lm_eval_task", "lm_eval_task_name"]

"""Mixture records: one source instance as the model will see it, the :class:`Mixture` that holds them, export to
other trainers' formats (alpaca, messages, TRL) and reading any of them back."""
from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

from ..errors import InstaError
from ..prompt_format import join_prompt_target
from ..records import Example, Task

EXPORT_FORMATS = ("insta", "alpaca", "messages", "trl")


@dataclass
class Mixture:
    """The records of a mixture and a manifest saying how it was built."""

    records: list[dict[str, Any]]
    manifest: dict[str, Any]

    def __len__(self) -> int:
        return len(self.records)

    def __iter__(self) -> Iterator[dict[str, Any]]:
        return iter(self.records)

    def counts(self) -> dict[str, int]:
        out: dict[str, int] = {}
        for r in self.records:
            out[r["task"]] = out.get(r["task"], 0) + 1
        return out

    def write(self, path: str | os.PathLike, fmt: str = "insta", manifest: bool = True) -> Path:
        """Write the records as JSONL (atomically) in ``fmt`` and the manifest next to it
        (``<stem>.manifest.json``). Returns the JSONL path."""
        from ..util.paths import atomic_write_json, atomic_write_text

        path = Path(path)
        lines = [json.dumps(export_record(r, fmt), ensure_ascii=False) for r in self.records]
        atomic_write_text(path, "\n".join(lines) + ("\n" if lines else ""))
        if manifest:
            atomic_write_json(manifest_path(path), {**self.manifest, "format": fmt, "path": str(path)})
        return path

    def to_hf_dataset(self):
        """A ``datasets.Dataset`` of the records (``provenance`` as a JSON string, so the schema is fixed)."""
        try:
            import datasets
        except ImportError as err:
            raise InstaError("a Hugging Face dataset needs the `datasets` package: pip install datasets") from err
        rows = [{**r, "provenance": json.dumps(r.get("provenance", {}), ensure_ascii=False)} for r in self.records]
        return datasets.Dataset.from_list(rows)


def manifest_path(jsonl_path: str | os.PathLike) -> Path:
    """``mix.jsonl`` -> ``mix.manifest.json`` (next to it)."""
    p = Path(jsonl_path)
    stem = p.name[: -len(".jsonl")] if p.name.endswith(".jsonl") else p.name
    return p.with_name(stem + ".manifest.json")


def example_instruction(task: Task | None, ex: Example) -> str:
    """The instruction an example was rendered with: ``provenance["instruction"]``; else the task instruction
    that appears verbatim in the input; else the instruction of the example's template
    (``task.meta["templates"]``); else the task's first instruction."""
    prov = ex.provenance or {}
    if isinstance(prov.get("instruction"), str) and prov["instruction"]:
        return prov["instruction"]
    if task is None:
        return ""
    for ins in task.instructions:
        if ins and ins.strip() and ins.strip() in ex.input:
            return ins
    tid = prov.get("template_id")
    if tid is not None:
        for tpl in (task.meta or {}).get("templates", []) or []:
            if isinstance(tpl, dict) and tpl.get("id") == tid and tpl.get("instruction"):
                return tpl["instruction"]
    return task.instructions[0] if task.instructions else ""


def make_record(task: Task | None, ex: Example, catalog: str = "", repeat: int = 0) -> dict[str, Any]:
    """One mixture record from an Example (see the module docstring)."""
    target = ex.target
    if not target:
        raise InstaError(f"example {ex.id!r} of task {task.id if task else '?'} has no target to train on")
    task_id = task.id if task else str(ex.provenance.get("task", ""))
    prov = {k: v for k, v in (ex.provenance or {}).items()}
    if repeat:
        prov["repeat"] = repeat
    return {
        "id": f"{task_id}::{ex.id}" + (f"#r{repeat}" if repeat else ""),
        "task": task_id,
        "catalog": catalog or (task.catalog if task else ""),
        "instance_id": ex.id,
        "instruction": example_instruction(task, ex),
        "input": ex.input,
        "target": target,
        "references": list(ex.references),
        "options": None if ex.options is None else list(ex.options),
        "label": ex.label,
        "provenance": prov,
    }


def export_record(record: dict[str, Any], fmt: str = "insta") -> dict[str, Any]:
    """A record in another trainer's format.

    * ``insta``: the record as is (with provenance).
    * ``alpaca``: ``{"instruction", "input", "output"}``; ``input`` is the rendered prompt (which already holds the
      instruction), ``instruction`` the instruction used, plus ``task`` and ``id`` for provenance.
    * ``messages``: chat style ``{"messages": [{"role": "user", "content": prompt},
      {"role": "assistant", "content": target}]}`` plus ``task`` and ``id``.
    * ``trl``: TRL's prompt-completion form ``{"prompt", "completion"}`` plus ``task`` and ``id``; the completion
      starts with the space insta joins the target with (:func:`join_prompt_target`), so ``prompt + completion``
      is exactly the text insta trains on, and TRL's ``SFTTrainer`` computes the loss on the completion only.
    """
    if fmt == "insta":
        return record
    if fmt == "alpaca":
        return {"instruction": record.get("instruction", ""), "input": record["input"], "output": record["target"],
                "task": record.get("task", ""), "id": record.get("id", "")}
    if fmt == "messages":
        return {"messages": [{"role": "user", "content": record["input"]},
                             {"role": "assistant", "content": record["target"]}],
                "task": record.get("task", ""), "id": record.get("id", "")}
    if fmt == "trl":
        prompt, completion = join_prompt_target(record["input"], record["target"])
        return {"prompt": prompt, "completion": completion, "task": record.get("task", ""), "id": record.get("id", "")}
    raise InstaError(f"unknown mixture format {fmt!r} (choose from {', '.join(EXPORT_FORMATS)})")


def normalize_record(obj: dict[str, Any], where: str = "") -> dict[str, Any]:
    """Accept a record in the insta, alpaca (``instruction``/``input``/``output``), messages or TRL
    (``prompt``/``completion``) format and return the fields training needs (``input``, ``target``, ``task``,
    ``id``)."""
    if not isinstance(obj, dict):
        raise InstaError(f"{where}: expected a JSON object")
    if "prompt" in obj and "completion" in obj and "target" not in obj:
        prompt, completion = obj["prompt"], obj["completion"]
        if not isinstance(prompt, str) or not isinstance(completion, str):
            raise InstaError(f"{where}: 'prompt' and 'completion' must be strings (TRL's conversational form is "
                             "not read: use the messages format)")
        if prompt and not prompt[-1].isspace() and completion.startswith(" "):
            completion = completion[1:]  # the joining space, which training adds back
        return {"id": obj.get("id", ""), "task": obj.get("task", ""), "input": prompt, "target": completion}
    if "messages" in obj:
        msgs = obj["messages"]
        if not isinstance(msgs, list) or len(msgs) < 2:
            raise InstaError(f"{where}: 'messages' needs a user and an assistant turn")
        user = [m.get("content", "") for m in msgs[:-1] if isinstance(m, dict)]
        last = msgs[-1] if isinstance(msgs[-1], dict) else {}
        if last.get("role") != "assistant":
            raise InstaError(f"{where}: the last message must be the assistant's answer")
        return {"id": obj.get("id", ""), "task": obj.get("task", ""), "input": "\n".join(user),
                "target": str(last.get("content", ""))}
    if "output" in obj and "target" not in obj:
        prompt = obj.get("input", "")
        ins = obj.get("instruction", "")
        if ins and ins not in prompt:
            prompt = f"{ins}\n{prompt}" if prompt else ins
        return {"id": obj.get("id", ""), "task": obj.get("task", ""), "input": prompt, "target": str(obj["output"])}
    if "input" not in obj or "target" not in obj:
        raise InstaError(f"{where}: a mixture record needs 'input' and 'target' (or alpaca / messages fields)")
    if not isinstance(obj["input"], str) or not isinstance(obj["target"], str):
        raise InstaError(f"{where}: 'input' and 'target' must be strings")
    return obj


def read_mixture(path: str | os.PathLike) -> list[dict[str, Any]]:
    """The records of a mixture JSONL file (insta, alpaca, messages or TRL format), checked."""
    p = Path(path)
    if not p.is_file():
        raise InstaError(f"mixture file {str(p)!r} does not exist")
    from ..util.fileio import parse_json, read_text

    records = []
    for lineno, line in enumerate(read_text(p, "mixture file").split("\n"), 1):
        if not line.strip():
            continue
        obj = parse_json(line, f"{p} line {lineno}")
        records.append(normalize_record(obj, f"{p} line {lineno}"))
    if not records:
        raise InstaError(f"mixture file {p} holds no records")
    return records


def load_mixture_dataset(path: str | os.PathLike):
    """The mixture JSONL as a Hugging Face ``datasets.Dataset``."""
    return Mixture(read_mixture(path), {}).to_hf_dataset()

"""Training mixtures: up to N instances of each selected source task, rendered as the model will see them.

A mixture is a list of plain records (one JSON object per line in a ``.jsonl`` file, loadable with
``datasets.load_dataset("json", data_files=...)`` or :func:`load_mixture_dataset`)::

    {"id": "<task>::<instance id>[#r<repeat>]", "task": "...", "catalog": "...", "instance_id": "...",
     "instruction": "the instruction the model sees", "input": "<fully rendered prompt>", "target": "...",
     "references": [...], "options": [...] | null, "label": int | null, "provenance": {...}}

``input`` is :attr:`insta.records.Example.input` (the catalog already rendered the instruction with the
instance); ``target`` is the text to train on (the gold option, else the first reference).

Mixing (:class:`MixtureConfig`):

* ``proportional`` (default): every task contributes ``min(its instances, cap)`` instances, where cap is
  ``per_task`` or a per-task override: examples-proportional mixing with a per-task limit, as in T5/T0. With
  ``total`` set, those counts are scaled down proportionally (largest remainder) to add up to ``total``.
* ``equal``: every task contributes exactly ``cap`` instances (``total // n_tasks`` when ``total`` is set and
  smaller); a task with fewer instances is repeated (``provenance["repeat"]`` counts the copies).

Sampling is a seeded uniform sample (reservoir sampling over the task's examples, the random stream derived from
``seed`` and the task id, so adding a task does not change the others' samples).

Leakage (``exclude_target``): source instances that reproduce one of the target's evaluation instances are
dropped before sampling. An instance leaks when its normalised input equals a target input, or when it shares a
word n-gram (``dedup_ngram`` words, default 8) with a target instance, counting only n-grams that are specific to
one instance (n-grams found in more than ``max(2, 5%)`` of the target's instances are template boilerplate and
ignored). Short target instances (fewer than n words) leak when their whole normalised text appears inside a source
instance's input. The target task itself and its family never enter the mixture.
"""
from __future__ import annotations

import json
import os
import random
import re
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Iterable, Iterator, Sequence

from .errors import InstaError
from .helpers import progress_bar, timestamp
from .records import Example, Task

MIXINGS = ("proportional", "equal")
EXPORT_FORMATS = ("insta", "alpaca", "messages", "trl")


@dataclass
class MixtureConfig:
    """Every knob of the mixture builder."""

    per_task: int = 100  # up to N instances per task
    caps: dict[str, int] = field(default_factory=dict)  # per-task overrides of per_task
    mixing: str = "proportional"  # "proportional" | "equal"
    total: int | None = None  # optional total size of the mixture
    seed: int = 42
    shuffle: bool = True  # shuffle the records (seeded); else grouped by task in selection order
    exclude_target: str | None = None  # target task id (its evaluation instances are deduplicated against)
    dedup: bool = True  # drop source instances that leak target instances (needs exclude_target)
    dedup_ngram: int = 8
    max_scan: int | None = None  # read at most this many examples per task (None: all)
    allow_empty: bool = False  # skip selected tasks without instances instead of failing

    def validate(self) -> None:
        if self.mixing not in MIXINGS:
            raise InstaError(f"unknown mixing {self.mixing!r} (choose from {', '.join(MIXINGS)})")
        if self.per_task < 1:
            raise InstaError(f"per_task must be at least 1 (got {self.per_task})")
        for task, cap in self.caps.items():
            if not isinstance(cap, int) or cap < 0:
                raise InstaError(f"cap for task {task!r} must be a non-negative integer (got {cap!r})")
        if self.total is not None and self.total < 1:
            raise InstaError(f"total must be at least 1 (got {self.total})")
        if self.dedup_ngram < 3:
            raise InstaError(f"dedup_ngram must be at least 3 (got {self.dedup_ngram})")
        if self.max_scan is not None and self.max_scan < 1:
            raise InstaError(f"max_scan must be at least 1 (got {self.max_scan})")


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
        from .paths import atomic_write_json, atomic_write_text

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


# ---------------------------------------------------------------- rendering and export


def join_prompt_target(prompt: str, target: str) -> tuple[str, str]:
    """The separator-aware split of a training text: ``(prompt, continuation)`` where the continuation starts
    with a space unless the prompt already ends in whitespace (or the target starts with it)."""
    if not prompt or prompt[-1].isspace() or not target or target[0].isspace():
        return prompt, target
    return prompt, " " + target


def instruction_of(task: Task | None, ex: Example) -> str:
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
        "instruction": instruction_of(task, ex),
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
    from .fileio import parse_json, read_text

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


# ---------------------------------------------------------------- selection input


def read_selection(path: str | os.PathLike) -> dict[str, Any]:
    """A selection JSON written by ``insta select --json`` (``catalog``, ``data_dir``, ``target``,
    ``selected: [{"task": ...}, ...]``), or a plain JSON list of task ids, or a text file of task ids."""
    p = Path(path)
    if not p.is_file():
        raise InstaError(f"selection file {str(p)!r} does not exist")
    from .fileio import read_text

    text = read_text(p, "selection file")
    if p.suffix == ".json" or text.lstrip().startswith(("{", "[")):
        try:
            data = json.loads(text)
        except json.JSONDecodeError as err:
            raise InstaError(f"malformed selection JSON {p}: {err.msg} (line {err.lineno})") from None
        except RecursionError:
            raise InstaError(f"malformed selection JSON {p}: nested too deeply") from None
    else:
        data = [line.strip() for line in text.splitlines() if line.strip() and not line.lstrip().startswith("#")]
    if isinstance(data, list):
        data = {"selected": [{"task": t} if isinstance(t, str) else t for t in data]}
    if not isinstance(data, dict) or not isinstance(data.get("selected"), list):
        raise InstaError(f"selection file {p} needs a 'selected' list (or be a list of task ids)")
    tasks = []
    for i, item in enumerate(data["selected"]):
        tid = item.get("task") if isinstance(item, dict) else None
        if not isinstance(tid, str) or not tid:
            raise InstaError(f"selection file {p}: entry {i} has no task id")
        tasks.append(tid)
    if not tasks:
        raise InstaError(f"selection file {p} selects no tasks")
    data["task_ids"] = tasks
    return data


def target_id_of(selection: dict[str, Any]) -> str | None:
    tgt = selection.get("target")
    if isinstance(tgt, dict):
        for key in ("task", "id", "task_id"):
            if isinstance(tgt.get(key), str):
                return tgt[key]
    return tgt if isinstance(tgt, str) else None


# ---------------------------------------------------------------- leakage


_TOKEN = re.compile(r"\w+", re.UNICODE)


def _words(text: str) -> list[str]:
    return _TOKEN.findall(text.lower())


class LeakFilter:
    """Detects source instances that reproduce a target evaluation instance (see the module docstring)."""

    def __init__(self, target_examples: Sequence[Example], n: int = 8):
        self.n = n
        self.full: set[str] = set()
        self.short: list[str] = []
        per_example: list[set[tuple[str, ...]]] = []
        for ex in target_examples:
            self.full.add(" ".join(_words(ex.input)))
            raw = ex.provenance.get("raw_input")
            words = _words(raw if isinstance(raw, str) and raw.strip() else ex.input)
            if 4 <= len(words) < n:
                self.short.append(" " + " ".join(words) + " ")
            per_example.append({tuple(words[i:i + n]) for i in range(len(words) - n + 1)})
        df: dict[tuple[str, ...], int] = {}
        for grams in per_example:
            for g in grams:
                df[g] = df.get(g, 0) + 1
        limit = max(2, int(0.05 * len(per_example)))
        self.grams = {g for g, c in df.items() if c <= limit}
        self.n_targets = len(per_example)

    def leaks(self, text: str) -> bool:
        words = _words(text)
        if " ".join(words) in self.full:
            return True
        n = self.n
        if any(tuple(words[i:i + n]) in self.grams for i in range(len(words) - n + 1)):
            return True
        if self.short:
            padded = " " + " ".join(words) + " "
            return any(s in padded for s in self.short)
        return False


# ---------------------------------------------------------------- building


def _task_rng(seed: int, task_id: str, salt: str = "") -> random.Random:
    return random.Random(f"insta-mixture:{seed}:{task_id}:{salt}")  # str seeds hash with sha512: stable


def _reservoir(examples: Iterable[Example], k: int, rng: random.Random, keep, max_scan: int | None):
    """A uniform sample of up to k examples passing ``keep``; returns (sample in stream order, n kept, n dropped,
    n scanned)."""
    sample: list[tuple[int, Example]] = []
    seen = dropped = scanned = 0
    for ex in examples:
        if max_scan is not None and scanned >= max_scan:
            break
        scanned += 1
        if not keep(ex):
            dropped += 1
            continue
        if len(sample) < k:
            sample.append((seen, ex))
        else:
            j = rng.randint(0, seen)
            if j < k:
                sample[j] = (seen, ex)
        seen += 1
    sample.sort(key=lambda t: t[0])
    return [ex for _, ex in sample], seen, dropped, scanned


def _largest_remainder(weights: list[int], total: int) -> list[int]:
    s = sum(weights)
    if s <= total:
        return list(weights)
    raw = [w * total / s for w in weights]
    out = [int(x) for x in raw]
    order = sorted(range(len(raw)), key=lambda i: (out[i] - raw[i], i))
    for i in order[: total - sum(out)]:
        out[i] += 1
    return out


def build_mixture(
    tasks: Sequence[Task],
    config: MixtureConfig | None = None,
    target_examples: Sequence[Example] | None = None,
    target_task: Task | None = None,
    catalog_name: str = "",
    progress: bool = False,
) -> Mixture:
    """Build a mixture from source tasks.

    ``target_examples`` (or ``target_task``'s examples) are the target's evaluation instances to deduplicate
    against; ``target_task`` and every task of its family are also removed from ``tasks``.
    """
    config = config or MixtureConfig()
    config.validate()
    t0 = time.perf_counter()
    if not tasks:
        raise InstaError("no source tasks for the mixture")
    ids = [t.id for t in tasks]
    dup = sorted({i for i in ids if ids.count(i) > 1})
    if dup:
        raise InstaError(f"task(s) listed twice in the mixture: {', '.join(dup)}")
    stray = sorted(set(config.caps) - set(ids))
    if stray:
        raise InstaError(f"cap for task(s) not in the mixture: {', '.join(stray)} (its tasks: {', '.join(ids[:10])}"
                         f"{' ...' if len(ids) > 10 else ''})")

    excluded: list[str] = []
    if target_task is not None:
        kept = [t for t in tasks if t.id != target_task.id and t.family != target_task.family]
        excluded = [t.id for t in tasks if t not in kept]
        tasks = kept
        if not tasks:
            raise InstaError(f"every selected task is the target {target_task.id!r} or of its family")
        if target_examples is None:
            target_examples = target_task.examples()
    leak = None
    if config.dedup and target_examples:
        leak = LeakFilter(target_examples, n=config.dedup_ngram)

    per_task_info: dict[str, dict[str, Any]] = {}
    samples: dict[str, list[Example]] = {}
    iterator = progress_bar(tasks, desc="sampling tasks", unit="task") if progress else tasks
    empty = []
    for task in iterator:
        cap = config.caps.get(task.id, config.per_task)
        if config.mixing == "equal" and config.total is not None:
            cap = min(cap, max(1, config.total // len(tasks)))
        keep = (lambda ex: not leak.leaks(ex.input)) if leak is not None else (lambda ex: True)
        sample, n_avail, n_leak, n_scanned = _reservoir(
            task.iter_examples(), cap, _task_rng(config.seed, task.id), keep, config.max_scan
        )
        sample = [ex for ex in sample if ex.target]
        if not sample:
            empty.append(task.id)
        samples[task.id] = sample
        per_task_info[task.id] = {
            "available": n_avail, "leaked_dropped": n_leak, "scanned": n_scanned,
            "scan_truncated": config.max_scan is not None and n_scanned >= config.max_scan, "cap": cap,
        }
    if empty and not config.allow_empty:
        raise InstaError(f"selected task(s) without instances: {', '.join(empty)} (check the data directory "
                         "or pass allow_empty / --allow-empty to skip them)")
    live = [t for t in tasks if samples[t.id]]

    # how many of each task
    if config.mixing == "proportional":
        counts = [len(samples[t.id]) for t in live]
        if config.total is not None:
            counts = _largest_remainder(counts, config.total)
    else:
        counts = [per_task_info[t.id]["cap"] for t in live]

    records: list[dict[str, Any]] = []
    for task, n in zip(live, counts):
        pool = samples[task.id]
        chosen: list[tuple[Example, int]]
        if n <= len(pool):
            rng = _task_rng(config.seed, task.id, "subsample")
            idx = sorted(rng.sample(range(len(pool)), n)) if n < len(pool) else list(range(len(pool)))
            chosen = [(pool[i], 0) for i in idx]
        else:  # equal mixing: repeat a small task
            chosen = [(pool[i % len(pool)], i // len(pool)) for i in range(n)]
        for ex, rep in chosen:
            records.append(make_record(task, ex, catalog_name or task.catalog, repeat=rep))
        per_task_info[task.id]["taken"] = n
    if config.shuffle:
        random.Random(f"insta-mixture-shuffle:{config.seed}").shuffle(records)

    manifest = {
        "n_records": len(records),
        "tasks": [t.id for t in live],
        "per_task": per_task_info,
        "skipped_empty": empty,
        "excluded_target_family": excluded,
        "target": target_task.id if target_task is not None else config.exclude_target,
        "n_target_examples_checked": len(target_examples) if target_examples else 0,
        "config": asdict(config),
        "catalog": catalog_name,
        "seconds": round(time.perf_counter() - t0, 3),
        "created": timestamp(),
    }
    return Mixture(records, manifest)


def mixture_from_selection(
    selection: str | os.PathLike | dict[str, Any] | Sequence[str],
    config: MixtureConfig | None = None,
    catalog: Any = None,
    catalog_name: str | None = None,
    data_dir: str | os.PathLike | None = None,
    target_catalog: Any = None,
    progress: bool = False,
) -> Mixture:
    """Build a mixture from a selection JSON file (or its dict), or from a list of task ids.

    The catalog comes from ``catalog`` (a :class:`~insta.catalogs.base.Catalog`), else it is loaded by name
    (``catalog_name`` or the selection's ``catalog``) from ``data_dir`` (or the selection's ``data_dir``).
    A name that is not a task but a family (a BIG-bench parent such as ``cs_algorithms``) stands for all its
    member tasks. The target to deduplicate against is ``config.exclude_target`` or the selection's target task;
    it is looked up in ``target_catalog`` (default: the source catalog).
    """
    from .catalogs import load_catalog

    config = config or MixtureConfig()
    if isinstance(selection, (str, os.PathLike)):
        sel = read_selection(selection)
        source = str(selection)
    elif isinstance(selection, dict):
        sel = dict(selection)
        sel["task_ids"] = [s["task"] if isinstance(s, dict) else s for s in sel.get("selected", [])]
        source = "<dict>"
    else:
        sel = {"task_ids": list(selection)}
        source = "<list>"
    task_ids = sel["task_ids"]
    if not task_ids:
        raise InstaError("the selection names no tasks")
    if catalog is None:
        name = catalog_name or sel.get("catalog")
        if not name:
            raise InstaError("which catalog holds the selected tasks? pass a catalog name (--catalog)")
        catalog = load_catalog(name, data_dir or sel.get("data_dir"))
    expanded: dict[str, list[str]] = {}
    resolved_ids: list[str] = []
    for t in task_ids:  # a family name that is not a task itself (a BIG-bench parent) means all its members
        members = catalog.members(t) if t not in catalog and hasattr(catalog, "members") else []
        if members:
            expanded[t] = members
            resolved_ids.extend(m for m in members if m not in resolved_ids)
        elif t not in resolved_ids:
            resolved_ids.append(t)
    task_ids = resolved_ids
    unknown = [t for t in task_ids if t not in catalog]
    if unknown:
        # resolve() gives the "did you mean" hint for the first one
        try:
            catalog.resolve(unknown[0])
        except InstaError as err:
            more = f" (and {len(unknown) - 1} more unknown: {', '.join(unknown[1:4])})" if len(unknown) > 1 else ""
            raise InstaError(f"selection names an unknown task: {err}{more}") from None
    tasks = [catalog.get(t) for t in task_ids]
    config.caps = {catalog.resolve(t) if t in catalog else t: n for t, n in config.caps.items()}
    target_id = config.exclude_target or target_id_of(sel)
    target_task = None
    if target_id:
        tcat = target_catalog if target_catalog is not None else catalog
        if target_id in tcat:
            target_task = tcat.get(target_id)
            config.exclude_target = target_task.id
        elif config.exclude_target:
            tcat.resolve(target_id)  # raises the clear unknown-task error
    mix = build_mixture(tasks, config, target_task=target_task, catalog_name=catalog.name, progress=progress)
    mix.manifest["selection"] = source
    mix.manifest["selected"] = task_ids
    if expanded:
        mix.manifest["expanded_families"] = expanded
    return mix


__all__ = [
    "EXPORT_FORMATS",
    "LeakFilter",
    "MIXINGS",
    "Mixture",
    "MixtureConfig",
    "build_mixture",
    "export_record",
    "instruction_of",
    "join_prompt_target",
    "load_mixture_dataset",
    "make_record",
    "manifest_path",
    "mixture_from_selection",
    "read_mixture",
    "read_selection",
]

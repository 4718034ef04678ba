"""User task files: your own tasks (targets or sources) described by their instructions.

A file is either **JSONL** (``.jsonl``, one task object per line) or **YAML/JSON** (``.yaml``, ``.yml``,
``.json``: a list of task objects, or ``{"tasks": [...]}``). A task object has:

``id`` (required)
    A unique string.
``instructions`` (required)
    A non-empty list of non-empty strings (a single string is accepted).
``category``, ``family``, ``language``
    Optional strings (``family`` defaults to the id, ``language`` to ``en``).
``keywords``, ``pools``
    Optional lists of strings (a single string is accepted).
``meta``
    Optional mapping, kept as is.
``examples``
    Optional path of a JSONL file, relative to the task file, one example per line (it must lie inside the task
    file's folder, symlinks resolved, unless ``allow_outside_paths=True``, ``--allow-outside-examples`` or
    ``INSTA_ALLOW_OUTSIDE_EXAMPLES=1``: a shared task file cannot make insta read ``/etc/passwd``):
    ``{"input": ..., "output": "..." or ["...", ...]}`` for generation, or
    ``{"input": ..., "options": [...], "answer": "<one of the options>" or <its index>}`` for classification;
    an optional ``"id"``. ``input`` is what the model sees, used verbatim.

Example (YAML)::

    tasks:
      - id: my_sentiment
        instructions:
          - "Is the sentiment of this review positive or negative?"
          - "Decide whether the customer liked the product."
        category: sentiment
        examples: my_sentiment.jsonl

Every problem (unreadable file, malformed line, missing ``id``, empty instructions, duplicate id, unknown field,
missing examples file, bad example) raises :class:`~insta.errors.InstaError` with a one-line message.
"""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Callable, Iterator

import yaml

from ..errors import InstaError
from ..util.fileio import check_aliases, read_text
from ..records import Example, Task
from .base import Catalog

FIELDS = ("id", "instructions", "category", "family", "language", "keywords", "pools", "meta", "examples")
ALLOW_OUTSIDE_ENV = "INSTA_ALLOW_OUTSIDE_EXAMPLES"


def _string_list(value: Any, field: str, where: str, allow_empty: bool = True) -> list[str]:
    items = [value] if isinstance(value, str) else value
    if not isinstance(items, list) or not all(isinstance(x, str) for x in items):
        raise InstaError(f"{where}: '{field}' must be a string or a list of strings")
    if not allow_empty:
        if not items:
            raise InstaError(f"{where}: '{field}' is empty")
        if any(not x.strip() for x in items):
            raise InstaError(f"{where}: '{field}' holds an empty string")
    return [x.strip() for x in items] if not allow_empty else list(items)


def _records(path: Path) -> list[tuple[str, Any]]:
    """(location, raw task object) for every task in the file."""
    text = read_text(path, "task file")
    if path.suffix == ".jsonl":
        out = []
        for n, line in enumerate(text.splitlines(), 1):
            if not line.strip():
                continue
            try:
                out.append((f"{path} line {n}", json.loads(line)))
            except ValueError as err:
                raise InstaError(f"malformed JSON in {path} line {n}: {err}") from None
            except RecursionError:
                raise InstaError(f"malformed JSON in {path} line {n}: nested too deeply") from None
        return out
    try:
        doc = check_aliases(yaml.safe_load(text), text, f"task file {path}")
    except yaml.YAMLError as err:
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise InstaError(f"malformed YAML in {path}: {first}") from None
    except RecursionError:
        raise InstaError(f"malformed YAML in {path}: nested too deeply") from None
    if isinstance(doc, dict) and "tasks" in doc:
        doc = doc["tasks"]
    if not isinstance(doc, list):
        raise InstaError(f"{path}: expected a list of tasks or a mapping with a 'tasks' list")
    return [(f"{path} task {i + 1}", obj) for i, obj in enumerate(doc)]


def _example(raw: Any, where: str, task_id: str, index: int, path: Path) -> Example:
    if not isinstance(raw, dict) or not isinstance(raw.get("input"), str):
        raise InstaError(f"{where}: an example needs a string 'input'")
    eid = str(raw.get("id", f"{task_id}:{index}"))
    prov = {"task": task_id, "index": index, "file": str(path), "separator": " "}
    if "options" in raw:
        options = raw["options"]
        if not isinstance(options, list) or not options or not all(isinstance(o, str) for o in options):
            raise InstaError(f"{where}: 'options' must be a non-empty list of strings")
        answer = raw.get("answer")
        if isinstance(answer, bool) or not isinstance(answer, (str, int)):
            raise InstaError(f"{where}: a classification example needs 'answer' (an option or its index)")
        if isinstance(answer, int):
            if not 0 <= answer < len(options):
                raise InstaError(f"{where}: answer index {answer} is out of range for {len(options)} options")
            label = answer
        elif answer in options:
            label = options.index(answer)
        else:
            raise InstaError(f"{where}: answer {answer!r} is not one of the options")
        return Example(eid, raw["input"], [options[label]], list(options), label, prov)
    if "output" not in raw:
        raise InstaError(f"{where}: an example needs 'output' (or 'options' and 'answer')")
    refs = _string_list(raw["output"], "output", where, allow_empty=False)
    return Example(eid, raw["input"], refs, None, None, prov)


def _make_loader(task_id: str, path: Path) -> Callable[[], Iterator[Example]]:
    def load() -> Iterator[Example]:
        try:
            fh = open(path, encoding="utf-8")
        except OSError as err:
            raise InstaError(f"cannot read examples file {path}: {err}") from None
        with fh:
            index = 0
            try:
                for n, line in enumerate(fh, 1):
                    if not line.strip():
                        continue
                    where = f"{path} line {n}"
                    try:
                        raw = json.loads(line)
                    except ValueError as err:
                        raise InstaError(f"malformed JSON in {where}: {err}") from None
                    except RecursionError:
                        raise InstaError(f"malformed JSON in {where}: nested too deeply") from None
                    yield _example(raw, where, task_id, index, path)
                    index += 1
            except UnicodeDecodeError as err:
                raise InstaError(f"examples file {path} is not UTF-8 text ({err.reason})") from None

    return load


def _examples_path(value: Any, where: str, base: Path, allow_outside: bool) -> Path:
    """The resolved examples file of a task; an error if it is missing or (without the opt-in) outside ``base``."""
    if not isinstance(value, str) or not value.strip():
        raise InstaError(f"{where}: 'examples' must be a path")
    ex_path = (base / value).resolve()
    if not allow_outside and not ex_path.is_relative_to(base.resolve()):
        raise InstaError(
            f"{where}: examples file {value!r} is outside the task file's folder {base.resolve()} (move it there, "
            f"or allow it: --allow-outside-examples or {ALLOW_OUTSIDE_ENV}=1)"
        )
    if not ex_path.is_file():
        raise InstaError(f"{where}: examples file {ex_path} does not exist")
    return ex_path


def _task(obj: Any, where: str, base: Path, allow_outside: bool = False) -> Task:
    if not isinstance(obj, dict):
        raise InstaError(f"{where}: a task must be a mapping with 'id' and 'instructions'")
    unknown = sorted(set(obj) - set(FIELDS))
    if unknown:
        raise InstaError(f"{where}: unknown field {unknown[0]!r} (known: {', '.join(FIELDS)})")
    task_id = obj.get("id")
    if isinstance(task_id, (int, float)) and not isinstance(task_id, bool):
        task_id = str(task_id)
    if not isinstance(task_id, str) or not task_id.strip():
        raise InstaError(f"{where}: missing 'id'")
    task_id = task_id.strip()
    where = f"{where} ({task_id})"
    if "instructions" not in obj or obj["instructions"] is None:
        raise InstaError(f"{where}: missing 'instructions'")
    instructions = _string_list(obj["instructions"], "instructions", where, allow_empty=False)
    for field in ("category", "family", "language"):
        if obj.get(field) is not None and not isinstance(obj[field], str):
            raise InstaError(f"{where}: '{field}' must be a string")
    meta = obj.get("meta") or {}
    if not isinstance(meta, dict):
        raise InstaError(f"{where}: 'meta' must be a mapping")
    loader = None
    if obj.get("examples") is not None:
        ex_path = _examples_path(obj["examples"], where, base, allow_outside)
        loader = _make_loader(task_id, ex_path)
        meta = {**meta, "examples": str(ex_path)}
    return Task(
        id=task_id,
        instructions=instructions,
        catalog="user",
        family=obj.get("family") or "",
        category=obj.get("category") or "",
        keywords=_string_list(obj.get("keywords") or [], "keywords", where),
        language=obj.get("language") or "en",
        pools=set(_string_list(obj.get("pools") or [], "pools", where)),
        meta=meta,
        loader=loader,
    )


def load(path: Path, name: str | None = None, allow_outside_paths: bool | None = None) -> Catalog:
    """The catalog of a user task file (see the module docstring for the format).

    ``allow_outside_paths`` lets ``examples`` point outside the task file's folder (default: refused, unless
    ``$INSTA_ALLOW_OUTSIDE_EXAMPLES`` is ``1``).
    """
    path = Path(path)
    if allow_outside_paths is None:
        allow_outside_paths = os.environ.get(ALLOW_OUTSIDE_ENV, "") == "1"
    if path.suffix not in (".jsonl", ".yaml", ".yml", ".json"):
        raise InstaError(f"task file {path} must end in .jsonl, .yaml, .yml or .json")
    tasks: list[Task] = []
    seen: dict[str, str] = {}
    for where, obj in _records(path):
        task = _task(obj, where, path.parent, allow_outside_paths)
        if task.id in seen:
            raise InstaError(f"{where}: duplicate task id {task.id!r} (first in {seen[task.id]})")
        seen[task.id] = where
        tasks.append(task)
    if not tasks:
        raise InstaError(f"task file {path} holds no task")
    return Catalog(name or "user", tasks)

"""NIV2 / Super-NaturalInstructions reader: ``<root>/natural-instructions/tasks/<task>.json``.

* Task id = file stem (``task050_multirc_answerability``); family = id. Only tasks whose file is present are
  listed; pools ``train`` / ``test`` come from ``splits/default/{train,test}_tasks.txt`` when present.
* Instruction: the ``Definition`` (its strings joined by newlines); with ``with_positive_examples=N`` the first N
  positive examples follow it, each as ``"Positive Example k -\\nInput: ...\\nOutput: ..."``, separated by blank
  lines. Category = ``Categories[0]``; keywords = Categories + Domains; language = ``Input_language[0]`` (as an
  ISO code where known, e.g. ``English`` -> ``en``).
* Examples: ``input = instruction + "\\n\\nInput: " + instance input + "\\nOutput:"`` (the instruction includes the
  positive examples when asked for; no trailing space: a decoder-only trainer appends the target after one
  space, ``provenance["separator"] == " "``), ``references`` = the instance's outputs, ``id`` = its id; option
  ``max_instances`` keeps the first N instances.

Task summaries go through the index cache, so the (large) task files are parsed once per change.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Callable, Iterator

from ..errors import InstaError
from ..records import Example, Task
from .base import Catalog, read_json_file
from .index_cache import cached_parse

INDEX_VERSION = 1  # bump whenever the cached per-file summary changes shape or content
MAX_CACHED_POSITIVES = 10
LANGUAGE_CODES = {
    "english": "en", "spanish": "es", "french": "fr", "german": "de", "italian": "it", "portuguese": "pt",
    "dutch": "nl", "russian": "ru", "chinese": "zh", "japanese": "ja", "korean": "ko", "arabic": "ar",
    "hindi": "hi", "persian": "fa", "turkish": "tr", "polish": "pl", "swedish": "sv", "bengali": "bn",
}
GET_TASKS = (
    "run `git clone https://github.com/allenai/natural-instructions` and copy its tasks/ folder to {tasks}"
)


def _read(path: Path) -> dict:
    data = read_json_file(path, "NIV2 task")
    if not isinstance(data, dict):
        raise InstaError(f"malformed NIV2 task file {path}: expected a JSON object")
    return data


def _strings(value: Any, field: str = "", path: Path | None = None) -> list[str]:
    if value is None:
        return []
    if isinstance(value, str):
        return [value]
    if not isinstance(value, list) or not all(isinstance(v, (str, int, float)) for v in value):
        raise InstaError(f"malformed NIV2 task file {path}: '{field}' must be a string or a list of strings")
    return [str(v) for v in value]


def _list(d: dict, field: str, path: Path) -> list:
    value = d.get(field) or []
    if not isinstance(value, list):
        raise InstaError(f"malformed NIV2 task file {path}: '{field}' must be a list")
    return value


def _summary(path: Path) -> dict[str, Any]:
    d = _read(path)
    definition = "\n".join(s.strip() for s in _strings(d.get("Definition"), "Definition", path) if s.strip())
    if not definition:
        raise InstaError(f"NIV2 task file {path} has an empty Definition")
    positives = [
        {"input": str(p.get("input", "")), "output": str(p.get("output", ""))}
        for p in _list(d, "Positive Examples", path)[:MAX_CACHED_POSITIVES] if isinstance(p, dict)
    ]
    return {
        "definition": definition,
        **{key: _strings(d.get(field), field, path) for key, field in (
            ("categories", "Categories"), ("domains", "Domains"), ("input_language", "Input_language"),
            ("output_language", "Output_language"))},
        "positives": positives,
        "n_instances": len(_list(d, "Instances", path)),
    }


def instruction_text(definition: str, positives: list[dict], n: int = 0) -> str:
    """The definition followed by up to ``n`` positive examples."""
    parts = [definition]
    for k, p in enumerate(positives[:n], 1):
        parts.append(f"Positive Example {k} -\nInput: {p['input'].strip()}\nOutput: {p['output'].strip()}")
    return "\n\n".join(parts)


def _language(names: list[str]) -> str:
    if not names:
        return "en"
    return LANGUAGE_CODES.get(names[0].strip().lower(), names[0].strip().lower())


def _read_split(path: Path) -> set[str]:
    if not path.is_file():
        return set()
    return {line.strip() for line in path.read_text(encoding="utf-8").splitlines() if line.strip()}


def _make_loader(task_id: str, path: Path, instruction: str, max_instances: int | None
                 ) -> Callable[[], Iterator[Example]]:
    def load() -> Iterator[Example]:
        instances = _list(_read(path), "Instances", path)
        for i, inst in enumerate(instances):
            if max_instances is not None and i >= max_instances:
                break
            if not isinstance(inst, dict) or "input" not in inst:
                raise InstaError(f"malformed NIV2 instance {i} in {path}: expected an object with 'input'")
            refs = _strings(inst.get("output"), f"Instances[{i}].output", path)
            yield Example(
                id=str(inst.get("id") or f"{task_id}-{i}"),
                input=f"{instruction}\n\nInput: {str(inst['input']).strip()}\nOutput:",
                references=refs,
                provenance={"task": task_id, "index": i, "file": str(path), "separator": " "},
            )

    return load


def load(
    root: Path, with_positive_examples: int = 0, max_instances: int | None = None, cache: bool = True
) -> Catalog:
    """The NIV2 catalog of ``<root>/natural-instructions`` (see the module docstring)."""
    base = Path(root) / "natural-instructions"
    tdir = base / "tasks"
    if not tdir.is_dir():
        raise InstaError(f"NIV2 task files are missing ({tdir} does not exist): " + GET_TASKS.format(tasks=tdir))
    if with_positive_examples < 0 or (max_instances is not None and max_instances < 0):
        raise InstaError("with_positive_examples and max_instances must not be negative")
    files = sorted(tdir.glob("*.json"))
    if not files:
        raise InstaError(f"NIV2 task files are missing ({tdir} holds no .json file): " + GET_TASKS.format(tasks=tdir))
    index = cached_parse("niv2", tdir, files, _summary, version=INDEX_VERSION, use_cache=cache)
    splits = {name: _read_split(base / "splits" / "default" / f"{name}_tasks.txt") for name in ("train", "test")}

    tasks = []
    for rel, s in index.items():
        task_id = rel[: -len(".json")]
        instruction = instruction_text(s["definition"], s["positives"], with_positive_examples)
        tasks.append(Task(
            id=task_id,
            instructions=[instruction],
            catalog="niv2",
            category=s["categories"][0] if s["categories"] else "",
            keywords=s["categories"] + s["domains"],
            language=_language(s["input_language"]),
            pools={name for name, ids in splits.items() if task_id in ids},
            meta={"n_instances": s["n_instances"], "domains": s["domains"], "input_language": s["input_language"],
                  "output_language": s["output_language"], "path": str(tdir / rel)},
            loader=_make_loader(task_id, tdir / rel, instruction, max_instances),
        ))
    return Catalog("niv2", tasks)

"""BIG-bench reader: the JSON tasks of ``<root>/big-bench/<task>/[<subtask>/]task.json``.

* Every task.json with examples is a task; a subtask's id is ``parent/subtask`` and its family the parent, so
  excluding a family drops all its subtasks. A parent that only groups subtasks (``conceptual_combinations``,
  ``logical_deduction``) is not a task itself: reach it through ``catalog.members(parent)``.
* Instructions: the ``description`` (a subtask with a blank one inherits its parent's) and the ``task_prefix``,
  each stripped, non-empty and kept once. Category = first keyword.
* Pool ``t0_eval``: every task of the 14 T0 BIG-bench targets (:data:`T0_EVAL`; ``syllogisms`` is an alias of
  ``formal_fallacies_syllogisms_negation``).
* Examples use BIG-bench's default zero-shot prompt: ``task_prefix`` + ``example_input_prefix`` (default
  ``"\\nQ: "``) + input + (for multiple-choice tasks, unless ``append_choices_to_input`` is false, each option
  after ``choice_prefix``, default ``"\\n  choice: "``) + ``example_output_prefix`` (default ``"\\nA: "``).
  The prompt is stripped at both ends, so ``input`` ends with e.g. ``"A:"``: a decoder-only trainer or scorer
  appends the target after one space (the stripped tail, e.g. ``" "`` or ``"\\n"``, is kept in
  ``provenance["separator"]`` for exact BIG-bench formatting). Options of ``target_scores`` tasks are shuffled
  with a seed from SHA-256 of ``"<task id>:<index>"`` (stable across processes); ``label`` = the first
  (in file order) option with the highest score, ``references`` = every option with that score (plus the
  ``target`` of the few tasks that give both). Generation
  tasks have ``references`` = the target(s) and no options. Example id = ``"<task id>:<index in file>"``.

Instructions come from an index cache (:mod:`insta.catalogs.index_cache`), so the 1,041 files are parsed only
when they change; examples are read from the task file when asked for.
"""
from __future__ import annotations

import logging

from pathlib import Path
from typing import Any, Callable, Iterator

from ..errors import InstaError
from ..util.helpers import stable_rng
from ..records import Example, Task
from .base import Catalog, read_json_file
from .index_cache import cached_parse

logger = logging.getLogger(__name__)

INDEX_VERSION = 2  # bump whenever the cached per-file summary changes shape or content
DEFAULTS = {
    "task_prefix": "",
    "example_input_prefix": "\nQ: ",
    "example_output_prefix": "\nA: ",
    "choice_prefix": "\n  choice: ",
    "append_choices_to_input": True,
}
#: The 14 BIG-bench tasks T0 evaluates on (METHOD.md §4), as names of this catalog (ids or families).
T0_EVAL: list[str] = [
    "code_line_description", "conceptual_combinations", "hindu_knowledge", "known_unknowns",
    "language_identification", "logic_grid_puzzle", "logical_deduction", "misconceptions",
    "movie_dialog_same_or_different", "novel_concepts", "strategyqa", "syllogisms",
    "vitaminc_fact_verification", "winowhy",
]
ALIASES: dict[str, str] = {"syllogisms": "formal_fallacies_syllogisms_negation"}


def _read_json(path: Path) -> dict:
    data = read_json_file(path, "BIG-bench task")
    if not isinstance(data, dict):
        raise InstaError(f"malformed BIG-bench task file {path}: expected a JSON object")
    return data


#: Field -> (check, what it must be) for the top-level fields the catalog reads; ``None`` is always allowed.
#: (``append_choices_to_input`` is a string "false" in six upstream files, kept as upstream harnesses read it.)
_FIELD_TYPES: dict[str, tuple[Callable[[Any], bool], str]] = {
    **{k: (lambda v: isinstance(v, str), "a string") for k in (
        "name", "description", "task_prefix", "example_input_prefix", "example_output_prefix", "choice_prefix",
        "preferred_score")},
    "keywords": (lambda v: isinstance(v, list) and all(isinstance(x, str) for x in v), "a list of strings"),
    "metrics": (lambda v: isinstance(v, list) and all(isinstance(x, str) for x in v), "a list of strings"),
    "examples": (lambda v: isinstance(v, list), "a list of example objects"),
    "append_choices_to_input": (lambda v: isinstance(v, (bool, str)), "true or false"),
}


def _check_fields(d: dict, path: Path) -> None:
    """A one-line error naming the file and the field when a field the catalog reads has the wrong type."""
    for key, (ok, want) in _FIELD_TYPES.items():
        value = d.get(key)
        if value is not None and not ok(value):
            shown = repr(value)
            shown = shown if len(shown) <= 40 else shown[:37] + "..."
            raise InstaError(f"malformed BIG-bench task file {path}: '{key}' must be {want} (got {shown})")


def example_problem(ex: Any) -> str | None:
    """Why a BIG-bench example cannot be used (``None`` when it can): not an object, a non-string input, no
    ``target`` / ``target_scores``, or targets and scores of the wrong type."""
    if not isinstance(ex, dict):
        return f"not an object ({type(ex).__name__})"
    if not isinstance(ex.get("input", ""), str):
        return "'input' is not a string"
    scores, target = ex.get("target_scores") or None, ex.get("target")
    if scores is not None:
        if not isinstance(scores, dict):
            return "'target_scores' is not an object"
        if not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in scores.values()):
            return "'target_scores' holds a non-numeric score"
    if target is not None and not (isinstance(target, str) or (
            isinstance(target, list) and target and all(isinstance(t, (str, int, float)) for t in target))):
        return "'target' is neither a string nor a list of strings"
    if scores is None and target is None:
        return "no 'target' or 'target_scores'"
    return None


def _summary(path: Path) -> dict[str, Any]:
    """What the catalog needs from one task.json (cached); wrong-typed fields are a one-line error, unusable
    examples are counted (``n_skipped``) and the first few listed with their reasons (``skipped``)."""
    d = _read_json(path)
    _check_fields(d, path)
    examples = d.get("examples") or []
    skipped = [(i, why) for i, e in enumerate(examples) if (why := example_problem(e)) is not None]
    return {
        "name": d.get("name") or "",
        "description": d.get("description") or "",
        "keywords": list(d.get("keywords") or []),
        "metrics": list(d.get("metrics") or []),
        "preferred_score": d.get("preferred_score"),
        "n_examples": len(examples) - len(skipped),
        "n_in_file": len(examples),
        "n_skipped": len(skipped),
        "skipped": [{"index": i, "problem": why} for i, why in skipped[:5]],
        "has_target_scores": any(isinstance(e, dict) and e.get("target_scores") for e in examples),
        "format": {k: d[k] for k in DEFAULTS if k in d},
    }


def make_example(
    task_id: str, index: int, ex: dict, fmt: dict, shuffle: bool = True, path: str = ""
) -> Example | None:
    """One BIG-bench example in the default zero-shot prompt format (``None`` if it has no target)."""
    f = {**DEFAULTS, **fmt}
    scores = ex.get("target_scores")
    options = references = None
    label = None
    body = str(ex.get("input", ""))
    if isinstance(scores, dict) and scores:
        items = [(str(k), float(v)) for k, v in scores.items()]
        best = max(v for _, v in items)
        gold = next(k for k, v in items if v == best)
        if shuffle:
            stable_rng(task_id, index).shuffle(items)
        options = [k for k, _ in items]
        label = options.index(gold)
        references = [k for k, v in items if v == best]
        extra = ex.get("target")
        for t in [extra] if isinstance(extra, str) else (extra if isinstance(extra, list) else []):
            if str(t) not in references:
                references.append(str(t))  # a task with both target_scores and target
        if f["append_choices_to_input"]:
            body += "".join(f["choice_prefix"] + o for o in options)
    else:
        target = ex.get("target")
        if isinstance(target, str):
            references = [target]
        elif isinstance(target, list):
            references = [str(t) for t in target]
        if not references:
            return None
    prompt = (f["task_prefix"] or "") + f["example_input_prefix"] + body + f["example_output_prefix"]
    text = prompt.strip()
    tail = prompt[len(prompt.rstrip()):]
    return Example(
        id=f"{task_id}:{index}",
        input=text,
        references=references,
        options=options,
        label=label,
        provenance={"task": task_id, "index": index, "file": path, "separator": tail},
    )


_WARNED: set[str] = set()


def _make_loader(task_id: str, path: Path, shuffle: bool, summary: dict[str, Any]) -> Callable[[], Iterator[Example]]:
    def load() -> Iterator[Example]:
        d = _read_json(path)
        _check_fields(d, path)
        if summary.get("n_skipped") and str(path) not in _WARNED:  # once per file and process: never silent
            _WARNED.add(str(path))
            first = summary["skipped"][0]
            logger.warning(f"BIG-bench task {task_id}: {summary['n_skipped']} of {summary['n_in_file']} "
                           f"examples are unusable and skipped (example {first['index']}: {first['problem']})")
        fmt = {k: d[k] for k in DEFAULTS if k in d}
        for i, ex in enumerate(d.get("examples") or []):
            out = make_example(task_id, i, ex, fmt, shuffle, str(path)) if example_problem(ex) is None else None
            if out is not None:
                yield out

    return load


def load(root: Path, shuffle_options: bool = True, cache: bool = True) -> Catalog:
    """The BIG-bench catalog of ``<root>/big-bench`` (see the module docstring)."""
    base = Path(root) / "big-bench"
    if not base.is_dir():
        raise InstaError(
            f"BIG-bench tasks not found at {base}: copy bigbench/benchmark_tasks/ of the BIG-bench repository "
            "(or the PyPI sdist bigbench==1.0.0) there"
        )
    files = sorted(base.glob("*/task.json")) + sorted(base.glob("*/*/task.json"))
    files.sort(key=lambda p: p.relative_to(base).as_posix())
    index = cached_parse("bigbench", base, files, _summary, version=INDEX_VERSION, use_cache=cache)

    t0_families = {ALIASES.get(n, n) for n in T0_EVAL}
    tasks = []
    for rel, s in index.items():
        if s.get("n_in_file", s["n_examples"]) == 0:
            continue
        task_id = rel.rsplit("/", 1)[0]
        family = task_id.split("/")[0]
        description = s["description"].strip()
        if not description and family != task_id:
            description = (index.get(f"{family}/task.json") or {}).get("description", "").strip()
        prefix = (s["format"].get("task_prefix") or "").strip()
        instructions = list(dict.fromkeys(x for x in (description, prefix) if x))
        if not instructions:
            instructions = [task_id.replace("_", " ")]
        tasks.append(Task(
            id=task_id,
            instructions=instructions,
            catalog="bigbench",
            family=family,
            category=s["keywords"][0] if s["keywords"] else "",
            keywords=s["keywords"],
            pools={"t0_eval"} if family in t0_families else set(),
            meta={
                "metrics": s["metrics"], "preferred_score": s["preferred_score"], "n_examples": s["n_examples"],
                **({"n_skipped_examples": s["n_skipped"], "skipped_examples": s["skipped"]}
                   if s.get("n_skipped") else {}),
                "path": str(base / rel), "has_target_scores": s["has_target_scores"], "format": s["format"],
            },
            loader=_make_loader(task_id, base / rel, shuffle_options, s),
        ))
    return Catalog("bigbench", tasks, aliases=dict(ALIASES))


def evaluation_families() -> dict[str, str]:
    """BIG-bench families that BBH evaluation targets were taken from, each with the first BBH task (by name) that
    comes from it: ``family -> reason``."""
    from .bbh import BBH_PARENT

    out: dict[str, str] = {}
    for bbh_task, parent in sorted(BBH_PARENT.items()):
        out.setdefault(parent, f"BIG-bench parent of BBH task {bbh_task}")
    return out

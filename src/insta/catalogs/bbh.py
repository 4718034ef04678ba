"""BIG-Bench Hard reader: ``<root>/bbh/<task>.json`` = ``{"examples": [{"input", "target"}]}``.

* Task id = file stem; family = the BIG-bench task it was taken from (:data:`BBH_PARENT`), so a BIG-bench
  source of the same family can be excluded; ``meta["parent"]`` too.
* Instructions (BBH has none of its own): the ``description`` of the BIG-bench task it comes from when
  ``<root>/big-bench/`` holds it (the matching subtask's and the parent's; for the three parents BIG-bench has
  only as programmatic tasks, a short paraphrase in :data:`PROGRAMMATIC_DESCRIPTIONS`), and the leading
  line(s) shared by at least 80% of the inputs (else their shared leading sentences; at least 3 words, e.g.
  "Which statement is sarcastic?"); if neither exists, the first line of the first input.
* Examples: ``input = "Q: " + input + "\\nA:"`` (no trailing space: a decoder-only trainer appends the target
  after one space, as for BIG-bench; ``provenance["separator"] == " "``). ``references = [target]``. Options:
  the letters ``(A)``, ``(B)``, ... listed in an input's ``Options:``; else, when the task's targets form a closed
  set (at most 10 distinct values), that set sorted; else ``None`` (generation, scored by exact match).
  ``label`` indexes the target. An example whose target is not one of its listed letters (a few in
  ``movie_recommendation`` and ``ruin_names``) is dropped and listed in ``task.meta["dropped"]``.
"""
from __future__ import annotations

import json
import re
from collections import Counter
from pathlib import Path
from typing import Any, Callable, Iterator

from ..errors import InstaError
from ..records import Example, Task
from .base import Catalog, read_json_file

#: Generation tasks (targets outside a closed set) are scored by exact match, as the BBH paper does.
GENERATION_METRIC = "exact_match"
#: Every BBH task -> the BIG-bench task folder it was taken from (upstream name where BIG-bench has it only
#: as a programmatic task: boolean_expressions, multistep_arithmetic, web_of_lies).
BBH_PARENT: dict[str, str] = {
    "boolean_expressions": "boolean_expressions",
    "causal_judgement": "causal_judgment",
    "date_understanding": "date_understanding",
    "disambiguation_qa": "disambiguation_qa",
    "dyck_languages": "dyck_languages",
    "formal_fallacies": "formal_fallacies_syllogisms_negation",
    "geometric_shapes": "geometric_shapes",
    "hyperbaton": "hyperbaton",
    "logical_deduction_five_objects": "logical_deduction",
    "logical_deduction_seven_objects": "logical_deduction",
    "logical_deduction_three_objects": "logical_deduction",
    "movie_recommendation": "movie_recommendation",
    "multistep_arithmetic_two": "multistep_arithmetic",
    "navigate": "navigate",
    "object_counting": "object_counting",
    "penguins_in_a_table": "penguins_in_a_table",
    "reasoning_about_colored_objects": "reasoning_about_colored_objects",
    "ruin_names": "ruin_names",
    "salient_translation_error_detection": "salient_translation_error_detection",
    "snarks": "snarks",
    "sports_understanding": "sports_understanding",
    "temporal_sequences": "temporal_sequences",
    "tracking_shuffled_objects_five_objects": "tracking_shuffled_objects",
    "tracking_shuffled_objects_seven_objects": "tracking_shuffled_objects",
    "tracking_shuffled_objects_three_objects": "tracking_shuffled_objects",
    "web_of_lies": "web_of_lies",
    "word_sorting": "word_sorting",
}
#: The 23 BBH tasks of the INSTA evaluation (METHOD.md §4): pool ``eval``.
BBH_EVAL: list[str] = [
    "boolean_expressions", "causal_judgement", "date_understanding", "disambiguation_qa", "dyck_languages",
    "formal_fallacies", "geometric_shapes", "hyperbaton", "logical_deduction_five_objects",
    "movie_recommendation", "multistep_arithmetic_two", "navigate", "object_counting", "penguins_in_a_table",
    "reasoning_about_colored_objects", "ruin_names", "salient_translation_error_detection", "snarks",
    "sports_understanding", "temporal_sequences", "tracking_shuffled_objects_five_objects", "web_of_lies",
    "word_sorting",
]
#: Short descriptions (paraphrased) of the BBH parents that BIG-bench has only as programmatic tasks, so no
#: task.json holds their description.
PROGRAMMATIC_DESCRIPTIONS: dict[str, str] = {
    "boolean_expressions": "Evaluate the truth value of a random Boolean expression",
    "multistep_arithmetic": "Solve multi-step arithmetic problems",
    "web_of_lies": "Evaluate a random Boolean function expressed as a word problem about who tells the truth",
}
MAX_CLOSED_SET = 10
MIN_LEAD_WORDS = 3
SHARED = 0.8
_LETTER = re.compile(r"^\(([A-Z])\)", re.M)
_SENTENCE = re.compile(r"(?<=[.?!:])\s+")


def parent_of(task_id: str) -> str:
    """The BIG-bench task a BBH task comes from (the id itself when unknown)."""
    return BBH_PARENT.get(task_id, task_id)


def _subtask_of(task_id: str, parent: str) -> str | None:
    """``logical_deduction_five_objects`` -> ``five_objects`` (the BIG-bench subtask folder)."""
    if task_id != parent and task_id.startswith(parent + "_"):
        return task_id[len(parent) + 1:]
    return None


def _shared_lead(units: list[list[str]], n: int) -> list[str]:
    """The leading units (lines or sentences) shared by at least 80% of the ``n`` inputs."""
    lead: list[str] = []
    for k in range(max((len(u) for u in units), default=0)):
        counts = Counter(u[k] for u in units if len(u) > k and u[:k] == lead)
        if not counts:
            break
        text, count = counts.most_common(1)[0]
        if count < SHARED * n or not text.strip() or text.strip() == "Options:":
            break
        lead.append(text)
    return lead


def common_lead(inputs: list[str]) -> str:
    """The leading line(s), else sentence(s), that at least 80% of the inputs start with ("" if none)."""
    if not inputs:
        return ""
    lead = "\n".join(x.strip() for x in _shared_lead([i.split("\n") for i in inputs], len(inputs))).strip()
    if len(lead.split()) < MIN_LEAD_WORDS:
        sentences = _shared_lead([_SENTENCE.split(i.split("\n")[0]) for i in inputs], len(inputs))
        lead = " ".join(sentences).strip()
    return lead if len(lead.split()) >= MIN_LEAD_WORDS else ""


def _read(path: Path) -> list[dict]:
    data = read_json_file(path, "BBH task")
    examples = data.get("examples") if isinstance(data, dict) else None
    if not isinstance(examples, list):
        raise InstaError(f"malformed BBH task file {path}: expected {{\"examples\": [...]}}")
    for i, ex in enumerate(examples):
        if not isinstance(ex, dict) or not isinstance(ex.get("input"), str) or "target" not in ex:
            raise InstaError(f"malformed BBH task file {path}: example {i} lacks 'input' or 'target'")
    return examples


def _options(inp: str, closed: list[str] | None) -> list[str] | None:
    letters = _LETTER.findall(inp)
    if letters:
        return [f"({x})" for x in letters]
    return closed


def _plan(examples: list[dict]) -> tuple[list[str] | None, list[dict[str, Any]]]:
    """(closed target set or None, dropped examples with reasons)."""
    targets = sorted({str(e["target"]) for e in examples})
    closed = targets if len(targets) <= MAX_CLOSED_SET else None
    dropped = []
    for i, ex in enumerate(examples):
        letters = _LETTER.findall(ex["input"])
        if letters and str(ex["target"]) not in {f"({x})" for x in letters}:
            dropped.append({"index": i, "target": str(ex["target"]),
                            "reason": f"target is not one of the listed options ({letters[0]})-({letters[-1]})"})
    return closed, dropped


def _make_loader(task_id: str, path: Path) -> Callable[[], Iterator[Example]]:
    def load() -> Iterator[Example]:
        examples = _read(path)
        closed, dropped = _plan(examples)
        skip = {d["index"] for d in dropped}
        for i, ex in enumerate(examples):
            if i in skip:
                continue
            target = str(ex["target"])
            options = _options(ex["input"], closed)
            yield Example(
                id=f"{task_id}:{i}",
                input=f"Q: {ex['input'].strip()}\nA:",
                references=[target],
                options=options,
                label=options.index(target) if options and target in options else None,
                provenance={"task": task_id, "index": i, "file": str(path), "separator": " "},
            )

    return load


def _description(bigbench: Path, rel: str) -> str:
    f = bigbench / rel / "task.json"
    if not f.is_file():
        return ""
    try:
        with open(f, encoding="utf-8") as fh:
            return str(json.load(fh).get("description") or "").strip()
    except (OSError, ValueError, AttributeError, RecursionError):
        return ""


def load(root: Path, cache: bool = True) -> Catalog:
    """The BBH catalog of ``<root>/bbh`` (see the module docstring); ``cache`` is accepted for symmetry (the
    27 files parse in a fraction of a second, so no index is kept)."""
    base = Path(root) / "bbh"
    if not base.is_dir():
        raise InstaError(
            f"BBH tasks not found at {base}: copy bbh/*.json of github.com/suzgunmirac/BIG-Bench-Hard there"
        )
    bigbench = Path(root) / "big-bench"
    tasks = []
    for path in sorted(base.glob("*.json")):
        task_id = path.stem
        examples = _read(path)
        if not examples:
            continue
        parent = parent_of(task_id)
        sub = _subtask_of(task_id, parent)
        descriptions = [_description(bigbench, f"{parent}/{sub}") if sub else "",
                        _description(bigbench, parent) or PROGRAMMATIC_DESCRIPTIONS.get(parent, "")]
        inputs = [e["input"] for e in examples]
        lead = common_lead(inputs)
        instructions = list(dict.fromkeys(x for x in [*descriptions, lead] if x))
        if not instructions:
            instructions = [inputs[0].strip().split("\n")[0]]
        closed, dropped = _plan(examples)
        has_letters = any(_LETTER.search(i) for i in inputs)
        tasks.append(Task(
            id=task_id,
            instructions=instructions,
            catalog="bbh",
            family=parent,
            pools={"eval"} if task_id in BBH_EVAL else set(),
            meta={
                "parent": parent, "n_examples": len(examples) - len(dropped), "dropped": dropped,
                "answer_format": "letters" if has_letters else ("closed" if closed else "free"),
                "path": str(path),
            },
            loader=_make_loader(task_id, path),
        ))
    return Catalog("bbh", tasks)

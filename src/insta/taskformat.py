"""The output space of a task, as text: what format-aware INSTA appends to each instruction, and what the
output-space signals (``output_space_weight``, the pivots of ``prior-transfer``) compare.

Transfer measured on this machine mostly rewards answer-format overlap (a model trained on yes/no tasks gets
better at yes/no targets), which an instruction alone often does not state. Format-aware INSTA embeds
``instruction + "\\n" + output space`` for the target and for every source task, where the output space is:

* P3: each template's promptsource ``answer_choices``: literal options are listed sorted (``Answer options:
  Maybe | No | Yes``: the same set in any order is the same space); choices that come from the row
  (``{{choice1}} ||| {{choice2}}``, ``{{endings}}``) are read off the task's rendered examples of that
  template where the catalog has them, else ``Answer: one of N options given with the input.`` when the
  template names N separate row fields, else unknown; a template without ``answer_choices`` is
  ``Answer: free text.``;
* any catalog with examples (BIG-bench, BBH, user tasks): from its first :data:`N_PEEK` examples: one fixed set
  of at most :data:`MAX_LISTED` options (``Answer options: no | yes``), options that change per example
  (``Answer: one of 4 options given with the input.``), or generation (``Answer: a short phrase.`` when the
  references have at most three words, else ``Answer: free text.``);
* unknown (no templates, no examples, free-text targets, unresolvable row choices): nothing is appended.

:func:`output_spaces` gives one space per instruction (an instruction shared by several templates takes their
most common one); :func:`task_output_space` one space per task: the most common known space over *every*
template (ties: the alphabetically first; unknown when unresolved row choices are more common), so neither
template order nor the first template decides.

A target whose output space is unknown is scored on plain instructions against plain instructions.
"""
from __future__ import annotations

import re
from typing import Any, Iterable, Mapping, Sequence

from .errors import InstaError
from .records import Task

N_PEEK = 20
MAX_LISTED = 10
FREE_TEXT = "Answer: free text."
_CACHE: dict[tuple, list[str | None]] = {}
_TAG = re.compile(r"\{\{(.*?)\}\}|\{%.*?%\}", re.S)


_LITERAL = re.compile(r"\s*[-+]?\s*(?:'([^']*)'|\"([^\"]*)\")\s*[-+]?\s*", re.S)
_CACHE_TASK: dict[tuple, str | None] = {}


def _options_space(option_sets: Sequence[Sequence[str]]) -> str:
    """The space of several examples' options: one fixed set listed sorted, else options that change per example."""
    sets = {tuple(sorted(" ".join(o.split()) for o in opts)) for opts in option_sets}
    if len(sets) == 1 and len(next(iter(sets))) <= MAX_LISTED:
        return f"Answer options: {' | '.join(o for o in next(iter(sets)) if o)}."
    sizes = sorted(len(opts) for opts in option_sets)
    return f"Answer: one of {sizes[len(sizes) // 2]} options given with the input."


def _template_space(template: Mapping[str, Any], rendered: Sequence[Sequence[str]] = ()) -> str | None:
    """One promptsource template's output space (see the module docstring); ``rendered``: the options of the
    task's examples rendered with this template (``None`` where the space cannot be known)."""
    choices = template.get("answer_choices")
    if not isinstance(choices, str) or not choices.strip():
        return FREE_TEXT
    tags = list(_TAG.finditer(choices))
    if all(m.group(1) is not None and _LITERAL.fullmatch(m.group(1)) for m in tags):  # literal options only
        text = _TAG.sub(lambda m: next(g for g in _LITERAL.fullmatch(m.group(1)).groups() if g is not None),
                        choices)
        options = [o for o in (" ".join(p.split()) for p in text.split("|||")) if o]
        return _options_space([options]) if options else FREE_TEXT
    if rendered:
        return _options_space(rendered)
    parts = [p.strip() for p in choices.split("|||")]
    if len(parts) > 1 and all(_TAG.fullmatch(p) for p in parts):  # "{{choice1}} ||| {{choice2}}": N row fields
        return f"Answer: one of {len(parts)} options given with the input."
    return None  # "{{endings}}", "{{answer_choices | join(...)}}": how many options only the rows say


def _rendered_options(task: Task, n_templates: int) -> dict[str, list[list[str]]]:
    """Template id -> the options of the task's first rendered examples (rows x templates, row-major)."""
    if not task.has_examples:
        return {}
    try:
        examples = task.examples(N_PEEK * max(1, n_templates))
    except (InstaError, OSError, ValueError):  # examples not readable here: resolved from nothing
        return {}
    out: dict[str, list[list[str]]] = {}
    for ex in examples:
        tid = (ex.provenance or {}).get("template_id")
        if tid is not None and ex.options:
            out.setdefault(str(tid), []).append(list(ex.options))
    return out


def _most_common(spaces: Iterable[str | None]) -> str | None:
    """The most common known space (ties: alphabetically first; ``None`` when none is known)."""
    counts: dict[str, int] = {}
    for s in spaces:
        if s:
            counts[s] = counts.get(s, 0) + 1
    return min(counts, key=lambda s: (-counts[s], s)) if counts else None


def _from_examples(task: Task) -> str | None:
    try:
        examples = task.examples(N_PEEK)
    except (InstaError, OSError, ValueError):  # examples not readable here: the format is unknown, not an error
        return None
    if not examples:
        return None
    with_options = [e for e in examples if e.options]
    if len(with_options) * 2 >= len(examples):
        return _options_space([e.options for e in with_options])
    words = sorted(len((e.references[0] if e.references else "").split()) for e in examples)
    return "Answer: a short phrase." if words[len(words) // 2] <= 3 else FREE_TEXT


def _templates(task: Task) -> list[dict] | None:
    templates = task.meta.get("templates") if isinstance(task.meta, dict) else None
    if isinstance(templates, list) and templates and all(isinstance(t, dict) for t in templates):
        return templates
    return None


def template_spaces(task: Task) -> list[tuple[str, str | None]]:
    """``(instruction, output space)`` of every template of a templated task (P3), in template order; ``[]`` for
    a task without templates."""
    templates = _templates(task)
    if not templates:
        return []
    rendered = _rendered_options(task, len(templates)) if any(
        isinstance(t.get("answer_choices"), str) and _TAG.search(t["answer_choices"]) for t in templates) else {}
    return [(t.get("instruction") if isinstance(t.get("instruction"), str) else "",
             _template_space(t, rendered.get(str(t.get("id")), []))) for t in templates]


def output_spaces(task: Task) -> list[str | None]:
    """The output space of each of ``task``'s instructions (``None`` where unknown), in instruction order."""
    key = (task.catalog, task.id, tuple(task.instructions))
    if key in _CACHE:
        return _CACHE[key]
    per_template = template_spaces(task)
    if per_template:
        by_instruction: dict[str, list[str | None]] = {}
        for instruction, space in per_template:
            by_instruction.setdefault(instruction, []).append(space)
        out = [_most_common(by_instruction.get(i, ())) for i in task.instructions]
        if any(i not in by_instruction for i in task.instructions):  # not from a template: the examples decide
            fallback = _from_examples(task)
            out = [o if i in by_instruction else fallback for i, o in zip(task.instructions, out)]
    else:
        space = _from_examples(task)
        out = [space] * len(task.instructions)
    _CACHE[key] = out
    return out


def task_output_space(task: Task) -> str | None:
    """The output space of the whole task: the most common known space over every template (ties: the
    alphabetically first), or the one read from its examples for a task without templates; ``None`` if unknown,
    also when more templates have row choices that no example resolves than have the most common known space.
    Independent of template order: the same templates in any order give the same space."""
    key = (task.catalog, task.id, tuple(task.instructions))
    if key not in _CACHE_TASK:
        per_template = template_spaces(task)
        if per_template:
            spaces = [s for _, s in per_template]
            best = _most_common(spaces)
            unknown = sum(s is None for s in spaces)  # row choices no example resolves: they may outvote it
            _CACHE_TASK[key] = best if best and spaces.count(best) >= unknown else None
        else:
            _CACHE_TASK[key] = _most_common(output_spaces(task))
    return _CACHE_TASK[key]


def target_output_space(target: Task, samples: Sequence[Any] = ()) -> str | None:
    """A selection target's output space: :func:`task_output_space`, else one read from unlabelled samples
    that all carry options (a free-text target given with ``--target-examples``); ``None`` if unknown."""
    space = task_output_space(target)
    if space is None and samples and all(getattr(s, "options", None) for s in samples):
        probe = Task(id=target.id, instructions=list(target.instructions), catalog="", loader=lambda: iter(samples))
        space = _from_examples(probe)
    return space


def with_output_space(instruction: str, space: str | None) -> str:
    """The text format-aware INSTA embeds for one instruction."""
    return f"{instruction}\n{space}" if space else instruction


def format_aware_texts(task: Task) -> list[str]:
    """Every instruction of ``task`` with its output space appended (unchanged where the space is unknown)."""
    return [with_output_space(i, s) for i, s in zip(task.instructions, output_spaces(task))]


def known(task: Task) -> bool:
    """Whether any instruction of ``task`` has a known output space."""
    return any(s is not None for s in output_spaces(task))


def embed_output_spaces(spaces: Iterable[str | None], encoder: Any) -> dict[str, Any]:
    """Output space text -> its unit vector, each known space embedded on its own (for ``output_space_weight``)."""
    import numpy as np

    from .selection import unit_rows

    texts = sorted({s for s in spaces if s})
    return dict(zip(texts, unit_rows(np.asarray(encoder.encode(texts))))) if texts else {}


def output_space_cosines(space: str, sources: Sequence[str | None], vectors: Mapping[str, Any],
                         allowed: Any = None) -> Any:
    """Cosine between the output space ``space`` and each source's (``vectors`` from :func:`embed_output_spaces`);
    a source whose space is unknown gets the mean over the known ones (the ``allowed`` ones, when given), so it is
    pushed neither way."""
    import numpy as np

    cos = np.array([float(vectors[space] @ vectors[s]) if s else np.nan for s in sources])
    known = ~np.isnan(cos) if allowed is None else ~np.isnan(cos) & np.asarray(allowed, bool)
    neutral = float(cos[known].mean()) if known.any() else 0.0
    return np.where(np.isnan(cos), neutral, cos)

"""The output space of a task, as text: what format-aware INSTA appends to each instruction.

Transfer measured on this machine mostly rewards answer-format overlap (a model trained on yes/no tasks gets
better at yes/no targets), which an instruction alone often does not state. Format-aware INSTA embeds
``instruction + "\\n" + output space`` for the target and for every source task, where the output space is:

* P3: the template's promptsource ``answer_choices`` (``Answer options: Yes | No``; Jinja variables shown as
  ``[var]``), or ``Answer: free text.`` for a template without them;
* any catalog with examples (BIG-bench, BBH, user tasks): from its first :data:`N_PEEK` examples: one fixed set
  of at most :data:`MAX_LISTED` options (``Answer options: no | yes``), options that change per example
  (``Answer: one of 4 options given with the input.``), or generation (``Answer: a short phrase.`` when the
  references have at most three words, else ``Answer: free text.``);
* unknown (no templates, no examples, free-text targets): nothing is appended.

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


def _p3_choices(answer_choices: Any) -> str:
    from .catalogs.p3 import placeholder

    if not isinstance(answer_choices, str) or not answer_choices.strip():
        return FREE_TEXT
    text = _TAG.sub(lambda m: placeholder(m.group(1)) if m.group(1) is not None else "", answer_choices)
    options = [" ".join(o.split()) for o in text.split("|||")]
    options = [o for o in options if o]
    return f"Answer options: {' | '.join(options)}." if options else FREE_TEXT


def _from_examples(task: Task) -> str | None:
    try:
        examples = task.examples(N_PEEK)
    except (InstaError, OSError, ValueError):  # examples not readable here: the format is unknown, not an error
        return None
    if not examples:
        return None
    with_options = [e for e in examples if e.options]
    if len(with_options) * 2 >= len(examples):
        sets = {tuple(sorted(" ".join(o.split()) for o in e.options)) for e in with_options}
        if len(sets) == 1 and len(next(iter(sets))) <= MAX_LISTED:
            return f"Answer options: {' | '.join(next(iter(sets)))}."
        sizes = sorted(len(e.options) for e in with_options)
        return f"Answer: one of {sizes[len(sizes) // 2]} options given with the input."
    words = sorted(len((e.references[0] if e.references else "").split()) for e in examples)
    return "Answer: a short phrase." if words[len(words) // 2] <= 3 else FREE_TEXT


def output_spaces(task: Task) -> list[str | None]:
    """The output space of each of ``task``'s instructions (``None`` where unknown), in instruction order."""
    key = (task.catalog, task.id, tuple(task.instructions))
    if key in _CACHE:
        return _CACHE[key]
    templates = task.meta.get("templates") if isinstance(task.meta, dict) else None
    if isinstance(templates, list) and templates and all(isinstance(t, dict) for t in templates):
        by_instruction: dict[str, str] = {}
        for t in templates:
            if isinstance(t.get("instruction"), str):
                by_instruction.setdefault(t["instruction"], _p3_choices(t.get("answer_choices")))
        out = [by_instruction.get(i) for i in task.instructions]
        if any(o is None for o in out):  # an instruction not from a template: the task's examples decide
            fallback = _from_examples(task)
            out = [o if o is not None else fallback for o in out]
    else:
        space = _from_examples(task)
        out = [space] * len(task.instructions)
    _CACHE[key] = out
    return out


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

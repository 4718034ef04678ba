"""What a model is asked and how its answer is read: the gold option, the content-free prompt of calibration,
the generation cut at a stop string, template ids, and the example limits."""
from __future__ import annotations

from typing import Iterable, Sequence

from ..errors import InstaError
from ..records import Example
from ..eval_config import EvalConfig

def cut_at_stop(text: str, stop: Iterable[str]) -> str:
    """The text up to the first stop string that occurs after some non-space content, stripped."""
    body = text.lstrip()
    cut = len(body)
    for s in stop:
        if s:
            j = body.find(s)
            if 0 <= j < cut:
                cut = j
    return body[:cut].strip()


def gold_label(ex: Example, task_id: str = "") -> int:
    """The gold option index: ``label``, else the first reference found among the options."""
    if not ex.options or len(ex.options) < 2:
        raise InstaError(f"example {ex.id!r} of {task_id or 'the task'} has fewer than 2 answer options: "
                         "rank classification needs them (use mode 'generate')")
    if ex.label is not None:
        if not 0 <= ex.label < len(ex.options):
            raise InstaError(f"example {ex.id!r} of {task_id or 'the task'}: label {ex.label} is out of range "
                             f"for {len(ex.options)} options")
        return ex.label
    for ref in ex.references:
        if ref in ex.options:
            return ex.options.index(ref)
    raise InstaError(f"example {ex.id!r} of {task_id or 'the task'} has options but no gold label")


def content_free_prompt(ex: Example, config: EvalConfig) -> str:
    """The content-free prompt of an example (see the module docstring; ``""`` for ``unconditional``)."""
    if config.calibration == "unconditional":
        return ""
    if config.calibration == "auto":
        raw = (ex.provenance or {}).get("raw_input")
        if isinstance(raw, str) and raw.strip() and raw in ex.input:
            return ex.input.replace(raw, config.content_free_input, 1)
    return config.content_free_prompt


def template_of(ex: Example) -> str | None:
    tid = (ex.provenance or {}).get("template_id")
    return None if tid is None else str(tid)


def limit_examples(examples: Sequence[Example], limit: int | None = None,
                   limit_per_template: int | None = None) -> list[Example]:
    out = list(examples)
    if limit_per_template is not None:
        seen: dict[str | None, int] = {}
        kept = []
        for ex in out:
            t = template_of(ex)
            if seen.get(t, 0) < limit_per_template:
                kept.append(ex)
                seen[t] = seen.get(t, 0) + 1
        out = kept
    if limit is not None:
        out = out[:limit]
    return out

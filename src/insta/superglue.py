"""SuperGLUE RTE and WSC the way T0 evaluates them: every promptsource template of the task, rank
classification over the template's answer choices, accuracy averaged over templates.

The examples come from the P3 catalog (``load_catalog("p3")``): tasks ``super_glue/rte`` and
``super_glue/wsc.fixed``, one Example per (validation row, template) with ``provenance["template_id"]``.
:func:`insta.evaluate.evaluate_examples` groups by that id and averages (``metrics``), keeping the pooled numbers
(``metrics_pooled``) and each template's (``per_template``).
"""
from __future__ import annotations

import os
from typing import Any, Sequence

from .errors import InstaError

#: short name -> P3 task id
T0_SUPERGLUE: dict[str, str] = {"rte": "super_glue/rte", "wsc": "super_glue/wsc.fixed"}


def resolve_superglue(name: str) -> str:
    if name in T0_SUPERGLUE:
        return T0_SUPERGLUE[name]
    if name in T0_SUPERGLUE.values():
        return name
    raise InstaError(f"unknown SuperGLUE target {name!r} (choose from {', '.join(T0_SUPERGLUE)})")


def evaluate_superglue(
    model: Any = "smollm2",
    names: Sequence[str] = ("rte", "wsc"),
    data_dir: str | os.PathLike | None = None,
    catalog: Any = None,
    limit_per_template: int | None = None,
    out_dir: str | os.PathLike | None = None,
    config: Any = None,
    **overrides: Any,
) -> dict[str, Any]:
    """Evaluate a model on RTE / WSC with all their templates, averaged over templates (T0 protocol).

    ``catalog`` defaults to ``load_catalog("p3", data_dir)``. Returns the :func:`insta.evaluate.simple_evaluate`
    summary, with ``acc`` (T0's number: summed log-likelihood) as the primary metric unless the config says otherwise.
    """
    from .evaluate import EvalConfig, simple_evaluate

    config = config or EvalConfig()
    config.average_over_templates = True
    if limit_per_template is not None:
        config.limit_per_template = limit_per_template
    if catalog is None:
        from .catalogs import load_catalog

        catalog = load_catalog("p3", data_dir)
    task_ids = [resolve_superglue(n) for n in names]
    tasks = []
    for tid in task_ids:
        task = catalog.get(tid)
        if not task.has_examples:
            raise InstaError(f"{tid}: the P3 catalog has no rows for it (expected superglue/{{RTE,WSC}}/val.jsonl "
                             "in the data directory)")
        tasks.append(task)
    return simple_evaluate(model, tasks, catalog=catalog, out_dir=out_dir, config=config, **overrides)


__all__ = ["T0_SUPERGLUE", "evaluate_superglue", "resolve_superglue"]

"""The target of a selection and the leakage guard: what counts as the target's relatives, free-text targets, and
the cleaning of instruction texts."""
from __future__ import annotations

from dataclasses import replace
from typing import Any, Iterable, Sequence

from ..catalogs.base import Catalog
from ..errors import InstaError
from ..records import Task


def clean_instructions(instructions: Iterable[str] | str) -> list[str]:
    """Strip and de-duplicate instructions; an error if none is left."""
    if isinstance(instructions, str):
        instructions = [instructions]
    out = list(dict.fromkeys(s.strip() for s in instructions if isinstance(s, str) and s.strip()))
    if not out:
        raise InstaError("the target has no instruction (empty text)")
    return out


def leakage_guard(pool: Catalog, target: Task | None, exclude: Iterable[str] = (),
                  exclude_families: Iterable[str] = ()) -> list[str]:
    """Pool task ids never to select: the target task, its family and BIG-bench parent (for a catalog task),
    the tasks in ``exclude`` (ids or aliases) and every task of ``exclude_families`` (a family or task name)."""
    ids = {pool.resolve(t) if t in pool else t for t in exclude}
    fams = set(exclude_families)
    if target is not None:
        names = {target.id, target.family}
        parent = target.meta.get("parent") if isinstance(target.meta, dict) else None
        if parent:
            names.add(str(parent))
        ids |= names
        fams |= names
    return sorted(t.id for t in pool if t.id in ids or t.family in fams or t.id in fams)


FREE_TEXT_TARGET = "<target instructions>"


def as_target(target: Task | Sequence[str] | str) -> tuple[Task, bool]:
    """``(task, is_catalog_task)``: a catalog Task as is, instruction text(s) as a Task with no relatives."""
    if isinstance(target, Task):
        return target, True
    return Task(id=FREE_TEXT_TARGET, instructions=clean_instructions(target), catalog="",
                family=FREE_TEXT_TARGET), False


def target_from_task(task: Task) -> tuple[list[str], dict[str, Any], list[str], list[str]]:
    """Instructions, target description and leakage exclusions (the task and its family) for a catalog task."""
    info = {"task": task.id, "catalog": task.catalog, "family": task.family}
    exclude_ids = [task.id]
    exclude_fams = [task.family]
    parent = task.meta.get("parent") if isinstance(task.meta, dict) else None
    if parent:
        exclude_fams.append(parent)
    return list(task.instructions), info, exclude_ids, exclude_fams


def with_instructions(task: Task, n: int | None) -> Task:
    """``task`` with only its first ``n`` (distinct, non-empty) instructions (all when ``n`` is ``None``)."""
    return task if n is None else replace(task, instructions=clean_instructions(task.instructions)[:n])

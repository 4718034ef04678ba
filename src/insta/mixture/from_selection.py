"""A mixture from a selection: ``insta select --json`` files (or their dicts, or task ids), with the selection's
target deduplicated against."""
from __future__ import annotations

import json
import os
from dataclasses import replace
from pathlib import Path
from typing import Any, Sequence

from ..errors import InstaError
from .build import MixtureConfig, build_mixture
from .records import Mixture


def read_selection(path: str | os.PathLike) -> dict[str, Any]:
    """A selection JSON written by ``insta select --json`` (``catalog``, ``data_dir``, ``target``,
    ``selected: [{"task": ...}, ...]``), or a plain JSON list of task ids, or a text file of task ids."""
    p = Path(path)
    if not p.is_file():
        raise InstaError(f"selection file {str(p)!r} does not exist")
    from ..util.fileio import read_text

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
    from ..catalogs import load_catalog

    config = config or MixtureConfig()
    sel, source = _as_selection(selection)
    task_ids = sel["task_ids"]
    if not task_ids:
        raise InstaError("the selection names no tasks")
    if catalog is None:
        name = catalog_name or sel.get("catalog")
        if not name:
            raise InstaError("which catalog holds the selected tasks? pass a catalog name (--catalog)")
        catalog = load_catalog(name, data_dir or sel.get("data_dir"))
    task_ids, expanded = _expand_families(catalog, task_ids)
    tasks = [catalog.get(t) for t in task_ids]
    # the caller's config stays as it was: the resolved caps and target go into a copy
    config = replace(config, caps={catalog.resolve(t) if t in catalog else t: n for t, n in config.caps.items()})
    target_id = config.exclude_target or target_id_of(sel)
    target_task = None
    if target_id:
        tcat = target_catalog if target_catalog is not None else catalog
        if target_id in tcat:
            target_task = tcat.get(target_id)
            config = replace(config, exclude_target=target_task.id)
        elif config.exclude_target:
            tcat.resolve(target_id)  # raises the clear unknown-task error
    mix = build_mixture(tasks, config, target_task=target_task, catalog_name=catalog.name, progress=progress)
    mix.manifest["selection"] = source
    mix.manifest["selected"] = task_ids
    if expanded:
        mix.manifest["expanded_families"] = expanded
    return mix


def _as_selection(selection: str | os.PathLike | dict[str, Any] | Sequence[str]) -> tuple[dict[str, Any], str]:
    """The selection as a dict with ``task_ids``, and where it came from."""
    if isinstance(selection, (str, os.PathLike)):
        return read_selection(selection), str(selection)
    if isinstance(selection, dict):
        sel = dict(selection)
        sel["task_ids"] = [s["task"] if isinstance(s, dict) else s for s in sel.get("selected", [])]
        return sel, "<dict>"
    return {"task_ids": list(selection)}, "<list>"


def _expand_families(catalog: Any, task_ids: Sequence[str]) -> tuple[list[str], dict[str, list[str]]]:
    """The task ids with every family name that is not a task itself (a BIG-bench parent) replaced by its
    members, and which names were expanded; a clear error for an unknown name."""
    expanded: dict[str, list[str]] = {}
    resolved_ids: list[str] = []
    for t in task_ids:
        members = catalog.members(t) if t not in catalog and hasattr(catalog, "members") else []
        if members:
            expanded[t] = members
            resolved_ids.extend(m for m in members if m not in resolved_ids)
        elif t not in resolved_ids:
            resolved_ids.append(t)
    unknown = [t for t in resolved_ids if t not in catalog]
    if unknown:
        # resolve() gives the "did you mean" hint for the first one
        try:
            catalog.resolve(unknown[0])
        except InstaError as err:
            more = f" (and {len(unknown) - 1} more unknown: {', '.join(unknown[1:4])})" if len(unknown) > 1 else ""
            raise InstaError(f"selection names an unknown task: {err}{more}") from None
    return resolved_ids, expanded

"""Meta-dataset readers. ``load_catalog(name, data_dir)`` returns a :class:`Catalog` of :class:`~insta.records.Task`.

Names: ``p3`` (promptsource templates), ``niv2`` (Super-NaturalInstructions), ``bigbench`` (BIG-bench JSON
tasks), ``bbh`` (BIG-Bench Hard), or the path of a user task file (``.jsonl``/``.yaml``/``.yml``).
"""
from __future__ import annotations

import os
from pathlib import Path
from types import ModuleType

from ..util.datadir import resolve_data_dir
from ..errors import InstaError
from .base import Catalog

CATALOG_NAMES = ("p3", "niv2", "bigbench", "bbh")


def load_catalog(
    name: str, data_dir: str | os.PathLike | None = None, *, allow_outside_paths: bool | None = None, **options
) -> Catalog:
    """Load a catalog by name (from the data directory) or from a user task file path.

    ``allow_outside_paths`` (user task files only) lets a task's ``examples`` file lie outside the task file's
    folder; by default that is refused unless ``$INSTA_ALLOW_OUTSIDE_EXAMPLES=1``.
    """
    if name.endswith((".jsonl", ".yaml", ".yml", ".json")) or (os.sep in name and Path(name).exists()):
        from . import user

        return user.load(Path(name), allow_outside_paths=allow_outside_paths, **options)
    if name not in CATALOG_NAMES:
        raise InstaError(f"unknown catalog {name!r} (choose from {', '.join(CATALOG_NAMES)} or give a task file path)")
    return _reader(name).load(resolve_data_dir(data_dir), **options)


def _reader(name: str) -> ModuleType:
    """The reader module of a built-in catalog."""
    import importlib

    return importlib.import_module(f"{__name__}.{name}")


def generation_metric(catalog: str) -> str:
    """The headline metric of a catalog's generation tasks: ``exact_match`` where the catalog's reader says so
    (BBH, scored by exact match as its paper does), ``rouge_l`` otherwise (a user task file too)."""
    if catalog not in CATALOG_NAMES:
        return "rouge_l"
    return getattr(_reader(catalog), "GENERATION_METRIC", "rouge_l")


def evaluation_families(catalog: str) -> dict[str, str]:
    """Families of a catalog that evaluation targets of another catalog come from (BIG-bench: the parents of the
    BBH tasks), each with the reason: kept out of anything trained for those targets (alignment)."""
    if catalog not in CATALOG_NAMES:
        return {}
    families = getattr(_reader(catalog), "evaluation_families", None)
    return families() if families else {}


__all__ = ["Catalog", "load_catalog", "CATALOG_NAMES", "evaluation_families", "generation_metric"]

"""Meta-dataset readers. ``load_catalog(name, data_dir)`` returns a :class:`Catalog` of :class:`~insta.records.Task`.

Names: ``p3`` (promptsource templates), ``niv2`` (Super-NaturalInstructions), ``bigbench`` (BIG-bench JSON
tasks), ``bbh`` (BIG-Bench Hard), or the path of a user task file (``.jsonl``/``.yaml``/``.yml``).
"""
from __future__ import annotations

import os
from pathlib import Path

from ..datadir import resolve_data_dir
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
    root = resolve_data_dir(data_dir)
    if name == "p3":
        from . import p3 as reader
    elif name == "niv2":
        from . import niv2 as reader
    elif name == "bigbench":
        from . import bigbench as reader
    else:
        from . import bbh as reader
    return reader.load(root, **options)


__all__ = ["Catalog", "load_catalog", "CATALOG_NAMES"]

"""Arguments and helpers shared by several subcommands."""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from ..errors import InstaError


def add_catalog_args(p: argparse.ArgumentParser, default: str = "p3") -> None:
    p.add_argument("--catalog", "-c", default=default, help=f"p3, niv2, bigbench, bbh, or a task file (default: {default})")
    p.add_argument("--data-dir", default=None, help="upstream data folder (default: $INSTA_DATA_DIR, else ./data)")
    p.add_argument("--pool", default=None, help="restrict the catalog to a named pool (e.g. t0_train, train)")
    p.add_argument("--allow-outside-examples", action="store_true",
                   help="let a task file's 'examples' paths point outside its folder (refused by default)")


def open_catalog(args: argparse.Namespace, name: str | None = None):
    """Catalog ``name`` (default ``args.catalog``) from ``args.data_dir``, honouring ``--allow-outside-examples``."""
    from ..catalogs import load_catalog

    allow = True if getattr(args, "allow_outside_examples", False) else None  # None: $INSTA_ALLOW_OUTSIDE_EXAMPLES
    return load_catalog(name or args.catalog, args.data_dir, allow_outside_paths=allow)


def load_pool(args: argparse.Namespace):
    """The catalog of ``args`` (see :func:`open_catalog`), restricted to ``--pool`` if given."""
    catalog = open_catalog(args)
    if getattr(args, "pool", None):
        catalog = catalog.subset(catalog.pool(args.pool))
    return catalog


def read_lines_file(path: str) -> list[str]:
    """Instructions from a file: a JSON/YAML list, or one instruction per non-empty line."""
    p = Path(path)
    if not p.is_file():
        raise InstaError(f"instructions file {path!r} does not exist")
    text = p.read_text(encoding="utf-8")
    if p.suffix in {".json", ".yaml", ".yml"}:
        import yaml

        try:
            data = yaml.safe_load(text)
        except yaml.YAMLError as err:
            raise InstaError(f"malformed instructions file {path}: {str(err).splitlines()[0]}") from None
        if isinstance(data, dict):
            data = data.get("instructions")
        if not isinstance(data, list) or not all(isinstance(s, str) for s in data):
            raise InstaError(f"instructions file {path} must hold a list of strings")
        return data
    return [line for line in text.splitlines() if line.strip()]


def write_json(path: str, obj: Any) -> None:
    """Write JSON to a path atomically, or to stdout for '-'."""
    if path == "-":
        json.dump(obj, sys.stdout, indent=2, ensure_ascii=False)
        sys.stdout.write("\n")
        return
    from ..paths import atomic_write_json

    atomic_write_json(path, obj)

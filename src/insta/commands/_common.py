"""Arguments and helpers shared by several subcommands."""
from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path
from typing import Any

from ..errors import InstaError

#: the catalog every command reads when --catalog is not given (select, evaluate, export-lm-eval, ...)
DEFAULT_CATALOG = "p3"
LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")


def add_output_args(p: argparse.ArgumentParser, json_help: str | None = None) -> None:
    """The output flags every command shares: ``--json PATH`` (when the command has a result to write; ``-`` for
    stdout), ``--quiet/-q`` (no progress bars or lines and no tables, the loading bars of transformers and
    datasets included; errors still print) and ``-v/--verbose`` / ``--log-level`` (Python logging, transformers
    and datasets included). :func:`configure_output` applies them before the command runs."""
    if json_help is not None:
        p.add_argument("--json", dest="json_out", metavar="PATH", help=f"{json_help} ('-' for stdout)")
    p.add_argument("--quiet", "-q", action="store_true", help="no progress bars or lines and no tables")
    p.add_argument("--verbose", "-v", action="count", default=0, help="more log output (-v info, -vv debug)")
    p.add_argument("--log-level", type=str.upper, choices=LOG_LEVELS, default=None,
                   help="log level of insta and the libraries it drives (default WARNING; ERROR with --quiet)")


def configure_output(args: argparse.Namespace) -> None:
    """Apply :func:`add_output_args`'s flags: the logging level, transformers' and datasets' verbosity and
    progress bars (also for libraries imported later, through their environment variables), and ``--quiet`` as
    ``--no-progress`` for commands that have that flag."""
    import logging

    quiet = bool(getattr(args, "quiet", False))
    verbose = int(getattr(args, "verbose", 0) or 0)
    level = getattr(args, "log_level", None) or (
        "DEBUG" if verbose >= 2 else "INFO" if verbose == 1 else "ERROR" if quiet else "WARNING")
    logging.basicConfig(format="%(levelname)s %(name)s: %(message)s")
    for name in ("insta", "transformers", "datasets", "sentence_transformers", "lm_eval"):
        logging.getLogger(name).setLevel(level)
    os.environ["TRANSFORMERS_VERBOSITY"] = level.lower()
    if quiet:
        for var in ("HF_HUB_DISABLE_PROGRESS_BARS", "HF_DATASETS_DISABLE_PROGRESS_BARS", "TQDM_DISABLE"):
            os.environ[var] = "1"
        if hasattr(args, "no_progress"):
            args.no_progress = True
    if "transformers" in sys.modules:  # already imported: its environment variables were read then
        from transformers.utils import logging as hf_logging

        hf_logging.set_verbosity(getattr(logging, level))
        if quiet:
            hf_logging.disable_progress_bar()
    if quiet and "datasets" in sys.modules:
        import datasets

        datasets.disable_progress_bars()


def emit_json(args: argparse.Namespace, obj: Any) -> None:
    """Write a command's result to ``--json`` when it was given (see :func:`write_json`)."""
    if getattr(args, "json_out", None):
        write_json(args.json_out, obj)


def add_catalog_args(p: argparse.ArgumentParser, default: str = DEFAULT_CATALOG) -> None:
    p.add_argument("--catalog", "-c", default=default,
                   help=f"p3, niv2, bigbench, bbh, or a task file (default: {default})")
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


def check_exclusions(catalog, task_ids: list[str], families: list[str]) -> None:
    """Refuse ``--exclude`` ids and ``--exclude-family`` names that ``catalog`` does not hold: a typo must not
    silently let a target's relative through the leakage guard."""
    import difflib

    for tid in task_ids:
        catalog.resolve(tid)  # an unknown id is an error naming close matches
    known = {t.family for t in catalog} | set(catalog.ids)
    for fam in families:
        if fam not in known:
            close = difflib.get_close_matches(fam, sorted(known), n=3)
            hint = f" (did you mean {', '.join(close)}?)" if close else ""
            raise InstaError(f"unknown task family {fam!r} in catalog {catalog.name!r}{hint}")


def read_lines_file(path: str) -> list[str]:
    """Instructions from a file: a JSON/YAML list, or one instruction per non-empty line."""
    from ..util.fileio import parse_yaml, read_text

    p = Path(path)
    if not p.is_file():
        raise InstaError(f"instructions file {path!r} does not exist")
    text = read_text(p, "instructions file")
    if p.suffix in {".json", ".yaml", ".yml"}:
        data = parse_yaml(text, f"instructions file {path}")
        if isinstance(data, dict):
            data = data.get("instructions")
        if not isinstance(data, list) or not all(isinstance(s, str) for s in data):
            raise InstaError(f"instructions file {path} must hold a list of strings")
        return data
    return [line for line in text.splitlines() if line.strip()]


def positive_int(text: str) -> int:
    """argparse ``type=``: an integer >= 1 (so that 0 or -1 are refused, never read as "all" or "all but one")."""
    return _int_at_least(text, 1, "a positive integer")


def non_negative_int(text: str) -> int:
    """argparse ``type=``: an integer >= 0."""
    return _int_at_least(text, 0, "an integer >= 0")


def finite_float(text: str) -> float:
    """argparse ``type=``: a number that is neither NaN nor infinite (``--z nan`` means nothing)."""
    import math

    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"expected a finite number, got {text!r}")
    return value


def _int_at_least(text: str, low: int, what: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected {what}, got {text!r}") from None
    if value < low:
        raise argparse.ArgumentTypeError(f"expected {what}, got {value}")
    return value


def check_output_files(**paths: str | None) -> None:
    """Check output file options before any work (``json_out="/tmp"`` -> "--json '/tmp' is a directory ...").

    Keyword names are the options' names with ``-`` as ``_``; ``None`` (option not given) is skipped.
    """
    from ..util.fileio import check_output_file

    for name, path in paths.items():
        if path is not None:
            check_output_file(path, f"--{name.removesuffix('_out').replace('_', '-')}")


def write_json(path: str, obj: Any) -> None:
    """Write JSON to a path atomically, or to stdout for '-'."""
    if path == "-":
        json.dump(obj, sys.stdout, indent=2, ensure_ascii=False)
        sys.stdout.write("\n")
        return
    from ..util.paths import atomic_write_json

    atomic_write_json(path, obj)

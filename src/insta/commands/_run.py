"""The flags ``insta experiment`` and ``insta transfer`` share, declared once: the config file, the run's
settings generated from :class:`insta.engine.RunSettings` (``--out``, ``--data-dir``, ``--executor``,
``--keep-models``), ``--plan``, ``--report-only``, ``--dry-run`` and the output flags; and the config overrides
they give (:func:`run_overrides`)."""
from __future__ import annotations

import argparse
import shlex
import sys
from typing import Any


def add_run_parser(sub, name: str, *, help: str, description: str, config_help: str, plan_help: str,
                   report_only_help: str, json_help: str) -> argparse.ArgumentParser:
    """The subcommand ``name`` with the shared run flags (its own flags are added by the caller)."""
    from ..engine.sections import RunSettings
    from ._common import add_output_args
    from ._config import add_config_flags

    p = sub.add_parser(name, help=help, description=description)
    p.add_argument("config", help=config_help)
    add_config_flags(p, RunSettings)
    p.add_argument("--plan", action="store_true", help=plan_help)
    p.add_argument("--report-only", action="store_true", help=report_only_help)
    p.add_argument("--dry-run", action="store_true", help="use the dry-run backend (no model; fake numbers) to test "
                   "a config end to end")
    add_output_args(p, json_help=json_help)
    return p


def run_overrides(args: argparse.Namespace) -> dict[str, Any]:
    """The config keys the shared flags set (flags win over the file)."""
    from ._config import given_flags

    overrides = dict(given_flags(args))
    if args.dry_run:
        overrides["backend"] = "dry-run"
    return overrides


def command_line(name: str) -> str | None:
    """The command as typed (``insta NAME ...``) when this process runs it, for the results' record; ``None``
    for a library or test call of :func:`insta.cli.main`."""
    if sys.argv[1:2] != [name]:
        return None
    return f"insta {name} " + " ".join(shlex.quote(a) for a in sys.argv[2:])

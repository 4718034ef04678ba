"""The ``insta`` command: a thin argparse layer over the library.

Each subcommand lives in ``insta.commands.<name>`` and exposes ``add_parser(subparsers)`` (which registers the
subparser and sets ``func``) and keeps heavy imports inside its run function, so ``insta --help`` stays fast.
"""
from __future__ import annotations

import argparse
import importlib
import os
import sys
from typing import Sequence

from .errors import InstaError

COMMANDS = (
    "select",
    "catalog",
    "data",
    "align",
    "eval_selection",
    "mixture",
    "train",
    "evaluate",
    "experiment",
    "transfer",
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="insta",
        description="Targeted instruction tuning: select related source tasks from instructions alone, "
        "train on them, evaluate zero-shot (INSTA, Lee et al. EMNLP 2024).",
    )
    parser.add_argument("--version", action="version", version=f"insta {_version()}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMANDS:
        try:
            module = importlib.import_module(f"insta.commands.{name}")
        except ModuleNotFoundError as err:  # a stage not installed in this checkout
            if err.name == f"insta.commands.{name}":
                continue
            raise
        module.add_parser(sub)
    return parser


def _version() -> str:
    from . import __version__

    return __version__


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point: run the subcommand; user errors become one line on stderr and exit code 2."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 1
    try:
        return int(args.func(args) or 0)
    except InstaError as err:
        print(f"insta {args.command}: error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"insta {args.command}: interrupted (finished work is kept; run again to resume)", file=sys.stderr)
        return 130
    except BrokenPipeError:
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0


if __name__ == "__main__":
    sys.exit(main())

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
    "screen",
    "export_lm_eval",
)


class OneLineErrorParser(argparse.ArgumentParser):
    """An ArgumentParser whose usage errors are one line on stderr (``insta select: error: ...``), exit 2."""

    def error(self, message: str):  # type: ignore[override]
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def build_parser() -> argparse.ArgumentParser:
    parser = OneLineErrorParser(
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


def _command_name(args: argparse.Namespace) -> str:
    """``insta select``, ``insta catalog show``: the prefix of the command's error lines."""
    words = [args.command] + [getattr(args, a) for a in ("catalog_command", "data_command") if getattr(args, a, None)]
    return "insta " + " ".join(words)


def _relax_required(parser: argparse.ArgumentParser) -> list[tuple[argparse.ArgumentParser, argparse.Action, str,
                                                                    object]]:
    """Make the required flags and positionals of the commands with a generic ``--config`` optional for a first
    parse, so that the file may supply them; returns what to restore (see :func:`main`)."""
    from .commands._config import OPTIONS_FILE_ATTR

    out: list = []
    todo = [parser]
    while todo:
        p = todo.pop()
        for action in p._actions:
            if isinstance(action, argparse._SubParsersAction):
                todo.extend(action.choices.values())
            elif getattr(p, OPTIONS_FILE_ATTR, False):
                if action.option_strings and action.required:
                    out.append((p, action, "required", True))
                    action.required = False
                elif not action.option_strings and action.nargs is None:
                    out.append((p, action, "nargs", None))
                    action.nargs = "?"
    return out


def _innermost_parser(parser: argparse.ArgumentParser, args: argparse.Namespace) -> argparse.ArgumentParser:
    for attr in ("command", "catalog_command", "data_command"):
        name = getattr(args, attr, None)
        subs = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
        if not name or not subs or name not in subs[0].choices:
            break
        parser = subs[0].choices[name]
    return parser


def user_file_error(err: BaseException) -> str | None:
    """One line for an error that a user's file or path caused (unreadable, not UTF-8, malformed, nested too
    deeply), or ``None`` for anything else (a bug, which keeps its traceback)."""
    import json

    if isinstance(err, UnicodeDecodeError):
        from .util.fileio import describe_decode_error

        return f"a file is not UTF-8 text ({describe_decode_error(err)})"
    if isinstance(err, OSError) and err.filename is not None:
        names = str(err.filename) + (f" -> {err.filename2}" if err.filename2 is not None else "")
        return f"{names}: {err.strerror or err}"
    if isinstance(err, RecursionError):
        return "an input is nested too deeply (recursion limit)"
    if isinstance(err, json.JSONDecodeError):
        return f"malformed JSON: {err.msg} (line {err.lineno} column {err.colno})"
    if type(err).__module__.split(".")[0] == "yaml":
        return f"malformed YAML: {' '.join(str(err).split())}"
    return None


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point: run the subcommand; user errors become one line on stderr and exit code 2."""
    # OpenMP threads that spin while they wait make torch several times slower whenever another process shares
    # the cores (measured: a SmolLM2 forward pass 4x slower on 2 busy cores); sleeping waits cost little on an
    # idle machine. The command's own process only, before any torch import; OMP_WAIT_POLICY=ACTIVE overrides it.
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    parser = build_parser()
    argv = list(sys.argv[1:] if argv is None else argv)
    relaxed = _relax_required(parser) if any(a == "--config" or a.startswith("--config=") for a in argv) else []
    args, extras = parser.parse_known_args(argv)
    if extras:  # reported by the subcommand's parser, so the line names the subcommand
        _innermost_parser(parser, args).error(f"unrecognized arguments: {' '.join(extras)}")
    if not getattr(args, "func", None):
        parser.print_help(sys.stderr)
        return 2
    if getattr(args, "options_file", None):  # --config of a command whose options are its flags: file < flags
        from .commands._config import apply_options_file

        try:
            apply_options_file(_innermost_parser(parser, args), args.options_file)
        except InstaError as err:
            print(f"{_command_name(args)}: error: {_one_line(str(err))}", file=sys.stderr)
            return 2
    if relaxed:  # what the file did not supply is required again, and argparse says so as usual
        for owner, action, attr, value in relaxed:
            if owner.get_default(action.dest) is None:
                setattr(action, attr, value)
        args = parser.parse_args(argv)
    from .commands._common import configure_output

    configure_output(args)
    try:
        return int(args.func(args) or 0)
    except InstaError as err:
        print(f"{_command_name(args)}: error: {_one_line(str(err))}", file=sys.stderr)
        return 2
    except BrokenPipeError:
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    except KeyboardInterrupt:
        print(f"insta {args.command}: interrupted (finished work is kept; run again to resume)", file=sys.stderr)
        return 130
    except Exception as err:  # a user's file or path (see user_file_error); anything else is a bug: re-raised
        message = user_file_error(err)
        if message is None:
            raise
        print(f"{_command_name(args)}: error: {_one_line(message)}", file=sys.stderr)
        return 2


def _one_line(text: str) -> str:
    """A message on one line, with control characters from data (task ids, file names) made visible."""
    from .util.textsafe import safe_text

    return safe_text(" ".join(part.strip() for part in text.splitlines() if part.strip()), newlines=False)


if __name__ == "__main__":
    sys.exit(main())

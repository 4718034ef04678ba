"""Reading the user's (and upstream) files, and checking output paths before any work starts.

Every failure becomes one :class:`~insta.errors.InstaError` line that names the file: missing, unreadable,
not UTF-8, malformed JSON/YAML, nested too deeply for the parser (``RecursionError``).
"""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from ..errors import InstaError


def read_text(path: str | os.PathLike, what: str = "file") -> str:
    """The UTF-8 text of ``path``; a one-line error for a missing, unreadable or non-UTF-8 file."""
    p = Path(path)
    try:
        return p.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise InstaError(f"{what} {str(p)!r} does not exist") from None
    except IsADirectoryError:
        raise InstaError(f"{what} {p} is a directory, not a file") from None
    except UnicodeDecodeError as err:
        raise InstaError(f"{what} {p} is not UTF-8 text ({describe_decode_error(err)})") from None
    except OSError as err:
        raise InstaError(f"cannot read {what} {p}: {err.strerror or err}") from None


def describe_decode_error(err: UnicodeDecodeError) -> str:
    """``byte 0xe9 at offset 12``: where a file stopped being UTF-8."""
    bad = err.object[err.start:err.start + 1]
    return f"byte 0x{bad.hex()} at offset {err.start}" if bad else err.reason


def parse_json(text: str, where: str) -> Any:
    """``json.loads`` with malformed or too deeply nested input as a one-line error naming ``where``."""
    try:
        return json.loads(text)
    except json.JSONDecodeError as err:
        raise InstaError(f"malformed JSON in {where}: {err.msg} (line {err.lineno} column {err.colno})") from None
    except RecursionError:
        raise InstaError(f"malformed JSON in {where}: nested too deeply") from None


def parse_yaml(text: str, where: str) -> Any:
    """``yaml.safe_load`` with malformed or too deeply nested input as a one-line error naming ``where``."""
    import yaml

    try:
        return check_aliases(yaml.safe_load(text), text, where)
    except yaml.YAMLError as err:
        raise InstaError(f"malformed YAML in {where}: {' '.join(str(err).split())}") from None
    except RecursionError:
        raise InstaError(f"malformed YAML in {where}: nested too deeply") from None


#: values a YAML file may expand to through aliases beyond its own length (a file without aliases holds fewer
#: values than characters): a "billion laughs" file of a few lines otherwise becomes gigabytes once written out
ALIAS_EXPANSION_MIN = 100_000


def check_aliases(data: Any, text: str, where: str) -> Any:
    """``data`` (parsed from the YAML ``text``), refused when its aliases (``*name``) expand it to more values than
    the text has characters (and :data:`ALIAS_EXPANSION_MIN`), or refer to a value from inside itself; counts each
    shared value once per use, without building the expansion."""
    if "*" not in text:
        return data
    limit = max(ALIAS_EXPANSION_MIN, len(text))
    sizes: dict[int, int | None] = {}

    def size(obj: Any) -> int:
        if not isinstance(obj, (dict, list)):
            return 1
        key = id(obj)
        if key in sizes:
            if sizes[key] is None:
                raise InstaError(f"{where}: a YAML alias refers to the value that contains it (a cycle)")
            return sizes[key]  # type: ignore[return-value]
        sizes[key] = None
        items = [x for kv in obj.items() for x in kv] if isinstance(obj, dict) else obj
        n = 1 + sum(size(x) for x in items)
        sizes[key] = n
        return n

    n = size(data)
    if n > limit:
        raise InstaError(f"{where}: its YAML aliases (*name) expand it to {n:,} values, more than {limit:,} "
                         "(an alias bomb?): write the values out instead")
    return data


def load_json(path: str | os.PathLike, what: str = "file") -> Any:
    """Parse a JSON file (see :func:`read_text` and :func:`parse_json` for the errors)."""
    return parse_json(read_text(path, what), f"{what} {path}")


def load_yaml(path: str | os.PathLike, what: str = "file") -> Any:
    """Parse a YAML (or JSON) file (see :func:`read_text` and :func:`parse_yaml` for the errors)."""
    return parse_yaml(read_text(path, what), f"{what} {path}")


def _nearest_existing(p: Path) -> Path:
    p = Path(os.path.abspath(p))
    while not p.exists() and p != p.parent:
        p = p.parent
    return p


def check_output_file(path: str | os.PathLike, what: str = "output file") -> None:
    """Fail now, before any work, when ``path`` cannot become a file: a directory, or under a file or a
    folder insta may not write to. ``-`` (stdout) is fine."""
    if str(path) == "-":
        return
    p = Path(path).expanduser()
    if p.is_dir():
        raise InstaError(f"{what} {str(path)!r} is a directory: give a file path")
    if p.exists() and not os.access(p, os.W_OK):
        raise InstaError(f"{what} {str(path)!r} is not writable")
    _check_parent(p, path, what)


def check_output_dir(path: str | os.PathLike, what: str = "output directory") -> None:
    """Fail now when ``path`` cannot be (or become) a directory insta writes into."""
    p = Path(path).expanduser()
    if p.exists() and not p.is_dir():
        raise InstaError(f"{what} {str(path)!r} exists and is not a directory")
    if p.is_dir():
        if not os.access(p, os.W_OK | os.X_OK):
            raise InstaError(f"{what} {str(path)!r} is not writable")
        return
    _check_parent(p, path, what)


def _check_parent(p: Path, original: str | os.PathLike, what: str) -> None:
    anc = _nearest_existing(p.parent)
    if not anc.is_dir():
        raise InstaError(f"{what} {str(original)!r} cannot be created: {anc} is not a directory")
    if not os.access(anc, os.W_OK | os.X_OK):
        raise InstaError(f"{what} {str(original)!r} cannot be created: {anc} is not writable")

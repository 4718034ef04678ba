"""Where insta keeps what it can rebuild: embeddings, converted models, catalog indexes."""
from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any

CACHE_ENV = "INSTA_CACHE_DIR"


def cache_dir(sub: str = "") -> Path:
    """``$INSTA_CACHE_DIR`` (default ``~/.cache/insta``), optionally a sub-folder; created on demand."""
    root = Path(os.environ.get(CACHE_ENV) or Path.home() / ".cache" / "insta").expanduser()
    path = root / sub if sub else root
    path.mkdir(parents=True, exist_ok=True)
    return path


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> None:
    """Write a file so that a reader sees the old or the new content, never a torn one."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_json(path: str | os.PathLike, obj: Any, indent: int | None = 2) -> None:
    """JSON, atomically; ``indent=None`` writes one compact line (for large machine-read files)."""
    seps = (",", ":") if indent is None else None
    atomic_write_text(path, json.dumps(obj, indent=indent, separators=seps, ensure_ascii=False, default=_jsonable) + "\n")


def _jsonable(obj: Any) -> Any:
    if isinstance(obj, (set, frozenset)):
        return sorted(obj)
    if isinstance(obj, Path):
        return str(obj)
    if hasattr(obj, "item"):
        return obj.item()
    raise TypeError(f"not JSON serialisable: {type(obj).__name__}")


def remove_stale_tmp(folder: str | os.PathLike, older_than_s: float = 60.0) -> int:
    """Delete ``.*.tmp`` files that :func:`atomic_write_bytes` left behind when a run was killed mid-write.

    Only files older than ``older_than_s`` go, so a concurrent writer's file in flight is left alone; returns
    how many were removed.
    """
    import time

    folder = Path(folder)
    if not folder.is_dir():
        return 0
    now, n = time.time(), 0
    for p in folder.glob(".*.tmp"):
        try:
            if p.is_file() and now - p.stat().st_mtime > older_than_s:
                p.unlink()
                n += 1
        except OSError:
            continue
    return n

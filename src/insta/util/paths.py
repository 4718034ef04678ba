"""Where insta keeps what it can rebuild: embeddings, converted models, catalog indexes."""
from __future__ import annotations

import json
import os
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator

from ..errors import InstaError

CACHE_ENV = "INSTA_CACHE_DIR"


def cache_root() -> Path:
    """The insta cache folder, ``$INSTA_CACHE_DIR`` (default ``~/.cache/insta``), without creating it."""
    return Path(os.environ.get(CACHE_ENV) or Path.home() / ".cache" / "insta").expanduser()


def cache_dir(sub: str = "") -> Path:
    """:func:`cache_root`, optionally a sub-folder; created on demand.

    A folder that cannot be created (a file in the way, no permission) is one :class:`InstaError` line.
    """
    root = cache_root()
    path = root / sub if sub else root
    try:
        path.mkdir(parents=True, exist_ok=True)
    except (FileExistsError, NotADirectoryError):
        raise InstaError(f"cache folder {path} cannot be created: a file is in the way "
                         f"(remove it, or set {CACHE_ENV} to another folder)") from None
    except OSError as err:
        raise InstaError(f"cache folder {path} cannot be created: {err.strerror or err} "
                         f"(set {CACHE_ENV} to a writable folder)") from None
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
    text = json.dumps(obj, indent=indent, separators=seps, ensure_ascii=False, default=_jsonable)
    atomic_write_text(path, text + "\n")


def _jsonable(obj: Any) -> Any:
    if isinstance(obj, (set, frozenset)):
        return sorted(obj)
    if isinstance(obj, Path):
        return str(obj)
    if hasattr(obj, "item"):
        return obj.item()
    raise TypeError(f"not JSON serialisable: {type(obj).__name__}")


def remove_stale_tmp(folder: str | os.PathLike, older_than_s: float = 60.0) -> list[Path]:
    """Delete the temp files that :func:`atomic_write_bytes` left in ``folder`` when its writer was killed.

    Only ``.<name>.<random>.tmp`` files directly in ``folder`` whose last write is more than ``older_than_s``
    seconds old are removed (a live writer finishes in far less), so a run may call this while another one
    writes. Returns the removed paths; a missing folder or a file that vanished meanwhile is not an error.
    """
    import time

    folder = Path(folder)
    if not folder.is_dir():
        return []
    cutoff = time.time() - older_than_s
    removed = []
    for f in folder.glob(".*.tmp"):
        try:
            if f.is_file() and not f.is_symlink() and f.stat().st_mtime < cutoff:
                f.unlink()
                removed.append(f)
        except FileNotFoundError:
            pass
    return removed


@contextmanager
def run_lock(folder: str | os.PathLike, what: str) -> Iterator[None]:
    """Hold ``<folder>/.lock`` for a run that writes into ``folder``; a second run on the same folder is refused
    with one line instead of deleting or evaluating what the first is still writing.

    The lock is ``fcntl.flock`` on an open file: the OS releases it when the process ends, however it ends, so a
    killed run never leaves a stale lock behind (the file stays; only the lock on it matters). It names the pid
    holding it. Where ``fcntl`` is missing (Windows) the run goes unguarded.
    """
    try:
        import fcntl
    except ImportError:  # pragma: no cover - Windows
        yield
        return
    path = Path(folder) / ".lock"
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a+") as fh:
        try:
            fcntl.flock(fh.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            fh.seek(0)
            holder = fh.read().strip() or "unknown"
            raise InstaError(f"{folder} is in use by another insta {what} run (pid {holder}): wait for it to "
                             "finish, or use another --out") from None
        try:
            fh.seek(0)
            fh.truncate()
            fh.write(str(os.getpid()))
            fh.flush()
            yield
        finally:
            fcntl.flock(fh.fileno(), fcntl.LOCK_UN)


SECRET_FILE = "secret.key"


def cache_secret() -> bytes:
    """This machine's key for the caches' integrity tags (``<cache>/secret.key``, 32 random bytes, mode 0600,
    made on first use).

    A cache entry carries a keyed hash (HMAC / keyed BLAKE2b) of what it holds: an entry rewritten by hand, copied
    from another machine, or given a recomputed plain hash fails its check and is computed again, because the tag
    cannot be made without this key. (A content hash alone would not do: anyone who can write the entry can
    recompute it.) When the key cannot be stored (a read-only cache) a per-process key is used: every entry
    is then recomputed, which costs only speed.
    """
    global _SECRET
    path = cache_root() / SECRET_FILE
    if _SECRET is not None and _SECRET[0] == path:
        return _SECRET[1]
    key = _read_secret(path)
    if key is None:
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(prefix=f".{SECRET_FILE}.", suffix=".tmp", dir=path.parent)
            with os.fdopen(fd, "wb") as fh:
                fh.write(os.urandom(32))
            try:
                os.link(tmp, path)  # atomic and never replaces: of two processes making it, one key wins
            except FileExistsError:
                if _read_secret(path) is None:  # a damaged key file: replaced (its entries get recomputed)
                    os.replace(tmp, path)
            finally:
                if os.path.exists(tmp):
                    os.unlink(tmp)
            key = _read_secret(path)
        except OSError:
            key = None
    if key is None:
        key = os.urandom(32)
    _SECRET = (path, key)
    return key


_SECRET: tuple[Path, bytes] | None = None


def _read_secret(path: Path) -> bytes | None:
    try:
        data = path.read_bytes()
    except OSError:
        return None
    return data if len(data) == 32 else None

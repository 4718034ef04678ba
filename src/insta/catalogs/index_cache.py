"""A small on-disk cache of per-file parse results, so catalogs load their instructions fast.

Each catalog kind and data root gets one JSON file under ``catalog-index/`` of the insta cache folder
(:func:`insta.util.paths.cache_root`: ``$INSTA_CACHE_DIR``, else ``~/.cache/insta``). It maps each source file
(path relative to the root) to the JSON-ready summary a reader built from it, with the SHA-256 of the file's
content, a digest binding that hash to the summary (keyed with this machine's cache key, so that only insta on
this machine can make one), and the file's stat stamp (size, mtime, ctime, inode).

An entry is used only if its digest matches its summary and the reader's ``check`` accepts the summary's shape;
its content hash must match the file (the file is hashed again whenever its stat stamp changed, so a ``touch`` or
a copy costs a hash, not a parse). Anything else (an edited, truncated, poisoned or stale entry) is parsed again
from the source file, silently. Writes are atomic (temp file + ``os.replace``); an unreadable or corrupt cache
is ignored and rebuilt; an unwritable cache directory only costs speed.
"""
from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any, Callable, Iterable

from ..util.paths import atomic_write_text, cache_root, cache_secret


def cache_dir() -> Path:
    """The folder holding catalog index files (not created: an unwritable cache only costs speed)."""
    return cache_root() / "catalog-index"


def cache_path(kind: str, root: Path, version: int) -> Path:
    """The index file for one catalog kind, data root and reader version."""
    digest = hashlib.sha256(f"{kind}\0{version}\0{Path(root).resolve()}".encode()).hexdigest()[:20]
    return cache_dir() / f"{kind}-v{version}-{digest}.json"


def _read(path: Path) -> dict[str, Any]:
    try:
        with open(path, encoding="utf-8") as fh:
            data = json.load(fh)
    except (OSError, ValueError, RecursionError):  # unreadable, not JSON, or nested to crash the parser
        return {}
    files = data.get("files") if isinstance(data, dict) else None
    return files if isinstance(files, dict) else {}


def _write(path: Path, files: dict[str, Any]) -> None:
    try:
        atomic_write_text(path, json.dumps({"files": files}, ensure_ascii=False))
    except OSError:
        pass  # a read-only cache dir only makes the next load slower


def file_sha256(path: Path) -> str:
    """The SHA-256 of a file's content."""
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _digest(sha: str, data: Any) -> str:
    """HMAC-SHA-256 of (content hash, summary) under this machine's cache key (:func:`insta.util.paths.cache_secret`):
    an entry rewritten with a recomputed plain digest (or copied from another machine) does not verify."""
    import hmac

    blob = json.dumps(data, sort_keys=True, ensure_ascii=False, separators=(",", ":"))
    return hmac.new(cache_secret(), f"{sha}\0{blob}".encode("utf-8", "surrogatepass"), hashlib.sha256).hexdigest()


def _valid(entry: Any, check: Callable[[Any], bool] | None) -> bool:
    """An entry whose digest matches its data and whose data has the shape the reader expects."""
    if not isinstance(entry, dict) or not isinstance(entry.get("sha256"), str) or "data" not in entry:
        return False
    try:
        if entry.get("digest") != _digest(entry["sha256"], entry["data"]):
            return False
        return check is None or bool(check(entry["data"]))
    except (TypeError, ValueError, KeyError, AttributeError, RecursionError):
        return False


def cached_parse(
    kind: str,
    root: Path,
    files: Iterable[Path],
    parse: Callable[[Path], Any],
    version: int = 1,
    use_cache: bool = True,
    check: Callable[[Any], bool] | None = None,
) -> dict[str, Any]:
    """``{relative path: parse(path)}`` for every file, reusing cached results of unchanged files.

    ``parse`` must return JSON-ready data; ``check(data)`` (optional) says whether cached data has the shape
    ``parse`` returns (a cached summary it rejects is parsed again). Relative paths use ``/`` separators.
    """
    root = Path(root)
    path = cache_path(kind, root, version)
    old = _read(path) if use_cache else {}
    new: dict[str, Any] = {}
    changed = False
    for f in files:
        rel = f.relative_to(root).as_posix()
        st = f.stat()
        stamp = [st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_ino]
        hit = old.get(rel)
        if not _valid(hit, check):
            hit = None
        if hit is not None and hit.get("stamp") == stamp:
            new[rel] = hit
            continue
        sha = file_sha256(f)
        if hit is not None and hit["sha256"] == sha:
            new[rel] = {**hit, "stamp": stamp}  # same content, new stat (a touch, a copy): no parse
        else:
            data = parse(f)
            new[rel] = {"stamp": stamp, "sha256": sha, "digest": _digest(sha, data), "data": data}
        changed = True
    if use_cache and (changed or set(old) != set(new)):
        _write(path, new)
    return {rel: entry["data"] for rel, entry in new.items()}

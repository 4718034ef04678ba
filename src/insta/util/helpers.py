"""Small helpers that several stages share, each written once here.

* **Stable hashes and seeded random generators**: the same on every machine and Python run (``hash()`` is salted
  per process, ``random.Random(obj)`` of a non-string is not stable): :func:`stable_key`, :func:`stable_int`,
  :func:`stable_rng` (and :func:`text_rng`, the older text-seeded streams), and :func:`content_hash` for cache keys
  of JSON-like objects.
* **Time**: :func:`format_duration` and :func:`timestamp` (the ``finished`` stamp of every record).
* **Progress**: :class:`Log` (timed progress lines on stderr) and :func:`progress_bar` (a tqdm bar).

Files (atomic writes, the cache folder) live in :mod:`insta.util.paths`; user errors in :mod:`insta.errors`.
"""
from __future__ import annotations

import hashlib
import json
import random
import sys
import time
from typing import Any, Callable, Iterable

# ---------------------------------------------------------------- stable hashes and seeded randomness


def stable_key(*parts: Any) -> str:
    """The SHA-256 (hex) of ``parts`` joined by ``:`` as text: ``stable_key("eval-order", 0, "x/1")``."""
    return hashlib.sha256(":".join(map(str, parts)).encode()).hexdigest()


def stable_int(*parts: Any, digits: int = 16) -> int:
    """The first ``digits`` hex digits of :func:`stable_key` as an integer (a seed, a bucket, a sort key)."""
    return int(stable_key(*parts)[:digits], 16)


def stable_rng(*parts: Any) -> random.Random:
    """A ``random.Random`` seeded with :func:`stable_int` of ``parts``: one reproducible stream per purpose."""
    return random.Random(stable_int(*parts))


def text_rng(*parts: Any) -> random.Random:
    """A ``random.Random`` seeded with the text of ``parts`` joined by ``:`` (Python hashes a str seed with SHA-512:
    stable across runs and machines): the streams of alignment splits, pairs, batches and mixtures, which committed
    results were drawn with (:func:`stable_rng` draws a different stream)."""
    return random.Random(":".join(map(str, parts)))


def content_hash(obj: Any, n: int = 16) -> str:
    """SHA-256 of the canonical JSON of ``obj`` (sorted keys, non-JSON values as ``str``), first ``n`` hex digits:
    the cache key of everything a result depends on."""
    blob = json.dumps(obj, sort_keys=True, ensure_ascii=False, default=str).encode("utf-8")
    return hashlib.sha256(blob).hexdigest()[:n]


# ---------------------------------------------------------------- time

DURATION_STYLES = ("clock", "short", "words")


def format_duration(seconds: float, style: str = "clock") -> str:
    """Seconds, rounded, as ``1:02:03`` (clock), ``1h 02m`` / ``4m 05s`` (short) or ``1 h 02 min 03 s`` /
    ``4 min 05 s`` (words)."""
    s = int(round(seconds))
    h, m, sec = s // 3600, s % 3600 // 60, s % 60
    if style == "clock":
        return f"{h:d}:{m:02d}:{sec:02d}"
    if style == "short":
        return f"{h}h {m:02d}m" if s >= 3600 else f"{s // 60}m {sec:02d}s"
    if style == "words":
        return f"{h} h {m:02d} min {sec:02d} s" if s >= 3600 else f"{s // 60} min {sec:02d} s"
    raise ValueError(f"unknown duration style {style!r} (choose from {', '.join(DURATION_STYLES)})")


def timestamp() -> str:
    """The local time as ``2026-11-30T16:06:31``: when a record was written."""
    return time.strftime("%Y-%m-%dT%H:%M:%S")


# ---------------------------------------------------------------- progress


class Log:
    """Progress lines on stderr (or a callback), with the time since the run started: ``[0:01:05] message``."""

    def __init__(self, sink: Callable[[str], None] | None = None, quiet: bool = False):
        self.t0 = time.perf_counter()
        self.sink = sink
        self.quiet = quiet

    def __call__(self, msg: str) -> None:
        if self.quiet:
            return
        line = f"[{format_duration(time.perf_counter() - self.t0)}] {msg}"
        if self.sink:
            self.sink(line)
        else:
            from .textsafe import safe_text

            print(safe_text(line), file=sys.stderr, flush=True)


def progress_bar(iterable: Iterable[Any] | None = None, *, total: int | None = None, desc: str | None = None,
                 unit: str = "it", enabled: bool = True, **options: Any) -> Any:
    """A tqdm bar on stderr over ``iterable`` (or a manual one of ``total`` steps); drawn only when ``enabled``.

    ``options`` go to tqdm unchanged (``leave``, ``unit_scale``, ``mininterval``, ``dynamic_ncols``, ...).
    """
    from tqdm import tqdm

    return tqdm(iterable, total=total, desc=desc, unit=unit, disable=not enabled, file=sys.stderr, **options)


__all__ = ["DURATION_STYLES", "Log", "content_hash", "format_duration", "progress_bar", "stable_int", "stable_key",
           "stable_rng", "timestamp"]

"""The on-disk embedding cache of one encoder: ``<cache>/embeddings/<model key>.npz``, safe for concurrent writers."""
from __future__ import annotations

import hashlib
import io
import logging
import re
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator, Sequence

import numpy as np

from .errors import InstaError
from .util.helpers import stable_key
from .util.paths import atomic_write_bytes, cache_dir, cache_secret

try:
    import fcntl
except ImportError:  # pragma: no cover - Windows: writers are not serialised, the atomic rename still holds
    fcntl = None  # type: ignore[assignment]

logger = logging.getLogger(__name__)

_KEY = re.compile(r"[0-9a-f]{32}")
_NORM_TOLERANCE = 1e-3


class EmbeddingCache:
    """Embeddings of one model on disk: ``<cache>/embeddings/<model key>.npz`` with text hashes and vectors.

    Safe for concurrent writers: :meth:`add` takes an exclusive lock on ``<file>.lock`` (``fcntl.flock`` where
    the platform has it), merges in what other processes wrote since this one read the file, and replaces the
    file atomically (temp file + rename), so readers need no lock and no writer loses another's entries.
    What is read is checked: rows whose key is not a text hash, whose vector is not finite and unit-norm, or
    whose integrity tag (:meth:`tag`, keyed per machine) does not match are dropped (the encoder computes them
    again), and vectors of another dimension than the ones being added are
    replaced. An unreadable file is discarded and rebuilt; a cache path that is a folder where a file belongs
    (or a file where a folder belongs) is an :class:`InstaError`; any other failure to write only costs speed.
    """

    def __init__(self, model_key: str, root: Path | None = None):
        self.model_key = model_key
        self.path = (root or cache_dir("embeddings")) / f"{model_key}.npz"
        self.lock_path = self.path.with_name(self.path.name + ".lock")
        self._index: dict[str, int] = {}
        self._vecs = np.zeros((0, 0), dtype=np.float32)
        self._tags: dict[str, str] = {}  # key -> integrity tag of its row
        self.loaded_from_disk = False
        self.rebuilt = False
        self.n_discarded = 0  # rows dropped as invalid when the file was read
        keys, vecs, tags = self._read(warn=True)
        if keys:
            self._index = {k: i for i, k in enumerate(keys)}
            self._vecs = vecs
            self._tags = dict(zip(keys, tags))
            self.loaded_from_disk = True

    @staticmethod
    def key(text: str) -> str:
        return stable_key(text)[:32]

    def tag(self, key: str, vec: np.ndarray) -> str:
        """The integrity tag of one row: keyed BLAKE2b of (model, text key, vector bytes) under this machine's
        cache key (:func:`insta.util.paths.cache_secret`), so a vector swapped for another valid one, or a row copied
        from another model's cache or machine, is detected and recomputed."""
        h = hashlib.blake2b(key=cache_secret(), digest_size=16)
        h.update(f"{self.model_key}\0{key}\0".encode())
        h.update(np.ascontiguousarray(vec, dtype=np.float32).tobytes())
        return h.hexdigest()

    def _folder_error(self) -> InstaError:
        """The one-line error for a cache path of the wrong kind (a folder where a file belongs, or vice versa)."""
        for f in (self.path, self.lock_path):
            if f.is_dir():
                return InstaError(f"embedding cache file {f} is a folder: remove it, or set INSTA_CACHE_DIR "
                                  "to another folder")
        return InstaError(f"embedding cache folder {self.path.parent} cannot be created: a file is in the way "
                          "(remove it, or set INSTA_CACHE_DIR to another folder)")

    def _read(self, warn: bool = False) -> tuple[list[str], np.ndarray, list[str]]:
        """The valid rows of the file (keys, vectors, tags); none if it is missing or unreadable."""
        empty: tuple[list[str], np.ndarray, list[str]] = ([], np.zeros((0, 0), dtype=np.float32), [])
        if self.path.is_dir():
            raise self._folder_error()
        if not self.path.is_file():
            return empty
        try:
            with np.load(self.path, allow_pickle=False) as data:
                keys = np.asarray(data["keys"])
                vecs = np.asarray(data["vecs"], dtype=np.float32)
                tags = np.asarray(data["tags"]).tolist() if "tags" in data.files else []
            if vecs.ndim != 2 or keys.ndim != 1 or len(keys) != len(vecs) or keys.dtype.kind != "U":
                raise ValueError("shape mismatch")
        except Exception as err:  # a torn or foreign file: start over rather than fail
            if warn:
                logger.warning("embedding cache %s unreadable (%s); rebuilding", self.path, err.__class__.__name__)
                self.rebuilt = True
            return empty
        with np.errstate(all="ignore"):
            good = np.isfinite(vecs).all(axis=1) & (np.abs(np.linalg.norm(vecs, axis=1) - 1.0) < _NORM_TOLERANCE)
        names: list[str] = keys.tolist()
        seen: set[str] = set()
        rows = []
        tags = tags if len(tags) == len(names) else [""] * len(names)
        for i, (k, ok) in enumerate(zip(names, good.tolist())):
            if ok and _KEY.fullmatch(k) and k not in seen and self.tag(k, vecs[i]) == tags[i]:
                seen.add(k)
                rows.append(i)
        if len(rows) < len(names) and warn:
            self.n_discarded = len(names) - len(rows)
            logger.warning("embedding cache %s: %d invalid vector(s) discarded (not finite and unit-norm, or failing "
                           "their integrity tag; they will be recomputed)", self.path, self.n_discarded)
        if not rows:
            return empty
        return [names[i] for i in rows], vecs[rows], [tags[i] for i in rows]

    def __len__(self) -> int:
        return len(self._index)

    def lookup(self, texts: Sequence[str]) -> tuple[np.ndarray | None, list[int]]:
        """Vectors for the cached texts (rows of missing ones left zero) and the positions that are missing."""
        if not self._index:
            return None, list(range(len(texts)))
        out = np.zeros((len(texts), self._vecs.shape[1]), dtype=np.float32)
        missing = []
        for i, text in enumerate(texts):
            j = self._index.get(self.key(text))
            if j is None:
                missing.append(i)
            else:
                out[i] = self._vecs[j]
        return out, missing

    def _append(self, keys: Sequence[str], rows: np.ndarray, tags: Sequence[str] | None = None) -> None:
        new = [(k, r, tags[i] if tags else None) for i, (k, r) in enumerate(zip(keys, rows)) if k not in self._index]
        if not new:
            return
        for k, r, t in new:
            self._index[k] = len(self._index)
            self._tags[k] = t or self.tag(k, r)
        block = np.asarray([r for _, r, _ in new], dtype=np.float32)
        self._vecs = block if self._vecs.size == 0 else np.vstack([self._vecs, block])

    def add(self, texts: Sequence[str], vecs: np.ndarray) -> None:
        """Add vectors, merge in other writers' entries, and persist the whole cache atomically."""
        vecs = np.asarray(vecs, dtype=np.float32)
        if self._index and vecs.ndim == 2 and vecs.shape[1] != self._vecs.shape[1]:
            logger.warning("embedding cache %s holds %d-d vectors, the model gives %d-d; rebuilding", self.path,
                           self._vecs.shape[1], vecs.shape[1])
            self._index, self._vecs, self._tags = {}, np.zeros((0, 0), dtype=np.float32), {}
            self.rebuilt = True
        before = len(self._index)
        self._append([self.key(t) for t in texts], vecs)
        if len(self._index) == before:
            return
        try:
            with self._locked():
                keys, disk, tags = self._read()  # what other writers saved since this cache was read
                if keys and disk.shape[1] == self._vecs.shape[1]:
                    self._append(keys, disk, tags)
                ordered = np.array(sorted(self._index, key=self._index.get))
                buf = io.BytesIO()
                np.savez(buf, keys=ordered, vecs=self._vecs, tags=np.array([self._tags[k] for k in ordered]))
                atomic_write_bytes(self.path, buf.getvalue())
        except (IsADirectoryError, NotADirectoryError, FileExistsError):
            raise self._folder_error() from None
        except OSError as err:  # a read-only or full disk: the vectors stay in memory, the next run recomputes
            logger.warning("embedding cache %s not saved (%s)", self.path, err.strerror or err)

    @contextmanager
    def _locked(self) -> Iterator[None]:
        """An exclusive lock shared by every process writing this cache (none where fcntl is missing)."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.lock_path, "a+b") as fh:
            if fcntl is not None:
                fcntl.flock(fh.fileno(), fcntl.LOCK_EX)
            try:
                yield
            finally:
                if fcntl is not None:
                    fcntl.flock(fh.fileno(), fcntl.LOCK_UN)

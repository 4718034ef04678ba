"""What several selection methods share: encoders by name, the seeded source library of instances per pool task,
how an instance is shown to an instance-level method, unlabelled target samples, and a per-pool cache."""
from __future__ import annotations

import weakref
from typing import Any, Callable, Generic, TypeVar

import numpy as np

from ..catalogs.base import Catalog
from ..errors import InstaError
from ..util.helpers import stable_key, stable_rng
from ..records import Example, Task
from ..encoder import encoder_name, get_encoder  # noqa: F401  (the methods' encoders by name)
from ..selection import leakage_guard

T = TypeVar("T")


class PoolCache(Generic[T]):
    """Values computed for one pool object (the last one asked about), recomputed for any other pool.

    The pool is held by a weak reference and its task ids are compared too, so a new pool never reads another
    pool's values (no ``id()`` keys that a new object could reuse).
    """

    def __init__(self) -> None:
        self._pool: weakref.ref | None = None
        self._ids: tuple[str, ...] = ()
        self._values: dict[Any, T] = {}

    def get(self, pool: Catalog, build: Callable[[], T], key: Any = None) -> T:
        """The value under ``key`` for ``pool``, built with ``build()`` the first time."""
        self._switch(pool)
        if key not in self._values:
            self._values[key] = build()
        return self._values[key]

    def put(self, pool: Catalog, value: T, key: Any = None) -> None:
        """Store a value computed elsewhere (forgetting any other pool's values)."""
        self._switch(pool)
        self._values[key] = value

    def __getstate__(self) -> dict[str, Any]:
        """Pickled empty (a method sent to another process, e.g. a Ray worker, rebuilds what it needs there)."""
        return {"_pool": None, "_ids": (), "_values": {}}

    def _switch(self, pool: Catalog) -> None:
        ids = tuple(pool.ids)
        if self._pool is None or self._pool() is not pool or self._ids != ids:
            self._pool, self._ids, self._values = weakref.ref(pool), ids, {}


def relatives(target: Task, pool: Catalog) -> list[str]:
    """Pool task ids that must never be selected for ``target``: itself, its family, its parent's family."""
    return leakage_guard(pool, target)




#: The last pool's source libraries, shared by RoE, DSIR and hybrid across targets (one pool kept: pools are large).
_LIBRARIES: PoolCache[dict[str, list[Example]]] = PoolCache()


def source_library(pool: Catalog, size: int, seed: int = 0) -> dict[str, list[Example]]:
    """Up to ``size`` instances of every pool task: a seeded uniform sample (reservoir; stable per task id).

    Cached for the last pool asked about (RoE, DSIR and hybrid share it across targets).
    """
    return _LIBRARIES.get(pool, lambda: _sample_library(pool, size, seed), key=(size, seed))


def _sample_library(pool: Catalog, size: int, seed: int) -> dict[str, list[Example]]:
    out: dict[str, list[Example]] = {}
    for task in pool:
        rng = stable_rng("library", seed, task.id)
        sample: list[Example] = []
        for i, ex in enumerate(task.iter_examples()):
            if len(sample) < size:
                sample.append(ex)
            else:
                j = rng.randint(0, i)
                if j < size:
                    sample[j] = ex
        out[task.id] = sample
    return out


def library_texts(pool: Catalog, size: int, seed: int, render: Callable[[Example], str]) -> tuple[list[str], list[int]]:
    """The source library as texts, with the pool index of each text's task (RoE and DSIR share it)."""
    lib = source_library(pool, size, seed)
    texts, owner = [], []
    for i, tid in enumerate(pool.ids):
        for ex in lib.get(tid, []):
            texts.append(render(ex))
            owner.append(i)
    return texts, owner


def instance_text(ex: Example | str, max_chars: int = 1000) -> str:
    """How an (unlabelled) instance is shown to an instance-level method: answer choices + input (RoE's form)."""
    if isinstance(ex, str):
        return ex[:max_chars]
    choices = " ||| ".join(ex.options) if ex.options else "none"
    return f"Answer Choices: {choices}, Instance: {ex.input}"[:max_chars]


def unlabelled_samples(task: Task, n: int, avoid: set[str] | frozenset[str] = frozenset(), seed: int = 0
                       ) -> list[Example]:
    """``n`` unlabelled inputs of ``task`` (labels and references removed, options kept) in a stable seeded
    order, none of them in ``avoid`` (e.g. its evaluation examples): the target samples of RoE, DSIR, hybrid."""
    pool = [ex for ex in task.iter_examples() if ex.id not in avoid]
    pool.sort(key=lambda ex: stable_key("samples", seed, ex.id))
    return [Example(id=ex.id, input=ex.input, references=[], options=list(ex.options) if ex.options else None,
                    label=None, provenance={"task": task.id}) for ex in pool[:n]]


def read_target_examples(path: str, limit: int | None = None) -> list[Example]:
    """Unlabelled target instances from a file: JSONL objects with ``input`` (and optionally ``options``; any
    answer is dropped), or plain text with one input per line."""
    import json
    from pathlib import Path

    p = Path(path)
    if not p.is_file():
        raise InstaError(f"target examples file {path!r} does not exist")
    try:
        lines = p.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as err:
        raise InstaError(f"cannot read target examples file {path}: {err}") from None
    out: list[Example] = []
    for n, line in enumerate(lines, 1):
        if not line.strip():
            continue
        if line.lstrip().startswith("{"):
            try:
                raw = json.loads(line)
            except ValueError as err:
                raise InstaError(f"malformed JSON in {path} line {n}: {err}") from None
            if not isinstance(raw, dict) or not isinstance(raw.get("input"), str) or not raw["input"].strip():
                raise InstaError(f"{path} line {n}: an example needs a non-empty string 'input'")
            opts = raw.get("options")
            if opts is not None and (not isinstance(opts, list) or not all(isinstance(o, str) for o in opts)):
                raise InstaError(f"{path} line {n}: 'options' must be a list of strings")
            out.append(Example(id=str(raw.get("id", f"target:{n}")), input=raw["input"], references=[],
                               options=list(opts) if opts else None, provenance={"file": str(p), "line": n}))
        else:
            out.append(Example(id=f"target:{n}", input=line.strip(), references=[],
                               provenance={"file": str(p), "line": n}))
        if limit is not None and len(out) >= limit:
            break
    if not out:
        raise InstaError(f"target examples file {path} holds no example")
    return out


def candidates(pool: Catalog, allowed: np.ndarray) -> Catalog:
    """The pool's allowed tasks as a catalog of their own."""
    return Catalog(pool.name, [t for t, a in zip(pool, allowed) if a])

"""Task-selection methods behind one interface, for comparing INSTA with the alternatives a user would pick.

Every method takes the same inputs (a target :class:`~insta.records.Task`, a pool :class:`~insta.catalogs.base.Catalog`
of source tasks, ``k``, and optionally unlabelled target instances) and returns the same output, a
:class:`MethodResult`: source task ids ranked best first, with scores, and the list of what the method consumed.

| name | consumes | what it does |
| --- | --- | --- |
| ``insta-mean`` | instructions | INSTA: mean cosine over all (target instruction, source instruction) pairs |
| ``insta-topk-vote`` | instructions | INSTA with the authors' top-k vote aggregation (rank-1 hits dominate) |
| ``insta-aligned`` | instructions | INSTA with an INSTA-aligned encoder (``insta align``), top-k vote by default |
| ``all`` | nothing | every pool task (the multi-task baseline); ``k`` does not apply |
| ``random`` | seed | ``k`` pool tasks drawn uniformly with a seed; does not look at the target |
| ``roe`` | target_samples, source_instances | Retrieval of Experts (Jang et al. 2023): each unlabelled target instance retrieves its nearest source instance; majority vote |
| ``lexical`` | instructions | BM25 (Okapi, ``rank-bm25``) of the target instructions against each task's instructions |
| ``dsir`` | target_samples, source_instances | DSIR (Xie et al. 2023) hashed n-gram importance weights, averaged per task |

The leakage guard is in the base class: the target itself and its relatives (same id, same family, the
target's BIG-bench parent for a BBH task) never reach a method and are listed in ``excluded``.
"""
from __future__ import annotations

import hashlib
import random
import re
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable, Sequence

import numpy as np

from .catalogs.base import Catalog
from .errors import InstaError
from .records import Example, Task

#: What a method may consume, in words (reported with every result).
CONSUMPTIONS = {
    "instructions": "target and source task instructions",
    "target_samples": "unlabelled target instances (inputs with their answer options, no labels)",
    "source_instances": "instances of every source task (a fixed-size library per task)",
    "seed": "a random seed only",
    "nothing": "nothing but the pool",
}


@dataclass
class RankedTask:
    rank: int
    task: str
    score: float
    detail: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        out = {"rank": self.rank, "task": self.task, "score": self.score}
        if self.detail:
            out["detail"] = self.detail
        return out


@dataclass
class MethodResult:
    """The ranked selection of one method for one target."""

    method: str
    label: str
    target: str
    consumed: list[str]
    ranked: list[RankedTask]
    params: dict[str, Any] = field(default_factory=dict)
    excluded: list[str] = field(default_factory=list)
    n_pool: int = 0
    seconds: float = 0.0

    @property
    def task_ids(self) -> list[str]:
        return [r.task for r in self.ranked]

    def to_dict(self) -> dict[str, Any]:
        return {
            "method": self.method,
            "label": self.label,
            "target": self.target,
            "consumed": list(self.consumed),
            "consumed_described": [CONSUMPTIONS[c] for c in self.consumed],
            "k": len(self.ranked),
            "selected": [r.to_dict() for r in self.ranked],
            "params": self.params,
            "excluded": self.excluded,
            "n_pool": self.n_pool,
            "seconds": round(self.seconds, 3),
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "MethodResult":
        return cls(
            method=d["method"], label=d.get("label", d["method"]), target=d["target"], consumed=list(d["consumed"]),
            ranked=[RankedTask(r["rank"], r["task"], r["score"], r.get("detail", {})) for r in d["selected"]],
            params=d.get("params", {}), excluded=list(d.get("excluded", [])), n_pool=d.get("n_pool", 0),
            seconds=d.get("seconds", 0.0),
        )


def relatives(target: Task, pool: Catalog) -> list[str]:
    """Pool task ids that must never be selected for ``target``: itself, its family, its parent's family."""
    meta = target.meta if isinstance(target.meta, dict) else {}
    names = {target.id, target.family}
    if meta.get("parent"):
        names.add(str(meta["parent"]))
    return [t.id for t in pool if t.id in names or t.family in names]


# ---------------------------------------------------------------- shared resources (encoders, libraries)

_ENCODERS: dict[str, Any] = {}


def get_encoder(name: str | None):
    """A shared encoder per name: ``"hashing"`` (or ``"hashing-<dim>"``) is the dependency-free test encoder,
    anything else a sentence-transformers model through :class:`insta.encoder.Encoder`."""
    from .encoder import DEFAULT_ENCODER

    key = name or DEFAULT_ENCODER
    if key not in _ENCODERS:
        if key == "hashing" or key.startswith("hashing-"):
            from .encoder import HashingEncoder

            dim = int(key.split("-", 1)[1]) if "-" in key else 512
            _ENCODERS[key] = HashingEncoder(dim)
        else:
            from .encoder import Encoder

            _ENCODERS[key] = Encoder(key)
    return _ENCODERS[key]


def _stable_rng(*parts: Any) -> random.Random:
    seed = int(hashlib.sha256(":".join(map(str, parts)).encode()).hexdigest()[:16], 16)
    return random.Random(seed)


_LIBRARIES: dict[tuple, dict[str, list[Example]]] = {}


def source_library(pool: Catalog, size: int, seed: int = 0) -> dict[str, list[Example]]:
    """Up to ``size`` instances of every pool task: a seeded uniform sample (reservoir; stable per task id).

    Cached per process (RoE and DSIR share it across targets).
    """
    key = (tuple(pool.ids), size, seed, id(pool))
    if key in _LIBRARIES:
        return _LIBRARIES[key]
    out: dict[str, list[Example]] = {}
    for task in pool:
        rng = _stable_rng("library", seed, task.id)
        sample: list[Example] = []
        for i, ex in enumerate(task.iter_examples()):
            if len(sample) < size:
                sample.append(ex)
            else:
                j = rng.randint(0, i)
                if j < size:
                    sample[j] = ex
        out[task.id] = sample
    _LIBRARIES.clear()  # keep one library: pools are large
    _LIBRARIES[key] = out
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


# ---------------------------------------------------------------- the interface


class SelectionMethod:
    """Base class: subclasses set ``name``/``consumes``/``depends_on_target`` and implement :meth:`_score`.

    ``select`` applies the leakage guard, calls ``_score`` (a score for every candidate, higher is better),
    breaks ties by task id, and keeps the top ``k``.
    """

    name: str = ""
    consumes: tuple[str, ...] = ()
    depends_on_target: bool = True
    uses_k: bool = True

    def __init__(self, label: str | None = None, **options: Any):
        self.label = label or self.name
        if options:
            raise InstaError(f"method {self.name!r}: unknown option(s) {', '.join(sorted(options))}")

    def params(self) -> dict[str, Any]:
        """Everything that changes this method's output (for cache keys and the report)."""
        return {}

    def describe(self) -> dict[str, Any]:
        return {"method": self.name, "label": self.label, "consumes": list(self.consumes),
                "depends_on_target": self.depends_on_target, "params": self.params()}

    def check(self, pool: Catalog, k: int) -> None:
        """Raise a clear error if the method cannot run on this pool (before any work)."""
        if self.uses_k and k > len(pool):
            raise InstaError(f"k={k} is larger than the pool ({len(pool)} tasks)")

    def select(
        self,
        target: Task,
        pool: Catalog,
        k: int,
        *,
        target_samples: Sequence[Example] | None = None,
        exclude: Iterable[str] = (),
    ) -> MethodResult:
        if not isinstance(k, int) or k < 1:
            raise InstaError(f"k must be a positive integer, got {k!r}")
        t0 = time.perf_counter()
        excluded = sorted(set(relatives(target, pool)) | {t for t in exclude if t in pool})
        cand = pool.without(excluded) if excluded else pool
        cand = Catalog(pool.name, list(cand))
        if len(cand) == 0:
            raise InstaError(f"the pool has no task left for target {target.id!r} after the leakage guard")
        if self.uses_k and k > len(cand):
            raise InstaError(f"k={k} is larger than the pool ({len(cand)} tasks after excluding {target.id!r} "
                             "and its relatives)")
        if "target_samples" in self.consumes and not target_samples:
            raise InstaError(f"method {self.name!r} needs unlabelled target instances of {target.id!r}")
        scores = self._score(target, cand, list(target_samples or []))
        order = sorted(cand.ids, key=lambda t: self._order_key(t, scores))
        if self.uses_k:
            order = order[:k]
        ranked = [RankedTask(i + 1, t, float(scores[t][0]), scores[t][1]) for i, t in enumerate(order)]
        assert len(set(order)) == len(order) and not set(order) & set(excluded)
        return MethodResult(
            method=self.name, label=self.label, target=target.id, consumed=list(self.consumes), ranked=ranked,
            params=self.params(), excluded=excluded, n_pool=len(cand), seconds=time.perf_counter() - t0,
        )

    def _score(self, target: Task, pool: Catalog, samples: list[Example]) -> dict[str, tuple[float, dict]]:
        raise NotImplementedError

    def _order_key(self, task_id: str, scores: dict[str, tuple[float, dict]]) -> tuple:
        """Ranking order: higher score first, ties by task id (subclasses may add a finer tie-breaker)."""
        return (-scores[task_id][0], task_id)


class InstaMethod(SelectionMethod):
    """INSTA (:mod:`insta.selection`): instruction-embedding similarity, ``mean`` or ``topk-vote``."""

    name = "insta-mean"
    consumes = ("instructions",)
    default_aggregation = "mean"

    def __init__(self, label: str | None = None, *, encoder: str | None = None, aggregation: str | None = None,
                 vote_depth: int = 10, n_target_instructions: int | None = None, **options: Any):
        super().__init__(label, **options)
        from .selection import AGGREGATIONS

        self.encoder_name = encoder
        self.aggregation = aggregation or self.default_aggregation
        if self.aggregation not in AGGREGATIONS:
            raise InstaError(f"method {self.name!r}: unknown aggregation {self.aggregation!r}")
        self.vote_depth = int(vote_depth)
        self.n_target_instructions = n_target_instructions
        self._selectors: dict[tuple, Any] = {}

    def params(self) -> dict[str, Any]:
        out = {"encoder": self._encoder_identity(), "aggregation": self.aggregation}
        if self.aggregation == "topk-vote":
            out["vote_depth"] = self.vote_depth
        if self.n_target_instructions:
            out["n_target_instructions"] = self.n_target_instructions
        return out

    def _encoder_identity(self) -> str:
        from .encoder import DEFAULT_ENCODER

        return self.encoder_name or DEFAULT_ENCODER

    def _selector(self, pool: Catalog):
        from .selection import Selector

        key = tuple(pool.ids)
        if key not in self._selectors:
            self._selectors.clear()
            self._selectors[key] = Selector(pool, get_encoder(self.encoder_name), self.aggregation, self.vote_depth)
        return self._selectors[key]

    def _score(self, target, pool, samples):
        from .selection import clean_instructions

        instructions = clean_instructions(target.instructions)
        if self.n_target_instructions:
            instructions = instructions[: self.n_target_instructions]
        sel = self._selector(pool)
        sim = sel.similarity(instructions)
        agg, mean, best = sel.aggregate(sim), sel.mean_cosine(sim), sel.best_pair_cosine(sim)
        return {tid: (float(agg[i]), {"best_pair_cosine": round(float(best[i]), 4),
                                      "mean_cosine": float(mean[i])})
                for i, tid in enumerate(pool.ids)}

    def _order_key(self, task_id, scores):
        from .selection import ranking_key

        score, info = scores[task_id]
        return ranking_key(score, info["mean_cosine"], task_id)


class InstaVoteMethod(InstaMethod):
    name = "insta-topk-vote"
    default_aggregation = "topk-vote"


class InstaAlignedMethod(InstaMethod):
    """INSTA with an aligned encoder; the authors pair it with top-k vote (METHOD.md §1)."""

    name = "insta-aligned"
    default_aggregation = "topk-vote"

    def __init__(self, label: str | None = None, *, encoder: str | None = None, **options: Any):
        if not encoder:
            raise InstaError("method 'insta-aligned' needs an encoder: the directory written by `insta align`")
        super().__init__(label, encoder=encoder, **options)

    def _encoder_identity(self) -> str:
        from pathlib import Path

        from .encoder import model_fingerprint

        p = Path(self.encoder_name).expanduser()
        if not p.is_dir():
            raise InstaError(f"insta-aligned: encoder directory {self.encoder_name!r} does not exist "
                             "(train it with `insta align`)")
        return f"{p.name}-{model_fingerprint(str(p.resolve()))}"


class AllMethod(SelectionMethod):
    """Every pool task (the multi-task baseline): same training budget, spread over the whole pool."""

    name = "all"
    consumes = ("nothing",)
    depends_on_target = False
    uses_k = False

    def _score(self, target, pool, samples):
        return {t: (1.0, {}) for t in pool.ids}


class RandomMethod(SelectionMethod):
    """``k`` tasks drawn uniformly from the (sorted) pool with a seed; the target is never looked at."""

    name = "random"
    consumes = ("seed",)
    depends_on_target = False

    def __init__(self, label: str | None = None, *, seed: int = 0, **options: Any):
        super().__init__(label or f"random-s{seed}", **options)
        self.seed = int(seed)

    def params(self) -> dict[str, Any]:
        return {"seed": self.seed}

    def _score(self, target, pool, samples):
        ids = sorted(pool.ids)
        order = _stable_rng("random-method", self.seed).sample(ids, len(ids))
        return {t: (float(len(ids) - i), {}) for i, t in enumerate(order)}


class RoEMethod(SelectionMethod):
    """Retrieval of Experts (Jang et al. 2023, METHOD.md §6).

    A library of ``library_size`` instances per source task is embedded as ``"Answer Choices: ..., Instance:
    ..."`` with the default encoder (all-MiniLM-L6-v2); each unlabelled target instance retrieves its nearest
    library instance, whose task gets one vote. Score = vote share; ties (and tasks without votes) are broken
    by the mean over target instances of the task's best cosine.
    """

    name = "roe"
    consumes = ("target_samples", "source_instances")

    def __init__(self, label: str | None = None, *, encoder: str | None = None, library_size: int = 100,
                 library_seed: int = 0, **options: Any):
        super().__init__(label, **options)
        self.encoder_name = encoder
        self.library_size = int(library_size)
        self.library_seed = int(library_seed)
        if self.library_size < 1:
            raise InstaError("roe: library_size must be at least 1")
        self._cache: dict[tuple, tuple] = {}

    def params(self) -> dict[str, Any]:
        from .encoder import DEFAULT_ENCODER

        return {"encoder": self.encoder_name or DEFAULT_ENCODER, "library_size": self.library_size,
                "library_seed": self.library_seed, "text": "Answer Choices: ..., Instance: ..."}

    def _library(self, pool: Catalog):
        key = tuple(pool.ids)
        if key not in self._cache:
            texts, owner = library_texts(pool, self.library_size, self.library_seed, instance_text)
            if not texts:
                raise InstaError("roe: no pool task has instances")
            emb = get_encoder(self.encoder_name).encode(texts)
            self._cache.clear()
            self._cache[key] = (np.asarray(owner), emb)
        return self._cache[key]

    def _score(self, target, pool, samples):
        owner, emb = self._library(pool)
        q = get_encoder(self.encoder_name).encode([instance_text(s) for s in samples])
        sim = q @ emb.T  # target instances x library instances
        n_tasks = len(pool)
        votes = np.bincount(owner[np.argmax(sim, axis=1)], minlength=n_tasks).astype(float)
        best = np.full((len(samples), n_tasks), -np.inf)
        for t in range(n_tasks):
            cols = owner == t
            if cols.any():
                best[:, t] = sim[:, cols].max(axis=1)
        mean_best = np.where(np.isfinite(best), best, -1.0).mean(axis=0)
        share = votes / len(samples)
        # lexicographic: votes first, then mean best cosine (in [-1, 1], scaled below one vote)
        score = share + (mean_best + 1.0) / 2.0 / (len(samples) + 1)
        return {tid: (float(score[i]), {"votes": int(votes[i]), "vote_share": round(float(share[i]), 4),
                                        "mean_best_cosine": round(float(mean_best[i]), 4)})
                for i, tid in enumerate(pool.ids)}


_WORD = re.compile(r"[a-z0-9]+")


def _bm25_tokens(text: str) -> list[str]:
    return _WORD.findall(text.lower())


class LexicalMethod(SelectionMethod):
    """A lexical instruction baseline: BM25 Okapi (``rank-bm25``; k1 = 1.5, b = 0.75) with each source task's
    instructions as one document and the target's instructions as the query (lowercased word tokens)."""

    name = "lexical"
    consumes = ("instructions",)

    def __init__(self, label: str | None = None, *, k1: float = 1.5, b: float = 0.75, **options: Any):
        super().__init__(label, **options)
        self.k1, self.b = float(k1), float(b)
        self._cache: dict[tuple, Any] = {}

    def params(self) -> dict[str, Any]:
        return {"scorer": "BM25Okapi (rank-bm25)", "k1": self.k1, "b": self.b, "documents": "task instructions"}

    def _index(self, pool: Catalog):
        key = tuple(pool.ids)
        if key not in self._cache:
            try:
                from rank_bm25 import BM25Okapi
            except ImportError as err:
                raise InstaError("the lexical baseline needs rank-bm25: pip install 'insta[experiment]'") from err
            docs = [_bm25_tokens(" ".join(t.instructions)) or ["<empty>"] for t in pool]
            self._cache.clear()
            self._cache[key] = BM25Okapi(docs, k1=self.k1, b=self.b)
        return self._cache[key]

    def _score(self, target, pool, samples):
        query = _bm25_tokens(" ".join(target.instructions))
        scores = self._index(pool).get_scores(query) if query else np.zeros(len(pool))
        return {tid: (float(s), {}) for tid, s in zip(pool.ids, scores)}


# ---------------------------------------------------------------- DSIR

_WORDPUNCT = re.compile(r"\w+|[^\w\s]+")  # nltk's WordPunctTokenizer pattern


def _hash_bucket(text: str, num_buckets: int) -> int:
    return int(hashlib.sha256(text.encode("utf-8")).hexdigest(), 16) % num_buckets


def ngram_counts_builtin(text: str, n: int = 2, num_buckets: int = 10000) -> np.ndarray:
    """Hashed n-gram counts exactly as ``data_selection.hashed_ngram_dsir.get_ngram_counts`` computes them
    (lowercase, WordPunct tokens, unigrams .. n-grams joined by a space, SHA-256 mod ``num_buckets``)."""
    words = _WORDPUNCT.findall(text.lower())
    counts = np.zeros(num_buckets, dtype=np.int64)
    for w in words:
        counts[_hash_bucket(w, num_buckets)] += 1
    for m in range(2, n + 1):
        for i in range(len(words) - m + 1):
            counts[_hash_bucket(" ".join(words[i:i + m]), num_buckets)] += 1
    return counts


def dsir_featurizer(prefer_package: bool = True) -> tuple[Callable[[str, int, int], np.ndarray], str]:
    """The hashed n-gram featurizer: the PyPI ``data-selection`` package's when installed, else the built-in
    copy (identical output). Returns ``(function(text, n, num_buckets), source)``."""
    if prefer_package:
        try:
            from data_selection.hashed_ngram_dsir import get_ngram_counts
        except ImportError:
            pass
        else:
            return (lambda text, n, b: get_ngram_counts(text, n=n, num_buckets=b)), "data-selection"
    return ngram_counts_builtin, "builtin"


class DSIRMethod(SelectionMethod):
    """DSIR (Xie et al. 2023, "Data Selection for Language Models via Importance Resampling") lifted to tasks.

    Features: hashed unigrams + bigrams (``num_buckets`` buckets; the ``data-selection`` package's featurizer).
    A bag-of-n-grams model is fitted on the unlabelled target instances (p_target) and on the whole source
    library (p_raw, ``library_size`` instances per pool task); an instance's log importance weight is
    ``sum_j count_j(x) * (log p_target_j - log p_raw_j)`` (1e-8 smoothing, as in the package). A task's score:

    * ``per-ngram`` (default): the summed weight of its library instances divided by their n-gram count, i.e. the
      log-likelihood ratio of the task's text per n-gram. Raw DSIR weights grow in magnitude with length (every
      n-gram unseen in the target adds about -9), so a plain mean ranks the tasks with the shortest instances
      first for every target; DSIR itself guards against that with a minimum length (100 words) when it
      resamples, which would drop most BIG-bench instances.
    * ``mean``: the mean raw weight of its instances (length-biased, see above).
    * ``topk-share``: the share of its instances among the top ``k * library_size`` pool instances by raw weight
      (DSIR's deterministic top-k resampling, counted per task).
    """

    name = "dsir"
    consumes = ("target_samples", "source_instances")

    def __init__(self, label: str | None = None, *, num_buckets: int = 10000, ngrams: int = 2,
                 library_size: int = 100, library_seed: int = 0, aggregation: str = "per-ngram", **options: Any):
        super().__init__(label, **options)
        self.num_buckets = int(num_buckets)
        self.ngrams = int(ngrams)
        self.library_size = int(library_size)
        self.library_seed = int(library_seed)
        if aggregation not in ("per-ngram", "mean", "topk-share"):
            raise InstaError(f"dsir: unknown aggregation {aggregation!r} (per-ngram, mean or topk-share)")
        self.aggregation = aggregation
        self._feat, self.featurizer_source = dsir_featurizer()
        self._cache: dict[tuple, tuple] = {}
        self._k = 5

    def params(self) -> dict[str, Any]:
        return {"num_buckets": self.num_buckets, "ngrams": self.ngrams, "library_size": self.library_size,
                "library_seed": self.library_seed, "aggregation": self.aggregation,
                "featurizer": self.featurizer_source, "text": "instance input (with its answer options)"}

    def _features(self, texts: Sequence[str]) -> np.ndarray:
        out = np.zeros((len(texts), self.num_buckets), dtype=np.float64)
        for i, t in enumerate(texts):
            out[i] = self._feat(t, self.ngrams, self.num_buckets)
        return out

    def _raw(self, pool: Catalog):
        key = tuple(pool.ids)
        if key not in self._cache:
            texts, owner = library_texts(pool, self.library_size, self.library_seed, lambda ex: ex.input[:4000])
            if not texts:
                raise InstaError("dsir: no pool task has instances")
            feats = self._features(texts)
            raw = feats.sum(axis=0)
            raw_probs = raw / raw.sum()
            self._cache.clear()
            self._cache[key] = (np.asarray(owner), feats, raw_probs)
        return self._cache[key]

    def select(self, target, pool, k, **kw):
        self._k = k
        return super().select(target, pool, k, **kw)

    def _score(self, target, pool, samples):
        owner, feats, raw_probs = self._raw(pool)
        tfeat = self._features([s.input[:4000] if isinstance(s, Example) else str(s) for s in samples]).sum(axis=0)
        if tfeat.sum() == 0:
            raise InstaError(f"dsir: the target samples of {target.id!r} hold no n-gram")
        target_probs = tfeat / tfeat.sum()
        log_diff = np.log(target_probs + 1e-8) - np.log(raw_probs + 1e-8)
        weights = feats @ log_diff
        n_tasks = len(pool)
        sums = np.bincount(owner, weights=weights, minlength=n_tasks)
        counts = np.bincount(owner, minlength=n_tasks)
        mean = np.where(counts > 0, sums / np.maximum(counts, 1), -np.inf)
        ngrams = np.bincount(owner, weights=feats.sum(axis=1), minlength=n_tasks)
        per_ngram = np.where(ngrams > 0, sums / np.maximum(ngrams, 1), -np.inf)
        top_m = min(len(weights), self._k * self.library_size)
        top = np.argsort(-weights, kind="stable")[:top_m]
        share = np.bincount(owner[top], minlength=n_tasks) / max(1, top_m)
        if self.aggregation == "per-ngram":
            score = per_ngram
        elif self.aggregation == "mean":
            score = mean
        else:  # share first, mean weight breaks ties
            finite = np.where(np.isfinite(mean), mean, 0.0)
            span = (np.abs(finite).max() or 1.0) * 2
            score = share + (finite / span + 0.5) / (top_m + 1)
        return {tid: (float(score[i]), {"mean_log_weight": round(float(mean[i]), 3),
                                        "log_weight_per_ngram": round(float(per_ngram[i]), 4),
                                        "topk_share": round(float(share[i]), 4), "n_instances": int(counts[i])})
                for i, tid in enumerate(pool.ids)}


# ---------------------------------------------------------------- registry

METHODS: dict[str, type[SelectionMethod]] = {
    "insta-mean": InstaMethod,
    "insta-topk-vote": InstaVoteMethod,
    "insta-aligned": InstaAlignedMethod,
    "all": AllMethod,
    "random": RandomMethod,
    "roe": RoEMethod,
    "lexical": LexicalMethod,
    "dsir": DSIRMethod,
}


def make_method(name: str, **options: Any) -> SelectionMethod:
    """A method by registry name with its options (a clear error for an unknown name or option)."""
    if name not in METHODS:
        import difflib

        close = difflib.get_close_matches(name, list(METHODS), n=2)
        hint = f" (did you mean {', '.join(close)}?)" if close else ""
        raise InstaError(f"unknown selection method {name!r}{hint}; known: {', '.join(METHODS)}")
    try:
        return METHODS[name](**options)
    except TypeError as err:
        raise InstaError(f"method {name!r}: bad options ({err})") from None


def allocate_budget(task_ids: Sequence[str], n_total: int, seed: int = 0) -> dict[str, int]:
    """How many training instances each selected task gets so that the mixture holds exactly ``n_total``.

    With at most ``n_total`` tasks: an equal share, the remainder one each to the best-ranked tasks. With more
    tasks than instances (``all`` over a large pool): ``n_total`` tasks drawn with the seed, one instance each.
    """
    ids = list(task_ids)
    if not ids:
        raise InstaError("no task to allocate the training budget to")
    if n_total < 1:
        raise InstaError(f"the training budget must be at least 1 instance (got {n_total})")
    if len(ids) <= n_total:
        base, rem = divmod(n_total, len(ids))
        return {t: base + (1 if i < rem else 0) for i, t in enumerate(ids)}
    chosen = set(_stable_rng("budget", seed).sample(sorted(ids), n_total))
    return {t: 1 for t in ids if t in chosen}


__all__ = [
    "CONSUMPTIONS", "METHODS", "MethodResult", "RankedTask", "SelectionMethod", "allocate_budget", "dsir_featurizer",
    "get_encoder", "instance_text", "make_method", "ngram_counts_builtin", "relatives", "source_library",
]

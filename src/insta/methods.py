"""Every task-selection method behind one interface: ``load_method(name, **options).select(target, pool, k)``.

Each method is a :class:`~insta.selection.SelectionMethod` and returns a :class:`~insta.selection.Selection`
(ranked tasks, scores, the "why" of each pick, tie groups, how k was chosen, what it consumed, its config).
The leakage guard, ranking, tie groups and k rules live in the base class (:mod:`insta.selection`).

| name | consumes | what it does |
| --- | --- | --- |
| ``insta-mean`` | instructions | INSTA: mean cosine over all (target instruction, source instruction) pairs |
| ``insta-max`` | instructions | INSTA with the best pair's cosine |
| ``insta-topk-vote`` | instructions | INSTA with the authors' top-k vote aggregation (rank-1 hits dominate) |
| ``insta-aligned`` | instructions | INSTA with an INSTA-aligned encoder (``insta align``), top-k vote by default |
| ``insta-format`` | instructions | format-aware INSTA: instructions embedded with their output space (``taskformat``) |
| ``hybrid`` | instructions, target_samples, source_instances | INSTA and RoE scores, z-scored, mixed by ``weight`` |
| ``lexical`` | instructions | BM25 (Okapi, ``rank-bm25``) of the target instructions against each task's instructions |
| ``roe`` | target_samples, source_instances | Retrieval of Experts (Jang et al. 2023): nearest-source-instance vote |
| ``dsir`` | target_samples, source_instances | DSIR (Xie et al. 2023) hashed n-gram importance weights, per task |
| ``random`` | seed | ``k`` pool tasks drawn uniformly with a seed; does not look at the target |
| ``all`` | nothing | every pool task (the multi-task baseline); ``k`` does not apply |

Options every method takes: ``label`` and ``k`` (its default k: a number or ``gap`` / ``elbow`` /
``threshold``). INSTA variants: ``encoder`` (a name, a directory or an encoder object), ``aggregation``
(``mean`` / ``max`` / ``topk-vote``), ``vote_depth``, ``n_target_instructions``, ``format_aware``.
"""
from __future__ import annotations

import re
from functools import lru_cache
from typing import Any, Callable, Sequence

import numpy as np

from .catalogs.base import Catalog
from .errors import InstaError
from .helpers import stable_int, stable_key, stable_rng
from .records import Example, Task
from .selection import (  # noqa: F401  (CONSUMPTIONS, Selection: re-exported, the interface's names live here too)
    AGGREGATIONS,
    CONSUMPTIONS,
    KRule,
    Scores,
    Selection,
    SelectionMethod,
    Selector,
    TaskScore,
    clean_instructions,
    leakage_guard,
    parse_k,
    unit_rows,
)

#: The result type of every method (the name of earlier versions).
MethodResult = Selection


def relatives(target: Task, pool: Catalog) -> list[str]:
    """Pool task ids that must never be selected for ``target``: itself, its family, its parent's family."""
    return leakage_guard(pool, target)


# ---------------------------------------------------------------- shared resources (encoders, libraries)

_ENCODERS: dict[str, Any] = {}


def get_encoder(name: Any):
    """A shared encoder per name: ``"hashing"`` (or ``"hashing-<dim>"``) is the dependency-free test encoder,
    anything else a sentence-transformers model through :class:`insta.encoder.Encoder`. An object with
    ``encode`` and ``describe`` is returned as it is."""
    if name is not None and not isinstance(name, str) and hasattr(name, "encode"):
        return name
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


def encoder_name(encoder: Any) -> str:
    """How an ``encoder`` option is named in parameters and cache keys."""
    from .encoder import DEFAULT_ENCODER

    if encoder is not None and not isinstance(encoder, str):
        return str(encoder.describe().get("name") or type(encoder).__name__)
    return encoder or DEFAULT_ENCODER


_LIBRARIES: dict[tuple, tuple[Catalog, dict[str, list[Example]]]] = {}


def source_library(pool: Catalog, size: int, seed: int = 0) -> dict[str, list[Example]]:
    """Up to ``size`` instances of every pool task: a seeded uniform sample (reservoir; stable per task id).

    Cached per process (RoE, DSIR and hybrid share it across targets).
    """
    key = (tuple(pool.ids), size, seed, id(pool))
    if key in _LIBRARIES:
        return _LIBRARIES[key][1]
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
    _LIBRARIES.clear()  # keep one library: pools are large
    _LIBRARIES[key] = (pool, out)  # the pool stays referenced, so its id() is not reused while cached
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


def _candidates(pool: Catalog, allowed: np.ndarray) -> Catalog:
    return Catalog(pool.name, [t for t, a in zip(pool, allowed) if a])


def _pool_key(pool: Catalog) -> tuple:
    """Cache key of a pool's index; every cache holding one also holds the pool, so its id() is not reused."""
    return (id(pool), tuple(pool.ids))


# ---------------------------------------------------------------- INSTA


class InstaMethod(SelectionMethod):
    """INSTA (:class:`insta.selection.Selector`): instruction-embedding similarity with ``aggregation``.

    ``format_aware=True`` embeds every instruction with its output space (:mod:`insta.taskformat`) on both
    sides; a target whose output space is unknown (free text without examples) is scored on plain instructions.
    """

    name = "insta-mean"
    consumes = ("instructions",)
    default_aggregation = "mean"
    default_format_aware = False
    shared_encoder = True

    def __init__(self, label: str | None = None, *, encoder: Any = None, aggregation: str | None = None,
                 vote_depth: int = 10, n_target_instructions: int | None = None, format_aware: bool | None = None,
                 **options: Any):
        super().__init__(label, **options)
        self.encoder_name = encoder
        self.aggregation = aggregation or self.default_aggregation
        if self.aggregation not in AGGREGATIONS:
            raise InstaError(f"method {self.name!r}: unknown aggregation {self.aggregation!r} "
                             f"(choose from {', '.join(AGGREGATIONS)})")
        if isinstance(vote_depth, bool) or not isinstance(vote_depth, int) or vote_depth < 1:
            raise InstaError(f"method {self.name!r}: vote_depth must be a positive integer (got {vote_depth!r})")
        if n_target_instructions is not None and (isinstance(n_target_instructions, bool)
                                                  or not isinstance(n_target_instructions, int)
                                                  or n_target_instructions < 1):
            raise InstaError(f"method {self.name!r}: n_target_instructions must be a positive integer")
        self.vote_depth = vote_depth
        self.n_target_instructions = n_target_instructions
        self.format_aware = self.default_format_aware if format_aware is None else bool(format_aware)
        self._selectors: dict[tuple, Selector] = {}

    def params(self) -> dict[str, Any]:
        out = {"encoder": self._encoder_identity(), "aggregation": self.aggregation}
        if self.aggregation == "topk-vote":
            out["vote_depth"] = self.vote_depth
        if self.n_target_instructions:
            out["n_target_instructions"] = self.n_target_instructions
        if self.format_aware:
            out["format_aware"] = True
        return out

    def _encoder_identity(self) -> str:
        return encoder_name(self.encoder_name)

    def use_selector(self, selector: Selector) -> None:
        """Score with an existing selector (its catalog's embeddings are reused)."""
        self._selectors = {(*_pool_key(selector.catalog), selector.texts_of is not None): selector}

    def _selector(self, pool: Catalog, formatted: bool) -> Selector:
        key = (*_pool_key(pool), formatted)
        if key not in self._selectors:
            from .taskformat import format_aware_texts

            self._selectors = {k: v for k, v in self._selectors.items() if k[:2] == key[:2]}
            self._selectors[key] = Selector(pool, get_encoder(self.encoder_name), self.aggregation, self.vote_depth,
                                            texts_of=format_aware_texts if formatted else None)
        return self._selectors[key]

    def target_texts(self, target: Task, samples: Sequence[Example] = ()) -> tuple[list[str], bool]:
        """The target's instructions (the first ``n_target_instructions``) as embedded, and whether they carry
        their output space (format-aware with a known target format)."""
        instructions = clean_instructions(target.instructions)
        if self.n_target_instructions:
            instructions = instructions[: self.n_target_instructions]
        if not self.format_aware:
            return instructions, False
        from .taskformat import output_spaces, with_output_space

        spaces = dict(zip((i.strip() for i in target.instructions), output_spaces(target)))
        if not any(spaces.get(i) for i in instructions) and samples and all(s.options for s in samples):
            probe = Task(id=target.id, instructions=instructions, catalog="", loader=lambda: iter(samples))
            spaces = dict(zip(instructions, output_spaces(probe)))
        if not any(spaces.get(i) for i in instructions):
            return instructions, False
        return [with_output_space(i, spaces.get(i)) for i in instructions], True

    def _score(self, target, pool, samples, allowed):
        texts, formatted = self.target_texts(target, samples)
        sc = self._selector(pool, formatted).score(texts, allowed)
        if self.format_aware:
            sc.info["format_aware"] = ("instructions with their output space" if formatted else
                                       "the target's output space is unknown: plain instructions")
        return sc


class InstaMaxMethod(InstaMethod):
    name = "insta-max"
    default_aggregation = "max"


class InstaVoteMethod(InstaMethod):
    name = "insta-topk-vote"
    default_aggregation = "topk-vote"


class InstaFormatMethod(InstaMethod):
    """Format-aware INSTA (mean aggregation by default): instructions embedded with their output space."""

    name = "insta-format"
    default_format_aware = True


class InstaAlignedMethod(InstaMethod):
    """INSTA with an aligned encoder; the authors pair it with top-k vote (METHOD.md §1)."""

    name = "insta-aligned"
    default_aggregation = "topk-vote"
    shared_encoder = False

    def __init__(self, label: str | None = None, *, encoder: Any = None, **options: Any):
        if not encoder:
            raise InstaError("method 'insta-aligned' needs an encoder: the directory written by `insta align`")
        super().__init__(label, encoder=encoder, **options)

    def _encoder_identity(self) -> str:
        from pathlib import Path

        from .encoder import model_fingerprint

        if not isinstance(self.encoder_name, str):
            return encoder_name(self.encoder_name)
        p = Path(self.encoder_name).expanduser()
        if not p.is_dir():
            raise InstaError(f"insta-aligned: encoder directory {self.encoder_name!r} does not exist "
                             "(train it with `insta align`)")
        return f"{p.name}-{model_fingerprint(str(p.resolve()))}"


# ---------------------------------------------------------------- baselines that do not read the target


class AllMethod(SelectionMethod):
    """Every pool task (the multi-task baseline): same training budget, spread over the whole pool."""

    name = "all"
    consumes = ("nothing",)
    depends_on_target = False
    uses_k = False

    def _score(self, target, pool, samples, allowed):
        return Scores(np.where(allowed, 1.0, -np.inf), why=lambda i: {"reason": "every pool task"})


class RandomMethod(SelectionMethod):
    """``k`` tasks drawn uniformly from the (sorted) candidates with a seed; the target is never looked at."""

    name = "random"
    consumes = ("seed",)
    depends_on_target = False

    def __init__(self, label: str | None = None, *, seed: int = 0, **options: Any):
        super().__init__(label or f"random-s{seed}", **options)
        self.seed = int(seed)

    def params(self) -> dict[str, Any]:
        return {"seed": self.seed}

    def _score(self, target, pool, samples, allowed):
        ids = sorted(t for t, a in zip(pool.ids, allowed) if a)
        order = stable_rng("random-method", self.seed).sample(ids, len(ids))
        pos = {t: len(ids) - i for i, t in enumerate(order)}
        score = np.asarray([float(pos.get(t, -np.inf)) for t in pool.ids])
        return Scores(score, why=lambda i: {"reason": f"seeded draw (seed {self.seed})"})


# ---------------------------------------------------------------- instance-level methods


class InstanceIndex:
    """The embedded source library (RoE's ``"Answer Choices: ..., Instance: ..."`` texts) of a pool, and exact
    nearest-neighbour retrieval for unlabelled target instances, in column chunks of bounded memory."""

    def __init__(self, encoder: Any = None, library_size: int = 100, library_seed: int = 0, chunk: int = 65536):
        self.encoder_name = encoder
        self.library_size = int(library_size)
        self.library_seed = int(library_seed)
        self.chunk = chunk
        if self.library_size < 1:
            raise InstaError("library_size must be at least 1")
        self._cache: dict[tuple, tuple[np.ndarray, np.ndarray, Catalog]] = {}

    def library(self, pool: Catalog) -> tuple[np.ndarray, np.ndarray]:
        """(owner pool index per library instance, unit embeddings), built once per pool."""
        key = _pool_key(pool)
        if key not in self._cache:
            texts, owner = library_texts(pool, self.library_size, self.library_seed, instance_text)
            if not texts:
                raise InstaError("no pool task has instances")
            emb = unit_rows(get_encoder(self.encoder_name).encode(texts))
            self._cache = {key: (np.asarray(owner, dtype=np.int64), emb, pool)}
        return self._cache[key][:2]

    def query(self, pool: Catalog, samples: Sequence[Example], allowed: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Per pool task: how many target instances retrieve one of its instances as their nearest neighbour
        (among the allowed tasks), and the mean over target instances of its best cosine (-1 without instances)."""
        owner, emb = self.library(pool)
        q = unit_rows(get_encoder(self.encoder_name).encode([instance_text(s) for s in samples]))
        n_tasks = len(pool)
        col_ok = np.asarray(allowed, dtype=bool)[owner]
        best_val = np.full(len(q), -np.inf)
        best_col = np.zeros(len(q), dtype=np.int64)
        per_task = np.full((len(q), n_tasks), -np.inf)
        rows = np.arange(len(q))
        for start in range(0, len(owner), self.chunk):
            end = min(start + self.chunk, len(owner))
            block = (q @ emb[start:end].T).astype(np.float64)
            block[:, ~col_ok[start:end]] = -np.inf
            j = np.argmax(block, axis=1)
            v = block[rows, j]
            better = v > best_val
            best_val[better], best_col[better] = v[better], start + j[better]
            present, starts = np.unique(owner[start:end], return_index=True)
            per_task[:, present] = np.maximum(per_task[:, present], np.maximum.reduceat(block, starts, axis=1))
        hit = np.isfinite(best_val)
        votes = np.bincount(owner[best_col[hit]], minlength=n_tasks).astype(float)
        mean_best = np.where(np.isfinite(per_task), per_task, -1.0).mean(axis=0)
        return votes, mean_best


class RoEMethod(SelectionMethod):
    """Retrieval of Experts (Jang et al. 2023, METHOD.md §6).

    A library of ``library_size`` instances per source task is embedded as ``"Answer Choices: ..., Instance:
    ..."`` with the default encoder (all-MiniLM-L6-v2); each unlabelled target instance retrieves its nearest
    library instance (exact search, :class:`InstanceIndex`), whose task gets one vote. Score = vote share; the
    secondary signal (ties, tasks without votes) is the mean over target instances of the task's best cosine.
    """

    name = "roe"
    consumes = ("target_samples", "source_instances")
    shared_encoder = True

    def __init__(self, label: str | None = None, *, encoder: Any = None, library_size: int = 100,
                 library_seed: int = 0, **options: Any):
        super().__init__(label, **options)
        if int(library_size) < 1:
            raise InstaError("roe: library_size must be at least 1")
        self.encoder_name = encoder
        self.index = InstanceIndex(encoder, library_size, library_seed)

    def params(self) -> dict[str, Any]:
        return {"encoder": encoder_name(self.encoder_name), "library_size": self.index.library_size,
                "library_seed": self.index.library_seed, "text": "Answer Choices: ..., Instance: ..."}

    def _score(self, target, pool, samples, allowed):
        try:
            votes, mean_best = self.index.query(pool, samples, allowed)
        except InstaError as err:
            raise InstaError(f"roe: {err}") from None
        share = votes / len(samples)
        return Scores(share, mean_best, "mean best cosine",
                      lambda i: {"votes": int(votes[i]), "vote_share": round(float(share[i]), 4),
                                 "mean_best_cosine": round(float(mean_best[i]), 4)},
                      {"n_library_instances": len(self.index.library(pool)[0])})


def _zscores(x: np.ndarray, allowed: np.ndarray) -> np.ndarray:
    """``x`` standardised over the allowed entries (non-finite values count as the lowest finite one)."""
    x = np.asarray(x, dtype=np.float64)
    vals = x[allowed]
    finite = vals[np.isfinite(vals)]
    low = finite.min() if len(finite) else 0.0
    x = np.where(np.isfinite(x), x, low)
    vals = x[allowed]
    sd = float(vals.std())
    return (x - float(vals.mean())) / sd if sd > 0 else np.zeros_like(x)


class HybridMethod(SelectionMethod):
    """Instruction similarity and unlabelled target inputs in one score (an option beyond the paper).

    ``score = (1 - weight) * z(INSTA score) + weight * z(instance score)``: the INSTA score with the given
    encoder / aggregation / format option, and RoE's continuous signal (the mean over target instances of the
    best cosine to a task's library instances), each standardised over the candidate tasks so that the
    ``weight`` (default 0.5: equal say) means the same for every pool. ``weight=0`` is INSTA, ``weight=1``
    ranks by instances alone. Ties: the instruction score.
    """

    name = "hybrid"
    consumes = ("instructions", "target_samples", "source_instances")
    shared_encoder = True

    def __init__(self, label: str | None = None, *, encoder: Any = None, aggregation: str = "mean",
                 vote_depth: int = 10, weight: float = 0.5, library_size: int = 100, library_seed: int = 0,
                 format_aware: bool = False, n_target_instructions: int | None = None, **options: Any):
        super().__init__(label, **options)
        if isinstance(weight, bool) or not isinstance(weight, (int, float)) or not 0.0 <= weight <= 1.0:
            raise InstaError(f"hybrid: weight must be a number between 0 and 1 (got {weight!r})")
        self.weight = float(weight)
        self.insta = InstaMethod(encoder=encoder, aggregation=aggregation, vote_depth=vote_depth,
                                 format_aware=format_aware, n_target_instructions=n_target_instructions)
        self.index = InstanceIndex(encoder, library_size, library_seed)

    def params(self) -> dict[str, Any]:
        return {**self.insta.params(), "weight": self.weight, "library_size": self.index.library_size,
                "library_seed": self.index.library_seed, "combine": "z-scores over the candidate tasks",
                "instance_signal": "mean best cosine of the target instances to the task's library"}

    def _score(self, target, pool, samples, allowed):
        ins = self.insta._score(target, pool, samples, allowed)
        _, inst = self.index.query(pool, samples, allowed)
        zi, zs = _zscores(ins.score, allowed), _zscores(inst, allowed)
        combined = np.where(allowed, (1 - self.weight) * zi + self.weight * zs, -np.inf)

        def why(i: int) -> dict[str, Any]:
            return {**(ins.why(i) if ins.why else {}), "instruction_score": float(ins.score[i]),
                    "instance_score": round(float(inst[i]), 4), "z_instruction": round(float(zi[i]), 3),
                    "z_instance": round(float(zs[i]), 3)}

        return Scores(combined, np.asarray(ins.score, dtype=np.float64), "instruction score", why,
                      {**ins.info, "weight": self.weight})


# ---------------------------------------------------------------- lexical

_WORD = re.compile(r"[a-z0-9]+")


def _bm25_tokens(text: str) -> list[str]:
    return _WORD.findall(text.lower())


class LexicalMethod(SelectionMethod):
    """A lexical instruction baseline: BM25 Okapi (``rank-bm25``; k1 = 1.5, b = 0.75) with each candidate task's
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
        key = tuple((t.id, tuple(t.instructions)) for t in pool)
        if key not in self._cache:
            try:
                from rank_bm25 import BM25Okapi
            except ImportError as err:
                raise InstaError("the lexical baseline needs rank-bm25: pip install 'insta[experiment]'") from err
            docs = [_bm25_tokens(" ".join(t.instructions)) or ["<empty>"] for t in pool]
            self._cache = {key: (BM25Okapi(docs, k1=self.k1, b=self.b), [set(d) for d in docs])}
        return self._cache[key]

    def _score(self, target, pool, samples, allowed):
        cand = _candidates(pool, allowed)  # the statistics (idf, lengths) are the candidates' only
        bm25, docs = self._index(cand)
        query = _bm25_tokens(" ".join(target.instructions))
        cand_scores = bm25.get_scores(query) if query else np.zeros(len(cand))
        score = np.full(len(pool), -np.inf)
        where = np.flatnonzero(allowed)
        score[where] = cand_scores
        qset = set(query)

        def why(i: int) -> dict[str, Any]:
            shared = qset & docs[int(np.searchsorted(where, i))]
            terms = sorted(shared, key=lambda w: (-bm25.idf.get(w, 0.0), w))[:8]
            return {"bm25": round(float(score[i]), 4), "shared_words": terms}

        return Scores(score, why=why)


# ---------------------------------------------------------------- DSIR

_WORDPUNCT = r"\w+|[^\w\s]+"  # nltk's WordPunctTokenizer pattern


def wordpunct_fallback() -> Callable[[str], list[str]]:
    """nltk's WordPunctTokenizer without nltk: its pattern and flags, in the ``regex`` engine that nltk compiles
    it with (Python's ``re`` splits words at combining marks, e.g. in Devanagari), ``re`` if ``regex`` is absent."""
    try:
        import regex

        return regex.compile(_WORDPUNCT, regex.UNICODE | regex.MULTILINE | regex.DOTALL).findall
    except ImportError:  # pragma: no cover - regex comes with nltk
        return re.compile(_WORDPUNCT).findall


@lru_cache(maxsize=1)
def _wordpunct() -> tuple[Callable[[str], list[str]], str]:
    """The tokenizer of DSIR's featurizer: the ``data-selection`` package's own when installed (so the features
    are the package's exactly), else :func:`wordpunct_fallback`."""
    try:
        from data_selection.hashed_ngram_dsir import wpt
    except ImportError:
        return wordpunct_fallback(), "builtin"
    return wpt.tokenize, "data-selection"


@lru_cache(maxsize=1 << 20)
def _hash_bucket(text: str, num_buckets: int) -> int:
    return stable_int(text, digits=64) % num_buckets


def ngram_buckets(text: str, n: int = 2, num_buckets: int = 10000) -> list[int]:
    """The hashed n-gram bucket of every n-gram occurrence of ``text``, as ``data_selection`` computes them
    (lowercase, WordPunct tokens, unigrams .. n-grams joined by a space, SHA-256 mod ``num_buckets``)."""
    words = _wordpunct()[0](text.lower())
    out = [_hash_bucket(w, num_buckets) for w in words]
    for m in range(2, n + 1):
        out += [_hash_bucket(" ".join(words[i:i + m]), num_buckets) for i in range(len(words) - m + 1)]
    return out


def ngram_counts_builtin(text: str, n: int = 2, num_buckets: int = 10000) -> np.ndarray:
    """Hashed n-gram counts exactly as ``data_selection.hashed_ngram_dsir.get_ngram_counts`` computes them."""
    return np.bincount(np.asarray(ngram_buckets(text, n, num_buckets), dtype=np.int64),
                       minlength=num_buckets).astype(np.int64)


def ngram_features(texts: Sequence[str], n: int = 2, num_buckets: int = 10000):
    """Hashed n-gram counts of ``texts`` as a sparse ``scipy.sparse.csr_matrix`` (texts x buckets, float64):
    :func:`ngram_counts_builtin` row by row, without the dense texts x buckets matrix."""
    from array import array

    try:
        from scipy import sparse
    except ImportError as err:  # pragma: no cover - scipy comes with the experiment extra
        raise InstaError("DSIR needs scipy: pip install 'insta[experiment]'") from err
    indices = array("i")
    indptr = np.zeros(len(texts) + 1, dtype=np.int64)
    for r, t in enumerate(texts):
        indices.extend(ngram_buckets(t, n, num_buckets))
        indptr[r + 1] = len(indices)
    idx = np.frombuffer(indices, dtype=np.int32) if len(indices) else np.zeros(0, dtype=np.int32)
    mat = sparse.csr_matrix((np.ones(len(idx)), idx, indptr), shape=(len(texts), num_buckets))
    mat.sum_duplicates()
    return mat


def dsir_featurizer() -> tuple[Callable[[str, int, int], np.ndarray], str]:
    """The hashed n-gram featurizer as ``(function(text, n, num_buckets) -> dense counts, source)``: insta's copy
    of ``data_selection.hashed_ngram_dsir.get_ngram_counts``, with the package's tokenizer when it is installed
    (``source`` = ``"data-selection"``), else nltk's pattern without nltk (``"builtin"``)."""
    return ngram_counts_builtin, _wordpunct()[1]


class DSIRMethod(SelectionMethod):
    """DSIR (Xie et al. 2023, "Data Selection for Language Models via Importance Resampling") lifted to tasks.

    Features: hashed unigrams + bigrams (``num_buckets`` buckets; the ``data-selection`` package's featurizer,
    computed sparse by :func:`ngram_features` with the package's tokenizer when installed: identical counts).
    A bag-of-n-grams model is fitted on the unlabelled target instances (p_target) and on the candidates' library
    (p_raw, ``library_size`` instances per candidate task); an instance's log importance weight is
    ``sum_j count_j(x) * (log p_target_j - log p_raw_j)`` (1e-8 smoothing, as in the package). A task's score:

    * ``per-ngram`` (default): the summed weight of its library instances divided by their n-gram count, i.e. the
      log-likelihood ratio of the task's text per n-gram. Raw DSIR weights grow in magnitude with length (every
      n-gram unseen in the target adds about -9), so a plain mean ranks the tasks with the shortest instances
      first for every target; DSIR itself guards against that with a minimum length (100 words) when it
      resamples, which would drop most BIG-bench instances.
    * ``mean``: the mean raw weight of its instances (length-biased, see above).
    * ``topk-share``: the share of its instances among the top ``k * library_size`` candidate instances by raw
      weight (DSIR's deterministic top-k resampling, counted per task); ties by the mean raw weight.
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
        _, self.featurizer_source = dsir_featurizer()
        self._cache: dict[tuple, tuple] = {}
        self._k = 5

    def params(self) -> dict[str, Any]:
        return {"num_buckets": self.num_buckets, "ngrams": self.ngrams, "library_size": self.library_size,
                "library_seed": self.library_seed, "aggregation": self.aggregation,
                "featurizer": self.featurizer_source, "text": "instance input (with its answer options)"}

    def _library(self, pool: Catalog):
        key = _pool_key(pool)
        if key not in self._cache:
            texts, owner = library_texts(pool, self.library_size, self.library_seed, lambda ex: ex.input[:4000])
            if not texts:
                raise InstaError("dsir: no pool task has instances")
            feats = ngram_features(texts, self.ngrams, self.num_buckets)
            self._cache = {key: (np.asarray(owner, dtype=np.int64), feats, np.asarray(feats.sum(axis=1)).ravel(),
                                 pool)}
        return self._cache[key][:3]

    def select(self, target, pool, k=None, **kw):
        kk = parse_k(k, self.default_k or 5)
        self._k = kk if isinstance(kk, int) else 5
        return super().select(target, pool, k, **kw)

    def _score(self, target, pool, samples, allowed):
        owner, feats, lengths = self._library(pool)
        rows_ok = np.asarray(allowed, dtype=bool)[owner]
        if not rows_ok.any():
            raise InstaError("dsir: no candidate task has instances")
        texts = [s.input[:4000] if isinstance(s, Example) else str(s) for s in samples]
        tfeat = np.asarray(ngram_features(texts, self.ngrams, self.num_buckets).sum(axis=0)).ravel()
        if tfeat.sum() == 0:
            raise InstaError(f"dsir: the target samples of {target.id!r} hold no n-gram")
        raw = np.asarray(feats.T @ rows_ok.astype(np.float64)).ravel()  # the candidates' library only
        target_probs, raw_probs = tfeat / tfeat.sum(), raw / raw.sum()
        log_diff = np.log(target_probs + 1e-8) - np.log(raw_probs + 1e-8)
        weights = np.asarray(feats @ log_diff).ravel()
        n_tasks = len(pool)
        w_ok = np.where(rows_ok, weights, 0.0)
        sums = np.bincount(owner, weights=w_ok, minlength=n_tasks)
        counts = np.bincount(owner, weights=rows_ok.astype(float), minlength=n_tasks)
        mean = np.where(counts > 0, sums / np.maximum(counts, 1), -np.inf)
        ngrams = np.bincount(owner, weights=np.where(rows_ok, lengths, 0.0), minlength=n_tasks)
        per_ngram = np.where(ngrams > 0, sums / np.maximum(ngrams, 1), -np.inf)
        ok_rows = np.flatnonzero(rows_ok)
        top_m = min(len(ok_rows), self._k * self.library_size)
        top = ok_rows[np.argsort(-weights[ok_rows], kind="stable")[:top_m]]
        share = np.bincount(owner[top], minlength=n_tasks) / max(1, top_m)
        secondary, name = None, None
        if self.aggregation == "per-ngram":
            score = per_ngram
        elif self.aggregation == "mean":
            score = mean
        else:
            score, secondary, name = share, mean, "mean log weight"

        def why(i: int) -> dict[str, Any]:
            return {"mean_log_weight": round(float(mean[i]), 3), "log_weight_per_ngram": round(float(per_ngram[i]), 4),
                    "topk_share": round(float(share[i]), 4), "n_instances": int(counts[i])}

        return Scores(score, secondary, name, why, {"n_library_instances": int(rows_ok.sum())})


# ---------------------------------------------------------------- registry

METHODS: dict[str, type[SelectionMethod]] = {
    "insta-mean": InstaMethod,
    "insta-max": InstaMaxMethod,
    "insta-topk-vote": InstaVoteMethod,
    "insta-aligned": InstaAlignedMethod,
    "insta-format": InstaFormatMethod,
    "hybrid": HybridMethod,
    "all": AllMethod,
    "random": RandomMethod,
    "roe": RoEMethod,
    "lexical": LexicalMethod,
    "dsir": DSIRMethod,
}
#: Methods whose ``encoder`` option defaults to a configuration's shared encoder.
SHARED_ENCODER_METHODS = tuple(n for n, cls in METHODS.items() if cls.shared_encoder)


def load_method(name: str, **options: Any) -> SelectionMethod:
    """A selection method by registry name with its options (a clear error for an unknown name or option)."""
    if name not in METHODS:
        import difflib

        close = difflib.get_close_matches(name, list(METHODS), n=2)
        hint = f" (did you mean {', '.join(close)}?)" if close else ""
        raise InstaError(f"unknown selection method {name!r}{hint}; known: {', '.join(METHODS)}")
    try:
        return METHODS[name](**options)
    except TypeError as err:
        raise InstaError(f"method {name!r}: bad options ({err})") from None


#: The name of earlier versions.
make_method = load_method


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
    chosen = set(stable_rng("budget", seed).sample(sorted(ids), n_total))
    return {t: 1 for t in ids if t in chosen}


__all__ = [
    "CONSUMPTIONS", "METHODS", "MethodResult", "SHARED_ENCODER_METHODS", "Selection", "SelectionMethod",
    "TaskScore", "allocate_budget", "dsir_featurizer", "get_encoder", "instance_text", "load_method", "make_method",
    "ngram_counts_builtin", "ngram_features", "read_target_examples", "relatives", "source_library",
    "unlabelled_samples",
]

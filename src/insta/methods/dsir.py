"""DSIR (Xie et al. 2023) lifted to tasks: hashed n-gram importance weights of each task's instances."""
from __future__ import annotations

from functools import lru_cache
from typing import Any, Callable, Sequence

import numpy as np

from ..catalogs.base import Catalog
from ..errors import InstaError
from ..util.helpers import stable_int
from ..records import Example
from ..selection import Scores, SelectionMethod, parse_k
from .resources import PoolCache, library_texts

_WORDPUNCT = r"\w+|[^\w\s]+"  # nltk's WordPunctTokenizer pattern
#: The feature definition, in parameters and cache keys: the hashed n-grams of the ``data-selection`` package
#: (``hashed_ngram_dsir.get_ngram_counts``), which :func:`ngram_buckets` reproduces without that package.
FEATURIZER = "data-selection"


@lru_cache(maxsize=1)
def wordpunct_tokenizer() -> Callable[[str], list[str]]:
    """nltk's WordPunctTokenizer (the tokenizer of ``data-selection``'s featurizer) without nltk: its pattern and
    flags, in the ``regex`` engine that nltk compiles it with (Python's ``re`` splits words at combining marks,
    e.g. in Devanagari, and emoji sequences differently)."""
    try:
        import regex
    except ImportError as err:  # pragma: no cover - regex comes with the experiment extra
        raise InstaError("DSIR needs the regex package: pip install 'insta[experiment]'") from err
    return regex.compile(_WORDPUNCT, regex.UNICODE | regex.MULTILINE | regex.DOTALL).findall


#: The name of earlier versions.
wordpunct_fallback = wordpunct_tokenizer


@lru_cache(maxsize=1 << 20)
def _hash_bucket(text: str, num_buckets: int) -> int:
    return stable_int(text, digits=64) % num_buckets


def ngram_buckets(text: str, n: int = 2, num_buckets: int = 10000) -> list[int]:
    """The hashed n-gram bucket of every n-gram occurrence of ``text``, as ``data_selection`` computes them
    (lowercase, WordPunct tokens, unigrams .. n-grams joined by a space, SHA-256 mod ``num_buckets``)."""
    words = wordpunct_tokenizer()(text.lower())
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
    """The hashed n-gram featurizer as ``(function(text, n, num_buckets) -> dense counts, name)``."""
    return ngram_counts_builtin, FEATURIZER


class DSIRMethod(SelectionMethod):
    """DSIR (Xie et al. 2023, "Data Selection for Language Models via Importance Resampling") lifted to tasks.

    Features: hashed unigrams + bigrams (``num_buckets`` buckets): the ``data-selection`` package's featurizer,
    reproduced without the package and computed sparse by :func:`ngram_features` (identical counts).
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

    @classmethod
    def why_lines(cls, why: dict[str, Any], n_samples: int | None = None) -> list[str]:
        lines = ([f"log importance weight per n-gram {why['log_weight_per_ngram']:.4f} (mean per instance "
                  f"{why['mean_log_weight']:.2f}, {why['n_instances']} instances)"]
                 if "log_weight_per_ngram" in why else [])
        return lines + super().why_lines(why, n_samples)

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
        self._cache: PoolCache[tuple[np.ndarray, Any, np.ndarray]] = PoolCache()
        self._k = 5

    def params(self) -> dict[str, Any]:
        return {"num_buckets": self.num_buckets, "ngrams": self.ngrams, "library_size": self.library_size,
                "library_seed": self.library_seed, "aggregation": self.aggregation,
                "featurizer": self.featurizer_source, "text": "instance input (with its answer options)"}

    def _library(self, pool: Catalog):
        def build() -> tuple[np.ndarray, Any, np.ndarray]:
            texts, owner = library_texts(pool, self.library_size, self.library_seed, lambda ex: ex.input[:4000])
            if not texts:
                raise InstaError("dsir: no pool task has instances")
            feats = ngram_features(texts, self.ngrams, self.num_buckets)
            return np.asarray(owner, dtype=np.int64), feats, np.asarray(feats.sum(axis=1)).ravel()

        return self._cache.get(pool, build)

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

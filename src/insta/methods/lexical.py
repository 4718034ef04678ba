"""A lexical instruction baseline: BM25 Okapi (``rank-bm25``) of the target's instructions against each task's."""
from __future__ import annotations

import re
from typing import Any

import numpy as np

from ..catalogs.base import Catalog
from ..errors import InstaError
from ..selection import Scores, SelectionMethod
from .resources import candidates

_WORD = re.compile(r"[a-z0-9]+")


def _bm25_tokens(text: str) -> list[str]:
    return _WORD.findall(text.lower())


class LexicalMethod(SelectionMethod):
    """A lexical instruction baseline: BM25 Okapi (``rank-bm25``; k1 = 1.5, b = 0.75) with each candidate task's
    instructions as one document and the target's instructions as the query (lowercased word tokens)."""

    name = "lexical"
    consumes = ("instructions",)

    @classmethod
    def why_lines(cls, why: dict[str, Any], n_samples: int | None = None) -> list[str]:
        lines = ([f"BM25 {why['bm25']:.2f}; shared words: {', '.join(why['shared_words']) or 'none'}"]
                 if "bm25" in why else [])
        return lines + super().why_lines(why, n_samples)

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
        cand = candidates(pool, allowed)  # the statistics (idf, lengths) are the candidates' only
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

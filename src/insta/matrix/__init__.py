"""A measured source-to-target transfer matrix, the data below selection: what each cell keeps per example and
the metrics read from it (:mod:`.cells`), the matrix in long format with its reliability (:mod:`.matrix`), how
a method's ranking scores against it (:mod:`.topk_metrics`: NDCG, Regret@k, ...; :mod:`.scoring`) and the prior a
selection method fits from an earlier matrix (:mod:`.prior`). :mod:`insta.transfer` measures a matrix;
``prior-transfer`` (:mod:`insta.methods`) reads one; both stand on this package, which imports neither."""
from __future__ import annotations

from .cells import METRICS, PRIMARY
from .matrix import TransferMatrix, read_matrix, reliability
from .scoring import score_rankings
from .topk_metrics import ndcg, regret_at_k

__all__ = ["METRICS", "PRIMARY", "TransferMatrix", "ndcg", "read_matrix", "regret_at_k", "reliability",
           "score_rankings"]

"""Every task-selection method behind one interface: ``load_method(name, **options).select(target, pool, k)``,
and :func:`select`, one-call INSTA, on top of them.

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
| ``prior-transfer`` | instructions, prior_matrix | transfer measured before: popular sources, pivot targets, INSTA |
| ``popular-source`` | prior_matrix | sources by their mean percentile in a prior transfer matrix; target unread |
| ``random`` | seed | ``k`` pool tasks drawn uniformly with a seed; does not look at the target |
| ``all`` | nothing | every pool task (the multi-task baseline); ``k`` does not apply |

Options every method takes: ``label`` and ``k`` (its default k: a number or ``gap`` / ``elbow`` /
``threshold``). INSTA variants: ``encoder`` (a name, a directory or an encoder object, a ``SentenceTransformer``),
``aggregation`` (``mean`` / ``max`` / ``topk-vote``), ``vote_depth``, ``n_target_instructions``, ``format_aware``.

One module per method family: :mod:`.insta`, :mod:`.lexical`, :mod:`.roe`, :mod:`.hybrid`, :mod:`.dsir`,
:mod:`.baselines`; what they share (encoders, the source library, a per-pool cache) in :mod:`.resources`.
"""
from __future__ import annotations

from typing import Any, Iterable, Sequence

from ..catalogs.base import Catalog
from ..errors import InstaError
from ..records import Task
from ..selection import CONSUMPTIONS, KRule, Selection, SelectionMethod, TaskScore, TextEncoder
from .baselines import AllMethod, RandomMethod
from .dsir import DSIRMethod, dsir_featurizer, ngram_buckets, ngram_counts_builtin, ngram_features, wordpunct_fallback
from .hybrid import HybridMethod
from .insta import InstaAlignedMethod, InstaFormatMethod, InstaMaxMethod, InstaMethod, InstaVoteMethod, Selector
from .lexical import LexicalMethod
from .prior_transfer import PopularSourceMethod, PriorTransferMethod
from .resources import (
    encoder_name,
    get_encoder,
    instance_text,
    library_texts,
    read_target_examples,
    relatives,
    source_library,
    unlabelled_samples,
)
from .roe import InstanceIndex, RoEMethod

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
    "prior-transfer": PriorTransferMethod,
    "popular-source": PopularSourceMethod,
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
    except (TypeError, ValueError) as err:  # an unknown option, or a value of the wrong kind (seed: x)
        raise InstaError(f"method {name!r}: bad options ({err})") from None


def select(
    catalog: Catalog,
    target: Sequence[str] | str | Task,
    k: int | str | KRule = 5,
    *,
    encoder: TextEncoder | str | None = None,
    aggregation: str = "mean",
    exclude: Iterable[str] = (),
    exclude_families: Iterable[str] = (),
) -> Selection:
    """One-call INSTA: the top ``k`` tasks of ``catalog`` for a target task (its relatives excluded) or text(s)."""
    method = load_method("insta-mean", encoder=encoder, aggregation=aggregation)
    return method.select(target, catalog, k, exclude=exclude, exclude_families=exclude_families)


__all__ = [
    "AllMethod", "CONSUMPTIONS", "DSIRMethod", "HybridMethod", "InstaAlignedMethod", "InstaFormatMethod",
    "InstaMaxMethod", "InstaMethod", "InstaVoteMethod", "InstanceIndex", "LexicalMethod", "METHODS",
    "PopularSourceMethod", "PriorTransferMethod", "RandomMethod", "RoEMethod", "SHARED_ENCODER_METHODS", "Selection",
    "SelectionMethod", "TaskScore",
    "dsir_featurizer", "encoder_name", "get_encoder", "instance_text", "library_texts",
    "load_method", "ngram_buckets", "ngram_counts_builtin", "ngram_features", "read_target_examples",
    "relatives", "select", "Selector", "source_library", "unlabelled_samples", "wordpunct_fallback",
]

"""Task selection, the bottom floor: the interface every method implements, ranking, ties, k rules and the result
type. The methods (INSTA included) are registered above it in :mod:`insta.methods`, with :func:`insta.methods.select`
on top; the evaluators of selection (identification, scoring against a transfer matrix) stand on the methods.

**The interface.** Every selection method (INSTA and its variants, lexical BM25, RoE, DSIR, random, all: see
:mod:`insta.methods`, ``load_method(name, **options)``) is a :class:`SelectionMethod`:
``method.select(target, pool, k)`` returns a :class:`Selection` (ranked :class:`TaskScore` s with the "why" of
each pick, tie groups, how k was chosen, what the method consumed, its configuration; ``to_dict``/``from_dict``).
The base class applies the leakage guard *before* any scoring (the target, its family, its BIG-bench parent and
anything excluded never reach the method: they cast no top-k vote, enter no BM25 statistics, are retrieved by
no target instance), ranks, marks ties and chooses k.

**Ranking and ties.** Tasks are ranked by the method's score, then by its secondary signal (INSTA: mean cosine
under ``max``/``topk-vote``, best-pair cosine under ``mean``; RoE: mean best cosine; hybrid: the instruction
part). Tasks equal on both (within :data:`TIE_TOLERANCE`) are an exact **tie group**: the method cannot tell
them apart (P3 datasets that share every template, e.g. anli / cb / mnli / snli). Within a group the task with
more distinct instructions comes first (more templates to render its training instances with: T0 found more
prompts per dataset to help zero-shot generalisation), then the one with more examples where the catalog
records a count, then the task id. Tie groups are marked in the table and in the JSON; ``ties="include"``
selects the whole group when the cut at k would split it.

**k.** A fixed ``k`` (default 5), or a rule that reads it off the scores (:class:`KRule`): ``gap`` (the largest
drop between consecutive scores), ``elbow`` (the knee of the sorted score curve) or ``threshold`` (scores at
least ``z`` standard deviations above the candidates' mean), within ``[k_min, k_max]``; the Selection reports
the chosen k and why.

**INSTA** (:class:`insta.methods.Selector`): cosine similarity over every (target instruction, source instruction) pair,
aggregated per source task by :func:`aggregate` (``mean``, ``max`` or ``topk-vote``, METHOD.md §1); the same
function scores leave-one-out identification (:mod:`insta.evaluators.identification`).
"""
from __future__ import annotations

from .aggregation import AGGREGATIONS, TIE_TOLERANCE, TextEncoder, aggregate, scores_close, topk_vote_weights, unit_rows
from .method import SelectionMethod, ranking_scores
from .ranking import K_RULES, TIE_MODES, KRule, Scores, choose_k, parse_k, rank_candidates
from .result import CONSUMPTIONS, Selection, TaskScore
from .target import (
    FREE_TEXT_TARGET,
    as_target,
    clean_instructions,
    leakage_guard,
    target_from_task,
    with_instructions,
)

__all__ = [
    "AGGREGATIONS", "CONSUMPTIONS", "FREE_TEXT_TARGET", "KRule", "K_RULES", "Scores", "Selection", "SelectionMethod",
    "TIE_MODES", "TIE_TOLERANCE", "TaskScore", "TextEncoder", "aggregate", "as_target", "choose_k",
    "clean_instructions", "leakage_guard", "parse_k", "rank_candidates", "ranking_scores", "scores_close",
    "target_from_task", "topk_vote_weights", "unit_rows", "with_instructions",
]

"""Evaluation metrics: exact match, ROUGE-L, accuracy, balanced accuracy, macro-F1, the gold answer's log-probability.

Each metric has one implementation here, used by evaluation, the experiment, the transfer matrix and the report.
Balanced accuracy is vectorised over resamples (:func:`balanced_accuracy_of`: one value per row of bootstrap or
jackknife indices), so the report's paired bootstrap (:mod:`insta.report.stats`) scores resamples with the same
code that scores the full sample. ROUGE-L uses ``rouge-score`` (imported on first use).

Rank-classification metric names follow lm-evaluation-harness (:data:`RANK_RULES`, :func:`rank_metric`): each
option is scored by the summed log-likelihood of its tokens given the prompt, and a *rule* picks the prediction:

========================  ==============================================================  =======================
insta metric              prediction                                                      lm-evaluation-harness
========================  ==============================================================  =======================
``acc``                   argmax of the summed log-likelihood (T0 / INSTA's protocol)     ``acc``
``acc_norm``              argmax of log-likelihood / the option's length in characters   ``acc_norm``
``acc_norm_token``        argmax of log-likelihood / the option's number of tokens        (none)
``acc_calibrated``        argmax of log-likelihood minus the option's log-likelihood      ``acc_mutual_info`` when
                          after a content-free prompt                                     calibration is
                                                                                          ``unconditional``
========================  ==============================================================  =======================

lm-eval's ``acc_mutual_info`` subtracts each option's log-likelihood with an *empty* context (the BOS/EOS token
followed by the option and its leading delimiter); insta's ``unconditional`` calibration computes exactly that.
Its other calibrations (``auto``: the example's prompt with its input replaced by "N/A"; ``fixed``: the prompt
``"Q: N/A\nA: "``) follow Zhao et al. (2021) and have no lm-eval counterpart. Balanced accuracy and macro-F1 of
each rule are ``bal_<acc name>`` and ``macro_f1`` + the rule's suffix (``bal_acc``, ``bal_acc_norm``,
``macro_f1``, ``macro_f1_norm_token``, ...). Results written before this naming called ``acc`` ``acc_sum`` and
the per-token rule ``acc_norm``: :data:`LEGACY_RANK_METRICS` maps those names, for reading them.

Normalisation for exact match (:func:`normalize_answer`): lowercase, drop punctuation, collapse whitespace and
strip it. Articles are kept (SQuAD drops them; BBH targets such as "(A)" or "True" do not need it).
"""
from __future__ import annotations

import math
import re
import string
import unicodedata
from collections import Counter
from typing import Any, Hashable, Sequence

import numpy as np

from .errors import InstaError

#: rank-classification rules: the suffix each adds to a metric name (``acc`` + suffix, ``bal_acc`` + suffix, ...)
RANK_RULES = {"sum": "", "norm": "_norm", "norm_token": "_norm_token", "calibrated": "_calibrated"}
RANK_METRICS = (tuple(f"{kind}{suffix}" for kind in ("acc", "bal_acc", "macro_f1") for suffix in RANK_RULES.values())
                + ("gold_logprob", "gold_nll_per_token"))
#: names used before the lm-evaluation-harness naming -> today's names (the old ``*_norm`` divided by tokens)
LEGACY_RANK_METRICS = {
    "acc_sum": "acc", "bal_acc_sum": "bal_acc", "macro_f1_sum": "macro_f1",
    "acc_norm": "acc_norm_token", "bal_acc_norm": "bal_acc_norm_token", "macro_f1_norm": "macro_f1_norm_token",
}


def rank_metric(kind: str, rule: str) -> str:
    """The name of metric ``kind`` (``acc``, ``bal_acc``, ``macro_f1``) under a rule of :data:`RANK_RULES`."""
    return kind + RANK_RULES[rule]


def rank_rule(metric: str) -> str | None:
    """The rule of a rank-classification accuracy metric (``acc_norm_token`` -> ``norm_token``), else ``None``."""
    for kind in ("bal_acc", "macro_f1", "acc"):
        if metric == kind or metric.startswith(kind + "_"):
            suffix = metric[len(kind):]
            return next((rule for rule, sfx in RANK_RULES.items() if sfx == suffix), None)
    return None


_PUNCT = set(string.punctuation) | {"\u2018", "\u2019", "\u201c", "\u201d", "\u2013", "\u2014", "\u2026"}
_WS = re.compile(r"\s+")


def normalize_answer(text: str) -> str:
    """Lowercase, remove punctuation (ASCII and Unicode ``P*`` categories), collapse and strip whitespace."""
    text = str(text).lower()
    text = "".join(
        " " if ch in _PUNCT or unicodedata.category(ch).startswith("P") else ch for ch in text
    )
    return _WS.sub(" ", text).strip()


def _as_refs(references: str | Sequence[str]) -> list[str]:
    refs = [references] if isinstance(references, str) else list(references)
    if not refs:
        raise InstaError("a generation example has no reference answer")
    return refs


def exact_match(prediction: str, references: str | Sequence[str]) -> float:
    """1.0 when the normalised prediction equals any normalised reference, else 0.0."""
    pred = normalize_answer(prediction)
    return float(any(pred == normalize_answer(r) for r in _as_refs(references)))


_SCORER = None


def _rouge_scorer():
    global _SCORER
    if _SCORER is None:
        try:
            from rouge_score import rouge_scorer
        except ImportError as err:
            raise InstaError("ROUGE-L needs rouge-score: pip install rouge-score") from err
        _SCORER = rouge_scorer.RougeScorer(["rougeL"], use_stemmer=True)
    return _SCORER


def rouge_l(prediction: str, references: str | Sequence[str]) -> float:
    """ROUGE-L F-measure with stemming (rouge-score), the max over references, x100 (0-100)."""
    scorer = _rouge_scorer()
    return 100.0 * max(scorer.score(ref, prediction)["rougeL"].fmeasure for ref in _as_refs(references))


def accuracy(predictions: Sequence[Hashable], golds: Sequence[Hashable]) -> float:
    """Share of predictions equal to their gold label."""
    _check_pair(predictions, golds)
    return sum(p == g for p, g in zip(predictions, golds)) / len(golds)


def balanced_accuracy(predictions: Sequence[Hashable], golds: Sequence[Hashable]) -> float:
    """Mean recall over the classes present in ``golds`` (sklearn's ``balanced_accuracy_score``).

    A model that always answers the majority class scores 1 / n_classes, whatever the class balance.
    """
    _check_pair(predictions, golds)
    return float(balanced_accuracy_of([p == g for p, g in zip(predictions, golds)], golds))


def class_indices(golds: Sequence[Hashable]) -> np.ndarray:
    """Each gold label's index among the sorted distinct labels (sorted by ``str`` when they do not compare)."""
    distinct = set(golds)
    try:
        classes = sorted(distinct)
    except TypeError:
        classes = sorted(distinct, key=str)
    pos = {c: i for i, c in enumerate(classes)}
    return np.asarray([pos[g] for g in golds], dtype=int)


def balanced_accuracy_of(correct: Sequence[float] | np.ndarray, golds: Sequence[Hashable] | np.ndarray,
                         idx: np.ndarray | None = None) -> float | np.ndarray:
    """Balanced accuracy from per-example correctness (0/1) and gold classes (labels, or :func:`class_indices`).

    Without ``idx``: one value. With ``idx`` (R x m example indices: bootstrap resamples, jackknife rows): one value
    per row, each the mean recall over the classes present in that row.
    """
    correct = np.asarray(correct, dtype=float)
    cls = golds if isinstance(golds, np.ndarray) and golds.dtype.kind == "i" else class_indices(golds)
    rows = np.arange(len(correct))[None, :] if idx is None else idx
    hit, c = correct[rows], cls[rows]
    recalls = []
    for k in range(int(cls.max()) + 1 if len(cls) else 0):
        member = c == k
        support = member.sum(axis=1)
        recalls.append(np.where(support > 0, (hit * member).sum(axis=1) / np.maximum(support, 1), np.nan))
    with np.errstate(all="ignore"):
        out = np.nanmean(np.vstack(recalls), axis=0)
    return float(out[0]) if idx is None else out


def macro_f1(predictions: Sequence[Hashable], golds: Sequence[Hashable]) -> float:
    """Unweighted mean F1 over the union of gold and predicted classes (sklearn's ``f1_score(average="macro")``)."""
    _check_pair(predictions, golds)
    classes = set(golds) | set(predictions)
    tp: Counter = Counter(g for p, g in zip(predictions, golds) if p == g)
    pred_n: Counter = Counter(predictions)
    gold_n: Counter = Counter(golds)
    f1 = [2 * tp[c] / (pred_n[c] + gold_n[c]) if pred_n[c] + gold_n[c] else 0.0 for c in classes]
    return math.fsum(f1) / len(classes)  # exactly rounded: the same in every process, whatever the set order


def _check_pair(predictions: Sequence, golds: Sequence) -> None:
    if len(predictions) != len(golds):
        raise InstaError(f"{len(predictions)} predictions for {len(golds)} gold labels")
    if not golds:
        raise InstaError("no examples to score")


def gold_score(sample: dict[str, Any]) -> tuple[float, float]:
    """The gold option's summed log-probability and its negative log-likelihood per token, from a rank sample of
    :func:`insta.evaluate.evaluate_examples` (``scores_sum``, ``label``, optional ``n_tokens``)."""
    lab = int(sample["label"])
    logprob = float(sample["scores_sum"][lab])
    n_tokens = (sample.get("n_tokens") or [1] * len(sample["scores_sum"]))[lab]
    return logprob, -logprob / max(1, n_tokens)


# -- per-example rank margins (transfer cells and grid cells: :mod:`insta.matrix.cells`, :mod:`insta.engine.cells`)

def margins(s: dict[str, list]) -> list[float] | None:
    """Per example: the gold option's summed log-likelihood minus the best distractor's (``None`` for cells
    written before per-option scores were kept)."""
    scores = s.get("scores_sum")
    if not scores or len(scores) != len(s["ids"]):
        return None
    out = []
    for sc, lab in zip(scores, s["label"]):
        others = [x for i, x in enumerate(sc) if i != lab]
        out.append(float(sc[lab]) - max(others) if others else float("nan"))
    return out


def option_scale(s: dict[str, list]) -> float | None:
    """The cell's option-score scale: root mean square over examples of the standard deviation of an example's
    option scores (``None`` without per-option scores; ``nan`` when every example's options score alike)."""
    scores = s.get("scores_sum")
    if not scores or len(scores) != len(s["ids"]):
        return None
    variances = []
    for sc in scores:
        mean = sum(sc) / len(sc)
        variances.append(sum((x - mean) ** 2 for x in sc) / len(sc))
    scale = (sum(variances) / len(variances)) ** 0.5 if variances else 0.0
    return scale if scale > 0 else float("nan")


def standardized_margins(s: dict[str, list]) -> list[float] | None:
    """Per example: the margin divided by the cell's :func:`option_scale` (why: :mod:`insta.matrix.cells`)."""
    m, scale = margins(s), option_scale(s)
    if m is None or scale is None:
        return None
    return [x / scale for x in m]


__all__ = [
    "LEGACY_RANK_METRICS",
    "RANK_METRICS",
    "RANK_RULES",
    "accuracy",
    "balanced_accuracy",
    "balanced_accuracy_of",
    "class_indices",
    "exact_match",
    "gold_score",
    "macro_f1",
    "margins",
    "normalize_answer",
    "option_scale",
    "rank_metric",
    "rank_rule",
    "rouge_l",
    "standardized_margins",
]

"""Evaluation metrics: exact match, ROUGE-L, accuracy, balanced accuracy, macro-F1, paired bootstrap, McNemar.

All functions are plain Python (numpy for the bootstrap); ROUGE-L uses ``rouge-score`` (imported on first use).

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
from typing import Hashable, Iterable, Sequence

from .errors import InstaError

#: rank-classification rules: the suffix each adds to a metric name (``acc`` + suffix, ``bal_acc`` + suffix, ...)
RANK_RULES = {"sum": "", "norm": "_norm", "norm_token": "_norm_token", "calibrated": "_calibrated"}
RANK_METRICS = tuple(f"{kind}{suffix}" for kind in ("acc", "bal_acc", "macro_f1") for suffix in RANK_RULES.values()) \
    + ("gold_logprob", "gold_nll_per_token")
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
    _check_pair(predictions, golds)
    return sum(p == g for p, g in zip(predictions, golds)) / len(golds)


def balanced_accuracy(predictions: Sequence[Hashable], golds: Sequence[Hashable]) -> float:
    """Mean recall over the classes present in ``golds`` (sklearn's ``balanced_accuracy_score``).

    A model that always answers the majority class scores 1 / n_classes, whatever the class balance.
    """
    _check_pair(predictions, golds)
    support: Counter = Counter(golds)
    hits: Counter = Counter(g for p, g in zip(predictions, golds) if p == g)
    return sum(hits[c] / n for c, n in support.items()) / len(support)


def macro_f1(predictions: Sequence[Hashable], golds: Sequence[Hashable]) -> float:
    """Unweighted mean F1 over the union of gold and predicted classes (sklearn's ``f1_score(average="macro")``)."""
    _check_pair(predictions, golds)
    classes = set(golds) | set(predictions)
    tp: Counter = Counter(g for p, g in zip(predictions, golds) if p == g)
    pred_n: Counter = Counter(predictions)
    gold_n: Counter = Counter(golds)
    total = 0.0
    for c in classes:
        denom = pred_n[c] + gold_n[c]
        total += 2 * tp[c] / denom if denom else 0.0
    return total / len(classes)


def _check_pair(predictions: Sequence, golds: Sequence) -> None:
    if len(predictions) != len(golds):
        raise InstaError(f"{len(predictions)} predictions for {len(golds)} gold labels")
    if not golds:
        raise InstaError("no examples to score")


def mean(values: Iterable[float]) -> float:
    vals = list(values)
    return sum(vals) / len(vals) if vals else float("nan")


def bootstrap_ci(
    values: Sequence[float], n_resamples: int = 10_000, confidence: float = 0.95, seed: int = 0
) -> dict[str, float]:
    """Percentile bootstrap CI of the mean of per-example scores."""
    import numpy as np

    x = np.asarray(values, dtype=float)
    if x.size == 0:
        raise InstaError("bootstrap of an empty list")
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, x.size, size=(n_resamples, x.size))
    means = x[idx].mean(axis=1)
    alpha = (1 - confidence) / 2
    return {
        "mean": float(x.mean()),
        "low": float(np.quantile(means, alpha)),
        "high": float(np.quantile(means, 1 - alpha)),
        "n": int(x.size),
        "confidence": confidence,
    }


def paired_bootstrap(
    scores_a: Sequence[float],
    scores_b: Sequence[float],
    n_resamples: int = 10_000,
    confidence: float = 0.95,
    seed: int = 0,
) -> dict[str, float]:
    """Paired bootstrap of ``mean(a) - mean(b)`` over the same examples.

    Returns the observed difference, its percentile CI, and a two-sided p-value (twice the smaller share of
    resampled differences on either side of zero, capped at 1).
    """
    import numpy as np

    a = np.asarray(scores_a, dtype=float)
    b = np.asarray(scores_b, dtype=float)
    if a.shape != b.shape:
        raise InstaError(f"paired comparison needs the same examples: {a.size} vs {b.size} scores")
    if a.size == 0:
        raise InstaError("paired bootstrap of empty score lists")
    d = a - b
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, d.size, size=(n_resamples, d.size))
    diffs = d[idx].mean(axis=1)
    alpha = (1 - confidence) / 2
    p = 2 * min(float((diffs <= 0).mean()), float((diffs >= 0).mean()))
    return {
        "diff": float(d.mean()),
        "low": float(np.quantile(diffs, alpha)),
        "high": float(np.quantile(diffs, 1 - alpha)),
        "p_value": min(1.0, p),
        "n": int(d.size),
        "confidence": confidence,
    }


def mcnemar(correct_a: Sequence[bool], correct_b: Sequence[bool]) -> dict[str, float]:
    """Exact (binomial) McNemar test on paired correctness: b01 = only A right, b10 = only B right."""
    if len(correct_a) != len(correct_b):
        raise InstaError(f"McNemar needs paired results: {len(correct_a)} vs {len(correct_b)}")
    only_a = sum(1 for x, y in zip(correct_a, correct_b) if x and not y)
    only_b = sum(1 for x, y in zip(correct_a, correct_b) if y and not x)
    n = only_a + only_b
    if n == 0:
        return {"only_a": 0, "only_b": 0, "p_value": 1.0}
    k = min(only_a, only_b)
    tail = sum(math.comb(n, i) for i in range(k + 1)) / 2**n
    return {"only_a": only_a, "only_b": only_b, "p_value": min(1.0, 2 * tail)}


__all__ = [
    "LEGACY_RANK_METRICS",
    "RANK_METRICS",
    "RANK_RULES",
    "accuracy",
    "balanced_accuracy",
    "bootstrap_ci",
    "exact_match",
    "macro_f1",
    "mcnemar",
    "normalize_answer",
    "paired_bootstrap",
    "rank_metric",
    "rank_rule",
    "rouge_l",
]

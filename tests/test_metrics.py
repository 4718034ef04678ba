"""Metric functions against hand-computed values."""
import numpy as np
import pytest

from insta.errors import InstaError
from insta.metrics import (
    accuracy,
    balanced_accuracy,
    balanced_accuracy_of,
    exact_match,
    gold_score,
    macro_f1,
    normalize_answer,
    rouge_l,
)


def test_normalize_answer():
    assert normalize_answer("  The Answer, is: (A)!  ") == "the answer is a"
    assert normalize_answer("New\n\tYork") == "new york"
    assert normalize_answer("“quoted” — text…") == "quoted text"


def test_exact_match_max_over_references():
    assert exact_match("True.", ["true"]) == 1.0
    assert exact_match("(A)", "A") == 1.0
    assert exact_match("Paris", ["London", "paris!"]) == 1.0
    assert exact_match("Paris, France", ["Paris"]) == 0.0
    with pytest.raises(InstaError):
        exact_match("x", [])


def test_rouge_l_hand_computed():
    # LCS("the cat sat on the mat", "the cat is on the mat") = the cat on the mat = 5 tokens; P = R = 5/6
    assert rouge_l("the cat sat on the mat", ["the cat is on the mat"]) == pytest.approx(100 * 5 / 6)
    # P = 2/2, R = 2/4 -> F = 2PR/(P+R) = 2/3
    assert rouge_l("cat mat", "the cat on mat") == pytest.approx(100 * 2 / 3)
    # max over references, and stemming (running -> run)
    assert rouge_l("dogs running", ["nothing here", "dog runs"]) == pytest.approx(100.0)
    assert rouge_l("", ["abc"]) == 0.0


def test_accuracy_balanced_and_macro_f1():
    golds = ["a", "a", "a", "b"]
    always_a = ["a", "a", "a", "a"]
    assert accuracy(always_a, golds) == 0.75
    assert balanced_accuracy(always_a, golds) == 0.5  # recall a = 1, recall b = 0
    # F1(a) = 2*3/(4+3) = 6/7, F1(b) = 0 -> macro 3/7
    assert macro_f1(always_a, golds) == pytest.approx(3 / 7)
    preds = ["a", "b", "a", "b"]
    # recall a = 2/3, recall b = 1 -> 5/6; F1(a) = 2*2/(2+3) = .8, F1(b) = 2*1/(2+1) = 2/3
    assert balanced_accuracy(preds, golds) == pytest.approx(5 / 6)
    assert macro_f1(preds, golds) == pytest.approx((0.8 + 2 / 3) / 2)
    # a predicted class absent from the golds counts in macro-F1 (as in sklearn), not in balanced accuracy
    assert macro_f1(["c", "a"], ["a", "a"]) == pytest.approx((2 * 1 / 3 + 0) / 2)
    assert balanced_accuracy(["c", "a"], ["a", "a"]) == 0.5
    with pytest.raises(InstaError):
        accuracy([1], [1, 2])
    with pytest.raises(InstaError):
        balanced_accuracy([], [])


def test_against_sklearn_when_available():
    import sklearn.metrics as sk
    golds = [0, 1, 2, 2, 1, 0, 2, 2, 1, 0]
    preds = [0, 2, 2, 2, 1, 1, 0, 2, 1, 0]
    assert balanced_accuracy(preds, golds) == pytest.approx(sk.balanced_accuracy_score(golds, preds))
    assert macro_f1(preds, golds) == pytest.approx(sk.f1_score(golds, preds, average="macro"))


@pytest.mark.filterwarnings("ignore:y_pred contains classes not in y_true")
def test_balanced_accuracy_per_resample_row_equals_the_metric_on_that_row():
    """The vectorised form scores each row of indices (bootstrap or jackknife) exactly as the plain call scores
    the examples of that row; a class missing from a row is left out of that row's mean."""
    import sklearn.metrics as sk

    rng = np.random.default_rng(3)
    golds = list(rng.choice(["yes", "no", "maybe"], size=25))
    preds = [g if rng.random() < 0.6 else "no" for g in golds]
    correct = [p == g for p, g in zip(preds, golds)]
    idx = rng.integers(0, 25, size=(40, 25))
    idx[0] = [i for i, g in enumerate(golds) if g != "maybe"][:1] * 25  # one class only in this row
    rows = balanced_accuracy_of(correct, golds, idx)
    assert rows.shape == (40,)
    for r, i in zip(rows, idx):
        assert r == pytest.approx(sk.balanced_accuracy_score([golds[j] for j in i], [preds[j] for j in i]))
    assert balanced_accuracy_of(correct, golds) == pytest.approx(balanced_accuracy(preds, golds))


def test_gold_score_sum_and_per_token():
    sample = {"label": 1, "scores_sum": [-1.0, -4.5, -2.0], "n_tokens": [1, 3, 2]}
    assert gold_score(sample) == (-4.5, 1.5)
    assert gold_score({"label": 0, "scores_sum": [-2.0, -1.0]}) == (-2.0, 2.0)  # no token counts: one token each
    assert gold_score({"label": 0, "scores_sum": [-2.0], "n_tokens": [0]}) == (-2.0, 2.0)


def test_macro_f1_is_the_same_in_every_process():
    """The classes are a set of strings, whose order changes with the hash seed: the sum must not depend on it."""
    import os
    import subprocess
    import sys

    code = ("from insta.metrics import macro_f1\n"
            # per-class F1 0.1, 0.2, 0.3 and 0: (0.1 + 0.2) + 0.3 != 0.1 + (0.2 + 0.3) in floating point
            "p = ['a'] + ['b'] + ['c'] * 3 + ['a'] * 18 + ['b'] * 8 + ['c'] * 14\n"
            "g = ['a'] + ['b'] + ['c'] * 3 + ['z'] * 40\n"
            "print(repr(macro_f1(p, g)))\n")
    outs = {subprocess.run([sys.executable, "-c", code], env={**os.environ, "PYTHONHASHSEED": str(seed)},
                           capture_output=True, text=True, check=True).stdout for seed in range(8)}
    assert outs == {"0.15\n"}, outs

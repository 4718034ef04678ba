"""What one transfer cell keeps per evaluation example, and the metrics computed from it.

Per example (parallel arrays, so a cell stays small and a paired analysis needs no model): the gold option's
negative log-likelihood per token (v1's primary metric: continuous, one forward pass), the predictions of
rank classification under the lm-evaluation-harness rules: ``acc`` (summed log-likelihood), ``acc_norm``
(divided by the option's length in characters, as lm-eval's ``acc_norm``), ``acc_norm_token`` (divided by its
token count) and ``acc_calibrated`` (minus the option's log-likelihood after a content-free prompt), and (cells
written since the learnability screen) every option's text, summed log-likelihood and token count, so any
rank metric can be recomputed from the cells later.

``margin`` is the gold option's summed log-likelihood minus the best distractor's: positive only when the
``acc`` rule answers correctly, and, unlike the gold NLL, it does not improve when training only raises the
likelihood of every option of the answer format alike. It does improve when training only flattens the options'
scores (the first oracle of the learnability screen: accuracy .21 -> .195 on five options, the option scores'
spread 2.1 -> 0.9 nats, the mean margin -2.16 -> -0.93). ``margin_z`` removes that: each margin divided by the
cell's own scale, the root mean square over its examples of the spread (standard deviation) of an example's option
scores, so shrinking or stretching every score alike leaves it unchanged while ranking the gold answer higher
among its options raises it.
"""
from __future__ import annotations

from typing import Any, Sequence

# the per-example margins are defined in insta.metrics (grid cells use them too) and used here
from ..metrics import margins, option_scale, standardized_margins  # noqa: F401

#: metric -> True when higher is better
METRICS = {
    "nll_per_token": False,
    "acc": True,
    "acc_norm": True,
    "acc_norm_token": True,
    "acc_calibrated": True,
    "bal_acc_norm": True,
    "margin": True,
    "margin_z": True,
}
PRIMARY = "nll_per_token"


def _argmax(xs: Sequence[float]) -> int:
    return max(range(len(xs)), key=lambda i: (xs[i], -i))


def compact_rank_samples(samples: Sequence[dict[str, Any]]) -> dict[str, list]:
    """Per-example arrays from :func:`insta.evaluate.evaluate_examples` rank samples."""
    from ..metrics import gold_score

    out: dict[str, list] = {k: [] for k in ("ids", "label", "gold", "n_options", "nll_per_token", "pred_sum",
                                             "pred_norm", "pred_norm_token", "pred_calibrated", "options",
                                             "scores_sum", "n_tokens")}
    for s in samples:
        if s.get("type", "rank") != "rank":
            continue
        lab = int(s["label"])
        sums = [float(x) for x in s["scores_sum"]]
        ntok = s.get("n_tokens") or [1] * len(sums)
        chars = [max(1, len(o)) for o in s["options"]]
        cal = s.get("scores_calibrated")
        out["ids"].append(s["id"])
        out["label"].append(lab)
        out["gold"].append(s["options"][lab])
        out["n_options"].append(len(sums))
        out["nll_per_token"].append(round(gold_score(s)[1], 6))
        out["pred_sum"].append(_argmax(sums))
        out["pred_norm"].append(_argmax([x / c for x, c in zip(sums, chars)]))
        out["pred_norm_token"].append(_argmax([x / max(1, n) for x, n in zip(sums, ntok)]))
        out["pred_calibrated"].append(_argmax(cal) if cal else None)
        out["options"].append(list(s["options"]))
        out["scores_sum"].append([round(x, 5) for x in sums])
        out["n_tokens"].append([int(n) for n in ntok])
    return out


def predicted_texts(s: dict[str, list], key: str = "pred_sum") -> list[str] | None:
    """The option text each example's prediction picked (``None`` for cells without option texts): a model
    that answers one constant text whatever the input shows up as one value here."""
    opts = s.get("options")
    if not opts or len(opts) != len(s["ids"]):
        return None
    return [o[p] if p is not None else "" for o, p in zip(opts, s[key])]


def cell_metrics(s: dict[str, list]) -> dict[str, float | None]:
    """The cell's metrics (see :data:`METRICS`) from its per-example arrays."""
    from ..metrics import balanced_accuracy

    n = len(s["ids"])
    if n == 0:
        return {m: None for m in METRICS} | {"n": 0}
    labels = s["label"]

    def acc(key: str) -> float | None:
        preds = s[key]
        if any(p is None for p in preds):
            return None
        return sum(int(p == lab) for p, lab in zip(preds, labels)) / n

    golds = s["gold"]
    # balanced accuracy over gold answer strings: meaningful where the label set is fixed
    pred_text = [None if p is None else (golds[i] if p == labels[i] else f"#{p}")
                 for i, p in enumerate(s["pred_norm"])]
    return {
        "n": n,
        "nll_per_token": sum(s["nll_per_token"]) / n,
        "acc": acc("pred_sum"),
        "acc_norm": acc("pred_norm"),
        "acc_norm_token": acc("pred_norm_token"),
        "acc_calibrated": acc("pred_calibrated"),
        "bal_acc_norm": balanced_accuracy(pred_text, golds),
        "margin": (sum(m) / n) if (m := margins(s)) is not None else None,
        "margin_z": (sum(z) / n) if (z := standardized_margins(s)) is not None else None,
    }


def constant_share(samples: dict[str, list]) -> float:
    """The share of examples on which the model gives its most frequent answer text (1.0: constant)."""
    from collections import Counter

    texts = predicted_texts(samples) or [str(p) for p in samples["pred_sum"]]
    if not texts:
        return float("nan")
    return Counter(texts).most_common(1)[0][1] / len(texts)


def per_example(s: dict[str, list], metric: str) -> list[float]:
    """The per-example values of a metric (0/1 for accuracies), for paired standard errors."""
    if metric == "nll_per_token":
        return list(s["nll_per_token"])
    if metric in ("margin", "margin_z"):
        m = margins(s) if metric == "margin" else standardized_margins(s)
        return m if m is not None else [float("nan")] * len(s["ids"])
    key = {"acc": "pred_sum", "acc_norm": "pred_norm", "acc_norm_token": "pred_norm_token",
           "acc_calibrated": "pred_calibrated", "bal_acc_norm": "pred_norm"}[metric]
    return [float(p == lab) if p is not None else float("nan") for p, lab in zip(s[key], s["label"])]


def score_rank(result: dict[str, Any]) -> dict[str, Any]:
    """A transfer cell's scored fields from an evaluation result: its per-example arrays
    (:func:`compact_rank_samples`) and the metrics computed from them (:func:`cell_metrics`); what the run
    engine's job writes into every cell of the matrix."""
    samples = compact_rank_samples(result.get("samples") or [])
    return {"metrics": cell_metrics(samples), "samples": samples}

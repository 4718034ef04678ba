"""Selection methods scored against a measured transfer matrix, as report sections: the forest plot of NDCG and
Regret@k (:func:`plot_method_scores`) and the scoring sections with their prose answers (:func:`scoring_sections`),
shared by the transfer report and ``insta eval-selection --transfer --markdown``."""
from __future__ import annotations

import math
from typing import Any

from ..report.plots import png as _png
from ..report.tables import fmt as _f


def _ci(row: dict[str, float], d: int = 3) -> str:
    return f"{_f(row['mean'], d)} [{_f(row['lo'], d)}, {_f(row['hi'], d)}]"


def plot_method_scores(scoring: dict[str, Any]) -> bytes:
    """Forest plot: each method's mean NDCG and Regret@k over targets with 95% bootstrap CIs."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    summ = scoring["summary"]
    labels = sorted(summ, key=lambda m: -summ[m]["ndcg"]["mean"])
    fig, axes = plt.subplots(1, 2, figsize=(10, 0.35 * len(labels) + 1.5), sharey=True)
    for ax, metric, name in ((axes[0], "ndcg", "NDCG (higher is better)"),
                             (axes[1], "regret", f"Regret@{scoring['k']} (lower is better)")):
        for y, lab in enumerate(labels):
            r = summ[lab][metric]
            lo, hi = r["lo"], r["hi"]
            color = "tab:gray" if lab in ("random", "all") else "tab:blue"
            if math.isfinite(lo) and math.isfinite(hi):
                ax.plot([lo, hi], [y, y], color=color, lw=2)
            ax.plot([r["mean"]], [y], "o", color=color)
        rnd = summ.get("random", {}).get(metric, {}).get("mean")
        if rnd is not None:
            ax.axvline(rnd, color="tab:gray", ls="--", lw=1)
        ax.set_title(name, fontsize=9)
        ax.set_yticks(range(len(labels)), labels, fontsize=8)
        ax.invert_yaxis()
    fig.suptitle(f"Selection methods against measured transfer ({scoring['metric']}): mean over "
                 f"{len(scoring['targets_scored'])} targets, 95% bootstrap CI", fontsize=9)
    return _png(fig)


def scoring_sections(sc: dict[str, Any], image: str | None = None) -> list[dict[str, Any]]:
    """The method-scoring part of a report (also ``eval-selection --transfer --markdown``)."""
    main = {"title": "Selection methods against measured transfer", "paragraphs": _scoring_paragraphs(sc),
            "tables": [_scoring_table(sc)], "details": ("per-target NDCG", _per_target_table(sc))}
    if image:
        main["images"] = [image]
    return [main, {"title": "Paired differences", "level": 3, "paragraphs": _answers(sc),
                   "tables": [_paired_table(sc)]}]


def _scoring_paragraphs(sc: dict[str, Any]) -> list[str]:
    summ = sc["summary"]
    best = max((m for m in summ if m not in ("random", "all")), key=lambda m: summ[m]["ndcg"]["mean"], default=None)
    paras = [f"Each method ranks the {sc['n_sources']} sources for each target from what it may see "
             "(instructions: INSTA variants, lexical; unlabelled target inputs: RoE, DSIR; nothing: random, "
             f"all). NDCG over the whole ranking (relevance from the gold order) and Regret@{sc['k']}; means "
             f"over {len(sc['targets_scored'])} targets with 95% bootstrap CIs over targets. random = mean over "
             f"{sc['draws']} permutations; all = every source tied (its exact expectation)."]
    if sc.get("targets_left_out"):
        paras.append("Left out of scoring as noise (seeds disagree): " + "; ".join(
            f"{t} ({why})" for t, why in sc["targets_left_out"].items()) + ".")
    if best:
        d = sc["paired"].get(f"{best} - random", {}).get("ndcg")
        if d:
            sig = {"not separated": "not distinguishable from"}.get(_verdict(d), _verdict(d))
            paras.append(f"Best NDCG: {best} ({_ci(summ[best]['ndcg'])}); against random {_diff(d)}: {sig} random.")
    return paras


def _diff(d: dict[str, float]) -> str:
    return f"{_f(d['mean'], signed=True)} [{_f(d['lo'], signed=True)}, {_f(d['hi'], signed=True)}]"


def _verdict(d: dict[str, float]) -> str:
    return "above" if d["lo"] > 0 else ("below" if d["hi"] < 0 else "not separated")


def _answers(sc: dict[str, Any], reference: str = "insta-mean") -> list[str]:
    """The report's questions answered from the paired differences: plain INSTA against each baseline, the best
    INSTA variant (aggregation, encoder) against plain INSTA, and how many targets the seeds agree on."""
    summ, paired = sc["summary"], sc["paired"]
    out = []
    if reference in summ:
        parts = [f"{b} {_diff(paired[f'{reference} - {b}']['ndcg'])} ({_verdict(paired[f'{reference} - {b}']['ndcg'])})"
                 for b in ("random", "all", "lexical", "roe", "dsir") if f"{reference} - {b}" in paired]
        if parts:
            out.append(f"Does INSTA ({reference}) rank sources closer to measured transfer than the others? NDCG "
                       "difference, 95% CI over targets: " + "; ".join(parts) + ".")
        variants = [m for m in summ if m.startswith("insta") and m != reference]
        if variants:
            top = max(variants, key=lambda m: summ[m]["ndcg"]["mean"])
            d = paired.get(f"{top} - {reference}", {}).get("ndcg")
            if d:
                out.append(f"Which INSTA variant (aggregation, encoder, format)? The best is {top} "
                           f"({_ci(summ[top]['ndcg'])}); against {reference} {_diff(d)} ({_verdict(d)}).")
    rel = [r for r in (sc.get("reliability") or {}).values() if r.get("reliability") is not None]
    if rel:
        vals = [r["reliability"] for r in rel]
        out.append(f"How reliable is the matrix? {sum(bool(r.get('reliable')) for r in rel)} of {len(rel)} targets "
                   f"have seeds that agree (split-half reliability {_f(min(vals), 2)} to {_f(max(vals), 2)}; "
                   "per target: the reliability section).")
    return out


def _scoring_table(sc):
    summ = sc["summary"]
    rows = []
    for m in sorted(summ, key=lambda m: -summ[m]["ndcg"]["mean"]):
        rows.append([m, _ci(summ[m]["ndcg"]), _ci(summ[m]["regret"]), str(summ[m]["n_targets"])])
    return ["method", "NDCG [95% CI]", f"Regret@{sc['k']} [95% CI]", "targets"], rows


def _per_target_table(sc):
    methods = sorted(sc["per_target"])
    targets = sc["targets_scored"]
    rows = [[t.split(":")[-1]] + [_f(sc["per_target"][m].get(t, {}).get("ndcg")) for m in methods] for t in targets]
    return [["target"] + methods, rows]


def _paired_table(sc):
    rows = []
    insta = [m for m in sc["summary"] if m.startswith("insta")]
    others = [m for m in sc["summary"] if not m.startswith("insta")]
    for a in insta:
        for b in others:
            r = sc["paired"].get(f"{a} - {b}")
            if r:
                rows.append([a, b, f"{_f(r['ndcg']['mean'], signed=True)} [{_f(r['ndcg']['lo'], signed=True)}, "
                             f"{_f(r['ndcg']['hi'], signed=True)}]",
                             f"{_f(r['regret']['mean'], signed=True)} [{_f(r['regret']['lo'], signed=True)}, "
                             f"{_f(r['regret']['hi'], signed=True)}]"])
    return ["method", "baseline", "NDCG difference [95% CI]", "Regret difference [95% CI]"], rows


__all__ = ["plot_method_scores", "scoring_sections"]

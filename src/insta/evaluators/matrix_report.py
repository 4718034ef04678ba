"""Selection methods scored against a measured transfer matrix, as report sections: the forest plot of NDCG and
Regret@k (:func:`plot_method_scores`) and the scoring sections with their prose answers (:func:`scoring_sections`:
every score's mean [CI], the paired differences against each reference method, the targets filled with random's
expectation), shared by the transfer report and ``insta eval-selection --transfer --markdown``. Scores missing
from an older result (one written before they existed) are left out of the tables."""
from __future__ import annotations

import math
from typing import Any

from ..matrix.scoring import REFERENCE_METHODS, SCORES
from ..report.plots import png as _png
from ..report.tables import fmt as _f

#: the column head of each score (``{k}``: the cut)
SCORE_HEADS = {"ndcg": "exp NDCG", "ndcg_linear": "linear NDCG", "precision": "precision@{k}",
               "best_regret": "best-of-{k} regret", "regret": "Regret@{k} (old)"}


def _ci(row: dict[str, float], d: int = 3) -> str:
    return f"{_f(row['mean'], d)} [{_f(row['lo'], d)}, {_f(row['hi'], d)}]"


def _scores_in(sc: dict[str, Any]) -> list[str]:
    """The scores of :data:`SCORES` this result holds, in table order."""
    return [s for s in SCORES if any(s in row for row in sc["summary"].values())]


def _head(sc: dict[str, Any], score: str) -> str:
    return SCORE_HEADS[score].format(k=sc["k"])


def _references(sc: dict[str, Any]) -> list[str]:
    return [r for r in sc.get("references", REFERENCE_METHODS) if r in sc["summary"]]


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
            "tables": [scoring_table(sc)], "details": ("per-target NDCG", _per_target_table(sc))}
    if image:
        main["images"] = [image]
    refs = _references(sc)
    paired = {"title": "Paired differences", "level": 3, "paragraphs": _answers(sc) + [
        "Each table: every method minus the reference, per target, mean over targets with its 95% bootstrap CI "
        "(higher is better for the NDCGs and precision, lower for the regrets)." if refs else
        "No reference method was scored (--reference); the JSON keeps every pair."]}
    secs = [main, paired] + [{"title": f"Against {r}", "level": 4, "tables": [_paired_table(sc, r)]} for r in refs]
    if "filled" not in sc:  # a result from before the fill: each method was averaged over the targets it scored
        return secs
    return secs + [{"title": "Targets filled with random's expectation", "level": 3, "paragraphs": _filled(sc)}]


def _filled(sc: dict[str, Any]) -> list[str]:
    """Where a method got random's expectation, where linear-gain NDCG is undefined, which sources were guarded."""
    filled = sc.get("filled") or {}
    out = ["A method that cannot score a target (RoE, DSIR and hybrid without unlabelled inputs of it; fewer than 2 "
           "sources) gets random's values there, so every method is averaged over the same targets."]
    out += [f"{m}: {len(ts)} target(s): {', '.join(ts)}." for m, ts in filled.items()] or [
        "None: every method scored every target."]
    undefined = (sc.get("undefined") or {}).get("ndcg_linear")
    if undefined:
        out.append(f"Linear-gain NDCG is undefined where no source has a transfer above 0, left out of that score "
                   f"for every method: {', '.join(undefined)}.")
    for t, srcs in (sc.get("sources_left_out") or {}).items():
        out.append(f"{t}: its relatives {', '.join(srcs)} left out of its sources for every method (leakage guard).")
    return out


def _scoring_paragraphs(sc: dict[str, Any]) -> list[str]:
    summ = sc["summary"]
    best = max((m for m in summ if m not in ("random", "all")), key=lambda m: summ[m]["ndcg"]["mean"], default=None)
    k = sc["k"]
    seed = f", drawn with seed {sc['seed']}" if "seed" in sc else ""
    paras = [f"Each method ranks the {sc['n_sources']} sources for each target from what it may see "
             f"(instructions: INSTA variants, lexical; unlabelled target inputs: RoE, DSIR, hybrid{seed}; "
             "measured transfer: prior-transfer, popular-source; nothing: random, all). "
             "exp NDCG: TaskWeb's, relevance from the gold rank, gain 2^rel - 1. linear NDCG: gain max(transfer, 0). "
             f"precision@{k}: share of the top {k} in the gold top {k}. best-of-{k} regret: best transfer minus the "
             f"best in the top {k}, in {sc['metric']} units. Regret@{k} (old): relative regret of the top-{k} mean. "
             f"Ties in a method's scores count at their expectation over random orders. Means over "
             f"{len(sc['targets_scored'])} targets with 95% bootstrap CIs over targets; random = mean over "
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
                 for b in ("random", "all", "lexical", "popular-source-loo", "roe", "hybrid-0.5", "dsir")
                 if f"{reference} - {b}" in paired]
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


def scoring_table(sc: dict[str, Any]) -> tuple[list[str], list[list[str]]]:
    """Header and rows: each method's mean [95% CI] of every score, by exp NDCG, and how many targets it got
    random's values on (a result from before the fill: how many targets it was averaged over)."""
    summ, scores = sc["summary"], _scores_in(sc)
    filled = sc.get("filled")
    rows = [[m] + [_ci(summ[m][s]) for s in scores]
            + [str(len(filled.get(m, [])) if filled is not None else summ[m]["n_targets"])]
            for m in sorted(summ, key=lambda m: -summ[m]["ndcg"]["mean"])]
    return (["method"] + [f"{_head(sc, s)} [95% CI]" for s in scores]
            + ["targets filled" if filled is not None else "targets"]), rows


def _per_target_table(sc):
    methods = sorted(sc["per_target"])
    targets = sc["targets_scored"]
    rows = [[t.split(":")[-1]] + [_f(sc["per_target"][m].get(t, {}).get("ndcg")) for m in methods] for t in targets]
    return [["target"] + methods, rows]


def _paired_table(sc: dict[str, Any], reference: str) -> tuple[list[str], list[list[str]]]:
    """Every method minus ``reference``, per score: mean [95% CI] over targets."""
    scores, summ = _scores_in(sc), sc["summary"]
    rows = []
    for m in sorted(summ, key=lambda m: -summ[m]["ndcg"]["mean"]):
        r = sc["paired"].get(f"{m} - {reference}")
        if r:
            rows.append([m] + [_diff(r[s]) if s in r else "–" for s in scores])
    return [f"method - {reference}"] + [f"Δ {_head(sc, s)} [95% CI]" for s in scores], rows


__all__ = ["SCORE_HEADS", "plot_method_scores", "scoring_sections", "scoring_table"]

"""The transfer report: figures first (method scores with CIs, the matrix heat map), then tables and prose.

Rendered like the experiment report, from one source (:mod:`insta.report.render`): the sections become Markdown
through its template (``report.md``) and the HTML page is that Markdown converted (``report.html``).
"""
from __future__ import annotations

import base64
import math
from pathlib import Path
from typing import Any, Callable

import numpy as np

from ..util.paths import atomic_write_bytes, atomic_write_text
from ..report import notes_section
from ..report.plots import png as _png
from ..report.tables import fmt as _f
from ..matrix.cells import PRIMARY
from ..matrix.matrix import TransferMatrix


def _ci(row: dict[str, float], d: int = 3) -> str:
    return f"{_f(row['mean'], d)} [{_f(row['lo'], d)}, {_f(row['hi'], d)}]"


def plot_heatmap(matrix: TransferMatrix, metric: str = PRIMARY) -> bytes:
    """Targets x sources, mean transfer over seeds (diverging colours centred on zero)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    targets, sources = matrix.targets, matrix.sources
    m = np.full((len(targets), len(sources)), np.nan)
    for i, t in enumerate(targets):
        for s, v in matrix.mean_transfer(t, metric).items():
            m[i, sources.index(s)] = v
    lim = float(np.nanmax(np.abs(m))) if np.isfinite(m).any() else 1.0
    fig, ax = plt.subplots(figsize=(max(6, 0.22 * len(sources) + 3), max(3, 0.35 * len(targets) + 1.5)))
    im = ax.imshow(m, cmap="RdBu", vmin=-lim, vmax=lim, aspect="auto")
    ax.set_xticks(range(len(sources)), sources, rotation=90, fontsize=6)
    ax.set_yticks(range(len(targets)), [t.split(":")[-1] for t in targets], fontsize=7)
    fig.colorbar(im, ax=ax, shrink=0.8, label=f"transfer ({metric}; higher = better)")
    ax.set_title(f"Transfer per (target, source), mean over seeds: {metric}")
    return _png(fig)


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


def build_sections(results: dict[str, Any], matrix: TransferMatrix) -> list[dict[str, Any]]:
    secs: list[dict[str, Any]] = []
    plan = results["plan"]
    status = ("complete" if results.get("complete") else
              f"PARTIAL: {plan['cells_done']} of {plan['cells']} cells finished; the run resumes from them")
    secs.append({"title": "Run", "paragraphs": [
        f"Status: {status}. {plan['n_sources']} sources x {len(plan['seeds'])} seeds + the base model; "
        f"{plan['n_targets']} targets; model `{results['config'].get('model', 'smollm2')}`, "
        f"{results['config'].get('instances', 100)} training instances per (source, seed).",
        _compute_line(results)]})
    if results.get("scoring"):
        secs += scoring_sections(results["scoring"], image="method_scores.png")
    elif results.get("scoring_skipped"):
        secs.append({"title": "Selection methods against measured transfer",
                     "paragraphs": [f"Not scored yet: {results['scoring_skipped']}."]})
    secs.append({"title": "Transfer matrix", "images": ["transfer_heatmap.png"], "paragraphs": [
        "Transfer = base model's gold-answer NLL per token minus the trained model's on the same examples "
        "(positive: training on the source made the target's gold answers more likely). Full data: "
        "`matrix.csv` (long format: target, source, seed, metric, value, base_value, transfer)."]})
    secs.append({"title": "Reliability of the matrix", "paragraphs": [
        "Split-half reliability per target: seeds split in two halves, the per-source transfer of each half "
        "correlated over sources (Pearson r), Spearman-Brown corrected for the mean of all seeds. A target "
        f"below {results['config'].get('reliability_min', 0.5)} is noise at this budget and is left out of "
        "method scoring. Noise figures: the standard error of one model's mean NLL on the evaluation sample, "
        "the paired SE of one transfer value, and the spread (sd) of mean transfer between sources."],
        "tables": [_reliability_table(results)]})
    secs.append({"title": "Sources", "tables": [(["source", "keywords", "examples"],
                                                 [[s["id"], ", ".join(s["keywords"]), str(s["n_examples"])]
                                                  for s in results["sources"]])]})
    return secs


def scoring_sections(sc: dict[str, Any], image: str | None = None) -> list[dict[str, Any]]:
    """The method-scoring part of a report (also ``eval-selection --transfer --markdown``)."""
    main = {"title": "Selection methods against measured transfer", "paragraphs": _scoring_paragraphs(sc),
            "tables": [_scoring_table(sc)], "details": ("per-target NDCG", _per_target_table(sc))}
    if image:
        main["images"] = [image]
    return [main, {"title": "Paired differences", "level": 3, "paragraphs": _answers(sc),
                   "tables": [_paired_table(sc)]}]


def _compute_line(results: dict[str, Any]) -> str:
    c = results.get("compute") or {}
    return (f"Compute recorded in the cells: {c.get('trainings', 0)} trainings, {c.get('train_seconds', 0) / 60:.1f} "
            f"min ({c.get('seconds_per_training') or '–'} s each); {c.get('evaluations', 0)} evaluations of "
            f"{c.get('eval_examples', 0)} examples, {c.get('eval_seconds', 0) / 60:.1f} min "
            f"({c.get('seconds_per_eval_example') or '–'} s per example).")


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


def _reliability_table(results):
    rel = (results.get("reliability") or {}).get(PRIMARY, {})
    noise = results.get("noise") or {}
    rows = []
    for t, r in rel.items():
        n = noise.get(t, {})
        rows.append([t.split(":")[-1], str(r.get("n_common", r.get("n_sources"))), _f(r.get("r"), 2),
                     _f(r.get("spearman"), 2), _f(r.get("reliability"), 2), "yes" if r.get("reliable") else "no",
                     str(n.get("n", "–")), _f(n.get("se_mean")), _f(n.get("se_paired_transfer")),
                     _f(n.get("sd_between_sources"))])
    return (["target", "sources", "r (halves)", "Spearman", "reliability (SB)", "reliable", "n eval",
             "SE mean NLL", "SE transfer (paired)", "sd between sources"], rows)


def write_transfer_report(results: dict[str, Any], matrix: TransferMatrix, out_dir: str | Path,
                          log: Callable[[str], None] = lambda m: None) -> dict[str, Path]:
    """``report.md``, ``report.html`` and the PNG figures in ``out_dir``; a hand-written ``notes.md`` there is
    shown after the run section."""
    from ..report import render_html, render_markdown

    out = Path(out_dir)
    images: dict[str, str] = {}
    paths: dict[str, Path] = {}
    figs = []
    if matrix.rows:
        figs.append(("transfer_heatmap.png", lambda: plot_heatmap(matrix)))
    if results.get("scoring"):
        figs.append(("method_scores.png", lambda: plot_method_scores(results["scoring"])))
    for name, fn in figs:
        data = fn()
        atomic_write_bytes(out / name, data)
        images[name] = base64.b64encode(data).decode("ascii")
        paths[name] = out / name
    sections = build_sections(results, matrix)
    notes = notes_section(out)
    if notes:
        sections.insert(2 if results.get("scoring") else 1, notes)
    title = f"insta transfer: {results['name']}"
    atomic_write_text(out / "report.md", render_markdown(title, sections))
    atomic_write_text(out / "report.html", render_html(title, sections, images))
    paths.update({"report.md": out / "report.md", "report.html": out / "report.html"})
    log(f"report: {', '.join(str(p) for p in paths.values())}")
    return paths

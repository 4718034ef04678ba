"""The transfer report: figures first (method scores with CIs, the matrix heat map), then tables and prose.

Rendered like the experiment report, from one source (:mod:`insta.report.render`): the sections become Markdown
through its template (``report.md``) and the HTML page is that Markdown converted (``report.html``).
"""
from __future__ import annotations

import base64
from pathlib import Path
from typing import Any, Callable

import numpy as np

from ..util.paths import atomic_write_bytes, atomic_write_text
from ..report import notes_section
from ..report.plots import png as _png
from ..report.tables import fmt as _f
from ..evaluators.matrix_report import plot_method_scores, scoring_sections
from ..matrix.cells import PRIMARY
from ..matrix.matrix import TransferMatrix


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
    if results.get("target_decision"):
        secs.append(_targets_section(results["target_decision"]))
    if results.get("oracle"):
        secs.append(oracle_section(results["oracle"], matrix))
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
    secs.append({"title": "Sources", "tables": [_sources_table(results["sources"])]})
    return secs


ORACLE_METRICS = ("margin_z", "acc", "margin", "nll_per_token")


def oracle_section(oracle: dict[str, Any], matrix: TransferMatrix) -> dict[str, Any]:
    """The in-task oracle of each target (the learnability screen's model trained on the target's own instances,
    evaluated on the same examples) as a reference row: its transfer next to the best source's. Not a source:
    never ranked or scored."""
    title = "In-task oracle (reference row, not a source)"
    if oracle.get("why"):
        return {"title": title, "paragraphs": [f"No oracle row: {oracle['why']}."]}
    rows = []
    for t, r in oracle["targets"].items():
        if "transfer" not in r:
            rows.append([t.split(":", 1)[-1], *["–"] * (len(ORACLE_METRICS) + 2), r.get("why", "")])
            continue
        best = matrix.mean_transfer(t, "margin_z") if matrix.rows else {}
        top = max(best.values()) if best else None
        oz = r["transfer"].get("margin_z")
        above = sum(v >= oz for v in best.values()) if best and oz is not None else None
        rows.append([t.split(":", 1)[-1], *[_f(r["transfer"].get(m)) for m in ORACLE_METRICS], _f(top),
                     "–" if above is None else f"{above} of {len(best)}", ""])
    b = oracle.get("budget") or {}
    return {"title": title, "paragraphs": [
        f"The learnability screen's in-task oracle of each target ({b.get('instances', '?')} of the target's own "
        f"instances, learning rate {b.get('learning_rate', '?')}; screen folder `{oracle.get('screen')}`), "
        "evaluated on the same examples as every source: an upper reference for what training can teach the "
        "target at this scale. Transfer is signed so that higher is better (NLL: base minus trained). Not a "
        "source: it is never ranked or scored."],
        "tables": [(["target", *[f"oracle {m}" for m in ORACLE_METRICS], "best source margin_z",
                     "sources at or above the oracle", "note"], rows)]}


def _targets_section(d: dict[str, Any]) -> dict[str, Any]:
    """How the targets were chosen: the screen rule, then the cost rule with the cost of every choice."""
    from .v2_cost import cost_lines

    rule = d["rule"]
    paras = [f"Targets by the pre-registered rule over the learnability screen `{d.get('screen')}`: "
             f"{len(rule['passed'])} of {rule['n_candidates']} candidates passed"
             f"{'' if rule['final'] else ' so far (' + str(len(rule['pending'])) + ' pending: NOT final)'}; the rule "
             f"gives {len(rule['targets'])}, the cost rule keeps {len(d['targets'])}."
             + (" Decided before the first cell and frozen in `targets.json`." if d.get("frozen_at") or d.get("frozen")
                else "")]
    paras += rule.get("notes", [])
    if d.get("budget"):  # the training budget from the screen's learning curve (frozen with the targets)
        from .v2_budget import budget_lines

        paras += [line.strip() for line in budget_lines(d["budget"])]
    paras += [line.strip() for line in cost_lines(d["cost"])]
    return {"title": "Targets and cost", "paragraphs": paras}


def _sources_table(sources: list[dict[str, Any]]) -> tuple[list[str], list[list[str]]]:
    """Each source with its keywords and examples, and (matrix v2) the rule that chose it, for which targets."""
    head = ["source", "keywords", "examples"]
    rule = len({(s.get("chosen_by") or {}).get("rule") for s in sources}) > 1  # one rule (v1's spread): no column
    rows = []
    for s in sources:
        row = [s["id"], ", ".join(s["keywords"]), str(s["n_examples"])]
        if rule:
            by = s.get("chosen_by") or {}
            targets = ", ".join(t.split(":", 1)[-1] for t in by.get("targets", []))
            row.append(f"{by.get('rule', '')}{' (' + targets + ')' if targets else ''}")
        rows.append(row)
    return (head + (["chosen by"] if rule else []), rows)


def _compute_line(results: dict[str, Any]) -> str:
    c = results.get("compute") or {}
    return (f"Compute recorded in the cells: {c.get('trainings', 0)} trainings, {c.get('train_seconds', 0) / 60:.1f} "
            f"min ({c.get('seconds_per_training') or '–'} s each); {c.get('evaluations', 0)} evaluations of "
            f"{c.get('eval_examples', 0)} examples, {c.get('eval_seconds', 0) / 60:.1f} min "
            f"({c.get('seconds_per_eval_example') or '–'} s per example).")


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

"""The experiment report: its sections in reading order, and the files written for it.

At a glance first: the forest plot of each INSTA variant's paired difference from each baseline, the per-target
table of the primary metric, the compact verdict table. Then the experimenters' notes, the detailed comparisons,
the other metrics, the selections (method x method overlap), the setting, and the run's provenance last.
"""
from __future__ import annotations

import base64
from pathlib import Path
from typing import Any, Callable

from ..util.paths import atomic_write_bytes, atomic_write_json, atomic_write_text
from . import tables as tb
from .render import render_html, render_markdown
from .summary import summarize

NOTES_FILE = "notes.md"  # hand-written interpretation in an experiment's output folder, shown after the verdict
FIGURES = ("differences.png", "per_target_primary.png", "per_target_gold_logprob.png", "selection_overlap.png")


def glance_sections(results: dict[str, Any], summary: dict[str, Any], images: dict[str, str]) -> list[dict]:
    """The figure, the per-target table and the verdict table, with the banners a reader must see first."""
    lead = {"title": "At a glance", "paragraphs": tb.status_lines(results) + [
        "Each INSTA variant minus each baseline on the primary metric and on the gold answer's log-probability, "
        "averaged over the targets, with paired bootstrap confidence intervals."]}
    if "differences.png" in images:
        lead["images"] = ["differences.png"]
    table = {"title": "Primary metric per target", "level": 3, "paragraphs": [
        tb.primary_definition(summary) + " Seeded methods: mean ± sd over seeds. The average row averages each "
        "target's primary metric."], "tables": [tb.main_table(summary, results)]}
    verdict = {"title": "Verdict", "level": 3, "tables": [tb.verdict_table(summary)],
               "footnotes": [tb.interval_sentence(summary), *tb.significant_lines(summary)]}
    return [lead, table, verdict]


def comparison_sections(results: dict[str, Any], summary: dict[str, Any], images: dict[str, str]) -> list[dict]:
    """The paired comparisons in full, the scores with their CIs, and every secondary metric."""
    secs: list[dict[str, Any]] = [{
        "title": "Paired comparisons", "paragraphs": [
            "Difference of the primary metric (method minus baseline), averaged over targets; INSTA variants "
            "against every baseline, the other methods against random and all. Per-target rows below."],
        "tables": [tb.comparison_table(summary, "average")],
        "details": ("per-target comparisons", tb.comparison_table(summary, "per-target"))}]
    if "per_target_primary.png" in images:
        secs.append({"title": "Scores per target", "level": 3, "images": ["per_target_primary.png"]})
    for metric in tb.SECONDARY:
        if not any(metric in by_group for row in summary["table"].values() for by_group in row.values()):
            continue  # e.g. per-character predictions in cells that predate them
        secs.append({"title": tb.METRIC_NAMES.get(metric, metric), "level": 3,
                     "tables": [tb.main_table(summary, results, metric)]})
    sec: dict[str, Any] = {"title": "Gold log-probability", "level": 3}
    if "per_target_gold_logprob.png" in images:
        sec["images"] = ["per_target_gold_logprob.png"]
    second = summary.get("secondary")
    if second and second["comparisons"]:
        name = tb.METRIC_NAMES.get(second["metric"], second["metric"])
        sec["paragraphs"] = [
            f"Secondary comparison on {name} (higher is better): it moves with training effects too small to change "
            "which option wins, so it shows whether a selection taught the target's answers at all. Same paired "
            "bootstrap as above; INSTA variants against every baseline, averaged over targets."]
        sec["tables"] = [tb.comparison_table(summary, "average", second["comparisons"])]
        sec["details"] = (f"per-target comparisons on {name}",
                          tb.comparison_table(summary, "per-target", second["comparisons"]))
    return secs + [sec]


def setting_sections(results: dict[str, Any], summary: dict[str, Any], images: dict[str, str]) -> list[dict]:
    """Selections, targets, methods, pool, trained models, the P3 table and the run's provenance."""
    sel: dict[str, Any] = {"title": "Selections", "paragraphs": [
        "How much the methods' selections overlap: the Jaccard index of the selected source tasks (shared / "
        "either), averaged over targets; each seed of a seeded method is its own row. `all` (every pool unit) is "
        "left out."], "tables": [tb.overlap_table(summary["selection_overlap"])],
        "details": ("selected source tasks per target and method", tb.selections_table(results))}
    if "selection_overlap.png" in images:
        sel["images"] = ["selection_overlap.png"]
    removed = (results.get("pool") or {}).get("removed", [])
    secs = [sel, {"title": "Targets", "tables": [tb.targets_table(results, summary)]},
            {"title": "Methods and what they consumed", "tables": [tb.methods_table(summary)]},
            {"title": "Source pool", "paragraphs": tb.pool_lines(results),
             "details": ("removed units and why", (["task", "reason"], [[x["task"], x["reason"]] for x in removed]))},
            {"title": "Trained models", "tables": [tb.training_table(results)]}]
    p3 = results.get("p3_table")
    if p3:
        paras = [f"INSTA on P3 (no training: P3 instances are not available offline): the top-{p3['k']} of the "
                 f"{p3['pool_size']}-dataset T0 training pool for each T0 held-out target. {p3.get('anli', '')}. "
                 "Scores in brackets: mean cosine for mean aggregation; for top-k vote, the share of the top-10 "
                 "votes of the target's instructions (0.000 = no vote; such ties are ranked by mean cosine)."]
        if p3.get("note"):
            paras.append(p3["note"])
        secs.append({"title": "P3 selection table", "paragraphs": paras, "tables": [tb.p3_rows(p3)]})
    run = tb.run_lines(results)
    if run:
        secs.append({"title": "Run", "paragraphs": run})
    return secs


def build_sections(results: dict[str, Any], summary: dict[str, Any], images: dict[str, str]) -> list[dict[str, Any]]:
    """The report as sections of paragraphs, tables and images (see :mod:`insta.report.render`); an image is
    referenced only when it is in ``images``."""
    return [*glance_sections(results, summary, images), *comparison_sections(results, summary, images),
            *setting_sections(results, summary, images)]


def figures(results: dict[str, Any], summary: dict[str, Any]) -> dict[str, bytes]:
    """The report's PNG figures by file name (:data:`FIGURES`)."""
    from . import plots

    makers = {"differences.png": lambda: plots.forest_figure(summary, results["name"]),
              "per_target_primary.png": lambda: plots.per_target_figure(summary, results),
              "per_target_gold_logprob.png": lambda: plots.per_target_figure(summary, results, "gold_logprob"),
              "selection_overlap.png": lambda: plots.overlap_figure(summary["selection_overlap"])}
    return {name: plots.png(makers[name]()) for name in FIGURES}


def notes_section(out_dir: Path) -> dict[str, Any] | None:
    """The experimenters' hand-written reading of the numbers (``notes.md`` next to them), or None."""
    notes = out_dir / NOTES_FILE
    if not notes.is_file():
        return None
    paras = [p.strip() for p in notes.read_text(encoding="utf-8").split("\n\n") if p.strip()]
    return {"title": "Reading these results", "paragraphs": paras}


def write_report(results: dict[str, Any], out_dir: str | Path, log: Callable[[str], None] = lambda m: None,
                 plots: bool = True, summary: dict[str, Any] | None = None) -> dict[str, Path]:
    """Write ``results.json`` (with the summary), ``results.md``, the PNG figures and ``report.html`` into
    ``out_dir``; a hand-written ``notes.md`` there is included after the verdict."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    summary = summary or summarize(results)
    results = {**results, "summary": summary}
    images: dict[str, str] = {}
    paths: dict[str, Path] = {}
    for name, data in (figures(results, summary) if plots else {}).items():
        atomic_write_bytes(out / name, data)
        images[name] = base64.b64encode(data).decode("ascii")
        paths[name] = out / name
    title = f"insta experiment: {results['name']}"
    sections = build_sections(results, summary, images)
    notes = notes_section(out)
    if notes:
        sections.insert(3, notes)
    atomic_write_json(out / "results.json", results, indent=None)  # per-example arrays: keep it compact
    atomic_write_text(out / "results.md", render_markdown(title, sections))
    atomic_write_text(out / "report.html", render_html(title, sections, images))
    paths.update({"results.json": out / "results.json", "results.md": out / "results.md",
                  "report.html": out / "report.html"})
    log(f"report: {', '.join(str(p) for p in paths.values())}")
    return paths


def load_results(path: str | Path) -> dict[str, Any]:
    """A results.json (one-line error when unreadable), with cells of earlier formats read in today's form
    (:func:`insta.engine.cells.upgrade_results`)."""
    from ..engine.cells import upgrade_results
    from ..util.fileio import load_json

    return upgrade_results(load_json(path, "results file"))


__all__ = ["FIGURES", "NOTES_FILE", "build_sections", "figures", "load_results", "notes_section", "write_report"]

"""The report's figures: every number with its confidence interval, axes that show all of it.

* :func:`forest_figure`: the lead figure, each INSTA variant's paired difference from each baseline (average over
  targets) with its CI, for the primary and the secondary metric.
* :func:`per_target_figure`: one panel per target (+ the average): each method's score with its own bootstrap CI,
  the seeds of a seeded method as dots, chance as a dashed line.
* :func:`overlap_figure`: method x method Jaccard overlap of the selected source tasks.

Each ``*_figure`` returns a matplotlib figure (tests inspect the axes); :func:`png` turns one into PNG bytes.
Axis limits are matplotlib's automatic ones over everything drawn, so nothing is clipped.
"""
from __future__ import annotations

import io
import math
from typing import Any

from .tables import METRIC_NAMES, short_target

GREY = "#8c8c8c"


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def png(fig) -> bytes:
    """A figure as PNG bytes (110 dpi, tight box); the figure is closed."""
    plt = _pyplot()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110, bbox_inches="tight", metadata={"Software": None})
    plt.close(fig)
    return buf.getvalue()


def _colors(names: list[str]) -> dict[str, str]:
    """One colour per method group, the same in every figure; the untrained base model grey."""
    plt = _pyplot()
    cycle = [c for c in plt.get_cmap("tab10").colors if len(set(c)) > 1]  # tab10 without its grey
    others = [n for n in names if n != "base"]
    return {"base": GREY, **{n: cycle[i % len(cycle)] for i, n in enumerate(others)}}


def _forest_rows(comps: list[dict[str, Any]]) -> dict[tuple[str, str], float]:
    """The y position of each (method, baseline) row: grouped by baseline, a gap between groups."""
    pos: dict[tuple[str, str], float] = {}
    y = 0.0
    for b in dict.fromkeys(c["baseline"] for c in comps):
        for c in comps:
            if c["baseline"] == b and (c["method"], b) not in pos:
                pos[(c["method"], b)] = y
                y += 1
        y += 0.6
    return pos


def _forest_panel(ax, comps: list[dict[str, Any]], rows: dict[tuple[str, str], float], colors: dict[str, str],
                  title: str) -> None:
    """One forest panel: the difference with its CI per row; the seed sd of a seeded baseline as a grey band
    around zero."""
    bands: dict[str, list[float]] = {}
    for c in comps:
        r, y = c["average"], rows.get((c["method"], c["baseline"]))
        if not r or y is None:
            continue
        filled = r["verdict"] in ("better", "worse")
        col = colors[c["method"]]
        ax.plot([r["low"], r["high"]], [y, y], color=col, lw=2, solid_capstyle="butt")
        ax.plot([r["diff"]], [y], "o", ms=6, color=col, mfc=col if filled else "white", mew=1.5, zorder=3)
        if r.get("baseline_seed_sd"):
            bands.setdefault(c["baseline"], [r["baseline_seed_sd"], y, y])[2] = y
    for sd, top, bottom in bands.values():
        ax.fill_betweenx([top - 0.4, bottom + 0.4], -sd, sd, color=GREY, alpha=0.2, lw=0)
    ax.axvline(0, color="black", lw=0.8)
    ax.tick_params(axis="x", labelsize=7)
    ax.set_title(title, fontsize=9)
    ax.grid(axis="x", lw=0.3, alpha=0.5)


def forest_figure(summary: dict[str, Any], name: str = ""):
    """Each focus method's paired difference from each baseline, averaged over targets, with its CI (filled dot:
    the CI excludes zero); a second panel for the secondary metric, on the same rows."""
    plt = _pyplot()
    primary = [c for c in summary["comparisons"] if c.get("focus", True)]
    second = summary.get("secondary") or {}
    panels = [(primary, "primary metric (difference)")]
    if second.get("comparisons"):
        panels.append((second["comparisons"], f"{METRIC_NAMES.get(second['metric'], second['metric'])} "
                                              "(difference, nats)"))
    rows = _forest_rows([c for comps, _ in panels for c in comps])
    fig, axes = plt.subplots(1, len(panels), figsize=(1.8 + 3.9 * len(panels), 1.2 + 0.26 * max(1, len(rows))),
                             squeeze=False, sharey=True)
    colors = _colors(summary["groups"])
    for ax, (comps, title) in zip(axes[0], panels):
        _forest_panel(ax, comps, rows, colors, title)
    top = max(rows.values(), default=0.0)
    axes[0][0].set_ylim(top + 0.8, -0.8)
    axes[0][0].set_yticks(list(rows.values()), [f"{m} vs {b}" for m, b in rows], fontsize=7)
    conf = int(round(summary["confidence"] * 100))
    fig.suptitle(f"{name}: each INSTA variant minus each baseline, average over targets, {conf}% paired bootstrap "
                 "CI\n(filled: CI excludes 0; grey band: ± the baseline's sd over seeds)", fontsize=9)
    fig.tight_layout()
    return fig


def _per_target_panel(ax, entries: list[tuple[str, dict[str, Any] | None, list[float] | None]],
                      colors: dict[str, str], chance: float | None, title: str) -> None:
    for y, (g, e, ci) in enumerate(entries):
        if not e:
            continue
        col = colors[g]
        if ci and all(math.isfinite(v) for v in ci):
            ax.plot(ci, [y, y], color=col, lw=2, solid_capstyle="butt")
        ax.plot([e["mean"]], [y], "o", ms=5, color=col, zorder=3)
        if len(e.get("values", [])) > 1:
            ax.plot(e["values"], [y] * len(e["values"]), "|", ms=8, color="black", zorder=4)
    if chance is not None:
        ax.axvline(chance, ls="--", lw=0.8, color="black")
    ax.set_yticks(range(len(entries)), [g for g, _, _ in entries], fontsize=7)
    ax.set_ylim(len(entries) - 0.5, -0.5)
    ax.tick_params(axis="x", labelsize=7)
    ax.set_title(title, fontsize=8)
    ax.grid(axis="x", lw=0.3, alpha=0.5)


def per_target_figure(summary: dict[str, Any], results: dict[str, Any], metric: str | None = None):
    """One panel per target (+ the average for the primary metric): each method's score with its CI; seeds as
    ticks; chance dashed. ``metric`` None: each target's primary metric."""
    plt = _pyplot()
    groups = summary["groups"]
    key = "primary" if metric is None else metric
    cis = (summary.get("method_intervals") or {}).get(key, {})
    panels = [t["id"] for t in results["targets"]] + ([None] if metric is None else [])
    ncol = min(4, len(panels))
    nrow = math.ceil(len(panels) / ncol)
    fig, axes = plt.subplots(nrow, ncol, figsize=(3.3 * ncol, 0.6 + 0.2 * len(groups) * nrow + 0.5 * nrow),
                             squeeze=False)
    colors = _colors(groups)
    for ax, tid in zip(axes.flat, panels):
        if tid is None:
            entries = [(g, summary["average"].get(g), cis.get("average", {}).get(g)) for g in groups]
            _per_target_panel(ax, entries, colors, None, "average (primary metrics)")
            continue
        m = metric or summary["primary"][tid]
        entries = [(g, summary["table"][tid][g].get(m), cis.get(tid, {}).get(g)) for g in groups]
        tgt = next(t for t in results["targets"] if t["id"] == tid)
        chance = tgt.get("chance") if m != "gold_logprob" else None
        _per_target_panel(ax, entries, colors, chance, f"{short_target(tid)}: {m}")
    for ax in list(axes.flat)[len(panels):]:
        ax.axis("off")
    conf = int(round(summary["confidence"] * 100))
    legend = "ticks: seeds" + ("" if metric == "gold_logprob" else "; dashed: chance")
    fig.suptitle(f"{results['name']}: {'primary metric' if metric is None else METRIC_NAMES.get(metric, metric)} "
                 f"per target, {conf}% bootstrap CI over examples ({legend})", fontsize=9)
    fig.tight_layout()
    return fig


def overlap_figure(overlap: dict[str, Any]):
    """Method x method mean Jaccard overlap of the selected source tasks (1 = the same tasks on every target)."""
    import numpy as np

    plt = _pyplot()
    labels = overlap["labels"]
    fig, ax = plt.subplots(figsize=(1.6 + 0.5 * max(1, len(labels)), 1.2 + 0.45 * max(1, len(labels))))
    if not labels:
        ax.text(0.5, 0.5, "no selections", ha="center")
        ax.axis("off")
        return fig
    mat = np.array([[np.nan if v is None else v for v in row] for row in overlap["jaccard"]], dtype=float)
    im = ax.imshow(mat, cmap="Blues", vmin=0, vmax=1)
    ax.set_xticks(range(len(labels)), labels, rotation=60, ha="right", fontsize=7)
    ax.set_yticks(range(len(labels)), labels, fontsize=7)
    for i in range(len(labels)):
        for j in range(len(labels)):
            if math.isfinite(mat[i, j]):
                ax.text(j, i, f"{mat[i, j]:.2f}", ha="center", va="center", fontsize=6,
                        color="white" if mat[i, j] > 0.6 else "black")
    cb = fig.colorbar(im, ax=ax, fraction=0.046)
    cb.ax.tick_params(labelsize=7)
    ax.set_title("Overlap of the selected source tasks\n(Jaccard, mean over targets)", fontsize=9)
    fig.tight_layout()
    return fig


__all__ = ["forest_figure", "overlap_figure", "per_target_figure", "png"]

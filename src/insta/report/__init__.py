"""The comparison report of an experiment: results JSON, Markdown, figures and a self-contained HTML page.

* :mod:`insta.report.summary`: every number (metrics per target and method, averages, paired comparisons) from
  the cells' per-example arrays.
* :mod:`insta.report.stats`: bootstrap resamples, percentile and BCa intervals, p-values (also used by
  :mod:`insta.matrix.scoring`).
* :mod:`insta.report.tables` and :mod:`insta.report.plots`: what a reader sees.
* :mod:`insta.report.render`: Markdown and HTML from one Jinja2 template (also used by the transfer report).
* :mod:`insta.report.document`: the experiment report's sections in reading order and its files.
"""
from __future__ import annotations

from .document import FIGURES, NOTES_FILE, build_sections, load_results, notes_section, write_report
from .render import markdown_to_html, render_html, render_markdown
from .summary import DEFAULT_BASELINES, NORMALISATIONS, metric_on, primary_metric_of, selection_overlap, summarize
from .tables import (METRIC_NAMES, SECONDARY, comparison_table, compute_line, main_table, primary_definition,
                     verdict_table)

__all__ = ["DEFAULT_BASELINES", "FIGURES", "METRIC_NAMES", "NORMALISATIONS", "NOTES_FILE", "SECONDARY",
           "build_sections", "comparison_table", "compute_line", "load_results", "main_table", "markdown_to_html",
           "metric_on", "notes_section", "primary_definition", "primary_metric_of", "render_html", "render_markdown",
           "selection_overlap", "summarize", "verdict_table", "write_report"]

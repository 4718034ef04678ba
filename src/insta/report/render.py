"""Markdown and HTML from one source: the Jinja2 template ``templates/report.md.j2`` renders a report's sections
to Markdown; the HTML page is that Markdown converted by markdown-it-py (CommonMark + tables) inside
``templates/page.html.j2``, with the figures inlined as data URIs (the page is self-contained).

A report is a title and a list of sections: ``{"title", "level" (2), "paragraphs", "images", "tables",
"details", "footnotes"}``, rendered in that order; paragraphs and footnotes are Markdown (``**bold**``, ``code``),
tables ``(header, rows)`` of strings, ``details`` a ``(label, (header, rows))`` table folded away, images file
names. Text from data never becomes HTML: ``<`` is
written as ``&lt;`` in both renderings (:func:`md_text`).
"""
from __future__ import annotations

import re
from functools import lru_cache
from typing import Any

_TEMPLATES = "templates"


def md_text(text: Any) -> str:
    """Text for the Markdown source: ``<`` escaped, so no raw HTML from data reaches either rendering."""
    return str(text).replace("<", "&lt;")


def md_cell(text: Any) -> str:
    """A table cell: :func:`md_text`, ``|`` escaped and on one line."""
    return md_text(text).replace("|", "\\|").replace("\r", " ").replace("\n", " ")


@lru_cache(maxsize=1)
def _environment():
    import jinja2

    env = jinja2.Environment(loader=jinja2.PackageLoader("insta.report", _TEMPLATES), trim_blocks=True,
                             lstrip_blocks=True, keep_trailing_newline=True, autoescape=jinja2.select_autoescape(
                                 enabled_extensions=("html.j2",), default_for_string=False))
    env.filters["md"] = md_text
    env.filters["cell"] = md_cell
    return env


def render_markdown(title: str, sections: list[dict[str, Any]]) -> str:
    """The report as Markdown (tables as GitHub pipe tables, folded tables as ``<details>``)."""
    text = _environment().get_template("report.md.j2").render(title=title, sections=sections)
    return re.sub(r"\n{3,}", "\n\n", text).strip() + "\n"


@lru_cache(maxsize=1)
def _markdown_it():
    from markdown_it import MarkdownIt

    return MarkdownIt("commonmark", {"html": True}).enable("table")


def markdown_to_html(markdown: str, images: dict[str, str] | None = None) -> str:
    """HTML for the Markdown of :func:`render_markdown`; an image whose file name is in ``images`` (name -> base64
    PNG) gets the data inline."""
    md = _markdown_it()
    tokens = md.parse(markdown)
    for tok in tokens:
        for child in tok.children or []:
            src = child.attrGet("src") if child.type == "image" else None
            if src in (images or {}):
                child.attrSet("src", f"data:image/png;base64,{images[src]}")
    return md.renderer.render(tokens, md.options, {})


def render_html(title: str, sections: list[dict[str, Any]], images: dict[str, str]) -> str:
    """The self-contained HTML page of the same report as :func:`render_markdown`."""
    import markupsafe

    body = markdown_to_html(render_markdown(title, sections), images)
    return _environment().get_template("page.html.j2").render(title=title, body=markupsafe.Markup(body))


__all__ = ["markdown_to_html", "md_cell", "md_text", "render_html", "render_markdown"]

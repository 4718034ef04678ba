"""Identification results as tables: Markdown (:func:`format_markdown`) and the rows of ``insta eval-selection``'s
terminal table (:func:`identification_table`)."""
from __future__ import annotations

from typing import Any, Iterable, Mapping, Sequence


def format_markdown(result: Mapping[str, Any], ks: Iterable[int] = (1, 5), macro: bool = False) -> str:
    """The result as a Markdown table: one row per (group, aggregation), top-k per encoder (in %).

    Every query counts (ambiguous ones too: a tie is a miss); when some are ambiguous, a second column per
    figure gives the unambiguous queries alone. ``macro=True`` reports the mean over units of each unit's
    accuracy instead of the mean over queries.
    """
    ks = list(ks)
    head, rows = identification_table(result, ks, macro)
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    lines += ["| " + " | ".join(r) + " |" for r in rows]
    return "\n".join(lines)


def identification_table(result: Mapping[str, Any], ks: Sequence[int] = (1, 5),
                         macro: bool = False) -> tuple[list[str], list[list[str]]]:
    """Header and rows of :func:`format_markdown` (also the terminal table of ``insta eval-selection``)."""
    prefix = "macro_top" if macro else "top"
    labels = [e["label"] for e in result["encoders"]]
    second = any(d.get("n_ambiguous") for d in result["groups"].values())
    head = ["group (queries / units)", "aggregation"]
    for lab in labels:
        for k in ks:
            head.append(f"{lab} {'macro ' if macro else ''}top-{k}")
            if second:
                head.append(f"{lab} {'macro ' if macro else ''}top-{k} unambiguous")

    def pct(s: Mapping[str, Any], key: str) -> str:
        return "–" if s.get(key) is None else f"{100 * s[key]:.1f}"

    rows = []
    for g, data in result["groups"].items():
        amb = f", {data['n_ambiguous']} ambiguous" if data.get("n_ambiguous") else ""
        for agg in result["aggregations"]:
            cells = [f"{g} ({data['n_queries']} / {data['n_units']}{amb})", agg]
            for lab in labels:
                s = data["by_encoder"][lab][agg]
                for k in ks:
                    cells.append(pct(s, f"{prefix}{k}"))
                    if second:
                        cells.append(pct(s.get("unambiguous") or {}, f"{prefix}{k}"))
            rows.append(cells)
    return head, rows


__all__ = ["format_markdown", "identification_table"]

"""Selection accuracy as task identification: leave one instruction out, can its own task be found again?

For every query (an instruction of a unit that has at least two distinct instructions), the unit's other
instructions and every other unit of the catalog are scored against the query exactly as INSTA scores source
tasks against a target: the instructions are embedded by :class:`insta.methods.Selector` and aggregated by
:func:`insta.selection.aggregate` (``mean`` / ``max`` / ``topk-vote``), with the query text itself masked out.
Top-1 = the query's own unit ranks first; top-5 = among the first five. Ties count against the query (a unit
tied with the right one is ranked above it).

A unit is a task family by default (a P3 dataset; a BIG-bench parent with all its subtasks, which often share
one description), or a task id. A query whose exact text also belongs to another unit (P3's NLI datasets share
their templates word for word) is **ambiguous**: no encoder can tell its units apart, so its own unit at best
ties and it counts as a miss. Ambiguous queries are asked by default; every summary also reports the
unambiguous queries alone (``unambiguous``), and ``drop_ambiguous=True`` leaves them out entirely.

With aligned encoders (``insta align`` output), only instructions that alignment never saw are queries, and
they are reported by group: ``heldout`` (the unit was trained on, this instruction was held out), ``excluded``
(an evaluation target kept out of alignment), ``unseen`` (a unit outside the alignment data, e.g. another
catalog), and ``all``.
"""
# long module: leave-one-out ranks, queries and summaries share the Query record, read together
from __future__ import annotations

import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np

from ..align.data import catalog_units
from ..catalogs.base import Catalog
from ..errors import InstaError
from ..records import Task
from ..methods import Selector
from ..selection import AGGREGATIONS, aggregate, ranking_scores, scores_close

GROUPS = ("all", "heldout", "excluded", "unseen", "mixed")


@dataclass
class Query:
    unit: str
    text: str
    group: str = "all"
    ambiguous: bool = False  # its exact text is an instruction of another unit too


def leave_one_out_ranks(
    units: Mapping[str, Sequence[str]],
    encoder,
    queries: Sequence[Query],
    aggregations: Sequence[str] = AGGREGATIONS,
    vote_depth: int = 10,
    embeddings: np.ndarray | None = None,
    unit_bonus: np.ndarray | None = None,
) -> dict[str, np.ndarray]:
    """Rank (1 = best) of each query's own unit, per aggregation, with the query's own text masked out.

    ``units`` maps a unit to its instructions (the candidates); every query's text must be one of its unit's
    instructions. ``embeddings`` (optional) are the normalised vectors of the flattened instructions, in order;
    otherwise the instructions are embedded by a :class:`~insta.methods.Selector` over the units.
    ``unit_bonus`` (optional, queries x units in ``units`` order) is added to every aggregated score, as
    ``output_space_weight`` adds the output-space cosine in :class:`insta.methods.InstaMethod`.
    """
    for agg in aggregations:
        if agg not in AGGREGATIONS:
            raise InstaError(f"unknown aggregation {agg!r} (choose from {', '.join(AGGREGATIONS)})")
    names = list(units)
    texts, owner = [], []
    for ui, u in enumerate(names):
        for t in units[u]:
            texts.append(t)
            owner.append(ui)
    if not texts:
        raise InstaError("no instructions to evaluate against")
    owner_arr = np.asarray(owner, dtype=np.int64)
    pos = {(names[o], t): i for i, (o, t) in enumerate(zip(owner, texts))}
    qcols = []
    for q in queries:
        col = pos.get((q.unit, q.text))
        if col is None:
            raise InstaError(f"query {q.text[:60]!r} is not an instruction of unit {q.unit!r}")
        qcols.append(col)
    unit_index = {u: i for i, u in enumerate(names)}
    qunits = np.asarray([unit_index[q.unit] for q in queries], dtype=np.int64)
    qcols_arr = np.asarray(qcols, dtype=np.int64)
    out = {agg: np.zeros(0, dtype=np.int64) for agg in aggregations}
    if not len(queries):
        return out
    if embeddings is None:
        selector = Selector(Catalog("units", [Task(u, list(units[u]), "units") for u in names if units[u]]), encoder)
        emb = selector.embed(texts)
    else:
        emb = np.asarray(embeddings, dtype=np.float32)
    rows = np.arange(len(queries))
    sim = (emb[qcols_arr] @ emb.T).astype(np.float64)  # (Q, N)
    sim[rows, qcols_arr] = np.nan  # the held-out text is not a candidate
    for agg in aggregations:
        scores = aggregate(sim, owner_arr, len(names), agg, vote_depth, per_row=True)
        if unit_bonus is not None:
            scores = scores + unit_bonus
        own = scores[rows, qunits][:, None]
        beats = (scores > own) | scores_close(scores, own)
        out[agg] = beats.sum(axis=1)  # every unit at least as good as the own unit, itself included
    return out


def method_leave_one_out_ranks(method: Any, units: Mapping[str, Sequence[str]], queries: Sequence[Query]
                               ) -> np.ndarray:
    """Rank (1 = best) of each query's own unit under any instructions-only selection method.

    Per query, the method sees a pool of the units as tasks (the query's text removed from its own unit) and a
    target whose one instruction is the query, and ranks the whole pool as ``insta select --method`` would; a
    unit tied with the own unit ranks above it. The general (slower) path that :func:`leave_one_out_ranks`
    computes in one matrix product for INSTA; it gives lexical BM25 (or a user's method) the same queries.
    """
    if tuple(getattr(method, "consumes", ())) != ("instructions",):
        raise InstaError(f"identification asks instructions only; method {getattr(method, 'label', method)!r} "
                         f"reads {', '.join(getattr(method, 'consumes', ())) or 'something else'}")
    names = list(units)
    ranks = np.zeros(len(queries), dtype=np.int64)
    for i, q in enumerate(queries):
        if q.text not in units.get(q.unit, ()):
            raise InstaError(f"query {q.text[:60]!r} is not an instruction of unit {q.unit!r}")
        tasks = [Task(u, [t for t in units[u] if not (u == q.unit and t == q.text)], "units") for u in names]
        pool = Catalog("units", [t for t in tasks if t.instructions])
        target = Task("\x00identification-query", [q.text], "query")
        scores = ranking_scores(method, target, pool)
        own = scores.get(q.unit, float("-inf"))
        ranks[i] = sum(1 for u, v in scores.items() if v >= own and u != q.unit) + 1
    return ranks


def _summarise(ranks: np.ndarray, units: Sequence[str], ks: Sequence[int]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    if len(ranks) == 0:
        return {**{f"top{k}": None for k in ks}, "mrr": None}
    for k in ks:
        hit = ranks <= k
        out[f"top{k}"] = float(hit.mean())
        per_unit: dict[str, list[bool]] = {}
        for u, h in zip(units, hit):
            per_unit.setdefault(u, []).append(bool(h))
        out[f"macro_top{k}"] = float(np.mean([np.mean(v) for v in per_unit.values()]))
    out["mrr"] = float(np.mean(1.0 / ranks))
    return out


def alignment_info(encoder_name: str) -> dict | None:
    """The alignment metadata of an encoder given as a directory (``None`` for a plain encoder)."""
    from ..align import read_alignment_metadata

    path = Path(str(encoder_name)).expanduser()
    return read_alignment_metadata(path) if path.is_dir() else None


def make_queries(
    catalog: Catalog,
    units: Mapping[str, Sequence[str]],
    alignments: Sequence[Mapping[str, Any]] = (),
    *,
    unit: str = "family",
    drop_ambiguous: bool = False,
) -> tuple[list[Query], dict[str, int]]:
    """Queries = every instruction of a unit with >= 2 instructions that no aligned encoder saw, with its group
    and whether it is ambiguous (its text belongs to another unit too; left out with ``drop_ambiguous``)."""
    from ..align.data import AlignmentSplit

    text_units: dict[str, set[str]] = {}
    for u, texts in units.items():
        for t in texts:
            text_units.setdefault(t, set()).add(u)
    seen: set[str] = set()
    trained_units: list[set[str]] = []  # per alignment on this catalog (others only add seen texts)
    excluded_units: list[set[str]] = []
    for meta in alignments:
        split = AlignmentSplit.from_dict(meta["split"])
        seen |= split.seen_texts()
        if split.catalog != catalog.name:
            continue
        if split.unit == unit:
            trained_units.append(set(split.train))
        else:  # map the alignment's units to this call's units through their task ids
            trained_units.append({_unit_of_id(catalog, t, unit) for ts in split.unit_tasks.values() for t in ts
                                  if t in catalog})
        excluded_units.append({_unit_of_id(catalog, t, unit) for t in split.excluded if t in catalog})
    counts = {"n_single_instruction_units": 0, "n_seen_dropped": 0, "n_ambiguous": 0, "n_ambiguous_dropped": 0}
    queries = []
    for u, texts in units.items():
        if len(texts) < 2:
            counts["n_single_instruction_units"] += 1
            continue
        for t in texts:
            if t in seen:
                counts["n_seen_dropped"] += 1
                continue
            ambiguous = len(text_units[t]) > 1
            if ambiguous and drop_ambiguous:
                counts["n_ambiguous_dropped"] += 1
                continue
            counts["n_ambiguous"] += ambiguous
            if not alignments:
                group = "all"
            elif not trained_units:  # aligned on other catalogs only
                group = "unseen"
            elif all(u in tu for tu in trained_units):
                group = "heldout"
            elif all(u in eu for eu in excluded_units):
                group = "excluded"
            elif not any(u in tu for tu in trained_units):
                group = "unseen"
            else:
                group = "mixed"
            queries.append(Query(u, t, group, ambiguous))
    return queries, counts


def _unit_of_id(catalog: Catalog, task_id: str, unit: str) -> str:
    task = catalog.get(task_id)
    return task.family if unit == "family" else task.id


def encoder_label(name: str) -> str:
    path = Path(str(name)).expanduser()
    return path.name if path.is_dir() and alignment_info(str(path)) else str(name)


# long: mostly its docstring (what each option measures); one pass per column
def evaluate_identification(
    catalog: Catalog,
    encoders: Sequence[Any],
    *,
    unit: str = "family",
    aggregations: Sequence[str] = AGGREGATIONS,
    ks: Sequence[int] = (1, 5),
    vote_depth: int = 10,
    drop_ambiguous: bool = False,
    details: bool = False,
    format_aware: bool = False,
    output_space_weight: float = 0.0,
    methods: Sequence[Any] = (),
) -> dict[str, Any]:
    """Leave-one-instruction-out identification accuracy of each encoder on ``catalog``, side by side.

    ``encoders`` are encoder names/directories (loaded through :class:`insta.encoder.Encoder`, with its
    embedding cache), encoder objects (``encode`` and ``describe``) or plain ``SentenceTransformer`` objects.
    Queries are restricted to instructions that none of the aligned encoders among them saw during alignment
    (see :func:`make_queries`), so every encoder answers the same queries. Ambiguous queries count (a tie with
    another unit is a miss); each summary holds the same figures over the unambiguous queries alone under
    ``"unambiguous"``.

    The variants of :class:`insta.methods.InstaMethod` are asked the same queries: ``format_aware=True`` embeds
    every instruction, the held-out one included, with its task's output space (:mod:`insta.taskformat`);
    ``output_space_weight=w`` adds ``w`` x the cosine between the query unit's output space and each unit's.
    Both give the query its own task's answer format, as a target's is given in selection, so they measure
    what the variant sees, not instruction understanding alone. Which queries are ambiguous is decided on the
    plain instruction texts either way, so every variant answers the same queries.

    ``methods`` are further instructions-only selection methods (e.g. ``load_method("lexical")``), each a column
    asked the same queries through :func:`method_leave_one_out_ranks` (plain instructions; the aggregation
    rows repeat its one figure).
    """
    _check_options(catalog, encoders, methods, unit, ks, vote_depth, output_space_weight)
    t0 = time.perf_counter()
    units = catalog_units(catalog, unit)
    metas, labels, objs = _load_encoders(encoders)
    queries, counts = make_queries(catalog, units, metas, unit=unit, drop_ambiguous=drop_ambiguous)
    if not queries:
        raise InstaError(
            f"no query instruction in catalog {catalog.name!r}: identification needs tasks with two or more "
            "instructions that the aligned encoder(s) did not see"
        )
    present = [g for g in ("heldout", "excluded", "unseen", "mixed") if any(q.group == g for q in queries)]
    groups = present if len(present) == 1 else ["all", *present]  # "all" only when it differs from a group
    result: dict[str, Any] = {
        "catalog": catalog.name,
        "unit": unit,
        "n_units": len(units),
        "n_instructions": sum(map(len, units.values())),
        "n_queries": len(queries),
        **counts,
        "aggregations": list(aggregations),
        "vote_depth": vote_depth,
        "format_aware": bool(format_aware),
        "output_space_weight": float(output_space_weight),
        "encoders": [],
        "groups": {},
    }
    candidates, asked = _format_aware(catalog, unit, units, queries) if format_aware else (units, queries)
    spaces = unit_output_spaces(catalog, unit) if output_space_weight else {}
    all_ranks: dict[str, dict[str, np.ndarray]] = {}
    for label, enc in zip(labels, objs):
        t_enc = time.perf_counter()
        bonus = (output_space_weight * _output_space_cosines(spaces, list(units), queries, enc)
                 if output_space_weight else None)
        all_ranks[label] = leave_one_out_ranks(candidates, enc, asked, aggregations, vote_depth, unit_bonus=bonus)
        result["encoders"].append({**_encoder_info(enc), "label": label,
                                   "seconds": round(time.perf_counter() - t_enc, 2)})
    result["encoders"] += _method_columns(methods, units, queries, aggregations, all_ranks)
    for g in groups:
        result["groups"][g] = _group_summary(g, queries, all_ranks, aggregations, ks)
    if details:
        result["queries"] = [
            {"unit": q.unit, "group": q.group, "text": q.text, "ambiguous": q.ambiguous,
             "ranks": {label: {agg: int(r[agg][i]) for agg in aggregations} for label, r in all_ranks.items()}}
            for i, q in enumerate(queries)
        ]
    result["seconds"] = round(time.perf_counter() - t0, 2)
    return result


def _check_options(catalog: Catalog, encoders: Sequence[Any], methods: Sequence[Any], unit: str,
                   ks: Sequence[int], vote_depth: int, output_space_weight: float) -> None:
    """One clear error for options :func:`evaluate_identification` cannot use."""
    if unit not in ("family", "task"):
        raise InstaError(f"unknown unit {unit!r} (choose family or task)")
    if len(catalog) == 0:
        raise InstaError(f"catalog {catalog.name!r} has no tasks")
    if not encoders and not methods:
        raise InstaError("give at least one encoder or method")
    if (isinstance(output_space_weight, bool) or not isinstance(output_space_weight, (int, float))
            or not output_space_weight >= 0):
        raise InstaError(f"output_space_weight must be a number >= 0 (got {output_space_weight!r})")
    for name, values in (("top-k", ks), ("vote depth", [vote_depth])):
        for v in values:
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                raise InstaError(f"{name} must be a positive integer (got {v!r})")


def _method_columns(methods: Sequence[Any], units: Mapping[str, Sequence[str]], queries: Sequence[Query],
                    aggregations: Sequence[str], all_ranks: dict[str, dict[str, np.ndarray]]) -> list[dict[str, Any]]:
    """The ranks of each further selection method (added to ``all_ranks``) and its column's description."""
    columns = []
    for method in methods:
        t_enc = time.perf_counter()
        label = str(getattr(method, "label", None) or method.name)
        if label in all_ranks:
            raise InstaError(f"two columns are labelled {label!r}")
        ranks = method_leave_one_out_ranks(method, units, queries)
        all_ranks[label] = {agg: ranks for agg in aggregations}
        columns.append({"name": method.name, "label": label, "method": method.name,
                        "params": method.params(), "seconds": round(time.perf_counter() - t_enc, 2)})
    return columns


def unit_output_spaces(catalog: Catalog, unit: str = "family") -> dict[str, str | None]:
    """Unit -> the output space of its first task that has a known one (:func:`insta.taskformat.task_output_space`;
    ``None`` where none is known)."""
    from ..taskformat import task_output_space

    out: dict[str, str | None] = {}
    for task in catalog:
        u = _unit_of_id(catalog, task.id, unit)
        if out.get(u) is None:
            out[u] = task_output_space(task)
    return out


def _format_aware(catalog: Catalog, unit: str, units: Mapping[str, Sequence[str]], queries: Sequence[Query]
                  ) -> tuple[dict[str, list[str]], list[Query]]:
    """The candidates and the queries with every instruction carrying its task's output space."""
    from ..taskformat import format_aware_texts

    formatted: dict[tuple[str, str], str] = {}
    for task in catalog:
        u = _unit_of_id(catalog, task.id, unit)
        for plain, text in zip(task.instructions, format_aware_texts(task)):
            if isinstance(plain, str) and plain.strip():
                formatted.setdefault((u, plain.strip()), text.strip())
    cands = {u: list(dict.fromkeys(formatted[(u, t)] for t in texts)) for u, texts in units.items()}
    asked = [Query(q.unit, formatted[(q.unit, q.text)], q.group, q.ambiguous) for q in queries]
    return cands, asked


def _output_space_cosines(spaces: Mapping[str, str | None], names: Sequence[str], queries: Sequence[Query],
                          encoder: Any) -> np.ndarray:
    """Queries x units: cosine of the query unit's output space and each unit's, as the method computes it
    (:func:`insta.taskformat.output_space_cosines`); a query with an unknown space gets zeros."""
    from ..taskformat import embed_output_spaces, output_space_cosines

    vectors = embed_output_spaces(spaces.values(), encoder)
    out = np.zeros((len(queries), len(names)))
    for i, q in enumerate(queries):
        if spaces.get(q.unit):
            out[i] = output_space_cosines(spaces[q.unit], [spaces.get(u) for u in names], vectors)
    return out


def _load_encoders(encoders: Sequence[Any]) -> tuple[list[dict], list[str], list[Any]]:
    """The alignment metadata of the aligned ones, a unique label per encoder, and the encoder objects."""
    from ..encoder import as_text_encoder
    from ..methods.resources import get_encoder

    metas, labels, objs = [], [], []
    for enc in encoders:
        if isinstance(enc, (str, os.PathLike)):
            meta = alignment_info(str(enc))
            if meta is not None:
                metas.append(meta)
            objs.append(get_encoder(str(enc)))  # "hashing" is the dependency-free test encoder, as in select
            labels.append(encoder_label(str(enc)))
        else:
            enc = as_text_encoder(enc)
            objs.append(enc)
            labels.append(enc.describe().get("name", type(enc).__name__))
    if len(set(labels)) != len(labels):
        labels = [f"{lab}#{i + 1}" for i, lab in enumerate(labels)]
    return metas, labels, objs


def _encoder_info(enc: Any) -> dict[str, Any]:
    """An encoder's description, with its alignment recipe when it is an aligned encoder's directory."""
    info = dict(enc.describe())
    meta = alignment_info(str(info.get("path") or "")) if info.get("path") else None
    if meta:
        info["aligned"] = {
            "catalog": meta["catalog"]["name"], "pool": meta["catalog"].get("pool"),
            "objective": meta["config"]["objective"], "learning_rate": meta["training"]["learning_rate"],
            "best_epoch": meta["training"]["best_epoch"], "base_encoder": meta["config"]["base_encoder"],
        }
    return info


def _group_summary(group: str, queries: Sequence[Query], all_ranks: Mapping[str, Mapping[str, np.ndarray]],
                   aggregations: Sequence[str], ks: Sequence[int]) -> dict[str, Any]:
    """Top-k and MRR of one query group per encoder and aggregation, all queries and the unambiguous ones."""
    sel = np.asarray([group == "all" or q.group == group for q in queries])
    clear = sel & np.asarray([not q.ambiguous for q in queries])
    gunits = [q.unit for q, s in zip(queries, sel) if s]
    cunits = [q.unit for q, s in zip(queries, clear) if s]
    return {
        "n_queries": int(sel.sum()),
        "n_units": len(set(gunits)),
        "n_ambiguous": int(sel.sum() - clear.sum()),
        "by_encoder": {
            label: {agg: {**_summarise(r[agg][sel], gunits, ks),
                          "unambiguous": {"n_queries": int(clear.sum()), **_summarise(r[agg][clear], cunits, ks)}}
                    for agg in aggregations}
            for label, r in all_ranks.items()
        },
    }

"""P3 reader: promptsource templates as tasks, the way T0 counts datasets.

Layout: ``<root>/promptsource/templates/<dataset>/[<subset>/]templates.yaml`` (PyYAML with the ``!Template`` and
``!TemplateMetadata`` tags registered; promptsource itself is not needed).

* Task ids: the subsets of one dataset folder are grouped into one task named by the folder (``adversarial_qa``,
  ``duorc``, ``paws``, ``winogrande``, ...), except for the collections in :data:`COLLECTIONS`, whose subsets are
  distinct datasets: ``super_glue/rte``, ``glue/qqp``, ``kilt_tasks/hotpotqa``, ...
* Instructions: one per template, the input side of its ``jinja`` (before ``|||``) with ``{{ expr }}`` replaced by
  a placeholder named after the expression's main variable (``[premise]``, ``[answer_choices]``), ``{% ... %}``
  tags and comments removed, whitespace collapsed; identical instructions (the same template in several
  subsets) are kept once. ``task.meta["templates"]`` lists every template with its ``instruction``.
* Pools: ``t0_train`` (the 35 T0 training datasets, :data:`T0_TRAIN`) and ``t0_eval`` (the 11 held-out ones,
  :data:`T0_EVAL`); T0 names resolve through :data:`T0_ALIASES` (use :func:`t0_task_id`: the plain ``hotpot_qa``
  folder is its own task, while T0's ``hotpot_qa`` is the closed-book ``kilt_tasks/hotpotqa``). A pool task's
  category is its T0 cluster.
* Examples (option ``split``, default ``"val"``): rows in Hugging Face field names, one Example per (row,
  template), row-major. Sources, first found wins:

  1. ``<root>/p3/<task id with "/" replaced by "__">/<split>.jsonl``: rows for every template of the task;
     for a grouped task, ``<root>/p3/<folder>__<subset>/<split>.jsonl`` feeds only that subset's templates.
     A row with ``inputs_pretokenized`` is one already rendered by P3 (``insta data fetch p3 --instances``,
     :mod:`insta.fetch.p3`): it becomes one Example as it is (targets stripped; options = its
     ``answer_choices``), named by its ``template_id`` and ``p3_config``;
  2. built in: ``super_glue/rte`` and ``super_glue/wsc.fixed`` from the official SuperGLUE files
     ``<root>/superglue/{RTE,WSC}/<split>.jsonl``, converted to the HF fields.

  Rendering follows promptsource: the full jinja is rendered with the row plus ``answer_choices`` (the
  template's ``answer_choices`` Jinja rendered and split on ``|||``), then split on ``|||`` and stripped:
  ``input`` = first part, ``references`` = [second part], ``options`` = the answer choices (``None`` when the
  template has none), ``label`` = the target's index in them. Rows whose target renders empty are skipped; the
  ``choice`` filter is seeded per (template, row) so renders are reproducible.
* Templates are untrusted: they render in Jinja's sandbox. A template that reaches outside it (``__``-attributes,
  function globals, unsafe callables), is malformed, or fails on a row stops the loading with one
  :class:`~insta.errors.InstaError` line naming its ``templates.yaml`` and template id (see :func:`render_error`).
"""
from __future__ import annotations

import json
from collections import Counter
from pathlib import Path
from typing import Callable, Iterator

from ..errors import InstaError
from ..records import Example, Task
from .base import Catalog
from .index_cache import cached_parse
from .p3_templates import Renderer, parse_file, render_error, valid_summary

COLLECTIONS = frozenset({"glue", "super_glue", "kilt_tasks", "tweet_eval", "Zaid", "craffel"})

T0_CLUSTERS: dict[str, list[str]] = {
    "extractive_qa": ["adversarial_qa", "quoref", "ropes", "duorc"],
    "paraphrase": ["qqp", "mrpc", "paws"],
    "topic_classification": ["ag_news", "trec", "dbpedia"],
    "sentiment": ["imdb", "yelp", "amazon", "app_reviews", "rotten_tomatoes"],
    "closed_book_qa": ["wiki_qa", "hotpot_qa"],
    "summarization": ["multi_news", "gigaword", "samsum", "xsum", "cnn_daily_mail"],
    "multiple_choice_qa": ["cos_e", "dream", "quail", "social_iqa", "quartz", "wiqa", "cosmos_qa", "qasc",
                           "quarel", "sciq", "wiki_hop"],
    "structure_to_text": ["common_gen", "wiki_bio"],
    "nli": ["anli_r1", "anli_r2", "anli_r3", "cb", "rte"],
    "coreference": ["wsc", "winogrande"],
    "sentence_completion": ["copa", "hellaswag", "story_cloze"],
    "word_sense": ["wic"],
}
_EVAL_CLUSTERS = ("nli", "coreference", "sentence_completion", "word_sense")
T0_TRAIN: list[str] = [n for c, names in T0_CLUSTERS.items() if c not in _EVAL_CLUSTERS for n in names]
T0_EVAL: list[str] = [n for c in _EVAL_CLUSTERS for n in T0_CLUSTERS[c]]
T0_CLUSTER_OF: dict[str, str] = {n: c for c, names in T0_CLUSTERS.items() for n in names}

#: T0 dataset names -> task ids (names not listed are folder names already).
T0_ALIASES: dict[str, str] = {
    "qqp": "glue/qqp", "mrpc": "glue/mrpc", "dbpedia": "dbpedia_14", "yelp": "yelp_review_full",
    "amazon": "amazon_polarity", "cnn_daily_mail": "cnn_dailymail", "hotpot_qa": "kilt_tasks/hotpotqa",
    "social_iqa": "social_i_qa", "anli_r1": "anli", "anli_r2": "anli", "anli_r3": "anli",
    "rte": "super_glue/rte", "cb": "super_glue/cb", "copa": "super_glue/copa", "wic": "super_glue/wic",
    "wsc": "super_glue/wsc.fixed",
}

INDEX_VERSION = 2  # bump whenever the cached per-file summary changes shape or content


def t0_task_id(name: str) -> str:
    """The P3 task id of a T0 dataset name (``qqp`` -> ``glue/qqp``, ``hotpot_qa`` -> ``kilt_tasks/hotpotqa``)."""
    return T0_ALIASES.get(name, name)


# ---------------------------------------------------------------- parsing


def task_id_for(rel_dir: str) -> tuple[str, str | None]:
    """(task id, subset) for a templates folder relative to the templates root (``duorc/SelfRC``)."""
    parts = rel_dir.split("/")
    if len(parts) == 1:
        return parts[0], None
    folder, subset = parts[0], "/".join(parts[1:])
    return (rel_dir if folder in COLLECTIONS else folder), subset


def _templates_root(root: Path) -> Path:
    tdir = Path(root) / "promptsource" / "templates"
    if not tdir.is_dir():
        raise InstaError(
            f"P3 templates not found at {tdir}: copy promptsource's promptsource/templates/ folder there "
            "(github.com/bigscience-workshop/promptsource)"
        )
    return tdir


# ---------------------------------------------------------------- examples


def rte_row(row: dict) -> dict:
    """Official SuperGLUE RTE jsonl -> HF ``super_glue/rte`` fields."""
    label = {"entailment": 0, "not_entailment": 1}.get(row.get("label"), -1)
    return {"premise": row["premise"], "hypothesis": row["hypothesis"], "idx": row.get("idx", 0), "label": label}


def wsc_row(row: dict) -> dict:
    """Official SuperGLUE WSC jsonl -> HF ``super_glue/wsc.fixed`` fields."""
    tgt = row["target"]
    label = row.get("label")
    return {
        "text": row["text"], "span1_index": tgt["span1_index"], "span2_index": tgt["span2_index"],
        "span1_text": tgt["span1_text"], "span2_text": tgt["span2_text"], "idx": row.get("idx", 0),
        "label": -1 if label is None else int(bool(label)),
    }


BUILTIN_ROWS: dict[str, tuple[str, Callable[[dict], dict]]] = {
    "super_glue/rte": ("superglue/RTE", rte_row),
    "super_glue/wsc.fixed": ("superglue/WSC", wsc_row),
}


def read_jsonl(path: Path) -> Iterator[dict]:
    """Rows of a JSONL file; an :class:`InstaError` naming the file and line for a bad line."""
    with open(path, encoding="utf-8") as fh:
        for lineno, line in enumerate(fh, 1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except ValueError as err:
                raise InstaError(f"malformed JSON in {path} line {lineno}: {err}") from None
            if not isinstance(row, dict):
                raise InstaError(f"malformed row in {path} line {lineno}: expected a JSON object")
            yield row


def _row_sources(root: Path, task_id: str, templates: list[dict], split: str):
    """[(file, convert, templates)] feeding a task's examples."""
    base = Path(root) / "p3"
    whole = base / task_id.replace("/", "__") / f"{split}.jsonl"
    if whole.is_file():
        return [(whole, None, templates)]
    sources = []
    for subset in sorted({t["subset"] for t in templates if t["subset"]}):
        f = base / f"{task_id}__{subset}".replace("/", "__") / f"{split}.jsonl"
        if f.is_file() and "/" not in task_id:
            sources.append((f, None, [t for t in templates if t["subset"] == subset]))
    if sources:
        return sources
    if task_id in BUILTIN_ROWS:
        folder, convert = BUILTIN_ROWS[task_id]
        f = Path(root) / folder / f"{split}.jsonl"
        if f.is_file():
            return [(f, convert, templates)]
    return []


def prerendered_example(raw: dict, task_id: str, i: int, path: Path) -> Example:
    """The Example of a row fetched from the hub's P3 (:mod:`insta.fetch.p3`): its rendered input and target
    (stripped, as T0 strips them), its answer choices as options; the template named by the row."""
    inp, target, choices = raw.get("inputs_pretokenized"), raw.get("targets_pretokenized"), raw.get("answer_choices")
    if not isinstance(inp, str) or not isinstance(target, str) or not (
            choices is None or (isinstance(choices, list) and all(isinstance(c, str) for c in choices))):
        raise InstaError(f"malformed P3 row in {path} line {i + 1}: inputs_pretokenized and targets_pretokenized "
                         "must be strings, answer_choices a list of strings")
    options = [c.strip() for c in choices] if choices else None
    target = target.strip()
    tid = str(raw.get("template_id") or raw.get("p3_config") or "")
    return Example(
        id=f"{task_id}:{tid}:{raw.get('p3_config', '')}:{raw.get('row', i)}",
        input=inp.strip(), references=[target], options=options,
        label=options.index(target) if options and target in options else None,
        provenance={"task": task_id, "template_id": tid, "template_name": str(raw.get("template_name") or ""),
                    "p3_config": str(raw.get("p3_config") or ""), "row": raw.get("row", i), "file": str(path)},
    )


def _make_loader(task_id: str, sources: list, tdir: Path) -> Callable[[], Iterator[Example]]:
    def load() -> Iterator[Example]:
        renderer = Renderer()
        for path, convert, templates in sources:
            for i, raw in enumerate(read_jsonl(path)):
                if "inputs_pretokenized" in raw:  # a row fetched from the hub's P3, already rendered
                    yield prerendered_example(raw, task_id, i, path)
                    continue
                try:
                    row = convert(raw) if convert else raw
                except (KeyError, TypeError) as err:
                    raise InstaError(f"row {i} of {path} lacks field {err} needed for {task_id}") from None
                for tpl in templates:
                    try:
                        inp, target, options = renderer.apply(tpl, row, f"{tpl['id']}:{i}")
                    except Exception as err:  # refused by the sandbox, malformed, or cannot take this row
                        raise render_error(err, tpl, tdir / tpl["file"], f"row {i} of {path}") from None
                    if not target:
                        continue
                    yield Example(
                        id=f"{task_id}:{tpl['id']}:{i}",
                        input=inp,
                        references=[target],
                        options=options,
                        label=options.index(target) if options and target in options else None,
                        provenance={"task": task_id, "template_id": tpl["id"], "template_name": tpl["name"],
                                    "row": i, "file": str(path)},
                    )

    return load


# ---------------------------------------------------------------- catalog


def load(root: Path, split: str = "val", cache: bool = True) -> Catalog:
    """The P3 catalog of ``<root>/promptsource/templates`` (see the module docstring)."""
    tdir = _templates_root(root)
    files = sorted(tdir.glob("*/templates.yaml")) + sorted(tdir.glob("*/*/templates.yaml"))
    files.sort(key=lambda p: p.relative_to(tdir).as_posix())
    parsed = cached_parse("p3", tdir, files, parse_file, version=INDEX_VERSION, use_cache=cache,
                          check=valid_summary)

    grouped: dict[str, list[dict]] = {}
    sources: dict[str, list[str]] = {}
    for rel, templates in parsed.items():
        rel_dir = rel.rsplit("/", 1)[0]
        task_id, subset = task_id_for(rel_dir)
        grouped.setdefault(task_id, []).extend({**t, "subset": subset, "file": rel} for t in templates)
        sources.setdefault(task_id, []).append(rel_dir)

    pools: dict[str, tuple[str, str]] = {}
    for name in T0_TRAIN:
        pools[t0_task_id(name)] = ("t0_train", T0_CLUSTER_OF[name])
    for name in T0_EVAL:
        pools[t0_task_id(name)] = ("t0_eval", T0_CLUSTER_OF[name])

    tasks = []
    for task_id in sorted(grouped):
        templates = grouped[task_id]
        if not templates:
            continue
        langs = Counter((t["languages"] or ["en"])[0] for t in templates)
        pool, cluster = pools.get(task_id, (None, ""))
        row_sources = _row_sources(root, task_id, templates, split)
        tasks.append(Task(
            id=task_id,
            instructions=list(dict.fromkeys(t["instruction"] for t in templates)),
            catalog="p3",
            category=cluster,
            language=langs.most_common(1)[0][0],
            pools={pool} if pool else set(),
            meta={"templates": templates, "sources": sources[task_id]},
            loader=_make_loader(task_id, row_sources, tdir) if row_sources else None,
        ))
    return Catalog("p3", tasks, aliases=dict(T0_ALIASES))

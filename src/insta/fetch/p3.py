"""P3 instances from the hub dataset ``bigscience/P3``, written where the P3 catalog reads them.

The hub dataset is pre-rendered: one config per (dataset, template), named as P3 names its tasks,
``<dataset>_[<subset>_]<template name>`` with every run of characters outside ``[\\w.]`` replaced by ``_`` (ANLI
adds the round: ``anli_<template>_r1``; ``..._score_eval`` configs are rank-classification copies and are skipped).
Each row holds ``inputs_pretokenized``, ``targets_pretokenized`` and, for templates with answer choices,
``answer_choices``. The dataset card's YAML header lists every config with its splits' ``num_examples`` and its
``download_size``: that is the size estimate printed before anything is downloaded.

Output: ``<root>/p3/<task id with "/" -> "__">/<split>.jsonl`` (splits ``train``, ``val``, ``test``), one JSON
object per row: ``p3_config``, ``template_id``, ``template_name``, ``row`` (its index in the config's split),
``inputs_pretokenized``, ``targets_pretokenized`` and ``answer_choices`` when the config has them. The P3 catalog
reads such pre-rendered rows as they are (:mod:`insta.catalogs.p3`).

Resumable: a (task, split) file is written as ``<split>.jsonl.partial`` and renamed when complete, so a finished
file is skipped by the next run and a partial one is never read. The same code reads a local folder in the hub
dataset's layout (``source=<folder>``), which is how the tests run offline.
"""
from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator, Sequence

from ..errors import InstaError

HUB_REPO = "bigscience/P3"
#: hub split -> the split name of ``p3/<task>/<split>.jsonl``
SPLITS = {"train": "train", "validation": "val", "test": "test"}
DEFAULT_MAX_ROWS = 50_000
SCORE_EVAL = "_score_eval"
ANLI_ROUNDS = ("r1", "r2", "r3")
#: datasets whose promptsource subsets are sizes of one dataset sharing one validation set: only the subset T0
#: trains and evaluates on is fetched (the others would repeat the same rows)
ONE_SUBSET = {"winogrande": "winogrande_xl"}


def p3_config_name(dataset: str, subset: str | None, template_name: str) -> str:
    """The P3 config (task) name of a promptsource template (``super_glue``, ``rte``, ``GPT-3 style`` ->
    ``super_glue_rte_GPT_3_style``)."""
    name = dataset + (f"_{subset}_" if subset is not None else "_") + template_name
    return re.sub(r"[^\w\d\._]+", "_", name)


@dataclass
class ConfigPart:
    """One (config, split) to fetch: which task and template it feeds, and how big the card says it is."""

    config: str
    task: str
    template_id: str
    template_name: str
    hub_split: str
    rows: int  # rows the card lists for this split (None-safe: 0 when unknown)
    download_bytes: int  # the config's download size, shared out over its splits by rows

    @property
    def split(self) -> str:
        return SPLITS[self.hub_split]


# ---------------------------------------------------------------- the dataset card


def read_card(source: str) -> dict[str, dict[str, Any]]:
    """``{config: {"splits": {split: num_examples}, "download_size": bytes}}`` from the dataset card's YAML header
    (a local folder's ``README.md``, or the hub repository's)."""
    local = Path(source)
    if local.is_dir():
        path = local / "README.md"
        if not path.is_file():
            raise InstaError(f"{source}: no README.md (a local P3 copy needs the hub dataset's card)")
    else:
        try:
            from huggingface_hub import hf_hub_download

            path = Path(hf_hub_download(source, "README.md", repo_type="dataset"))
        except ImportError:
            raise InstaError("fetching P3 instances needs the datasets library: pip install 'insta[train]'") from None
        except Exception as err:  # offline, no such repo, HTTP error
            first = (str(err).strip().splitlines() or [type(err).__name__])[0]
            raise InstaError(f"could not read the dataset card of {source}: {first}") from None
    return parse_card(path.read_text(encoding="utf-8"), str(path))


def parse_card(text: str, where: str = "README.md") -> dict[str, dict[str, Any]]:
    """The per-config sizes of a dataset card's YAML header (see :func:`read_card`)."""
    import yaml

    parts = text.split("---", 2)
    if not text.startswith("---") or len(parts) < 3:
        raise InstaError(f"{where}: no YAML header")
    try:
        meta = yaml.safe_load(parts[1]) or {}
    except yaml.YAMLError as err:
        raise InstaError(f"{where}: malformed YAML header ({str(err).splitlines()[0]})") from None
    infos = meta.get("dataset_info") if isinstance(meta, dict) else None
    if isinstance(infos, dict):
        infos = [infos]
    out: dict[str, dict[str, Any]] = {}
    for info in infos or []:
        if not isinstance(info, dict) or not isinstance(info.get("config_name"), str):
            continue
        splits = {s.get("name"): int(s.get("num_examples") or 0) for s in info.get("splits") or []
                  if isinstance(s, dict) and isinstance(s.get("name"), str)}
        out[info["config_name"]] = {"splits": splits, "download_size": int(info.get("download_size") or 0)}
    for cfg in (meta.get("configs") or []) if isinstance(meta, dict) else []:
        if isinstance(cfg, dict) and isinstance(cfg.get("config_name"), str) and cfg["config_name"] not in out:
            splits = {f.get("split"): 0 for f in cfg.get("data_files") or [] if isinstance(f, dict)}
            out[cfg["config_name"]] = {"splits": splits, "download_size": 0}
    if not out:
        raise InstaError(f"{where}: the card lists no configs")
    return out


# ---------------------------------------------------------------- planning


def template_configs(task) -> dict[str, tuple[str, str]]:
    """``{P3 config name: (template id, template name)}`` for every template of a P3 catalog task."""
    out = {}
    for t in (task.meta or {}).get("templates") or []:
        dataset = str(t.get("file", "")).split("/")[0] or task.id.split("/")[0]
        if dataset in ONE_SUBSET and t.get("subset") != ONE_SUBSET[dataset]:
            continue
        base = p3_config_name(dataset, t.get("subset"), t["name"])
        names = [f"{base}_{r}" for r in ANLI_ROUNDS] if dataset == "anli" else [base]
        for name in names:
            out[name] = (t["id"], t["name"])
    return out


def resolve_tasks(catalog, names: Sequence[str] | None) -> list:
    """Catalog tasks for ``--tasks`` (task ids or T0 names); default: the T0 training and held-out datasets."""
    from ..catalogs.p3 import T0_EVAL, T0_TRAIN, t0_task_id

    wanted = list(names) if names else [t0_task_id(n) for n in T0_TRAIN + T0_EVAL]
    tasks, seen = [], set()
    for name in wanted:
        task = catalog.get(t0_task_id(name))  # UnknownTaskError (one line, close matches) for a bad name
        if task.id not in seen:
            seen.add(task.id)
            tasks.append(task)
    return tasks


def plan_parts(tasks: Iterable, card: dict[str, dict[str, Any]], splits: Sequence[str]) -> list[ConfigPart]:
    """Every (config, split) the card holds for the templates of ``tasks``, in task order."""
    parts = []
    for task in tasks:
        for config, (tid, tname) in sorted(template_configs(task).items()):
            info = card.get(config)
            if info is None or config.endswith(SCORE_EVAL):
                continue
            total = sum(info["splits"].values()) or 1
            for split in splits:
                if split in info["splits"]:
                    n = info["splits"][split]
                    parts.append(ConfigPart(config, task.id, tid, tname, split, n,
                                            int(info["download_size"] * n / total)))
    return parts


def size_estimate(parts: Sequence[ConfigPart], max_rows: int | None) -> dict[str, Any]:
    """Rows to write (each config split capped at ``max_rows``) and bytes to download (the card's sizes)."""
    rows = sum(min(p.rows, max_rows) if max_rows else p.rows for p in parts)
    return {"configs": len({p.config for p in parts}), "tasks": len({p.task for p in parts}),
            "files": len({(p.task, p.split) for p in parts}), "rows": rows,
            "download_bytes": sum(p.download_bytes for p in parts)}


def describe_estimate(est: dict[str, Any], max_rows: int | None) -> str:
    """The one-line size estimate printed before the fetch starts."""
    from tqdm import tqdm

    cap = f"at most {max_rows:,} rows per config and split" if max_rows else "all rows"
    return (f"P3 instances: {est['configs']} configs of {est['tasks']} tasks -> {est['files']} files, "
            f"{est['rows']:,} rows ({cap}); download up to {tqdm.format_sizeof(est['download_bytes'], 'B', 1024)}")


# ---------------------------------------------------------------- fetching


def output_file(root: Path, task_id: str, split: str) -> Path:
    """Where the P3 catalog reads a task's rows of one split."""
    return Path(root) / "p3" / task_id.replace("/", "__") / f"{split}.jsonl"


def _rows(source: str, config: str, hub_split: str) -> Iterator[dict[str, Any]]:
    try:
        import datasets
    except ImportError:
        raise InstaError("fetching P3 instances needs the datasets library: pip install 'insta[train]'") from None
    try:
        ds = datasets.load_dataset(source, config, split=hub_split, streaming=True)
        yield from ds
    except InstaError:
        raise
    except Exception as err:
        first = (str(err).strip().splitlines() or [type(err).__name__])[0]
        raise InstaError(f"could not read {source} config {config} split {hub_split}: {first}") from None


def prerendered_row(raw: dict[str, Any], part: ConfigPart, index: int) -> dict[str, Any]:
    """The row written for the catalog: the rendered text and its template, nothing else (token ids dropped)."""
    row = {"p3_config": part.config, "template_id": part.template_id, "template_name": part.template_name,
           "row": index, "inputs_pretokenized": raw.get("inputs_pretokenized"),
           "targets_pretokenized": raw.get("targets_pretokenized")}
    if not isinstance(row["inputs_pretokenized"], str) or not isinstance(row["targets_pretokenized"], str):
        raise InstaError(f"{part.config} ({part.hub_split}) row {index}: no inputs_pretokenized/targets_pretokenized "
                         "text (is this the P3 dataset?)")
    choices = raw.get("answer_choices")
    if choices:
        row["answer_choices"] = [str(c) for c in choices]
    return row


def fetch_instances(root: Path, source: str = HUB_REPO, tasks: Sequence[str] | None = None,
                    splits: Sequence[str] = ("train", "validation"), max_rows: int | None = DEFAULT_MAX_ROWS,
                    log: Callable[[str], None] = print, progress: bool = True,
                    rows_reader: Callable[[str, str, str], Iterable[dict]] = _rows) -> dict[str, Any]:
    """Fetch P3 instances of ``tasks`` into ``root`` (see the module docstring); returns what was written.

    The P3 templates (``insta data fetch p3``) must be in ``root`` first: they name the tasks and templates.
    """
    from ..catalogs import load_catalog
    from ..util.helpers import progress_bar

    bad = [s for s in splits if s not in SPLITS]
    if bad:
        raise InstaError(f"unknown P3 split(s) {', '.join(bad)} (choose from {', '.join(SPLITS)})")
    catalog = load_catalog("p3", root)
    chosen = resolve_tasks(catalog, tasks)
    parts = plan_parts(chosen, read_card(source), splits)
    if not parts:
        raise InstaError(f"{source} holds no config for the templates of {', '.join(t.id for t in chosen[:5])}"
                         f"{' ...' if len(chosen) > 5 else ''}")
    files: dict[tuple[str, str], list[ConfigPart]] = {}
    for p in parts:
        files.setdefault((p.task, p.split), []).append(p)
    done = {k for k in files if output_file(root, *k).is_file()}
    todo = [p for k, ps in files.items() if k not in done for p in ps]
    est = size_estimate(todo, max_rows)
    written: list[dict[str, Any]] = []
    if not todo:
        log(f"P3 instances: all {len(done)} file(s) already complete, nothing to fetch")
        return {"estimate": est, "written": written, "skipped": sorted(f"{t}/{s}" for t, s in done)}
    log(describe_estimate(est, max_rows) + (f"; {len(done)} file(s) already complete, skipped" if done else ""))
    with progress_bar(total=est["rows"], desc="P3 rows", unit="row", enabled=progress) as bar:
        for key, ps in files.items():
            if key in done:
                continue
            out = output_file(root, *key)
            out.parent.mkdir(parents=True, exist_ok=True)
            tmp = out.with_name(out.name + ".partial")
            n = 0
            with open(tmp, "w", encoding="utf-8") as fh:
                for part in ps:
                    for i, raw in enumerate(rows_reader(source, part.config, part.hub_split)):
                        if max_rows and i >= max_rows:
                            break
                        fh.write(json.dumps(prerendered_row(raw, part, i), ensure_ascii=False) + "\n")
                        n += 1
                        bar.update(1)
            tmp.replace(out)
            written.append({"task": key[0], "split": key[1], "rows": n, "path": str(out)})
    return {"estimate": est, "written": written, "skipped": sorted(f"{t}/{s}" for t, s in done)}


__all__ = ["DEFAULT_MAX_ROWS", "HUB_REPO", "SPLITS", "ConfigPart", "describe_estimate", "fetch_instances",
           "output_file", "p3_config_name", "parse_card", "plan_parts", "prerendered_row", "read_card",
           "resolve_tasks", "size_estimate", "template_configs"]

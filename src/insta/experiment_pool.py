"""Experiment targets and source pool: evaluation/sample splits of each target, and the pool with every removal
and its reason (targets, relatives, T0 evaluation tasks, near-duplicates, unusable formats)."""
from __future__ import annotations

import hashlib
import json
import statistics
import sys
import time
from dataclasses import dataclass
from typing import Any, Callable, Sequence

from .catalogs.base import Catalog
from .experiment_config import TARGET_CATALOGS, ExperimentConfig, PoolConfig, _fail
from .records import Example, Task
from .textsafe import safe_text

# ---------------------------------------------------------------- small helpers


def content_hash(obj: Any, n: int = 16) -> str:
    """SHA-256 of the canonical JSON of ``obj`` (sorted keys), first ``n`` hex digits."""
    blob = json.dumps(obj, sort_keys=True, ensure_ascii=False, default=str).encode("utf-8")
    return hashlib.sha256(blob).hexdigest()[:n]


def _stable_key(*parts: Any) -> str:
    return hashlib.sha256(":".join(map(str, parts)).encode()).hexdigest()


def _median(xs: Sequence[float]) -> float:
    return float(statistics.median(xs)) if xs else 0.0


class Log:
    """Progress lines on stderr (or a callback), with the time since the run started."""

    def __init__(self, sink: Callable[[str], None] | None = None, quiet: bool = False):
        self.t0 = time.perf_counter()
        self.sink = sink
        self.quiet = quiet

    def __call__(self, msg: str) -> None:
        if self.quiet:
            return
        line = f"[{_fmt_s(time.perf_counter() - self.t0)}] {msg}"
        if self.sink:
            self.sink(line)
        else:
            print(safe_text(line), file=sys.stderr, flush=True)


def _fmt_s(s: float) -> str:
    s = int(round(s))
    return f"{s // 3600:d}:{s % 3600 // 60:02d}:{s % 60:02d}"


# ---------------------------------------------------------------- targets


@dataclass
class TargetInfo:
    id: str  # as written in the config, "catalog:task"
    task: Task
    catalog: str
    eval_examples: list[Example]
    samples: list[Example]  # unlabelled
    samples_overlap_eval: bool
    n_available: int

    @property
    def short(self) -> str:
        return self.task.id

    def summary(self) -> dict[str, Any]:
        option_sets = {tuple(sorted(ex.options)) for ex in self.eval_examples if ex.options}
        fixed = len(option_sets) == 1 and all(ex.options for ex in self.eval_examples)
        labels = sorted(option_sets.pop()) if fixed else None
        n_opts = [len(ex.options) for ex in self.eval_examples if ex.options]
        chance = statistics.mean(1 / n for n in n_opts) if n_opts else None
        return {
            "id": self.id, "task": self.task.id, "catalog": self.catalog, "family": self.task.family,
            "instructions": list(self.task.instructions), "n_available": self.n_available,
            "n_eval": len(self.eval_examples), "n_samples": len(self.samples),
            "samples_overlap_eval": self.samples_overlap_eval, "fixed_labels": fixed, "label_set": labels,
            "chance": chance, "rank_classification": bool(n_opts) and len(n_opts) == len(self.eval_examples),
            "eval_ids": [ex.id for ex in self.eval_examples],
        }


def parse_target(spec: str, default_catalog: str) -> tuple[str, str]:
    if ":" in spec:
        cat, tid = spec.split(":", 1)
    else:
        cat, tid = default_catalog, spec
    if cat not in TARGET_CATALOGS and not cat.endswith((".yaml", ".yml", ".jsonl", ".json")):
        raise _fail(f"target {spec!r}: unknown catalog {cat!r} (use {', '.join(TARGET_CATALOGS)})")
    return cat, tid


def _unlabelled(ex: Example) -> Example:
    return Example(id=ex.id, input=ex.input, references=[], options=list(ex.options) if ex.options else None,
                   label=None, provenance={"task": ex.provenance.get("task", "")})


def prepare_targets(cfg: ExperimentConfig, catalogs: dict[str, Catalog]) -> list[TargetInfo]:
    """Resolve every target (a clear error for an unknown one) and fix its evaluation set and samples."""
    out = []
    for spec in cfg.targets:
        cat, tid = parse_target(spec, cfg.pool.catalog)
        task = catalogs[cat].get(tid)  # UnknownTaskError with close matches
        if not task.has_examples:
            raise _fail(f"target {spec!r} has no instances in the data directory")
        out.append(_target_info(cfg, spec, cat, task))
    return out


def _target_info(cfg: ExperimentConfig, spec: str, cat: str, task: Task) -> TargetInfo:
    examples = [ex for ex in task.iter_examples() if ex.options or ex.references]
    if not examples:
        raise _fail(f"target {spec!r} has no usable instances")
    seed = cfg.eval.get("seed", 0)
    order = sorted(examples, key=lambda ex: _stable_key("eval-order", seed, ex.id))
    n_eval = min(cfg.n_eval, len(order))
    eval_ex = order[:n_eval]
    rest = order[n_eval:]
    overlap = len(rest) < cfg.target_samples
    pool_for_samples = rest if not overlap else rest + eval_ex
    samples = [_unlabelled(ex) for ex in pool_for_samples[: cfg.target_samples]]
    eval_ex = sorted(eval_ex, key=lambda ex: ex.provenance.get("index", 0))
    return TargetInfo(id=spec, task=task, catalog=cat, eval_examples=eval_ex, samples=samples,
                      samples_overlap_eval=overlap, n_available=len(examples))


# ---------------------------------------------------------------- pool


def merge_families(catalog: Catalog, name: str | None = None) -> Catalog:
    """One task per family: instructions = the union of its tasks' (order kept), examples = theirs in turn."""
    groups: dict[str, list[Task]] = {}
    for t in catalog:
        groups.setdefault(t.family, []).append(t)
    tasks = []
    for fam, members in groups.items():
        if len(members) == 1 and members[0].id == fam:
            tasks.append(members[0])
            continue
        instructions = list(dict.fromkeys(i for t in members for i in t.instructions))
        loaders = [t for t in members if t.has_examples]

        def load(ms=tuple(loaders)):
            for t in ms:
                yield from t.iter_examples()

        tasks.append(Task(
            id=fam, instructions=instructions, catalog=catalog.name, family=fam,
            category=members[0].category, keywords=list(dict.fromkeys(k for t in members for k in t.keywords)),
            pools=set().union(*(t.pools for t in members)),
            meta={"members": [t.id for t in members], "n_examples": sum(int(t.meta.get("n_examples", 0) or 0)
                                                                       for t in members)},
            loader=load if loaders else None,
        ))
    return Catalog(name or catalog.name, tasks)


def task_format_stats(task: Task) -> dict[str, Any]:
    """Counts and medians of a task's examples: how many, multiple choice or not, input and target lengths."""
    n = n_mc = 0
    in_chars, tgt_words = [], []
    for ex in task.iter_examples():
        n += 1
        if ex.options and len(ex.options) >= 2:
            n_mc += 1
        in_chars.append(len(ex.input))
        tgt_words.append(len(ex.target.split()))
    return {"n": n, "n_mc": n_mc, "median_input_chars": _median(in_chars), "median_target_words": _median(tgt_words)}


def _format_problem(stats: dict[str, Any], pc: PoolConfig) -> str | None:
    if stats["n"] < pc.min_examples:
        return f"format: {stats['n']} examples (< {pc.min_examples})"
    if stats["median_input_chars"] > pc.max_input_chars:
        return f"format: median input {stats['median_input_chars']:.0f} chars (> {pc.max_input_chars})"
    mc = stats["n_mc"] >= stats["n"] / 2
    limit = pc.max_target_words_mc if mc else pc.max_target_words_gen
    if stats["median_target_words"] > limit:
        kind = "multiple-choice answer" if mc else "generation target"
        return f"format: median {kind} {stats['median_target_words']:.0f} words (> {limit})"
    return None


@dataclass
class PoolInfo:
    catalog: Catalog
    removed: list[dict[str, Any]]
    stats: dict[str, dict[str, Any]]

    def summary(self) -> dict[str, Any]:
        reasons: dict[str, int] = {}
        for r in self.removed:
            key = r["reason"].split(":")[0]
            reasons[key] = reasons.get(key, 0) + 1
        return {"n": len(self.catalog), "tasks": self.catalog.ids, "removed": self.removed,
                "removed_by_reason": reasons,
                "n_examples": {t: self.stats.get(t, {}).get("n") for t in self.catalog.ids}}


def build_pool(cfg: ExperimentConfig, source: Catalog, targets: Sequence[TargetInfo], encoder=None,
               log: Callable[[str], None] = lambda m: None) -> PoolInfo:
    """The source pool of the experiment, the same for every target (see the module docstring)."""
    pc = cfg.pool
    removed: list[dict[str, Any]] = []
    base = source
    if pc.include:
        keep = set(pc.include)
        base = Catalog(source.name, [t for t in source if t.id in keep or t.family in keep], source.aliases)
        unknown = [x for x in pc.include if x not in source and not source.members(x)]
        if unknown:
            raise _fail(f"pool.include names unknown task(s): {', '.join(unknown[:5])}")
    # families (BIG-bench parents) to drop, with reasons
    drop_fam: dict[str, str] = {}
    for t in targets:
        parent = (t.task.meta or {}).get("parent")
        if parent:
            drop_fam.setdefault(str(parent), f"BBH parent: of target {t.id}")
        drop_fam.setdefault(t.task.family, f"target family: {t.id}")
        drop_fam.setdefault(t.task.id, f"target family: {t.id}")
    if pc.exclude_t0_eval and pc.catalog == "bigbench":
        from .catalogs.bigbench import ALIASES, T0_EVAL

        for name in T0_EVAL:
            drop_fam.setdefault(ALIASES.get(name, name), "T0 evaluation task: " + name)
    if pc.exclude_bbh_parents == "all" and pc.catalog == "bigbench":
        from .catalogs.bbh import BBH_PARENT

        for bbh_task, parent in BBH_PARENT.items():
            drop_fam.setdefault(parent, f"BBH parent: of {bbh_task}")
    for name in pc.exclude:
        drop_fam.setdefault(name, "excluded by the config: pool.exclude")
    kept_tasks: list[Task] = []
    for t in base:
        reason = drop_fam.get(t.family) or drop_fam.get(t.id)
        if reason:
            removed.append({"task": t.id, "reason": reason})
        else:
            kept_tasks.append(t)
    # name stems
    if pc.stem_match:
        stems = {t.task.family: t.id for t in targets}
        for t in targets:
            parent = (t.task.meta or {}).get("parent")
            if parent:
                stems[str(parent)] = t.id
        still = []
        for t in kept_tasks:
            hit = next((tg for stem, tg in stems.items()
                        if t.family.startswith(stem + "_") or stem.startswith(t.family + "_")), None)
            if hit:
                removed.append({"task": t.id, "reason": f"near-duplicate: name shares the stem of target {hit}"})
            else:
                still.append(t)
        kept_tasks = still
    # usable format
    stats: dict[str, dict[str, Any]] = {}
    still = []
    for t in kept_tasks:
        s = task_format_stats(t)
        stats[t.id] = s
        problem = _format_problem(s, pc)
        if problem:
            removed.append({"task": t.id, "reason": problem})
        else:
            still.append(t)
    kept = Catalog(source.name, still, source.aliases)
    if pc.unit == "family":
        kept = merge_families(kept, source.name)
        fam_stats: dict[str, dict[str, Any]] = {}
        for t in kept:
            members = (t.meta or {}).get("members") or [t.id]
            fam_stats[t.id] = {"n": sum(stats[m]["n"] for m in members if m in stats), "members": members}
        stats = fam_stats
    # near-duplicate instructions
    if pc.near_duplicate_cosine is not None and len(kept):
        import numpy as np

        if encoder is None:
            from .methods import get_encoder

            encoder = get_encoder(pc.near_duplicate_encoder or cfg.encoder)
        tgt_texts, tgt_owner = [], []
        for t in targets:
            for ins in t.task.instructions:
                if ins.strip():
                    tgt_texts.append(ins)
                    tgt_owner.append(t.id)
        src_texts, src_owner = [], []
        for t in kept:
            for ins in t.instructions:
                if ins.strip():
                    src_texts.append(ins)
                    src_owner.append(t.id)
        if tgt_texts and src_texts:
            sim = encoder.encode(tgt_texts) @ encoder.encode(src_texts).T
            dup: dict[str, str] = {}
            for j in np.argwhere(sim > pc.near_duplicate_cosine):
                a, b = int(j[0]), int(j[1])
                if src_owner[b] not in dup:
                    dup[src_owner[b]] = (f"near-duplicate: instruction cosine {sim[a, b]:.3f} with target "
                                         f"{tgt_owner[a]}")
            for tid, why in dup.items():
                removed.append({"task": tid, "reason": why})
            kept = Catalog(kept.name, [t for t in kept if t.id not in dup], kept.aliases)
    log(f"pool: {len(kept)} {pc.catalog} {'families' if pc.unit == 'family' else 'tasks'} "
        f"({len(removed)} removed: " + ", ".join(f"{v} {k}" for k, v in PoolInfo(kept, removed, {}).summary()
                                                 ["removed_by_reason"].items()) + ")")
    return PoolInfo(kept, removed, stats)

"""Targets and source pool of a run: evaluation/sample splits of each target, and the pool with every removal
and its reason (targets, relatives, T0 evaluation tasks, near-duplicates, unusable formats). The comparison grid
and the transfer matrix build theirs here, by the same rules."""
from __future__ import annotations

import statistics
from dataclasses import dataclass
from typing import Any, Callable, Sequence

from ..catalogs.base import Catalog
from ..errors import InstaError
from ..util.helpers import stable_key
from ..records import Example, Task
from .sections import TARGET_CATALOGS, PoolConfig, RunConfig


def _median(xs: Sequence[float]) -> float:
    return float(statistics.median(xs)) if xs else 0.0


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
        raise InstaError(f"target {spec!r}: unknown catalog {cat!r} (use {', '.join(TARGET_CATALOGS)})")
    return cat, tid


def _unlabelled(ex: Example) -> Example:
    return Example(id=ex.id, input=ex.input, references=[], options=list(ex.options) if ex.options else None,
                   label=None, provenance={"task": ex.provenance.get("task", "")})


def prepare_targets(cfg: RunConfig, catalogs: dict[str, Catalog], n_samples: int = 0) -> list[TargetInfo]:
    """Resolve every target (a clear error for an unknown one) and fix its evaluation set (``eval.n`` examples in
    a stable order seeded by ``eval.seed``) and ``n_samples`` unlabelled instances (RoE and DSIR read them)."""
    out = []
    for spec in cfg.targets:
        cat, tid = parse_target(spec, cfg.pool.catalog)
        task = catalogs[cat].get(tid)  # UnknownTaskError with close matches
        if not task.has_examples:
            raise InstaError(f"target {spec!r} has no instances in the data directory")
        out.append(_target_info(cfg, spec, cat, task, n_samples))
    return out


def _target_info(cfg: RunConfig, spec: str, cat: str, task: Task, n_samples: int) -> TargetInfo:
    examples = [ex for ex in task.iter_examples() if ex.options or ex.references]
    if not examples:
        raise InstaError(f"target {spec!r} has no usable instances")
    order = sorted(examples, key=lambda ex: stable_key("eval-order", cfg.eval.seed, ex.id))
    n_eval = min(cfg.eval.n, len(order))
    eval_ex = order[:n_eval]
    rest = order[n_eval:]
    overlap = len(rest) < n_samples
    pool_for_samples = rest if not overlap else rest + eval_ex
    samples = [_unlabelled(ex) for ex in pool_for_samples[:n_samples]]
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


def build_pool(cfg: RunConfig, source: Catalog, targets: Sequence[TargetInfo], encoder=None,
               log: Callable[[str], None] = lambda m: None) -> PoolInfo:
    """The source pool of a run, the same for every target (see :mod:`insta.experiment` for the rules): they
    apply in turn, and every task they remove is listed with its reason."""
    pc = cfg.pool
    removed: list[dict[str, Any]] = []
    kept = _drop_families(_included(source, pc), _families_to_drop(pc, targets), removed)
    if pc.stem_match:
        kept = _drop_stem_matches(kept, targets, removed)
    kept, stats = _drop_unusable_formats(kept, pc, removed)
    pool = Catalog(source.name, kept, source.aliases)
    if pc.unit == "family":
        pool = merge_families(pool, source.name)
        stats = _family_stats(pool, stats)
    if pc.near_duplicate_cosine is not None and len(pool):
        pool = _drop_near_duplicates(pool, targets, cfg, encoder, removed)
    log(f"pool: {len(pool)} {pc.catalog} {'families' if pc.unit == 'family' else 'tasks'} "
        f"({len(removed)} removed: " + ", ".join(f"{v} {k}" for k, v in PoolInfo(pool, removed, {}).summary()
                                                 ["removed_by_reason"].items()) + ")")
    return PoolInfo(pool, removed, stats)


def _included(source: Catalog, pc: PoolConfig) -> Catalog:
    """``pool.include`` (ids or families) when given, else the whole source catalog; then only the tasks of
    ``pool.pools`` and ``pool.language`` when those are set."""
    if pc.pools or pc.language:
        wanted = set(pc.pools or ())
        source = Catalog(source.name, [t for t in source if (not wanted or wanted & set(t.pools))
                                       and (not pc.language or t.language == pc.language)], source.aliases)
    if not pc.include:
        return source
    keep = set(pc.include)
    base = Catalog(source.name, [t for t in source if t.id in keep or t.family in keep], source.aliases)
    unknown = [x for x in pc.include if x not in source and not source.members(x)]
    if unknown:
        raise InstaError(f"pool.include names unknown task(s): {', '.join(unknown[:5])}")
    return base


def _families_to_drop(pc: PoolConfig, targets: Sequence[TargetInfo]) -> dict[str, str]:
    """Families and task ids to remove, with the reason: each target's family and BIG-bench parent, the T0
    evaluation tasks, the BIG-bench parents of BBH tasks and ``pool.exclude`` (the first reason wins)."""
    drop: dict[str, str] = {}
    for t in targets:
        parent = (t.task.meta or {}).get("parent")
        if parent:
            drop.setdefault(str(parent), f"BBH parent: of target {t.id}")
        drop.setdefault(t.task.family, f"target family: {t.id}")
        drop.setdefault(t.task.id, f"target family: {t.id}")
    if pc.exclude_t0_eval and pc.catalog == "bigbench":
        from ..catalogs.bigbench import ALIASES, T0_EVAL

        for name in T0_EVAL:
            drop.setdefault(ALIASES.get(name, name), "T0 evaluation task: " + name)
    if pc.exclude_bbh_parents == "all" and pc.catalog == "bigbench":
        from ..catalogs.bbh import BBH_PARENT

        for bbh_task, parent in BBH_PARENT.items():
            drop.setdefault(parent, f"BBH parent: of {bbh_task}")
    for name in pc.exclude:
        drop.setdefault(name, "excluded by the config: pool.exclude")
    return drop


def _drop_families(base: Catalog, drop: dict[str, str], removed: list[dict[str, Any]]) -> list[Task]:
    kept = []
    for t in base:
        reason = drop.get(t.family) or drop.get(t.id)
        if reason:
            removed.append({"task": t.id, "reason": reason})
        else:
            kept.append(t)
    return kept


def _drop_stem_matches(tasks: list[Task], targets: Sequence[TargetInfo], removed: list[dict[str, Any]]) -> list[Task]:
    """Tasks whose family name extends a target's family (or parent) name, or the other way round."""
    stems = {t.task.family: t.id for t in targets}
    for t in targets:
        parent = (t.task.meta or {}).get("parent")
        if parent:
            stems[str(parent)] = t.id
    kept = []
    for t in tasks:
        hit = next((tg for stem, tg in stems.items()
                    if t.family.startswith(stem + "_") or stem.startswith(t.family + "_")), None)
        if hit:
            removed.append({"task": t.id, "reason": f"near-duplicate: name shares the stem of target {hit}"})
        else:
            kept.append(t)
    return kept


def _drop_unusable_formats(tasks: list[Task], pc: PoolConfig, removed: list[dict[str, Any]]
                           ) -> tuple[list[Task], dict[str, dict[str, Any]]]:
    """Tasks whose examples are too few, too long or not short answers; with every task's format statistics."""
    stats: dict[str, dict[str, Any]] = {}
    kept = []
    for t in tasks:
        s = task_format_stats(t)
        stats[t.id] = s
        problem = _format_problem(s, pc)
        if problem:
            removed.append({"task": t.id, "reason": problem})
        else:
            kept.append(t)
    return kept, stats


def _family_stats(pool: Catalog, stats: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """Example counts per merged family (the sum over its member tasks)."""
    out: dict[str, dict[str, Any]] = {}
    for t in pool:
        members = (t.meta or {}).get("members") or [t.id]
        out[t.id] = {"n": sum(stats[m]["n"] for m in members if m in stats), "members": members}
    return out


def _instruction_texts(tasks: Sequence[Any], task_of: Callable[[Any], Task], owner_of: Callable[[Any], str]
                       ) -> tuple[list[str], list[str]]:
    texts, owners = [], []
    for t in tasks:
        for ins in task_of(t).instructions:
            if ins.strip():
                texts.append(ins)
                owners.append(owner_of(t))
    return texts, owners


def _drop_near_duplicates(pool: Catalog, targets: Sequence[TargetInfo], cfg: RunConfig, encoder: Any,
                          removed: list[dict[str, Any]]) -> Catalog:
    """Units with an instruction whose cosine to a target instruction is above ``pool.near_duplicate_cosine``."""
    import numpy as np

    if encoder is None:
        from ..encoder import get_encoder

        encoder = get_encoder(cfg.pool.near_duplicate_encoder or cfg.encoder)
    tgt_texts, tgt_owner = _instruction_texts(targets, lambda t: t.task, lambda t: t.id)
    src_texts, src_owner = _instruction_texts(list(pool), lambda t: t, lambda t: t.id)
    if not (tgt_texts and src_texts):
        return pool
    sim = encoder.encode(tgt_texts) @ encoder.encode(src_texts).T
    dup: dict[str, str] = {}
    for j in np.argwhere(sim > cfg.pool.near_duplicate_cosine):
        a, b = int(j[0]), int(j[1])
        if src_owner[b] not in dup:
            dup[src_owner[b]] = f"near-duplicate: instruction cosine {sim[a, b]:.3f} with target {tgt_owner[a]}"
    for tid, why in dup.items():
        removed.append({"task": tid, "reason": why})
    return Catalog(pool.name, [t for t in pool if t.id not in dup], pool.aliases)


__all__ = ["PoolInfo", "TargetInfo", "build_pool", "merge_families", "parse_target",
           "prepare_targets", "task_format_stats"]

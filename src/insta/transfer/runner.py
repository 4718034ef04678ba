"""Run a transfer matrix: one model per (source, seed) trained on that source alone, evaluated on every target.

Work is split into independent **units**: the untrained base model, and each (source, seed). Each unit is one
job of the run engine (:mod:`insta.engine.jobs`): it trains its model (unless it is the base), evaluates it on
the targets whose cells are missing, writes one cell per target (``<out>/cells/<key>.json``, keyed by the full
configuration) and deletes the weights unless ``keep_models``. A rerun (after ``kill -9`` too) recomputes
nothing that was finished: finished cells are read, a model whose training record exists is reused while its
folder is there, and a half-written one is retrained. The same jobs run in this process (``executor:
sequential``) or as Ray tasks (``executor: ray``) against the same cell folder.
"""
from __future__ import annotations

import json
import time
from typing import Any, Callable, Sequence

from ..catalogs.base import Catalog
from ..engine import BASE, CACHE_VERSION, EngineRun, ModelJob, TargetInfo
from ..errors import InstaError
from ..util.helpers import content_hash, stable_int
from ..matrix.cells import score_rank
from .config import TransferConfig

#: a-priori costs for the first --plan (replaced by measured ones as soon as cells exist): SmolLM2, 2 CPU cores
DEFAULT_TRAIN_S_PER_INSTANCE = 1.1
DEFAULT_EVAL_S_PER_EXAMPLE = 0.25


def spread_sources(pool: Catalog, n: int, seed: int, start: Sequence[str] = ()) -> list[str]:
    """``n`` pool units that together cover as many task types as possible (greedy keyword coverage).

    Each step takes the unit whose not-yet-covered keywords are rarest in the pool (sum of 1/frequency), ties
    broken by a stable hash of (seed, id); units without keywords come last. Deterministic for a seed. ``start``:
    units already chosen (their keywords count as covered; the list is filled up to ``n`` after them).
    """
    freq: dict[str, int] = {}
    for t in pool:
        for k in set(t.keywords):
            freq[k] = freq.get(k, 0) + 1
    kw = {t.id: set(t.keywords) for t in pool}
    chosen: list[str] = list(start)
    covered: set[str] = set().union(*(kw[u] for u in chosen)) if chosen else set()
    left = [u for u in pool.ids if u not in set(chosen)]

    def gain(tid: str) -> tuple[float, int]:  # reads ``covered`` as it is when called
        return (sum(1.0 / freq[k] for k in kw[tid] - covered), -stable_int("spread", seed, tid, digits=8))

    while left and len(chosen) < n:
        best = max(left, key=gain)
        if gain(best)[0] == 0 and covered:
            covered = set()  # every type covered once: start a second round
            best = max(left, key=gain)
        chosen.append(best)
        covered |= kw[best]
        left.remove(best)
    return chosen


def nearest_sources(pool: Catalog, target_keywords: dict[str, Sequence[str]], per_target: int, seed: int
                    ) -> tuple[list[str], dict[str, list[str]]]:
    """Matrix v2's related candidates: for every target (in order) the ``per_target`` pool units that share the
    most BIG-bench keywords with it (at least one). Ties (pre-registered): the unit with more keywords in common
    with the *other* targets (the union of their keywords) last, then a stable hash of (seed, target, unit).
    Returns the units in order (each once) and target -> its picks."""
    kw = {t.id: set(t.keywords) for t in pool}
    chosen: list[str] = []
    by_target: dict[str, list[str]] = {}
    for tid, own in target_keywords.items():
        own = set(own)
        others = set().union(*(set(v) for o, v in target_keywords.items() if o != tid))
        related = [u for u in pool.ids if kw[u] & own]
        related.sort(key=lambda u: (-len(kw[u] & own), len(kw[u] & others),
                                    stable_int("nearest", seed, tid, u, digits=8)))
        by_target[tid] = related[:per_target]
        chosen += [u for u in by_target[tid] if u not in chosen]
    return chosen, by_target


class TransferRun(EngineRun):
    """Plans and runs one transfer matrix (see the module docstring); ``backend``/``log`` are test hooks."""

    def __init__(self, cfg: TransferConfig, *, allow_partial_screen: bool = False, **kw: Any):
        super().__init__(cfg, **kw)
        self.cfg: TransferConfig = cfg
        self.sources: list[str] = []
        #: source -> how it was chosen ({"rule": "nearest", "targets": [...]} or {"rule": strategy})
        self.source_rules: dict[str, dict[str, Any]] = {}
        #: matrix v2: the target rule and the cost rule as applied (None for a listed set of targets)
        self.target_decision: dict[str, Any] | None = None
        self.allow_partial_screen = allow_partial_screen

    # -- preparation (no training)
    def prepare(self) -> None:
        if self.cfg.target_rule is not None:  # matrix v2: the screen rule and the cost rule
            from .v2_decision import decide_targets

            decide_targets(self, (DEFAULT_TRAIN_S_PER_INSTANCE, DEFAULT_EVAL_S_PER_EXAMPLE))
        else:
            self.load_targets()
        for t in self.targets:  # the matrix scores rank classification: examples need 2+ answer options
            _keep_rank_examples(t, self.log)
        self.load_pool()
        self.sources = self._choose_sources()
        self.check_base_model()

    def _choose_sources(self) -> list[str]:
        cfg, pool = self.cfg, self.pool.catalog
        src = cfg.sources
        if src.strategy == "list":
            missing = [s for s in src.list if s not in pool]
            if missing:
                raise InstaError(f"sources.list names unit(s) not in the pool: {', '.join(missing[:5])}")
            chosen = list(src.list)
        elif src.strategy == "first":
            chosen = pool.ids[: src.n or len(pool)]
        elif src.strategy == "random":
            chosen = sorted(pool.ids, key=lambda t: stable_int("sources", cfg.seed, t, digits=8))[: src.n or len(pool)]
        elif src.strategy == "nearest-spread":
            return self._nearest_spread()
        else:
            chosen = spread_sources(pool, src.n or len(pool), cfg.seed)
        self.source_rules = {s: {"rule": src.strategy} for s in chosen}
        if src.n and len(chosen) < src.n:
            self.log(f"sources: the pool holds {len(chosen)} units, fewer than sources.n = {src.n}")
        return chosen

    def _nearest_spread(self) -> list[str]:
        """Keyword-nearest units of every target first, then greedy keyword coverage up to ``sources.n``."""
        cfg, pool = self.cfg, self.pool.catalog
        near, by_target = nearest_sources(pool, {t.id: list(t.task.keywords) for t in self.targets},
                                          cfg.sources.nearest, cfg.seed)
        for t, picks in by_target.items():
            if len(picks) < cfg.sources.nearest:
                self.log(f"sources: {len(picks)} pool unit(s) share a keyword with target {t}")
        chosen = spread_sources(pool, cfg.sources.n or len(pool), cfg.seed, start=near)
        self.source_rules = {s: {"rule": "spread"} for s in chosen}
        for t, picks in by_target.items():
            for s in picks:
                rule = self.source_rules[s]
                rule["rule"] = "nearest"
                rule.setdefault("targets", []).append(t)
        if len(near) > (cfg.sources.n or 0):
            self.log(f"sources: {len(near)} keyword-nearest units, more than sources.n = {cfg.sources.n}: all kept")
        return chosen

    # -- keys
    def model_key(self, source: str | None, seed: int | None) -> str:
        if source is None:
            return BASE
        return content_hash({"v": CACHE_VERSION, "kind": "transfer-model", "base": self.base_identity(),
                             "backend": self.cfg.backend, "source": source, "seed": seed,
                             "instances": self.cfg.instances, "train": self.cfg.key_options("train"),
                             "dedup_against": sorted(t.id for t in self.targets)})

    def eval_key(self, model_key: str, target: TargetInfo) -> str:
        return content_hash({"v": CACHE_VERSION, "kind": "transfer-eval", "model": model_key,
                             "base": self.base_identity() if model_key == BASE else None,
                             "backend": self.cfg.backend, "target": target.id,
                             "eval_ids": [ex.id for ex in target.eval_examples],
                             "eval": self.cfg.key_options("eval", exclude=("n", "seed"))})

    # -- planning
    def units(self) -> list[tuple[str | None, int | None]]:
        """The base model, every source at each seed, then every ``subset_seeds.every``-th source at the subset's
        seeds (after the others: the matrix is complete at one seed first)."""
        sub = self.cfg.subset_seeds
        extra = [(s, seed) for i, s in enumerate(self.sources) if i % sub.every == 0 for seed in sub.seeds]
        return [(None, None)] + [(s, seed) for s in self.sources for seed in self.cfg.seeds] + extra

    def plan(self) -> dict[str, Any]:
        """The work: units, cells done and missing, and an ETA from measured per-cell costs."""
        rows = []
        for source, seed in self.units():
            mkey = self.model_key(source, seed)
            keys = [self.eval_key(mkey, t) for t in self.targets]
            done = sum(self.cell_path(k).is_file() for k in keys)
            rows.append({"source": source, "seed": seed, "model_key": mkey, "cells": len(keys), "done": done})
        train_s, eval_s = self.measured_costs()
        n_examples = sum(len(t.eval_examples) for t in self.targets)
        todo_train = sum(1 for r in rows if r["source"] is not None and r["done"] < r["cells"])
        todo_examples = sum((r["cells"] - r["done"]) * n_examples / max(1, len(self.targets)) for r in rows)
        eta = todo_train * train_s + todo_examples * eval_s
        return {"units": rows, "n_units": len(rows), "n_sources": len(self.sources), "n_targets": len(self.targets),
                "seeds": list(self.cfg.seeds), "cells": sum(r["cells"] for r in rows),
                "cells_done": sum(r["done"] for r in rows), "units_to_train": todo_train,
                "seconds_per_training": round(train_s, 1), "seconds_per_eval_example": round(eval_s, 3),
                "eta_seconds": round(eta)}

    def measured_costs(self) -> tuple[float, float]:
        """Mean seconds per training and per evaluated example from finished work (a-priori until there is some)."""
        trains = []
        for p in sorted((self.out / "trained").glob("*.json")) if (self.out / "trained").is_dir() else []:
            try:
                trains.append(float(json.loads(p.read_text())["seconds"]))
            except (ValueError, KeyError, TypeError):
                continue
        per_ex = []
        for p in sorted((self.out / "cells").glob("*.json"))[:200] if (self.out / "cells").is_dir() else []:
            try:
                cell = json.loads(p.read_text())
                per_ex.append(float(cell["seconds"]) / max(1, len(cell["samples"]["ids"])))
            except (ValueError, KeyError, TypeError):
                continue
        prior_train, prior_eval = self.prior_costs()
        train_s = sum(trains) / len(trains) if trains else prior_train
        eval_s = sum(per_ex) / len(per_ex) if per_ex else prior_eval
        return train_s, eval_s

    def prior_costs(self) -> tuple[float, float]:
        """Seconds per training and per evaluated example before this run has measured any: the cost rule's
        (the screen's measurements, or the GPU estimate) for targets from a screen, else a-priori figures."""
        cost = (self.target_decision or {}).get("cost")
        if not cost:
            return DEFAULT_TRAIN_S_PER_INSTANCE * self.cfg.instances, DEFAULT_EVAL_S_PER_EXAMPLE
        ids = [t.id for t in self.targets]
        n = sum(cost["n_eval"][t] for t in ids)
        per_ex = sum(cost["n_eval"][t] * cost["eval_s_per_example"][t] for t in ids) / max(1, n)
        return cost["train_s_per_instance"] * self.cfg.instances, per_ex

    # -- jobs
    def records(self, source: str, seed: int) -> list[dict[str, Any]]:
        """The training records of one (source, seed): a seeded sample of ``instances`` rendered instances."""
        from ..mixture import MixtureConfig, build_mixture

        assert self.pool is not None
        task = self.pool.catalog.get(source)
        mcfg = MixtureConfig(per_task=self.cfg.instances, mixing="proportional",
                             seed=stable_int("sample", seed, digits=8), dedup=True, allow_empty=False)
        target_examples = [ex for t in self.targets for ex in t.eval_examples]
        mix = build_mixture([task], mcfg, target_examples=target_examples, catalog_name=self.pool.catalog.name)
        return mix.records

    def job(self, source: str | None, seed: int | None) -> ModelJob | None:
        """The engine job of one unit with only its missing cells; ``None`` when every cell is done."""
        mkey = self.model_key(source, seed)
        evals = self.missing_evals(mkey, [(self.eval_key(mkey, t), t) for t in self.targets])
        if not evals:
            return None
        opts = {"mode": "rank", "progress": False, **self.cfg.key_options("eval", exclude=("n", "seed"))}
        return self.model_job(mkey, evals, lambda: self.records(source, seed), score=score_rank,
                              train={**self.cfg.key_options("train"), "seed": seed}, eval=opts,
                              record_fields={"source": source, "seed": seed},
                              cell_fields={"source": source, "seed": seed})

    def run(self, executor: str | None = None, progress: bool = True) -> dict[str, Any]:
        """Run every unit with missing cells; returns counts and seconds."""
        if self.target_decision is not None:  # before the first cell
            from .v2_decision import check_targets_final, freeze_targets

            check_targets_final(self)
            freeze_targets(self)
        self.out.mkdir(parents=True, exist_ok=True)
        self.clean_stale()
        pending = [(s, seed) for s, seed in self.units() if self.job_needed(s, seed)]
        self.log(f"transfer: {len(self.sources)} sources x {len(self.cfg.seeds)} seeds + base, "
                 f"{len(self.targets)} targets: {len(pending)} unit(s) to run")
        t0 = time.perf_counter()
        infos = self.execute(pending, lambda u: self.job(*u), executor=executor, progress=progress, keep_going=True,
                             describe=lambda u: f"{u[0] or 'base model'}{'' if u[1] is None else f' (seed {u[1]})'}")
        return {"units_run": len([i for i in infos if "error" not in i]), "failed": [i for i in infos if "error" in i],
                "trained": sum(bool(i.get("trained")) for i in infos),
                "evaluated": sum(int(i.get("evaluated", 0)) for i in infos),
                "seconds": round(time.perf_counter() - t0, 1)}

    def job_needed(self, source: str | None, seed: int | None) -> bool:
        mkey = self.model_key(source, seed)
        return any(not self.cell_path(self.eval_key(mkey, t)).is_file() for t in self.targets)


def _keep_rank_examples(t: TargetInfo, log: Callable[[str], None]) -> None:
    """Leave out a target's evaluation examples without 2+ answer options (an error when none is left): the
    matrix scores the gold answer's likelihood among the options."""
    bad = [ex.id for ex in t.eval_examples if not ex.options or len(ex.options) < 2]
    if len(bad) == len(t.eval_examples):
        raise InstaError(f"target {t.id!r} has no examples with answer options: the transfer matrix "
                         "scores the gold answer's likelihood among the options")
    if bad:
        log(f"target {t.id}: {len(bad)} evaluation example(s) without 2+ answer options left out "
            f"({', '.join(bad[:3])})")
        t.eval_examples = [ex for ex in t.eval_examples if ex.id not in set(bad)]


def prepared_run(cfg: TransferConfig, **kw: Any) -> TransferRun:
    run = TransferRun(cfg, **kw)
    run.prepare()
    return run


def sources_summary(run: TransferRun) -> list[dict[str, Any]]:
    """Each source: id, keywords, examples, and which rule chose it (for which targets)."""
    assert run.pool is not None
    out = []
    for s in run.sources:
        t = run.pool.catalog.get(s)
        row = {"id": s, "keywords": list(t.keywords)[:6], "n_examples": run.pool.stats.get(s, {}).get("n")}
        if s in run.source_rules:
            row["chosen_by"] = run.source_rules[s]
        out.append(row)
    return out


__all__: Sequence[str] = ["TransferRun", "nearest_sources", "prepared_run", "sources_summary", "spread_sources"]

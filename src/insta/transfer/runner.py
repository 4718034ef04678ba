"""Run a transfer matrix: one model per (source, seed) trained on that source alone, evaluated on every target.

Work is split into independent **units**: the untrained base model, and each (source, seed). A unit trains its
model (unless it is the base), evaluates it on the targets whose cells are missing, writes one cell file per
target (``<out>/cells/<key>.json``, atomically, keyed by the full configuration) and deletes the weights unless
``keep_models``. A rerun (after ``kill -9`` too) recomputes nothing that was finished: finished cells are read,
a model whose training record exists is reused while its folder is there, and a half-written one is retrained.

A :class:`UnitJob` holds everything a unit needs (records, evaluation examples, options), so the same function
:func:`execute_unit` runs in this process (``executor: sequential``) or as a Ray task on a cluster
(``executor: ray``) against the same cell folder.
"""
from __future__ import annotations

import json
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

from ..catalogs.base import Catalog
from ..errors import InstaError
from ..experiment.pool import PoolInfo, TargetInfo, build_pool, parse_target, prepare_targets
from ..helpers import Log, content_hash, stable_int, timestamp
from ..paths import atomic_write_json
from ..records import Example
from .cells import cell_metrics, compact_rank_samples
from .config import TransferConfig

CACHE_VERSION = 1
#: a-priori costs for the first --plan (replaced by measured ones as soon as cells exist): SmolLM2, 2 CPU cores
DEFAULT_TRAIN_S_PER_INSTANCE = 1.1
DEFAULT_EVAL_S_PER_EXAMPLE = 0.25


def spread_sources(pool: Catalog, n: int, seed: int) -> list[str]:
    """``n`` pool units that together cover as many task types as possible (greedy keyword coverage).

    Each step takes the unit whose not-yet-covered keywords are rarest in the pool (sum of 1/frequency), ties
    broken by a stable hash of (seed, id); units without keywords come last. Deterministic for a seed.
    """
    freq: dict[str, int] = {}
    for t in pool:
        for k in set(t.keywords):
            freq[k] = freq.get(k, 0) + 1
    covered: set[str] = set()
    left = list(pool.ids)
    chosen: list[str] = []
    kw = {t.id: set(t.keywords) for t in pool}

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


@dataclass
class EvalJob:
    key: str
    target: str  # "catalog:task" as in the config
    task_id: str
    catalog: str
    examples: list[Example]


@dataclass
class UnitJob:
    """One model and the target evaluations still missing for it; self-contained so that it can travel."""

    model_key: str
    source: str | None  # None: the untrained base model
    seed: int | None
    model: str
    backend: str
    out: str
    train: dict[str, Any] = field(default_factory=dict)
    eval: dict[str, Any] = field(default_factory=dict)
    records: list[dict[str, Any]] = field(default_factory=list)
    evals: list[EvalJob] = field(default_factory=list)
    keep_model: bool = False


def _backend(name: str):
    from ..experiment.backends import make_backend

    return make_backend(name)


def execute_unit(job: UnitJob, backend: Any = None) -> dict[str, Any]:
    """Train (unless base), evaluate every missing target, write the cells; returns timings and counts."""
    backend = backend or _backend(job.backend)
    out = Path(job.out)
    info: dict[str, Any] = {"model_key": job.model_key, "trained": False, "evaluated": 0}
    handle_name = job.model
    if job.source is not None:
        handle_name, info["trained"], info["train_seconds"] = _ensure_model(job, backend, out)
    t0 = time.perf_counter()
    handle = backend.load(handle_name)
    load_s = time.perf_counter() - t0
    opts = {"mode": "rank", "progress": False, **{k: v for k, v in job.eval.items() if k not in ("n", "seed")}}
    for ev in job.evals:
        t1 = time.perf_counter()
        res = backend.evaluate(handle, ev.examples, opts, ev.task_id, ev.catalog)
        samples = compact_rank_samples(res.get("samples") or [])
        cell = {"v": CACHE_VERSION, "key": ev.key, "model_key": job.model_key, "source": job.source,
                "seed": job.seed, "target": ev.target, "metrics": cell_metrics(samples), "samples": samples,
                "seconds": round(time.perf_counter() - t1, 3), "load_seconds": round(load_s, 3),
                "finished": timestamp()}
        atomic_write_json(out / "cells" / f"{ev.key}.json", cell, indent=None)
        info["evaluated"] += 1
    del handle
    if job.source is not None and not job.keep_model:
        shutil.rmtree(out / "models" / job.model_key, ignore_errors=True)
    return info


def _ensure_model(job: UnitJob, backend: Any, out: Path) -> tuple[str, bool, float]:
    record_path = out / "trained" / f"{job.model_key}.json"
    model_dir = out / "models" / job.model_key
    if record_path.is_file():
        try:
            rec = json.loads(record_path.read_text())
            where = model_dir / rec["model_subdir"]
            if where.is_dir():
                return str(where), False, 0.0
        except (ValueError, KeyError, TypeError):
            pass
    shutil.rmtree(model_dir, ignore_errors=True)
    t0 = time.perf_counter()
    res = backend.train(job.records, model_dir, job.model, {**job.train, "seed": job.seed})
    seconds = time.perf_counter() - t0
    metrics = res.get("metrics") or {}
    keep = ("n_examples", "tokens_per_epoch", "global_step", "train_loss", "train_seconds", "tokens_seen")
    rec = {"model_key": job.model_key, "source": job.source, "seed": job.seed,
           "model_subdir": str(Path(res["model_dir"]).resolve().relative_to(model_dir.resolve())),
           "n_records": len(job.records), "seconds": round(seconds, 3),
           "metrics": {k: metrics[k] for k in keep if k in metrics}, "finished": timestamp()}
    atomic_write_json(record_path, rec)
    return res["model_dir"], True, seconds


class TransferRun:
    """Plans and runs one transfer matrix (see the module docstring); ``backend``/``log`` are test hooks."""

    def __init__(self, cfg: TransferConfig, *, out: str | None = None, backend: Any = None,
                 log: Callable[[str], None] | None = None, catalogs: dict[str, Catalog] | None = None,
                 pool_encoder: Any = None):
        self.cfg = cfg
        self.out = Path(out or cfg.out)
        self.backend = backend
        self.log = log or Log()
        self._catalogs = dict(catalogs or {})
        self.pool_encoder = pool_encoder
        self.targets: list[TargetInfo] = []
        self.pool: PoolInfo | None = None
        self.sources: list[str] = []
        self._base_id: str | None = None

    def catalog(self, name: str) -> Catalog:
        if name not in self._catalogs:
            from ..catalogs import load_catalog

            self._catalogs[name] = load_catalog(name, self.cfg.data_dir)
        return self._catalogs[name]

    def _backend(self):
        if self.backend is None:
            self.backend = _backend(self.cfg.backend)
        return self.backend

    # -- preparation (no training)
    def prepare(self) -> None:
        cfg = self.cfg
        cats = {cfg.pool.catalog: self.catalog(cfg.pool.catalog)}
        for spec in cfg.targets:
            cat, _ = parse_target(spec, cfg.pool.catalog)
            cats[cat] = self.catalog(cat)
        self.targets = prepare_targets(cfg, cats)  # type: ignore[arg-type]
        for t in self.targets:  # the matrix scores rank classification: examples need 2+ answer options
            bad = [ex.id for ex in t.eval_examples if not ex.options or len(ex.options) < 2]
            if len(bad) == len(t.eval_examples):
                raise InstaError(f"target {t.id!r} has no examples with answer options: the transfer matrix "
                                 "scores the gold answer's likelihood among the options")
            if bad:
                self.log(f"target {t.id}: {len(bad)} evaluation example(s) without 2+ answer options left out "
                         f"({', '.join(bad[:3])})")
                t.eval_examples = [ex for ex in t.eval_examples if ex.id not in set(bad)]
        self.pool = build_pool(cfg, cats[cfg.pool.catalog], self.targets,  # type: ignore[arg-type]
                               encoder=self.pool_encoder, log=self.log)
        pool = self.pool.catalog
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
        else:
            chosen = spread_sources(pool, src.n or len(pool), cfg.seed)
        if src.n and len(chosen) < src.n:
            self.log(f"sources: the pool holds {len(chosen)} units, fewer than sources.n = {src.n}")
        self.sources = chosen
        if cfg.backend == "transformers":
            from ..lm import builtin_name, resolve_model

            if not builtin_name(cfg.model):
                resolve_model(cfg.model)

    # -- keys
    def base_identity(self) -> str:
        if self._base_id is None:
            self._base_id = self._backend().base_identity(self.cfg.model)
        return self._base_id

    def model_key(self, source: str | None, seed: int | None) -> str:
        if source is None:
            return "base"
        return content_hash({"v": CACHE_VERSION, "kind": "transfer-model", "base": self.base_identity(),
                             "backend": self.cfg.backend, "source": source, "seed": seed,
                             "instances": self.cfg.instances, "train": self.cfg.train,
                             "dedup_against": sorted(t.id for t in self.targets)})

    def eval_key(self, model_key: str, target: TargetInfo) -> str:
        return content_hash({"v": CACHE_VERSION, "kind": "transfer-eval", "model": model_key,
                             "base": self.base_identity() if model_key == "base" else None,
                             "backend": self.cfg.backend, "target": target.id,
                             "eval_ids": [ex.id for ex in target.eval_examples],
                             "eval": {k: v for k, v in self.cfg.eval.items() if k not in ("n", "seed")}})

    def cell_path(self, key: str) -> Path:
        return self.out / "cells" / f"{key}.json"

    # -- planning
    def units(self) -> list[tuple[str | None, int | None]]:
        return [(None, None)] + [(s, seed) for s in self.sources for seed in self.cfg.seeds]

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
        train_s = sum(trains) / len(trains) if trains else DEFAULT_TRAIN_S_PER_INSTANCE * self.cfg.instances
        eval_s = sum(per_ex) / len(per_ex) if per_ex else DEFAULT_EVAL_S_PER_EXAMPLE
        return train_s, eval_s

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

    def job(self, source: str | None, seed: int | None) -> UnitJob | None:
        """The job of one unit with only its missing cells; ``None`` when every cell is done."""
        mkey = self.model_key(source, seed)
        evals = []
        for t in self.targets:
            key = self.eval_key(mkey, t)
            if not self.cell_path(key).is_file():
                evals.append(EvalJob(key, t.id, t.task.id, t.catalog, list(t.eval_examples)))
        if not evals:
            return None
        records = self.records(source, seed) if source is not None else []
        return UnitJob(model_key=mkey, source=source, seed=seed, model=self.cfg.model, backend=self.cfg.backend,
                       out=str(self.out), train=dict(self.cfg.train), eval=dict(self.cfg.eval), records=records,
                       evals=evals, keep_model=self.cfg.keep_models)

    def clean_stale(self) -> None:
        """Model folders without a training record (a killed training) and leftover temp files go first."""
        from ..paths import remove_stale_tmp

        models = self.out / "models"
        if models.is_dir():
            for d in models.iterdir():
                if d.is_dir() and not (self.out / "trained" / f"{d.name}.json").is_file():
                    shutil.rmtree(d, ignore_errors=True)
        for sub in ("cells", "trained"):
            remove_stale_tmp(self.out / sub)

    def run(self, executor: str | None = None, progress: bool = True) -> dict[str, Any]:
        """Run every unit with missing cells; returns counts and seconds."""
        from ..executors import run_jobs

        self.out.mkdir(parents=True, exist_ok=True)
        self.clean_stale()
        pending = [(s, seed) for s, seed in self.units() if self.job_needed(s, seed)]
        self.log(f"transfer: {len(self.sources)} sources x {len(self.cfg.seeds)} seeds + base, "
                 f"{len(self.targets)} targets: {len(pending)} unit(s) to run")
        t0 = time.perf_counter()
        infos = run_jobs(execute_unit, pending, lambda u: self.job(*u), executor or self.cfg.executor,
                         backend=self._backend() if (executor or self.cfg.executor) == "sequential" else None,
                         describe=lambda u: f"{u[0] or 'base model'}{'' if u[1] is None else f' (seed {u[1]})'}",
                         log=self.log, progress=progress, keep_going=True)
        return {"units_run": len([i for i in infos if "error" not in i]), "failed": [i for i in infos if "error" in i],
                "trained": sum(bool(i.get("trained")) for i in infos),
                "evaluated": sum(int(i.get("evaluated", 0)) for i in infos),
                "seconds": round(time.perf_counter() - t0, 1)}

    def job_needed(self, source: str | None, seed: int | None) -> bool:
        mkey = self.model_key(source, seed)
        return any(not self.cell_path(self.eval_key(mkey, t)).is_file() for t in self.targets)


def prepared_run(cfg: TransferConfig, **kw: Any) -> TransferRun:
    run = TransferRun(cfg, **kw)
    run.prepare()
    return run


def sources_summary(run: TransferRun) -> list[dict[str, Any]]:
    assert run.pool is not None
    out = []
    for s in run.sources:
        t = run.pool.catalog.get(s)
        out.append({"id": s, "keywords": list(t.keywords)[:6], "n_examples": run.pool.stats.get(s, {}).get("n")})
    return out


__all__: Sequence[str] = ["EvalJob", "TransferRun", "UnitJob", "execute_unit", "prepared_run", "spread_sources"]

"""One model of the comparison grid as a self-contained job: train it (unless it is the base model or already
trained), evaluate it on every target whose cell is missing, write those cells, delete the weights.

:func:`execute_grid_model` is what :func:`insta.executors.run_jobs` runs, in this process or as a Ray task, so the
grid and the transfer matrix share one executor. Cells and training records have the same form as before.
"""
from __future__ import annotations

import json
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..helpers import timestamp
from ..paths import atomic_write_json
from ..records import Example
from .config import CACHE_VERSION

TRAIN_RECORD_KEYS = ("n_examples", "tokens_per_epoch", "n_truncated", "global_step", "train_loss", "first_loss",
                     "last_loss", "train_seconds", "tokens_seen", "tokens_per_second", "learning_rate")


@dataclass
class GridEval:
    key: str
    target: str
    task_id: str
    catalog: str
    examples: list[Example]


@dataclass
class GridModelJob:
    model_key: str  # "base" for the untrained model
    model: str  # the base model's name or path
    backend: str
    out: str
    labels: list[str]
    allocation: dict[str, int] | None = None
    records: list[dict[str, Any]] | None = None  # None: already trained (or the base model)
    mixture_seconds: float = 0.0
    trained_dir: str | None = None  # an existing trained model's folder
    train_record: dict[str, Any] = field(default_factory=dict)
    train: dict[str, Any] = field(default_factory=dict)
    eval: dict[str, Any] = field(default_factory=dict)
    evals: list[GridEval] = field(default_factory=list)
    keep_model: bool = False


def execute_grid_model(job: GridModelJob, backend: Any = None) -> dict[str, Any]:
    """Do one job (see the module docstring); returns the cells written and what was trained."""
    if backend is None:
        from .backends import make_backend

        backend = make_backend(job.backend)
    out = Path(job.out)
    info: dict[str, Any] = {"model_key": job.model_key, "labels": job.labels, "trained": False, "cells": []}
    handle_name, train_info = job.model, {}
    if job.model_key != "base":
        if job.trained_dir is not None:
            handle_name, train_info = job.trained_dir, job.train_record
        else:
            handle_name, train_info = _train(job, backend, out)
            info["trained"] = True
            info["train_record"] = train_info
    t0 = time.perf_counter()
    handle = backend.load(handle_name)
    load_s = round(time.perf_counter() - t0, 3)
    for ev in job.evals:
        info["cells"].append(_evaluate(job, backend, handle, ev, out, {"train": train_info, "load_seconds": load_s}))
    info["evaluated"] = len(job.evals)
    del handle
    if job.model_key != "base" and not job.keep_model:
        shutil.rmtree(out / "models" / job.model_key, ignore_errors=True)
    return info


def _train(job: GridModelJob, backend: Any, out: Path) -> tuple[str, dict[str, Any]]:
    mdir = out / "models" / job.model_key
    shutil.rmtree(mdir, ignore_errors=True)
    t1 = time.perf_counter()
    res = backend.train(job.records, mdir, job.model, dict(job.train))
    train_s = time.perf_counter() - t1
    metrics = res.get("metrics") or {}
    try:
        rel = str(Path(res["model_dir"]).resolve().relative_to(out.resolve()))
    except ValueError:
        rel = str(Path(res["model_dir"]).resolve())
    rec = {"model_key": job.model_key, "model_dir": rel, "labels": job.labels, "allocation": job.allocation,
           "mixture_seconds": round(job.mixture_seconds, 3), "seconds": round(train_s, 3),
           "metrics": {k: metrics.get(k) for k in TRAIN_RECORD_KEYS if k in metrics},
           "finished": timestamp()}
    atomic_write_json(out / "trained" / f"{job.model_key}.json", rec)
    return res["model_dir"], rec


def _evaluate(job: GridModelJob, backend: Any, handle: Any, ev: GridEval, out: Path,
              extra: dict[str, Any]) -> dict[str, Any]:
    from .samples import compact_samples

    t0 = time.perf_counter()
    res = backend.evaluate(handle, ev.examples, job.eval, ev.task_id, ev.catalog)
    seconds = time.perf_counter() - t0
    cell = {
        "v": CACHE_VERSION, "key": ev.key, "model_key": job.model_key, "target": ev.target,
        "metrics": {k: v for k, v in (res.get("metrics") or {}).items()},
        "primary_metric_evaluate": res.get("primary_metric"),
        "samples": compact_samples(res), "seconds": round(seconds, 3),
        "finished": timestamp(), **extra,
    }
    atomic_write_json(out / "cells" / f"{ev.key}.json", cell)
    return {"key": ev.key, "target": ev.target, "seconds": cell["seconds"], "samples": cell["samples"]}


def trained_record(out: Path, model_key: str) -> tuple[str, dict[str, Any]] | None:
    """An earlier training's (model folder, record) when both are still there."""
    rec_path = out / "trained" / f"{model_key}.json"
    if not rec_path.is_file():
        return None
    try:
        rec = json.loads(rec_path.read_text())
    except ValueError:
        return None
    where = out / rec.get("model_dir", "-")
    return (str(where), rec) if rec.get("model_dir") and where.is_dir() else None


__all__ = ["GridEval", "GridModelJob", "execute_grid_model", "trained_record"]

"""The one job of every run: a model (trained on the job's records, reused when already trained, or the untrained
base model) evaluated on each target whose cell is missing, each cell written as soon as it is complete, then
the weights deleted (unless kept).

A :class:`ModelJob` holds everything it needs (records, evaluation examples, options, how to score a result), so
:func:`execute_job` runs the same in this process or as a Ray task (:func:`insta.engine.executors.run_jobs`)
against the same output folder. The comparison grid and the transfer matrix differ only in the jobs they make.

Training records (``<out>/trained/<model key>.json``) have one form: ``model_dir`` (relative to ``<out>``),
``seconds``, ``metrics`` and what the run adds; :func:`trained_record` also reads the older transfer form
(``model_subdir``, relative to the model's folder).
"""
from __future__ import annotations

import json
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

from ..util.helpers import timestamp
from ..util.paths import atomic_write_json
from ..records import Example
from .cells import write_cell

BASE = "base"  # the model key of the untrained base model
TRAIN_RECORD_KEYS = ("n_examples", "tokens_per_epoch", "n_truncated", "global_step", "train_loss", "first_loss",
                     "last_loss", "train_seconds", "tokens_seen", "tokens_per_second", "learning_rate")


@dataclass
class CellJob:
    """One evaluation of a job's model: the cell's key, the target and its evaluation examples."""

    key: str
    target: str  # the target as the config names it ("catalog:task")
    task_id: str
    catalog: str
    examples: list[Example]


@dataclass
class ModelJob:
    """One model and its missing cells; self-contained so that it can travel to a Ray worker."""

    model_key: str  # BASE for the untrained model
    model: str  # the base model's name or path
    backend: str
    out: str
    score: Callable[[dict[str, Any]], dict[str, Any]]  # evaluation result -> the cell's metrics and samples
    train: dict[str, Any] = field(default_factory=dict)  # the backend's training options
    eval: dict[str, Any] = field(default_factory=dict)  # the backend's evaluation options
    records: list[dict[str, Any]] | None = None  # None: already trained (or the base model)
    trained_dir: str | None = None  # an existing trained model's folder
    train_record: dict[str, Any] = field(default_factory=dict)
    record_fields: dict[str, Any] = field(default_factory=dict)  # what the run adds to the training record
    cell_fields: dict[str, Any] = field(default_factory=dict)  # what the run adds to every cell
    evals: list[CellJob] = field(default_factory=list)
    keep_model: bool = False


def execute_job(job: ModelJob, backend: Any = None) -> dict[str, Any]:
    """Do one job (see the module docstring); returns what was trained and the cells written."""
    if backend is None:
        from .backends import make_backend

        backend = make_backend(job.backend)
    out = Path(job.out)
    info: dict[str, Any] = {"model_key": job.model_key, "trained": False, "train_seconds": 0.0, "cells": []}
    handle_name, record = job.model, {}
    if job.model_key != BASE:
        if job.trained_dir is not None:
            handle_name, record = job.trained_dir, job.train_record
        else:
            handle_name, record = _train(job, backend, out)
            info.update(trained=True, train_seconds=record["seconds"], train_record=record)
    t0 = time.perf_counter()
    handle = backend.load(handle_name)
    load_s = time.perf_counter() - t0
    for ev in job.evals:
        t1 = time.perf_counter()
        res = backend.evaluate(handle, ev.examples, job.eval, ev.task_id, ev.catalog)
        scored = job.score(res)
        path = (res.get("timings") or {}).get("scoring_path")
        fields = {**(job.cell_fields or {}), **({"scoring_path": path} if path else {})}
        cell = write_cell(out, ev.key, job.model_key, ev.target, scored, seconds=time.perf_counter() - t1,
                          load_seconds=load_s, train=record, fields=fields)
        info["cells"].append({k: cell[k] for k in ("key", "target", "seconds", "metrics", "samples")})
    info["evaluated"] = len(job.evals)
    del handle
    if job.model_key != BASE and not job.keep_model:
        shutil.rmtree(out / "models" / job.model_key, ignore_errors=True)
    return info


def _train(job: ModelJob, backend: Any, out: Path) -> tuple[str, dict[str, Any]]:
    mdir = out / "models" / job.model_key
    shutil.rmtree(mdir, ignore_errors=True)
    t0 = time.perf_counter()
    res = backend.train(job.records or [], mdir, job.model, dict(job.train))
    seconds = time.perf_counter() - t0
    metrics = res.get("metrics") or {}
    try:
        rel = str(Path(res["model_dir"]).resolve().relative_to(out.resolve()))
    except ValueError:
        rel = str(Path(res["model_dir"]).resolve())
    rec = {"model_key": job.model_key, "model_dir": rel, **job.record_fields, "n_records": len(job.records or []),
           "seconds": round(seconds, 3), "metrics": {k: metrics[k] for k in TRAIN_RECORD_KEYS if k in metrics},
           "finished": timestamp()}
    atomic_write_json(out / "trained" / f"{job.model_key}.json", rec)
    return res["model_dir"], rec


def trained_record(out: Path, model_key: str) -> tuple[str, dict[str, Any]] | None:
    """An earlier training's (model folder, record) when both are still there (either record form)."""
    rec_path = Path(out) / "trained" / f"{model_key}.json"
    if not rec_path.is_file():
        return None
    try:
        rec = json.loads(rec_path.read_text())
    except ValueError:
        return None
    if not isinstance(rec, dict):
        return None
    if isinstance(rec.get("model_dir"), str) and rec["model_dir"]:
        where = Path(out) / rec["model_dir"]
    elif isinstance(rec.get("model_subdir"), str):  # the transfer matrix's first form
        where = Path(out) / "models" / model_key / rec["model_subdir"]
    else:
        return None
    return (str(where), rec) if where.is_dir() else None


def model_job(out: str | Path, model_key: str, model: str, backend: str, evals: Sequence[CellJob],
              make_records: Callable[[], list[dict[str, Any]]], **fields: Any) -> ModelJob:
    """The job of one model: its missing cells (``evals``), and its training records unless it is the base model
    or already trained (then its folder and record are reused); ``fields``: the rest of :class:`ModelJob`."""
    job = ModelJob(model_key=model_key, model=model, backend=backend, out=str(out), evals=list(evals), **fields)
    if model_key != BASE:
        done = trained_record(Path(out), model_key)
        if done is not None:
            job.trained_dir, job.train_record = done
        else:
            t0 = time.perf_counter()
            job.records = make_records()
            job.record_fields = {**job.record_fields, "mixture_seconds": round(time.perf_counter() - t0, 3)}
    return job


def clean_stale(out: str | Path, subdirs: Sequence[str] = ("", "cells", "trained")) -> None:
    """Before anything runs: model folders whose training did not finish (no record) and the temp files of atomic
    writes that a killed run left in ``subdirs`` of ``out``."""
    from ..util.paths import remove_stale_tmp

    out = Path(out)
    for sub in subdirs:
        remove_stale_tmp(out / sub)
    root = out / "models"
    if root.is_dir():
        for d in root.iterdir():
            if d.is_dir() and not (out / "trained" / f"{d.name}.json").is_file():
                shutil.rmtree(d, ignore_errors=True)


def read_train_records(out: Path, keys: Any) -> list[dict[str, Any]]:
    """The training records of ``keys`` that exist (unreadable ones skipped), in the order of ``keys``."""
    recs = []
    for key in keys:
        p = Path(out) / "trained" / f"{key}.json"
        if p.is_file():
            try:
                recs.append(json.loads(p.read_text()))
            except ValueError:
                continue
    return recs


__all__ = ["BASE", "CellJob", "ModelJob", "TRAIN_RECORD_KEYS", "clean_stale", "execute_job", "model_job",
           "read_train_records", "trained_record"]

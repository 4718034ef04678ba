"""``results.json`` of an experiment: everything the report needs, assembled from the config, the plan and the
cell files (:func:`assemble_results`), and the record of the run that did the work."""
from __future__ import annotations

import json
import os
import platform
from pathlib import Path
from typing import Any, Protocol, Sequence

from ..util.helpers import timestamp
from ..engine.cells import upgrade_cell
from .entries import GridEntry


class Experiment(Protocol):
    """What the assembler reads of a planned grid (:class:`insta.experiment.runner.Experiment` has it); a
    protocol, so that this module does not import the runner that imports it."""

    cfg: Any
    entries: Sequence[GridEntry]
    methods: dict[str, Any]
    backend: Any
    targets: Sequence[Any]
    pool: Any
    stats: dict[str, int]
    timings: dict[str, float]

    def cell_path(self, key: str) -> Path: ...

    def train_record_path(self, key: str) -> Path: ...


def machine_info() -> dict[str, Any]:
    """Python, platform, CPUs and torch of this machine (for the report's reproducibility section)."""
    info = {"python": platform.python_version(), "platform": platform.platform(), "cpus": os.cpu_count()}
    try:
        info["cpus_available"] = len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover
        pass
    try:
        import torch

        info["torch"] = torch.__version__
        info["torch_threads"] = torch.get_num_threads()
        info["cuda"] = torch.cuda.is_available()
    except ImportError:  # pragma: no cover
        pass
    return info


def _cell_entry(exp: Experiment, e: GridEntry, cell: dict[str, Any]) -> dict[str, Any]:
    """One finished grid entry as ``results.json`` lists it (the per-example arrays go to ``samples``)."""
    train_path = exp.train_record_path(e.model_key)
    train = json.loads(train_path.read_text()) if train_path.is_file() else {}
    return {
        "target": e.target, "label": e.label, "method": e.method, "group": e.group, "seed": e.seed,
        "selected": e.selection.task_ids if e.selection else [],
        "selection": e.selection.to_dict() if e.selection else None,
        "allocation": e.allocation, "model_key": e.model_key, "eval_key": e.eval_key,
        "shared_model": len({x.target for x in exp.entries if x.model_key == e.model_key}) > 1,
        "evaluate_metrics": cell.get("metrics", {}),
        "eval_seconds": cell.get("seconds"), "finished": cell.get("finished"),
        "train": {k: train.get(k) for k in ("seconds", "metrics", "mixture_seconds") if k in train},
    }


def _methods(exp: Experiment) -> list[dict[str, Any]]:
    """The grid's columns with what each method consumes and its parameters (the base model first)."""
    cfg = exp.cfg
    methods = [{"label": "base", "method": "base", "group": "base", "consumes": [], "depends_on_target": False,
                "params": {"model": cfg.model}}] if cfg.include_base else []
    for spec in cfg.methods:
        d = exp.methods[spec.label].describe()
        methods.append({"label": spec.label, "method": spec.name, "group": spec.group, "seed": spec.seed,
                        "consumes": d["consumes"], "depends_on_target": d["depends_on_target"], "params": d["params"]})
    return methods


def _train_records(exp: Experiment) -> list[dict[str, Any]]:
    recs = []
    for mkey in sorted({e.model_key for e in exp.entries if e.model_key != "base"}):
        p = exp.train_record_path(mkey)
        if p.is_file():
            recs.append(json.loads(p.read_text()))
    return recs


def assemble_results(exp: Experiment) -> dict[str, Any]:
    """Everything the report needs, from the config, the plan and the cell files."""
    cfg = exp.cfg
    cells_out = []
    samples: dict[str, Any] = {}
    missing = []
    for e in exp.entries:
        path = exp.cell_path(e.eval_key)
        if not path.is_file():
            missing.append(f"{e.target}/{e.label}")
            continue
        cell = upgrade_cell(json.loads(path.read_text()))
        samples[e.eval_key] = cell["samples"]
        cells_out.append(_cell_entry(exp, e, cell))
    return {
        "name": cfg.name,
        "config_path": cfg.path,
        "config": cfg.raw,
        "k": cfg.k,
        "n_total": cfg.n_total,
        "model": cfg.model,
        "backend": exp.backend.name,
        "targets": [t.summary() for t in exp.targets],
        "pool": exp.pool.summary() if exp.pool else {},
        "methods": _methods(exp),
        "cells": cells_out,
        "samples": samples,
        "missing_cells": missing,
        "plan": [{"target": e.target, "label": e.label, "selected": e.selection.task_ids if e.selection else [],
                  "model_key": e.model_key, "eval_key": e.eval_key, "done": exp.cell_path(e.eval_key).is_file()}
                 for e in exp.entries],
        "trained_models": _train_records(exp),
        "stats": dict(exp.stats),
        "timings": {k: round(v, 2) for k, v in exp.timings.items()},
        "machine": machine_info(),
        "finished": timestamp(),
    }


def record_working_run(results: dict[str, Any], out: Path, stats: dict[str, int], command: str | None) -> None:
    """``results["working_run"]``: the run that trained or evaluated something. A rerun that found every cell
    cached keeps the earlier record from ``<out>/results.json``."""
    results["working_run"] = {"command": command, "seconds_total": results["seconds_total"],
                              "stats": dict(stats), "finished": results.get("finished"),
                              "machine": results.get("machine")}
    prev = out / "results.json"
    if not (prev.is_file() and stats["trained"] == 0 and stats["evaluated"] == 0):
        return
    try:
        old = json.loads(prev.read_text())
    except ValueError:
        old = {}
    if isinstance(old.get("working_run"), dict):
        results["working_run"] = old["working_run"]
    elif "seconds_total_of_run_that_did_the_work" in old:  # results.json written before "working_run"
        results["working_run"].update(command=old.get("command_of_run_that_did_the_work"),
                                      seconds_total=old["seconds_total_of_run_that_did_the_work"])


__all__ = ["assemble_results", "machine_info", "record_working_run"]

"""What a transfer run writes from its finished cells: the matrix (:func:`build_matrix`), ``results.json``
(:func:`assemble_results`: plan, sources, targets, pool, reliability, noise, compute) and the method scoring
of the report (:func:`score_matrix`)."""
from __future__ import annotations

import json
import time
from typing import Any, Callable

from ..engine.jobs import read_train_records
from ..util.helpers import timestamp
from ..matrix.cells import PRIMARY
from ..matrix.matrix import TransferMatrix, matrix_from_cells, noise_figures, reliability
from .runner import TransferRun, sources_summary


def collect(run: TransferRun) -> tuple[list[dict[str, Any]], dict[str, dict[str, Any]]]:
    """The finished cells of this configuration: (source cells, target -> base cell)."""
    cells, base = [], {}
    for source, seed in run.units():
        mkey = run.model_key(source, seed)
        for t in run.targets:
            p = run.cell_path(run.eval_key(mkey, t))
            if not p.is_file():
                continue
            try:
                cell = json.loads(p.read_text())
            except ValueError:
                continue
            if source is None:
                base[t.id] = cell
            else:
                cells.append(cell)
    return cells, base


def build_matrix(run: TransferRun) -> tuple[TransferMatrix, list[dict[str, Any]], dict[str, dict[str, Any]]]:
    cells, base = collect(run)
    assert run.pool is not None
    meta = {"name": run.cfg.name, "source_catalog": run.cfg.pool.catalog, "unit": run.cfg.pool.unit,
            "model": run.cfg.model, "base_identity": run.base_identity(), "instances": run.cfg.instances,
            "seeds": list(run.cfg.seeds), "sources": list(run.sources), "targets": [t.id for t in run.targets],
            "eval_ids": {t.id: [ex.id for ex in t.eval_examples] for t in run.targets},
            "train": run.cfg.key_options("train"), "eval": run.cfg.key_options("eval"), "config_path": run.cfg.path,
            "primary": PRIMARY}
    return matrix_from_cells(cells, base, meta), cells, base


def assemble_results(run: TransferRun, matrix: TransferMatrix, cells: list[dict[str, Any]],
                     base: dict[str, dict[str, Any]], stats: dict[str, Any], command: str | None,
                     t0: float) -> dict[str, Any]:
    """``results.json`` of a transfer run (the scoring is added by the caller)."""
    cfg = run.cfg
    plan = run.plan()
    return {
        "name": cfg.name, "config": cfg.raw, "config_path": cfg.path, "command": command,
        "plan": {k: v for k, v in plan.items() if k != "units"}, "complete": plan["cells_done"] == plan["cells"],
        "sources": sources_summary(run), "targets": [t.summary() for t in run.targets],
        "pool": run.pool.summary() if run.pool else {},
        "reliability": {m: reliability(matrix, m, cfg.reliability_min) for m in matrix.metrics},
        "noise": noise_figures(cells, base), "stats": stats,
        "compute": _compute(run, cells, base), "seconds": round(time.perf_counter() - t0, 1),
        "finished": timestamp(),
    }


def score_matrix(run: TransferRun, matrix: TransferMatrix, log: Callable[[str], None] = lambda m: None
                 ) -> dict[str, Any]:
    """The configured method scoring of this run's matrix (see :mod:`insta.evaluators.methods_vs_matrix`)."""
    from ..evaluators.methods_vs_matrix import (DEFAULT_METHODS, aligned_methods, evaluate_methods_on_matrix,
                                                method_specs, with_encoder)

    from ..align import ensure_aligned_encoder

    sc = run.cfg.scoring
    specs = method_specs(sc.methods, "scoring.methods") if sc.methods else DEFAULT_METHODS
    methods = with_encoder(specs, sc.encoder)
    enc = sc.aligned_encoder
    if ensure_aligned_encoder(enc, lambda: run.catalog(run.cfg.pool.catalog), sc.align,
                              [t.task for t in run.targets], log=log, what="scoring"):
        if not sc.methods:  # a given list (a pre-registered one) names its INSTA-aligned rows itself
            methods += aligned_methods(enc)
    elif enc:
        log(f"scoring: aligned encoder {enc} not found: INSTA-aligned left out (train it with `insta align`, or "
            "give scoring.align to have the report train it)")
    return evaluate_methods_on_matrix(
        matrix, run.catalog, metric=sc.metric or PRIMARY, methods=methods, k=sc.k, target_samples=sc.target_samples,
        library_size=sc.library_size, reliability_min=run.cfg.reliability_min,
        include_unreliable=sc.include_unreliable, draws=sc.draws, n_boot=sc.bootstrap,
        seed=run.cfg.seed if sc.seed is None else sc.seed, log=log)


def _compute(run: TransferRun, cells: list[dict[str, Any]], base: dict[str, dict[str, Any]]) -> dict[str, Any]:
    trains = read_train_records(run.out, sorted({run.model_key(s, seed) for s, seed in run.units() if s is not None}))
    eval_s = [c.get("seconds", 0.0) for c in cells] + [c.get("seconds", 0.0) for c in base.values()]
    n_ex = sum(len(c["samples"]["ids"]) for c in cells) + sum(len(c["samples"]["ids"]) for c in base.values())
    return {"trainings": len(trains), "train_seconds": round(sum(t.get("seconds", 0.0) for t in trains), 1),
            "evaluations": len(eval_s), "eval_seconds": round(sum(eval_s), 1), "eval_examples": n_ex,
            "seconds_per_training": round(sum(t.get("seconds", 0.0) for t in trains) / len(trains), 1)
            if trains else None,
            "seconds_per_eval_example": round(sum(eval_s) / n_ex, 3) if n_ex else None}


__all__ = ["assemble_results", "build_matrix", "collect", "score_matrix"]

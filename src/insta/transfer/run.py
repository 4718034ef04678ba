"""``run_transfer``: run the missing cells, then write the matrix (CSV + JSON), its reliability and the report."""
from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any, Callable

from ..errors import InstaError
from ..helpers import timestamp
from ..paths import atomic_write_json, atomic_write_text
from .cells import PRIMARY
from .config import TransferConfig
from .matrix import TransferMatrix, matrix_from_cells, noise_figures, reliability
from .runner import TransferRun, sources_summary


#: what a transfer run writes at the top of its folder (cells/, trained/ and models/ are keyed by content)
OUTPUTS = ("matrix.csv", "matrix.json", "results.json", "report.md", "report.html", "transfer_heatmap.png",
           "method_scores.png")
#: config keys that change neither the cells nor the matrix: a rerun that changes only these is the same run
NOT_IDENTITY = {"out", "data_dir", "executor", "scoring", "description", "keep_models", "reliability_min"}


def check_out_folder(cfg: TransferConfig, out: str | Path | None = None, overwrite: bool = False) -> None:
    """Refuse (unless ``overwrite``) an output folder whose matrix and report this run would replace: files of
    the same names that no transfer run wrote (a user's own ``matrix.csv``), or another run's, made with a
    configuration that differs in a key that changes the matrix (as ``insta align`` refuses a changed config)."""
    folder = Path(out or cfg.out)
    if overwrite or not folder.is_dir():
        return
    prev = _read_results(folder / "results.json")
    if prev is not None:
        old, new = prev["config"], cfg.raw
        diff = [k for k in sorted(set(old) | set(new), key=str) if k not in NOT_IDENTITY and old.get(k) != new.get(k)]
        if diff:
            raise InstaError(f"{folder} holds a transfer run with another configuration (differs in: "
                             f"{', '.join(map(str, diff))}): pass --overwrite to replace its matrix and report, or "
                             "choose another --out")
        return
    if (folder / "cells").is_dir():  # a run killed before its first results.json
        return
    foreign = [n for n in OUTPUTS if (folder / n).exists()]
    if foreign:
        raise InstaError(f"{folder} holds {', '.join(foreign)} that no insta transfer run wrote: pass --overwrite "
                         f"to replace {'it' if len(foreign) == 1 else 'them'}, or choose another --out")


def _read_results(path: Path) -> dict[str, Any] | None:
    """A transfer run's ``results.json`` (``None`` when missing, unreadable or written by something else)."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError, RecursionError):
        return None
    ok = isinstance(data, dict) and isinstance(data.get("config"), dict) and isinstance(data.get("plan"), dict)
    return data if ok else None


def plan_transfer(cfg: TransferConfig, **kw: Any) -> dict[str, Any]:
    """Validate and plan (pool, sources, cells done, ETA) without training anything."""
    run = TransferRun(cfg, **kw)
    run.prepare()
    plan = run.plan()
    plan["sources"] = sources_summary(run)
    plan["targets"] = [t.id for t in run.targets]
    return plan


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
            "train": run.cfg.train, "eval": run.cfg.eval, "config_path": run.cfg.path, "primary": PRIMARY}
    return matrix_from_cells(cells, base, meta), cells, base


def run_transfer(cfg: TransferConfig, *, out: str | None = None, backend: Any = None,
                 log: Callable[[str], None] | None = None, catalogs: dict | None = None, pool_encoder: Any = None,
                 executor: str | None = None, progress: bool = True, report: bool = True,
                 run_cells: bool = True, command: str | None = None) -> dict[str, Any]:
    """Run every missing (source, seed) unit, then write ``matrix.csv``, ``matrix.json``, ``results.json`` and
    (``report``) the report with method scoring; ``run_cells=False`` only rewrites them from finished cells."""
    t0 = time.perf_counter()
    run = TransferRun(cfg, out=out, backend=backend, log=log, catalogs=catalogs, pool_encoder=pool_encoder)
    if not run_cells:
        return _write_outputs(run, {"units_run": 0}, t0, report, command)
    from ..paths import run_lock

    with run_lock(run.out, "transfer"):  # a second run on this folder is refused: it would delete models in use
        return _write_outputs(run, None, t0, report, command, executor=executor, progress=progress)


def _write_outputs(run: TransferRun, stats: dict[str, Any] | None, t0: float, report: bool, command: str | None,
                   executor: str | None = None, progress: bool = True) -> dict[str, Any]:
    """Prepare, run the missing units (``stats`` None) and write the matrix, results and report."""
    cfg = run.cfg
    run.prepare()
    if stats is None:
        stats = run.run(executor, progress=progress)
    matrix, cells, base = build_matrix(run)
    if not run_cells_done(stats, cells, base):
        raise InstaError(f"no finished cells of this configuration under {run.out}: nothing to report yet "
                         "(run `insta transfer` without --report-only first)")
    out_dir = run.out
    atomic_write_text(out_dir / "matrix.csv", matrix.to_csv())
    atomic_write_json(out_dir / "matrix.json", matrix.to_dict(), indent=None)
    plan = run.plan()
    results: dict[str, Any] = {
        "name": cfg.name, "config": cfg.raw, "config_path": cfg.path, "command": command,
        "plan": {k: v for k, v in plan.items() if k != "units"}, "complete": plan["cells_done"] == plan["cells"],
        "sources": sources_summary(run), "targets": [t.summary() for t in run.targets],
        "pool": run.pool.summary() if run.pool else {},
        "reliability": {m: reliability(matrix, m, cfg.reliability_min) for m in matrix.metrics},
        "noise": noise_figures(cells, base), "stats": stats,
        "compute": _compute(run, cells, base), "seconds": round(time.perf_counter() - t0, 1),
        "finished": timestamp(),
    }
    if report and cfg.scoring.get("enabled", True) and matrix.rows:
        try:
            results["scoring"] = score_matrix(run, matrix, log=run.log)
        except InstaError as err:  # e.g. no reliable target yet: the report says so instead of failing
            results["scoring_skipped"] = str(err)
            run.log(f"scoring skipped: {err}")
    atomic_write_json(out_dir / "results.json", results)
    if report:
        from .report import write_transfer_report

        write_transfer_report(results, matrix, out_dir, log=run.log)
    return results


def run_cells_done(stats: dict[str, Any], cells: list[dict[str, Any]], base: dict[str, dict[str, Any]]) -> bool:
    """Whether there is anything to write: a run that ran units always writes (its failures included); a report
    from the cells alone needs at least one finished cell."""
    return bool(stats.get("units_run") or stats.get("failed") or cells or base)


def score_matrix(run: TransferRun, matrix: TransferMatrix, log: Callable[[str], None] = lambda m: None
                 ) -> dict[str, Any]:
    """The configured method scoring of this run's matrix (see :mod:`insta.transfer.methods_vs_matrix`)."""
    from .methods_vs_matrix import (DEFAULT_METHODS, aligned_methods, evaluate_methods_on_matrix, parse_method_specs,
                                    with_encoder)

    sc = run.cfg.scoring
    specs = parse_method_specs(sc["methods"], "scoring.methods") if sc.get("methods") else DEFAULT_METHODS
    methods = with_encoder(specs, sc.get("encoder"))
    enc = sc.get("aligned_encoder")
    if enc and not (Path(enc) / "modules.json").is_file() and sc.get("align") is not None:
        from ..align import align_for_targets

        log(f"scoring: training the aligned encoder into {enc} (align: {sc['align']})")
        align_for_targets(run.catalog(run.cfg.pool.catalog), [t.task for t in run.targets], enc, sc["align"],
                          log=lambda m: log(f"align: {m}"))
    if enc and (Path(enc) / "modules.json").is_file():
        methods += aligned_methods(enc)
    elif enc:
        log(f"scoring: aligned encoder {enc} not found: INSTA-aligned left out (train it with `insta align`, or "
            "give scoring.align to have the report train it)")
    return evaluate_methods_on_matrix(
        matrix, run.catalog, metric=sc.get("metric", PRIMARY), methods=methods, k=int(sc.get("k", 5)),
        target_samples=int(sc.get("target_samples", 32)), library_size=int(sc.get("library_size", 50)),
        reliability_min=run.cfg.reliability_min, include_unreliable=bool(sc.get("include_unreliable", False)),
        draws=int(sc.get("draws", 1000)),
        n_boot=int(sc.get("bootstrap", 10000)), seed=run.cfg.seed, log=log)


def _compute(run: TransferRun, cells: list[dict[str, Any]], base: dict[str, dict[str, Any]]) -> dict[str, Any]:
    trains = []
    tdir = run.out / "trained"
    keys = {run.model_key(s, seed) for s, seed in run.units() if s is not None}
    for k in keys:
        p = tdir / f"{k}.json"
        if p.is_file():
            try:
                trains.append(json.loads(p.read_text()))
            except ValueError:
                continue
    eval_s = [c.get("seconds", 0.0) for c in cells] + [c.get("seconds", 0.0) for c in base.values()]
    n_ex = sum(len(c["samples"]["ids"]) for c in cells) + sum(len(c["samples"]["ids"]) for c in base.values())
    return {"trainings": len(trains), "train_seconds": round(sum(t.get("seconds", 0.0) for t in trains), 1),
            "evaluations": len(eval_s), "eval_seconds": round(sum(eval_s), 1), "eval_examples": n_ex,
            "seconds_per_training": round(sum(t.get("seconds", 0.0) for t in trains) / len(trains), 1)
            if trains else None,
            "seconds_per_eval_example": round(sum(eval_s) / n_ex, 3) if n_ex else None}

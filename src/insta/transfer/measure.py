"""Measure a transfer matrix (``insta transfer``): :func:`plan_transfer` validates and plans without training,
:func:`run_transfer` runs the missing cells (:class:`~insta.transfer.runner.TransferRun` on the run engine),
then writes the matrix (CSV + JSON), ``results.json`` with its reliability, and the report."""
from __future__ import annotations

import time
from typing import Any, Callable

from ..errors import InstaError
from ..util.paths import atomic_write_json, atomic_write_text
from .config import TransferConfig
from .results import assemble_results, build_matrix, score_matrix
from .runner import TransferRun, sources_summary


def plan_transfer(cfg: TransferConfig, **kw: Any) -> dict[str, Any]:
    """Validate and plan (pool, sources, cells done, ETA) without training anything."""
    run = TransferRun(cfg, **kw)
    run.prepare()
    plan = run.plan()
    plan["sources"] = sources_summary(run)
    plan["targets"] = [t.id for t in run.targets]
    return plan


def run_transfer(cfg: TransferConfig, *, out: str | None = None, backend: Any = None,
                 log: Callable[[str], None] | None = None, catalogs: dict | None = None, pool_encoder: Any = None,
                 executor: str | None = None, progress: bool = True, report: bool = True,
                 run_cells: bool = True, command: str | None = None) -> dict[str, Any]:
    """Run every missing (source, seed) unit, then write ``matrix.csv``, ``matrix.json``, ``results.json`` and
    (``report``) the report with method scoring; ``run_cells=False`` only rewrites them from finished cells."""
    t0 = time.perf_counter()
    run = TransferRun(cfg, out=out, backend=backend, log=log, catalogs=catalogs, pool_encoder=pool_encoder)
    run.prepare()
    stats = run.run(executor, progress=progress) if run_cells else {"units_run": 0}
    matrix, cells, base = build_matrix(run)
    out_dir = run.out
    atomic_write_text(out_dir / "matrix.csv", matrix.to_csv())
    atomic_write_json(out_dir / "matrix.json", matrix.to_dict(), indent=None)
    results = assemble_results(run, matrix, cells, base, stats, command, t0)
    if report and cfg.scoring.enabled and matrix.rows:
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


__all__ = ["plan_transfer", "run_transfer"]

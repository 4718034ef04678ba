"""Measure a transfer matrix (``insta transfer``): :func:`plan_transfer` validates and plans without training,
:func:`run_transfer` runs the missing cells (:class:`~insta.transfer.runner.TransferRun` on the run engine),
then writes the matrix (CSV + JSON), ``results.json`` with its reliability, and the report."""
from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any, Callable

from ..errors import InstaError
from ..util.paths import atomic_write_json, atomic_write_text
from .config import TransferConfig
from .results import assemble_results, build_matrix, score_matrix
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
    """Validate and plan (pool, sources, cells done, ETA) without training anything; for targets from a screen,
    also the target rule and the cost rule as the run would apply them (``target_decision``)."""
    run = TransferRun(cfg, **kw)
    run.prepare()
    plan = run.plan()
    plan["sources"] = sources_summary(run)
    plan["targets"] = [t.id for t in run.targets]
    if run.target_decision is not None:
        from .v2_decision import decision_lines, oracle_line
        from .v2_targets import oracle_reference

        plan["target_decision"] = run.target_decision
        plan["oracle"] = oracle_reference(cfg.screen, run.targets, cfg.model)  # refuses examples that differ
        plan["plan_lines"] = decision_lines(run) + [oracle_line(plan["oracle"])]
    return plan


def run_transfer(cfg: TransferConfig, *, out: str | None = None, backend: Any = None,
                 log: Callable[[str], None] | None = None, catalogs: dict | None = None, pool_encoder: Any = None,
                 executor: str | None = None, progress: bool = True, report: bool = True,
                 run_cells: bool = True, command: str | None = None,
                 allow_partial_screen: bool = False) -> dict[str, Any]:
    """Run every missing (source, seed) unit, then write ``matrix.csv``, ``matrix.json``, ``results.json`` and
    (``report``) the report with method scoring; ``run_cells=False`` only rewrites them from finished cells.
    Targets from a screen: the run refuses while the screen is incomplete unless ``allow_partial_screen``."""
    t0 = time.perf_counter()
    run = TransferRun(cfg, out=out, backend=backend, log=log, catalogs=catalogs, pool_encoder=pool_encoder,
                      allow_partial_screen=allow_partial_screen)
    if not run_cells:
        return _write_outputs(run, {"units_run": 0}, t0, report, command)
    from ..util.paths import run_lock

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
    results = assemble_results(run, matrix, cells, base, stats, command, t0)
    if run.target_decision is not None:
        from .v2_targets import oracle_reference

        results["target_decision"] = run.target_decision
        results["oracle"] = oracle_reference(cfg.screen, run.targets, cfg.model)
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


def run_cells_done(stats: dict[str, Any], cells: list[dict[str, Any]], base: dict[str, dict[str, Any]]) -> bool:
    """Whether there is anything to write: a run that ran units always writes (its failures included); a report
    from the cells alone needs at least one finished cell."""
    return bool(stats.get("units_run") or stats.get("failed") or cells or base)


__all__ = ["check_out_folder", "plan_transfer", "run_transfer"]

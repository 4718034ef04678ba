"""The run engine under the comparison grid (:mod:`insta.experiment`) and the transfer matrix
(:mod:`insta.transfer`): both train models, evaluate each on targets and keep every evaluation as a cell, and
both stand on this package, which imports neither.

* :mod:`~insta.engine.sections`: the config sections both configs share, typed and checked (:class:`RunConfig`,
  ``pool``, ``train``, ``eval``), and the options that cache keys hash;
* :mod:`~insta.engine.pool`: the targets (evaluation sets, unlabelled samples) and the source pool with every
  removal and its reason;
* :mod:`~insta.engine.backends`: what trains and evaluates (``transformers``, ``dry-run``);
* :mod:`~insta.engine.executors`: where jobs run (``sequential``, ``ray``);
* :mod:`~insta.engine.jobs`: the one job (train or reuse a model, evaluate it, write its cells);
* :mod:`~insta.engine.cells`: the one cell format and its upgrader;
* :mod:`~insta.engine.run`: :class:`EngineRun`, the shared half of a run (catalogs, targets and pool, paths,
  jobs, clean-up).
"""
from __future__ import annotations

from .backends import Backend, DryRunBackend, TransformersBackend, make_backend
from .cells import CACHE_VERSION, compact_samples, upgrade_cell, upgrade_results, write_cell
from .executors import EXECUTORS, run_jobs
from .jobs import BASE, CellJob, ModelJob, execute_job, trained_record
from .pool import PoolInfo, TargetInfo, build_pool, merge_families, parse_target, prepare_targets
from .run import EngineRun
from .sections import PoolConfig, RunConfig, RunEvalConfig, RunSettings, explicit_options

__all__ = [
    "BASE", "Backend", "CACHE_VERSION", "CellJob", "DryRunBackend", "EXECUTORS", "EngineRun", "ModelJob", "PoolConfig",
    "PoolInfo", "RunConfig", "RunEvalConfig", "RunSettings", "TargetInfo", "TransformersBackend", "build_pool",
    "compact_samples", "execute_job", "explicit_options", "make_backend", "merge_families", "parse_target",
    "prepare_targets", "run_jobs", "trained_record", "upgrade_cell", "upgrade_results", "write_cell",
]

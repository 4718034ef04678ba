"""What every run of models x targets does whatever it compares (:class:`EngineRun`): open the catalogs, fix the
targets and build the pool, check the base model, know where cells, models and training records live, clean
up after a killed run, make each model's job (reusing a finished training) and hand the jobs to an executor.

The comparison grid (:class:`insta.experiment.Experiment`) and the transfer matrix
(:class:`insta.transfer.TransferRun`) are subclasses that say *what* to run: their models, keys and jobs.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Callable, Sequence

from ..catalogs.base import Catalog
from ..util.helpers import Log
from .jobs import CellJob, ModelJob, clean_stale, execute_job, model_job
from .pool import PoolInfo, TargetInfo, build_pool, parse_target, prepare_targets
from .sections import RunConfig


class EngineRun:
    """The shared half of a run (see the module docstring); ``backend``, ``log``, ``catalogs`` and
    ``pool_encoder`` are hooks for tests."""

    #: the subfolders of ``out`` whose leftover temp files a killed run may have left
    STATE_DIRS: tuple[str, ...] = ("", "cells", "trained")

    def __init__(self, cfg: RunConfig, *, out: str | os.PathLike | None = None, backend: Any = None,
                 log: Callable[[str], None] | None = None, catalogs: dict[str, Catalog] | None = None,
                 pool_encoder: Any = None):
        self.cfg = cfg
        self.out = Path(out or cfg.out)
        self._backend = backend
        self.log = log or Log()
        self._catalogs = dict(catalogs or {})
        self.pool_encoder = pool_encoder
        self.targets: list[TargetInfo] = []
        self.pool: PoolInfo | None = None
        self._base_id: str | None = None

    @property
    def backend(self) -> Any:
        if self._backend is None:
            from .backends import make_backend

            self._backend = make_backend(self.cfg.backend)
        return self._backend

    # -- paths
    def cell_path(self, key: str) -> Path:
        return self.out / "cells" / f"{key}.json"

    def model_dir(self, key: str) -> Path:
        return self.out / "models" / key

    def train_record_path(self, key: str) -> Path:
        return self.out / "trained" / f"{key}.json"

    # -- inputs
    def catalog(self, name: str, split: str | None = None) -> Catalog:
        """The catalog ``name`` (of one ``split`` when given), loaded once."""
        key = f"{name}@{split}" if split else name
        if key not in self._catalogs:
            from ..catalogs import load_catalog

            self._catalogs[key] = load_catalog(name, self.cfg.data_dir, **({"split": split} if split else {}))
        return self._catalogs[key]

    def load_targets(self, n_samples: int = 0) -> None:
        """Every target (a clear error for an unknown one) with its evaluation set and ``n_samples`` unlabelled
        instances (:func:`insta.engine.pool.prepare_targets`)."""
        cfg = self.cfg
        cats = {cfg.pool.catalog: self.catalog(cfg.pool.catalog)}
        for spec in cfg.targets:
            cat, _ = parse_target(spec, cfg.pool.catalog)
            cats[cat] = self.catalog(cat)
        self.catalog(cfg.pool.catalog, cfg.pool.split)  # the pool's catalog (of pool.split): loaded, checked now
        self.targets = prepare_targets(cfg, cats, n_samples)

    def load_pool(self) -> None:
        """The source pool without the targets and their relatives (:func:`insta.engine.pool.build_pool`)."""
        source = self.catalog(self.cfg.pool.catalog, self.cfg.pool.split)  # pool.split: e.g. P3's train rows
        self.pool = build_pool(self.cfg, source, self.targets, encoder=self.pool_encoder, log=self.log)

    def check_base_model(self) -> None:
        """A missing model directory is an error now, not after hours of work."""
        if self.backend.name == "transformers":
            from ..lm import builtin_name, resolve_model

            if not builtin_name(self.cfg.model):
                resolve_model(self.cfg.model)

    def base_identity(self) -> str:
        if self._base_id is None:
            self._base_id = self.backend.base_identity(self.cfg.model)
        return self._base_id

    # -- jobs
    def model_job(self, model_key: str, evals: Sequence[CellJob], make_records: Callable[[], list[dict[str, Any]]],
                  **fields: Any) -> ModelJob:
        """The job of one model of this run (:func:`insta.engine.jobs.model_job`)."""
        return model_job(self.out, model_key, self.cfg.model, self.cfg.backend, evals, make_records,
                         keep_model=self.cfg.keep_models, **fields)

    def missing_evals(self, model_key: str, keys: Sequence[tuple[str, TargetInfo]]) -> list[CellJob]:
        """The evaluations of (cell key, target) pairs whose cell is not written yet."""
        return [CellJob(key, t.id, t.task.id, t.catalog, list(t.eval_examples)) for key, t in keys
                if not self.cell_path(key).is_file()]

    def execute(self, keys: Sequence[Any], make_job: Callable[[Any], ModelJob | None], *, executor: str | None,
                describe: Callable[[Any], str], on_info: Callable[[dict[str, Any]], None] = lambda i: None,
                progress: bool = False, keep_going: bool = False) -> list[dict[str, Any]]:
        """Run :func:`~insta.engine.jobs.execute_job` on the job of every key; ``on_info`` sees each result (as
        soon as it is done in this process, at the end under Ray)."""
        from .executors import run_jobs

        executor = executor or self.cfg.executor
        sequential = executor == "sequential"

        def work(job: ModelJob, backend: Any = None) -> dict[str, Any]:
            info = execute_job(job, backend)
            if sequential:
                on_info(info)
            return info

        infos = run_jobs(work if sequential else execute_job, keys, make_job, executor,
                         backend=self.backend if sequential else None, describe=describe, log=self.log,
                         progress=progress, keep_going=keep_going)
        if not sequential:
            for info in infos:
                if "error" not in info:
                    on_info(info)
        return infos

    def clean_stale(self) -> None:
        """Before anything runs: what a killed run left (:func:`insta.engine.jobs.clean_stale`)."""
        clean_stale(self.out, self.STATE_DIRS)

__all__ = ["EngineRun"]

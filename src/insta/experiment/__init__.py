"""The comparison experiment: a grid of targets x selection methods, each cell select -> mixture -> train -> evaluate.

``run_experiment(load_config("configs/x.yaml"))`` (or ``insta experiment configs/x.yaml``):

1. **Validation before any work**: unknown keys, methods, method options or targets, a missing aligned encoder,
   a bad training or evaluation option, and (once the pool is built, which trains and evaluates nothing) ``k``
   larger than the pool all stop the run with one clear error.
2. **Pool**: the source catalog (BIG-bench by default) grouped into units (``unit: family`` merges a BIG-bench task
   with its subtasks, as P3 groups a dataset's subsets), minus every target and its family, the BIG-bench parents
   of BBH targets (or of every BBH task), the 14 T0 BIG-bench tasks, names that share a target's stem, near-duplicate
   instructions (cosine above a threshold to a target instruction) and tasks whose examples are not in a usable
   format (multiple choice, or generation with short targets). Every removal is logged with its reason.
3. **Targets**: a stable, seeded order of each target's examples; the first ``eval.n`` are the evaluation set,
   the next ``target_samples`` are unlabelled instances for RoE and DSIR (labels stripped); a target with too few
   examples draws them from its evaluation inputs instead, and the report says so.
4. **Selection** per (target, method), then a **training budget** of exactly ``mixture.n_total`` instances spread
   over the selected tasks (:func:`insta.mixture.allocate_budget`), the same for every method, ``all`` included.
5. **Models** are keyed by what they are trained on (the allocation, the mixture, training options, the base
   model), not by the method or the target: ``all`` and each ``random`` seed select the same tasks for every
   target and are trained once and evaluated on every target; two methods that pick the same tasks share a model.
6. **Cells**: an evaluation of one model on one target's evaluation set is cached as ``<out>/cells/<hash>.json``
   (hash of the model key, the target, its evaluation example ids and the evaluation options), written
   atomically when it is complete. A rerun skips finished cells (no model is trained for them); an interrupted
   cell is simply redone. Trained models live in ``<out>/models/<hash>/`` and are deleted once all their
   evaluations are written (unless ``keep_models``).
7. **Report** (:mod:`insta.report`): ``results.json``, ``results.md``, plots and ``report.html`` in ``<out>``.

The grid stands on the run engine (:mod:`insta.engine`: targets and pool, backends, executors, the one job, the
cell format); it says *what* to run. The backend that trains and evaluates is pluggable
(:class:`insta.engine.Backend`): ``transformers`` (insta.train / insta.evaluate) for real runs, ``dry-run`` (no
model; deterministic pseudo-predictions) to test a configuration.

Modules, one concern each: :mod:`~insta.experiment.config` (the YAML schema, typed sections) and
:mod:`~insta.experiment.methodspec` (the ``methods`` list), :mod:`~insta.experiment.runner` (plan, keys, run,
report), :mod:`~insta.experiment.results` (``results.json``), :mod:`~insta.experiment.p3_table` (the report's P3
table).
"""
from __future__ import annotations

from .config import (
    EVAL_OWN_KEYS,
    ExperimentConfig,
    GridEvalConfig,
    MixtureSettings,
    P3TableSettings,
    ReportSettings,
    config_from_dict,
    load_config,
)
from .methodspec import MethodSpec
from .p3_table import cached_p3_table, ensure_p3_aligned_encoder, p3_selection_table
from .results import assemble_results, machine_info
from .runner import Experiment, GridEntry, report_existing, report_results, run_experiment

__all__ = [
    "EVAL_OWN_KEYS", "Experiment", "ExperimentConfig", "GridEntry", "GridEvalConfig", "MethodSpec", "MixtureSettings",
    "P3TableSettings", "ReportSettings", "assemble_results", "cached_p3_table", "config_from_dict",
    "ensure_p3_aligned_encoder", "load_config", "machine_info", "p3_selection_table", "report_existing",
    "report_results",
    "run_experiment",
]

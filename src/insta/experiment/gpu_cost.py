"""What an experiment config will cost on one GPU, and which of its data are missing, before anything runs.

``insta experiment CONFIG --plan`` prints this for every config; for a config whose data are not all present (the
paper's settings without P3 instances or NIV2 task files) it is the whole plan: pool size, targets, models and
cells, the cost, and the missing data in one line.

Cost model (stated in every estimate):

The cost model itself (FLOPs per token, the GPU's throughput) lives in :mod:`insta.engine.gpu_cost`, shared with
the transfer matrix's plan.

* **FLOPs per token are measured**, not assumed: the model is built on PyTorch's meta device from its config (no
  weights loaded) and one forward pass over a sequence of the setting's mean length is counted with
  ``torch.utils.flop_counter.FlopCounterMode`` (matmuls, attention included). Training costs 3x a forward pass
  (backward = 2x forward, as in the 6N rule), evaluation 1x; the parameter count N is reported next to it.
* **Tokens**: training = models to train x ``mixture.n_total`` x epochs x tokens per instance; evaluation =
  cells x ``eval.n`` x tokens per example (rank classification: the prompt once plus every option; generation:
  the prompt plus ``eval.max_new_tokens``, counted at forward cost: decoding is memory-bound, so this part is a
  lower bound). Tokens per instance are measured from the data present (characters / :data:`CHARS_PER_TOKEN`,
  capped by the training lengths); where the data are absent the per-catalog :data:`ASSUMED_TOKENS` stand in and
  the estimate says so.
* **Throughput**: :data:`H100_BF16_PEAK` (dense bf16) at :data:`TRAIN_UTILISATION` of peak for training and
  :data:`EVAL_UTILISATION` for evaluation (short, ragged batches).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from ..catalogs.base import Catalog
from ..errors import InstaError
from .config import ExperimentConfig
from ..engine.gpu_cost import (ASSUMED_TOKENS, CHARS_PER_TOKEN, EVAL_UTILISATION, H100_BF16_PEAK,  # noqa: F401
                               KNOWN_ARCHITECTURES, SAMPLE_EXAMPLES, TRAIN_UTILISATION, mean_lengths,
                               measured_flops, model_config)
from ..engine.pool import parse_target

# ---------------------------------------------------------------- data present or missing


@dataclass
class DataCheck:
    """Which targets and pool tasks of a config have instances here, and what to run for the rest."""

    pool_catalog: str
    k: int = 1
    pool_tasks: list[str] = field(default_factory=list)
    pool_with_data: list[str] = field(default_factory=list)
    targets_with_data: list[str] = field(default_factory=list)
    targets_missing: list[str] = field(default_factory=list)
    unreadable: dict[str, str] = field(default_factory=dict)  # catalog -> its error line
    catalogs: dict[str, Catalog] = field(default_factory=dict, repr=False)

    @property
    def complete(self) -> bool:
        return not self.unreadable and not self.targets_missing and len(self.pool_with_data) == len(self.pool_tasks)

    def missing_line(self) -> str:
        """The missing data in one line, with the commands that fetch them ("" when nothing is missing)."""
        parts, fetch = [], set()
        for cat, err in self.unreadable.items():
            parts.append(f"the {cat} catalog ({err})")
            fetch.add(FETCH.get(cat, f"insta data fetch {cat}"))
        n_pool = len(self.pool_tasks) - len(self.pool_with_data)
        if n_pool and self.pool_catalog not in self.unreadable:
            parts.append(f"instances of {n_pool} of {len(self.pool_tasks)} {self.pool_catalog} pool tasks")
            fetch.add(FETCH.get(self.pool_catalog, f"insta data fetch {self.pool_catalog}"))
        if len(self.pool_with_data) < self.k and self.pool_catalog not in self.unreadable:
            parts.append(f"k = {self.k} needs {self.k} pool tasks with instances ({len(self.pool_with_data)} here)")
            fetch.add(FETCH.get(self.pool_catalog, f"insta data fetch {self.pool_catalog}"))
        if self.targets_missing:
            shown = ", ".join(self.targets_missing[:4]) + (" ..." if len(self.targets_missing) > 4 else "")
            parts.append(f"instances of {len(self.targets_missing)} target(s) ({shown})")
            for t in self.targets_missing:
                cat = t.split(":", 1)[0]
                fetch.add(FETCH.get(cat, f"insta data fetch {cat}"))
        if not parts:
            return ""
        return "missing data: " + "; ".join(parts) + " -> " + " and ".join(sorted(fetch))


FETCH = {"p3": "insta data fetch p3 --instances", "niv2": "insta data fetch niv2",
         "bigbench": "insta data fetch bigbench", "bbh": "insta data fetch bigbench"}


def check_data(cfg: ExperimentConfig, catalogs: dict[str, Catalog] | None = None) -> DataCheck:
    """Load the config's catalogs (the pool's with ``pool.split``) and see which targets and pool tasks have
    instances. A catalog that cannot be read (no NIV2 task files) is recorded, not raised."""
    from ..catalogs import load_catalog
    from ..engine.pool import _included

    cats = dict(catalogs or {})

    def get(name: str, split: str | None = None) -> Catalog | None:
        key = f"{name}@{split}" if split else name
        if key not in cats:
            try:
                cats[key] = load_catalog(name, cfg.data_dir, **({"split": split} if split else {}))
            except InstaError as err:
                check.unreadable.setdefault(name, str(err).split(": ", 1)[0][:160])
                return None
        return cats[key]

    check = DataCheck(cfg.pool.catalog, k=cfg.k)
    source = get(cfg.pool.catalog, cfg.pool.split)
    if source is not None:
        pool = _included(source, cfg.pool)
        check.pool_tasks = pool.ids
        check.pool_with_data = [t.id for t in pool if t.has_examples]
    elif cfg.pool.catalog == "niv2" and cfg.pool.pools:  # no task files: the split lists still name the pool
        check.pool_tasks = sorted(_niv2_listed(cfg, cfg.pool.pools))
    for spec in cfg.targets:
        cat, tid = parse_target(spec, cfg.pool.catalog)
        catalog = get(cat)
        if catalog is None:
            check.targets_missing.append(spec)
            continue
        task = catalog.get(tid)  # an unknown target is an error now, with close matches
        (check.targets_with_data if task.has_examples else check.targets_missing).append(spec)
    check.catalogs = cats
    return check


def _niv2_listed(cfg: ExperimentConfig, pools: list[str]) -> set[str]:
    """Task ids that NIV2's ``splits/default/<pool>_tasks.txt`` lists (readable without the task files)."""
    from ..catalogs.niv2 import _read_split
    from ..util.datadir import resolve_data_dir

    try:
        base = resolve_data_dir(cfg.data_dir) / "natural-instructions" / "splits" / "default"
    except InstaError:
        return set()
    return set().union(*(_read_split(base / f"{p}_tasks.txt") for p in pools))


# ---------------------------------------------------------------- lengths and the estimate


def token_lengths(cfg: ExperimentConfig, check: DataCheck) -> dict[str, Any]:
    """Tokens per training instance and per evaluation example: measured where the data are present."""
    notes = []
    cats = check.catalogs
    pool_key = f"{cfg.pool.catalog}@{cfg.pool.split}" if cfg.pool.split else cfg.pool.catalog
    pool_cat = cats.get(pool_key)
    pool_tasks = [pool_cat.get(t) for t in check.pool_with_data[:50]] if pool_cat else []
    train = mean_lengths(pool_tasks)
    cap_src, cap_tgt = cfg.train.max_source_length, cfg.train.max_target_length
    if train:
        train_tokens = min(train[0] / CHARS_PER_TOKEN, cap_src) + min(train[1] / CHARS_PER_TOKEN, cap_tgt) + 1
        notes.append(f"training tokens measured on {len(pool_tasks)} pool task(s) with instances")
    else:
        p, t = ASSUMED_TOKENS.get(cfg.pool.catalog, (200, 10))
        train_tokens = min(p, cap_src) + min(t, cap_tgt) + 1
        notes.append(f"training tokens ASSUMED ({p} prompt + {t} target per instance: no {cfg.pool.catalog} "
                     "instances here)")
    target_tasks = []
    for spec in check.targets_with_data:
        cat, tid = parse_target(spec, cfg.pool.catalog)
        target_tasks.append(cats[cat].get(tid))
    ev = mean_lengths(target_tasks)
    generate = cfg.eval.mode == "generate"
    max_src = cfg.eval.max_source_length
    if ev:
        prompt = min(ev[0] / CHARS_PER_TOKEN, max_src)
        eval_tokens = prompt + (cfg.eval.max_new_tokens if generate else ev[2] / CHARS_PER_TOKEN)
        notes.append(f"evaluation tokens measured on {len(target_tasks)} target(s) with instances")
    else:
        cat = parse_target(cfg.targets[0], cfg.pool.catalog)[0]
        p, o = ASSUMED_TOKENS.get(cat, (200, 10))
        eval_tokens = min(p, max_src) + (cfg.eval.max_new_tokens if generate else 3 * o)
        notes.append(f"evaluation tokens ASSUMED ({p} prompt{' + generation' if generate else ' + 3 options'}: no "
                     "target instances here)")
    return {"train_tokens_per_instance": round(train_tokens, 1), "eval_tokens_per_example": round(eval_tokens, 1),
            "notes": notes}


def grid_counts(cfg: ExperimentConfig, n_targets: int | None = None) -> dict[str, int]:
    """Models to train and cells to evaluate: each target-dependent method trains one model per target, the
    others (all, random) one model for every target; every column is one cell per target. The models are an upper
    bound: methods that select the same tasks share a model (the full plan counts those)."""
    from ..methods import load_method

    n_targets = len(cfg.targets) if n_targets is None else n_targets
    per_target = shared = 0
    for spec in cfg.methods:
        method = load_method(spec.name, label=spec.label, **spec.options)
        if method.depends_on_target:
            per_target += 1
        else:
            shared += 1
    columns = len(cfg.methods) + int(cfg.include_base)
    return {"targets": n_targets, "columns": columns, "cells": n_targets * columns,
            "models": per_target * n_targets + shared}


def estimate(cfg: ExperimentConfig, check: DataCheck, counts: dict[str, int] | None = None) -> dict[str, Any]:
    """The one-GPU cost of the config (see the module docstring for the model)."""
    counts = counts or grid_counts(cfg)
    lengths = token_lengths(cfg, check)
    epochs = cfg.train.epochs if cfg.train.max_steps <= 0 else None
    instances = cfg.n_total * (epochs if epochs is not None else 1)
    if epochs is None:
        instances = cfg.train.max_steps * cfg.train.batch_size * cfg.train.grad_accum
    train_seq = lengths["train_tokens_per_instance"]
    eval_seq = lengths["eval_tokens_per_example"]
    fl_train = measured_flops(cfg.model, round(train_seq))
    fl_eval = measured_flops(cfg.model, round(eval_seq))
    train_tokens = counts["models"] * instances * train_seq
    eval_tokens = counts["cells"] * cfg.eval.n * eval_seq
    train_flops = 3 * fl_train["forward_flops_per_token"] * train_tokens
    eval_flops = fl_eval["forward_flops_per_token"] * eval_tokens
    train_h = train_flops / (H100_BF16_PEAK * TRAIN_UTILISATION) / 3600
    eval_h = eval_flops / (H100_BF16_PEAK * EVAL_UTILISATION) / 3600
    return {
        "model": cfg.model, "params": fl_train["params"], "config_source": fl_train["config_source"],
        "forward_flops_per_token": round(fl_train["forward_flops_per_token"]),
        **counts, "train_instances_per_model": instances, **{k: v for k, v in lengths.items()},
        "train_tokens": round(train_tokens), "eval_tokens": round(eval_tokens),
        "train_flops": train_flops, "eval_flops": eval_flops,
        "gpu_hours_train": round(train_h, 2), "gpu_hours_eval": round(eval_h, 2),
        "gpu_hours": round(train_h + eval_h, 2),
        "assumptions": (f"FLOPs/token measured on the meta device (torch FlopCounterMode); training = 3 x forward; "
                        f"one H100 at {H100_BF16_PEAK / 1e12:.0f} TFLOP/s dense bf16, {TRAIN_UTILISATION:.0%} of "
                        f"peak training and {EVAL_UTILISATION:.0%} evaluating; {CHARS_PER_TOKEN:g} characters per "
                        "token; generation counted at forward cost (a lower bound)"),
    }


def describe(est: dict[str, Any]) -> list[str]:
    """The estimate as a few printable lines."""
    return [
        f"cost on one H100 (bf16): ~{est['gpu_hours']:.1f} GPU-hours = training {est['gpu_hours_train']:.1f} h "
        f"(up to {est['models']} models x {est['train_instances_per_model']:,.0f} instances x "
        f"{est['train_tokens_per_instance']:.0f} tokens) + evaluation {est['gpu_hours_eval']:.2f} h "
        f"({est['cells']} cells x {est['eval_tokens_per_example']:.0f} tokens per example)",
        f"  model {est['model']}: {est['params'] / 1e9:.2f}B parameters, {est['forward_flops_per_token'] / 1e9:.2f} "
        f"GFLOP per token forward ({est['config_source']})",
        "  " + est["assumptions"],
        *("  " + n for n in est["notes"]),
    ]


def static_plan(cfg: ExperimentConfig, check: DataCheck) -> dict[str, Any]:
    """The plan of a config whose data are not all here: what the pool and the grid will hold (no selection)."""
    counts = grid_counts(cfg)
    return {"name": cfg.name, "pool": {"catalog": cfg.pool.catalog, "n": len(check.pool_tasks),
                                       "n_with_instances": len(check.pool_with_data), "split": cfg.pool.split},
            "targets": {"n": len(cfg.targets), "with_instances": check.targets_with_data,
                        "missing": check.targets_missing},
            "grid": counts, "k": cfg.k, "methods": [s.label for s in cfg.methods],
            "missing": check.missing_line()}


@dataclass
class Preflight:
    """What ``insta experiment`` learns before the run: the catalogs it loaded, and for ``--plan`` the cost (and
    the whole plan when the data are not all here)."""

    catalogs: dict[str, Catalog]
    static: dict[str, Any] | None = None
    cost: dict[str, Any] | None = None
    lines: list[str] = field(default_factory=list)


def preflight(cfg: ExperimentConfig, *, plan: bool, available_only: bool = False, log=print,
              show=print) -> Preflight:
    """Check the config's data before the run. ``--available-only`` drops the targets without instances;
    ``--plan`` gets the cost estimate, and, when targets or enough pool instances are missing, the plan without
    selections (:func:`static_plan`, printed with ``show``) in place of the full one. A run (not ``--plan``) with
    missing targets or too few pool instances stops here with the missing data in one line."""
    check = check_data(cfg)
    if available_only and check.targets_missing:
        if not check.targets_with_data:
            raise InstaError(f"no target has instances here; {check.missing_line()}")
        log(f"--available-only: {len(check.targets_missing)} target(s) without instances left out: "
            f"{', '.join(check.targets_missing)}")
        cfg.targets = list(check.targets_with_data)
        check.targets_missing = []
    runnable = not check.unreadable and not check.targets_missing and len(check.pool_with_data) >= cfg.k
    if not plan:
        if not runnable:
            raise InstaError(check.missing_line() + (" (or --available-only to run the targets that have instances)"
                                                     if check.targets_with_data and check.targets_missing else ""))
        if not check.complete:
            log(check.missing_line() + " (the pool tasks without instances are dropped)")
        return Preflight(check.catalogs)
    try:
        cost = estimate(cfg, check)
        lines = describe(cost)
    except InstaError as err:
        cost, lines = None, [f"cost: unknown ({err})"]
    if runnable:
        return Preflight(check.catalogs, cost=cost, lines=lines + ([check.missing_line()] if not check.complete
                                                                    else []))
    static = {**static_plan(cfg, check), "cost": cost}
    pool, grid = static["pool"], static["grid"]
    listed = " (listed; language unknown without the task files)" if cfg.pool.catalog in check.unreadable else ""
    show(f"{cfg.name}: pool {pool['n']} {pool['catalog']} tasks{listed}"
         f"{' (split ' + pool['split'] + ')' if pool['split'] else ''}, {pool['n_with_instances']} with instances "
         f"here; {grid['targets']} targets, {len(check.targets_with_data)} with instances here; k = {cfg.k}")
    show(f"grid: {grid['targets']} targets x {grid['columns']} columns ({', '.join(static['methods'])}"
         f"{', base' if cfg.include_base else ''}) = {grid['cells']} cells; {grid['models']} models to train")
    for line in lines:
        show(line)
    show(static["missing"])
    return Preflight(check.catalogs, static=static, cost=cost, lines=lines)


__all__ = ["ASSUMED_TOKENS", "CHARS_PER_TOKEN", "DataCheck", "EVAL_UTILISATION", "H100_BF16_PEAK",
           "KNOWN_ARCHITECTURES", "Preflight", "TRAIN_UTILISATION", "check_data", "describe", "estimate", "grid_counts",
           "measured_flops", "model_config", "preflight", "static_plan", "token_lengths"]

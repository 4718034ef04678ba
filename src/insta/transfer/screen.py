"""Learnability screen: which candidate targets can the model learn at a training budget, from their own data?

Before a transfer matrix asks "does source s help target t", it must know that t can be learned at all at the
budget a source gets: otherwise every source only moves the answer format (what matrix v1 measured). For each
candidate target the screen trains an in-task **oracle** on the target's own instances (disjoint from its
evaluation examples: split by underlying example, so a P3 row rendered with two templates never sits on both
sides), evaluates it and the untrained base model on the same held-out examples, and keeps the target when

* the oracle beats the base model on the primary metric with a paired bootstrap CI above 0: the per-example
  change of the **standardized margin** (the gold option's summed log-likelihood minus the best distractor's,
  divided by the model's own spread of option scores on that target: ``margin_z`` in :mod:`insta.matrix.cells`,
  which neither a shared format gain nor a mere flattening of the option scores moves), and
* the base model does not answer one constant text (its most frequent predicted answer covers less than
  ``constant_share`` of the examples).

Runs are jobs of the run engine (:func:`insta.engine.jobs.execute_job`), as the matrix's: the base model is evaluated
on every candidate, each oracle on its own target; every cell is a file under ``<out>/cells`` keyed by everything
it depends on, so an interrupted screen resumes where it stopped. A learning curve (``curve``) trains oracles of
a few targets at other budgets (instances, learning rate) to choose the matrix's training budget.
"""
# long module: merged from main during the #18 reshaping; config, candidates, units, verdicts to split
from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Sequence

from ..catalogs.base import Catalog
from ..matrix.cells import constant_share
from ..records import Example, Task
from ..util.helpers import Log, content_hash, stable_key, stable_rng
from .screen_config import ScreenConfig, _fail

CACHE_VERSION = 1
#: the a-priori cost for a first --plan on 2 CPU cores (SmolLM2-135M), replaced by measured costs
DEFAULT_TRAIN_S_PER_INSTANCE = 0.8
DEFAULT_EVAL_S_PER_EXAMPLE = 0.3


# ---------------------------------------------------------------- candidates and their splits


def example_group(ex: Example) -> str:
    """The underlying example an :class:`Example` renders: a P3 row rendered with several templates is one
    group, so the training and evaluation sides never share it."""
    prov = ex.provenance or {}
    if "row" in prov:
        return f"{prov.get('file', '')}#{prov['row']}"
    return ex.id


@dataclass
class Candidate:
    """One candidate target: its task, evaluation examples and the training pool disjoint from them."""

    spec: str  # "catalog:task"
    task: Task
    catalog: str
    eval_examples: list[Example]
    train_pool: list[Example]
    n_usable: int

    @property
    def id(self) -> str:
        return self.spec


def split_examples(task: Task, n_eval: int, eval_seed: int) -> tuple[list[Example], list[Example], int]:
    """Evaluation examples (``n_eval`` groups in a stable order, one rendering each) and the training pool
    (every rendering of every other group); also the number of usable groups."""
    usable = [ex for ex in task.iter_examples() if ex.options and len(ex.options) >= 2 and ex.label is not None]
    groups: dict[str, list[Example]] = {}
    for ex in usable:
        groups.setdefault(example_group(ex), []).append(ex)
    order = sorted(groups, key=lambda g: stable_key("screen-eval", eval_seed, task.id, g))
    eval_groups = order[:n_eval]
    eval_ex = [min(groups[g], key=lambda ex: stable_key("screen-rendering", eval_seed, ex.id)) for g in eval_groups]
    train = [ex for g in order[n_eval:] for ex in groups[g]]
    return eval_ex, train, len(groups)


def _median_chars(examples: Sequence[Example]) -> float:
    lengths = sorted(len(ex.input) for ex in examples)
    return float(lengths[len(lengths) // 2]) if lengths else 0.0


def find_candidates(cfg: ScreenConfig, catalogs: dict[str, Catalog], log: Callable[[str], None]
                    ) -> tuple[list[Candidate], list[dict[str, Any]]]:
    """The candidates in the screen's order (a stable shuffle by ``seed``) and every task left out, with why."""
    cc = cfg.candidates
    specs = [f"{name}:{t.id}" for name in cc.catalogs for t in catalogs[name] if t.has_examples]
    specs += [s for s in cc.include if s not in specs]
    excluded_ids = set(cc.exclude)
    left_out: list[dict[str, Any]] = []
    by_family: dict[str, list[Candidate]] = {}
    for spec in specs:
        cat, tid = spec.split(":", 1)
        task = catalogs[cat].get(tid)
        fam = f"{cat}:{task.family or task.id}"
        if spec in excluded_ids or fam in excluded_ids:
            left_out.append({"task": spec, "why": "excluded by the config"})
            continue
        eval_ex, train, n_groups = split_examples(task, cfg.n_eval, cfg.eval_seed)
        why = None
        if n_groups < cfg.n_eval or len(train) < cc.min_train:
            why = (f"{n_groups} usable examples, {len(train)} training instances after the evaluation split (needs "
                   f"{cfg.n_eval} examples for evaluation + {cc.min_train} training instances)")
        elif _median_chars(eval_ex) > cc.max_input_chars:
            why = f"median input {_median_chars(eval_ex):.0f} characters (limit {cc.max_input_chars})"
        if why:
            left_out.append({"task": spec, "why": why})
            continue
        cand = Candidate(spec, task, cat, eval_ex, train, n_groups)
        by_family.setdefault(fam if cc.one_per_family and spec not in cc.include else spec, []).append(cand)
    chosen = []
    for fam, members in by_family.items():
        members.sort(key=lambda c: (-c.n_usable, c.spec))
        chosen.append(members[0])
        for other in members[1:]:
            left_out.append({"task": other.spec, "why": f"one per family: {members[0].spec} stands for {fam}"})
    later = set(cc.later)
    chosen.sort(key=lambda c: (c.spec in later or f"{c.catalog}:{c.task.family or c.task.id}" in later,
                               stable_key("screen-order", cfg.seed, c.spec)))
    log(f"screen: {len(chosen)} candidate(s), {len(left_out)} task(s) left out")
    return chosen, sorted(left_out, key=lambda r: r["task"])


# ---------------------------------------------------------------- units, keys and jobs


@dataclass(frozen=True)
class Budget:
    instances: int
    learning_rate: float

    def label(self) -> str:
        return f"{self.instances} inst, lr {self.learning_rate:g}"


class Screen:
    """Plans, runs and summarises one learnability screen (see the module docstring)."""

    def __init__(self, cfg: ScreenConfig, *, out: str | None = None, backend: Any = None,
                 log: Callable[[str], None] | None = None, catalogs: dict[str, Catalog] | None = None):
        self.cfg = cfg
        self.out = Path(out or cfg.out)
        self.backend = backend
        self.log = log or Log()
        self._catalogs = dict(catalogs or {})
        self.candidates: list[Candidate] = []
        self.left_out: list[dict[str, Any]] = []
        self._base_id: str | None = None

    def catalog(self, name: str) -> Catalog:
        if name not in self._catalogs:
            from ..catalogs import load_catalog

            self._catalogs[name] = load_catalog(name, self.cfg.data_dir)
        return self._catalogs[name]

    def _backend(self) -> Any:
        if self.backend is None:
            from ..engine.backends import make_backend

            self.backend = make_backend(self.cfg.backend)
        return self.backend

    def prepare(self) -> None:
        cc = self.cfg.candidates
        names = sorted({s.split(":", 1)[0] for s in cc.include} | set(cc.catalogs)
                       | {s.split(":", 1)[0] for s in self.cfg.curve.targets})
        cats = {n: self.catalog(n) for n in names}
        self.candidates, self.left_out = find_candidates(self.cfg, cats, self.log)
        ids = {c.spec for c in self.candidates}
        stray = [t for t in self.cfg.curve.targets if t not in ids]
        if stray:
            raise _fail(f"curve.targets must be screen candidates; not: {', '.join(stray)}")

    def base_identity(self) -> str:
        if self._base_id is None:
            self._base_id = self._backend().base_identity(self.cfg.model)
        return self._base_id

    # -- keys
    def screen_budget(self) -> Budget:
        return Budget(self.cfg.instances, self.cfg.learning_rate)

    def curve_budgets(self) -> list[Budget]:
        c = self.cfg.curve
        ns = c.instances or [self.cfg.instances]
        lrs = c.learning_rates or [self.cfg.learning_rate]
        return [Budget(n, float(lr)) for n in ns for lr in lrs]

    def model_key(self, cand: Candidate | None, budget: Budget | None, seed: int | None) -> str:
        if cand is None:
            return "base"
        return content_hash({"v": CACHE_VERSION, "kind": "screen-oracle", "base": self.base_identity(),
                             "backend": self.cfg.backend, "target": cand.spec, "seed": seed,
                             "instances": budget.instances if budget else None,
                             "train": {**self.cfg.key_options("train"),
                                       "learning_rate": budget.learning_rate if budget else None},
                             "eval_ids": [ex.id for ex in cand.eval_examples]})

    def eval_key(self, model_key: str, cand: Candidate) -> str:
        return content_hash({"v": CACHE_VERSION, "kind": "screen-eval", "model": model_key,
                             "base": self.base_identity() if model_key == "base" else None,
                             "backend": self.cfg.backend, "target": cand.spec,
                             "eval_ids": [ex.id for ex in cand.eval_examples],
                             "eval": self.cfg.key_options("eval", exclude=("n", "seed"))})

    def cell_path(self, key: str) -> Path:
        return self.out / "cells" / f"{key}.json"

    def read_cell(self, model_key: str, cand: Candidate) -> dict[str, Any] | None:
        from ..engine.cells import read_cell

        return read_cell(self.cell_path(self.eval_key(model_key, cand)))

    # -- units: ("base", spec) ; ("oracle", spec, budget, seed)
    def units(self) -> list[tuple]:
        """Candidate by candidate: the base model on it, then its oracle(s); the learning curve last. A screen
        interrupted at any point has finished verdicts for the candidates it reached."""
        screen = [u for c in self.candidates
                  for u in [("base", c.spec)] + [("oracle", c.spec, self.screen_budget(), s) for s in self.cfg.seeds]]
        curve = [("oracle", t, b, s) for t in self.cfg.curve.targets for b in self.curve_budgets()
                 for s in self.cfg.seeds if b != self.screen_budget()]
        return screen + curve

    def _cand(self, spec: str) -> Candidate:
        return next(c for c in self.candidates if c.spec == spec)

    def unit_cells(self, unit: tuple) -> list[tuple[str, Candidate]]:
        """(cell key, candidate) of every cell a unit writes."""
        cand = self._cand(unit[1])
        if unit[0] == "base":
            return [(self.eval_key("base", cand), cand)]
        return [(self.eval_key(self.model_key(cand, unit[2], unit[3]), cand), cand)]

    def base_constant(self, cand: Candidate) -> bool | None:
        """Whether the base model answers one constant text on this candidate (``None``: not evaluated yet)."""
        cell = self.read_cell("base", cand)
        if cell is None:
            return None
        return constant_share(cell["samples"]) >= self.cfg.constant_share

    def unit_needed(self, unit: tuple) -> bool:
        if unit[0] == "oracle" and self.base_constant(self._cand(unit[1])):
            return False  # the screen drops a target whose base model is constant: its oracle is not trained
        return any(not self.cell_path(k).is_file() for k, _ in self.unit_cells(unit))

    def records(self, cand: Candidate, budget: Budget, seed: int) -> list[dict[str, Any]]:
        """A seeded sample of ``budget.instances`` training records from the candidate's own training pool."""
        from ..mixture.records import make_record

        pool = [ex for ex in cand.train_pool if ex.target]
        rng = stable_rng("screen-sample", seed, cand.spec)
        chosen = rng.sample(pool, min(budget.instances, len(pool)))
        return [make_record(cand.task, ex, cand.catalog) for ex in chosen]

    def job(self, unit: tuple):
        """The engine job of ``unit`` with only its missing cells (``None`` when none is missing)."""
        from ..engine.jobs import CellJob, model_job
        from ..matrix.cells import score_rank

        evals = [CellJob(key, c.spec, c.task.id, c.catalog, list(c.eval_examples))
                 for key, c in self.unit_cells(unit) if not self.cell_path(key).is_file()]
        if not evals or not self.unit_needed(unit):  # read when the job is reached: the base cell may be new
            return None
        opts = {"mode": "rank", "progress": False, **self.cfg.key_options("eval", exclude=("n", "seed"))}
        common = {"score": score_rank, "eval": opts, "keep_model": self.cfg.keep_models}
        if unit[0] == "base":
            return model_job(self.out, "base", self.cfg.model, self.cfg.backend, evals, list,
                             cell_fields={"source": None, "seed": None}, **common)
        _, spec, budget, seed = unit
        cand = self._cand(spec)
        fields = {"source": f"oracle:{spec}", "seed": seed}
        return model_job(self.out, self.model_key(cand, budget, seed), self.cfg.model, self.cfg.backend, evals,
                         lambda: self.records(cand, budget, seed), cell_fields=fields, record_fields=fields,
                         train={**self.cfg.key_options("train"), "learning_rate": budget.learning_rate, "seed": seed},
                         **common)

    # -- plan and run
    def measured_costs(self) -> tuple[float, float]:
        """Seconds per training instance and per evaluated example from finished work (a-priori before)."""
        per_inst, per_ex = [], []
        trained = self.out / "trained"
        for p in sorted(trained.glob("*.json")) if trained.is_dir() else []:
            try:
                rec = json.loads(p.read_text())
                per_inst.append(float(rec["seconds"]) / max(1, int(rec["n_records"])))
            except (ValueError, KeyError, TypeError):
                continue
        cells = self.out / "cells"
        for p in sorted(cells.glob("*.json"))[:300] if cells.is_dir() else []:
            try:
                cell = json.loads(p.read_text())
                per_ex.append(float(cell["seconds"]) / max(1, len(cell["samples"]["ids"])))
            except (ValueError, KeyError, TypeError):
                continue
        return (sum(per_inst) / len(per_inst) if per_inst else DEFAULT_TRAIN_S_PER_INSTANCE,
                sum(per_ex) / len(per_ex) if per_ex else DEFAULT_EVAL_S_PER_EXAMPLE)

    def plan(self) -> dict[str, Any]:
        """Candidates, units, cells done and an ETA (constant-base candidates cost nothing once known)."""
        inst_s, ex_s = self.measured_costs()
        rows, eta = [], 0.0
        for unit in self.units():
            cells = self.unit_cells(unit)
            done = sum(self.cell_path(k).is_file() for k, _ in cells)
            needed = self.unit_needed(unit)
            if needed:
                if unit[0] == "oracle":
                    cand = self._cand(unit[1])
                    eta += inst_s * min(unit[2].instances, len(cand.train_pool))
                eta += ex_s * sum(len(c.eval_examples) for k, c in cells if not self.cell_path(k).is_file())
            rows.append({"unit": _unit_name(unit), "cells": len(cells), "done": done, "needed": needed})
        return {"candidates": [{"task": c.spec, "n_usable": c.n_usable, "n_eval": len(c.eval_examples),
                                "n_train_pool": len(c.train_pool)} for c in self.candidates],
                "left_out": self.left_out, "units": rows, "n_units": len(rows),
                "units_to_run": sum(r["needed"] for r in rows), "cells": sum(r["cells"] for r in rows),
                "cells_done": sum(r["done"] for r in rows), "seconds_per_instance": round(inst_s, 3),
                "seconds_per_eval_example": round(ex_s, 3), "eta_seconds": round(eta)}

    def run(self, executor: str | None = None, progress: bool = True, max_units: int | None = None
            ) -> dict[str, Any]:
        """Run every unit still missing, in :meth:`units` order (sequential: a candidate's oracle is skipped as
        soon as its base cell shows a constant base model; Ray: the base cells first, then the oracles)."""
        from ..util.paths import run_lock

        with run_lock(self.out, "screen"):  # a second screen on this folder is refused: it would delete models in use
            return self._run_locked(executor, progress, max_units)

    def _run_locked(self, executor: str | None, progress: bool, max_units: int | None) -> dict[str, Any]:
        from ..engine.executors import run_jobs
        from ..engine.jobs import clean_stale, execute_job

        self.out.mkdir(parents=True, exist_ok=True)
        clean_stale(self.out, ("cells", "trained"))
        t0 = time.perf_counter()
        infos: list[dict[str, Any]] = []
        executor = executor or self.cfg.executor
        backend = self._backend() if executor == "sequential" else None
        units = self.units()
        phases = ([units] if executor == "sequential" else
                  [[u for u in units if u[0] == "base"], [u for u in units if u[0] != "base"]])
        for phase in phases:
            pending = [u for u in phase if self.unit_needed(u)]
            if max_units is not None:
                pending = pending[:max(0, max_units - len(infos))]
            if not pending:
                continue
            self.log(f"screen: {len(pending)} unit(s) to run")
            infos += run_jobs(execute_job, pending, self.job, executor, backend=backend, describe=_unit_name,
                              log=self.log, progress=progress, keep_going=True)
        return {"units_run": len([i for i in infos if "error" not in i]),
                "failed": [i for i in infos if "error" in i],
                "trained": sum(bool(i.get("trained")) for i in infos),
                "seconds": round(time.perf_counter() - t0, 1)}


def _unit_name(unit: tuple) -> str:
    if unit[0] == "base":
        return f"base model on {unit[1]}"
    return f"oracle {unit[1]} ({unit[2].label()}, seed {unit[3]})"


__all__: Sequence[str] = ["Budget", "Candidate", "Screen", "example_group", "find_candidates", "split_examples"]

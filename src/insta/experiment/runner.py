"""The grid runner: :class:`Experiment` (an :class:`insta.engine.EngineRun`) validates and plans (pool,
selections, model and cell keys), then runs every missing cell, one engine job per model
(:mod:`insta.engine.jobs`); :func:`run_experiment` adds the results and the report. Cache keys hash everything
a selection, a model or a cell depends on."""
from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any, Callable

from ..catalogs.base import Catalog
from ..engine import CACHE_VERSION, EngineRun, ModelJob, TargetInfo
from ..engine.backends import Backend
from ..engine.cells import score_evaluation
from ..errors import InstaError
from ..util.helpers import content_hash
from ..methods import load_method
from ..mixture import allocate_budget
from ..util.paths import atomic_write_json
from ..selection import Selection, SelectionMethod
from .config import ExperimentConfig, MethodSpec
from .entries import GridEntry
from .p3_table import cached_p3_table
from .results import assemble_results, record_working_run


class Experiment(EngineRun):
    """Plans and runs a grid; see :mod:`insta.experiment`. ``backend`` and ``log`` are hooks for tests."""

    STATE_DIRS = ("", "cells", "trained", "selections")

    def __init__(self, cfg: ExperimentConfig, *, out: str | os.PathLike | None = None, backend: Backend | None = None,
                 log: Callable[[str], None] | None = None, catalogs: dict[str, Catalog] | None = None,
                 pool_encoder=None):
        super().__init__(cfg, out=out, backend=backend, log=log, catalogs=catalogs, pool_encoder=pool_encoder)
        self.cfg: ExperimentConfig = cfg
        self.methods: dict[str, SelectionMethod] = {}
        self.entries: list[GridEntry] = []
        self.stats = {"trained": 0, "evaluated": 0, "cells_cached": 0, "selections_cached": 0}
        self.timings: dict[str, float] = {}
        self._selected_once: set[str] = set()

    def selection_path(self, key: str) -> Path:
        return self.out / "selections" / f"{key}.json"

    # -- phase 1: validation and planning (no training, no evaluation)
    def prepare(self) -> None:
        """Targets, methods, the base model's location and the pool; every config problem fails here."""
        t0 = time.perf_counter()
        cfg = self.cfg
        self.load_targets(n_samples=cfg.target_samples)
        if cfg.eval_ids is not None:
            self._use_eval_ids(cfg.eval_ids)
        for spec in cfg.methods:
            self.methods[spec.label] = load_method(spec.name, label=spec.label, **spec.options)
        self.check_base_model()
        self.load_pool()
        for spec in cfg.methods:
            self.methods[spec.label].check(self.pool.catalog, cfg.k)
        if cfg.n_total < 1:
            raise InstaError("mixture.n_total must be at least 1")
        self.timings["prepare"] = time.perf_counter() - t0

    def _use_eval_ids(self, eval_ids: dict[str, list[str]]) -> None:
        """``eval_ids``: each target's evaluation examples are those (in that order), and its unlabelled samples
        are drawn outside them as ``insta eval-selection --transfer`` draws them (seeded by ``samples_seed``)."""
        from ..methods import unlabelled_samples

        for t in self.targets:
            ids = eval_ids[t.id]
            by_id = {ex.id: ex for ex in t.task.iter_examples()}
            missing = [i for i in ids if i not in by_id]
            if missing:
                raise InstaError(f"eval_ids: {len(missing)} id(s) given for target {t.id} are not its examples "
                                 f"(e.g. {missing[0]!r})")
            t.eval_examples = [by_id[i] for i in ids]
            t.samples = unlabelled_samples(t.task, self.cfg.target_samples, set(ids), self.cfg.samples_seed)
            t.samples_overlap_eval = False

    def _ensure_aligned_encoders(self) -> None:
        from ..align import ensure_aligned_encoder
        from ..encoder import is_encoder_dir

        for spec in self.cfg.methods:
            if spec.name != "insta-aligned" or is_encoder_dir(spec.options["encoder"]):
                continue
            t0 = time.perf_counter()
            ensure_aligned_encoder(spec.options["encoder"], lambda: self.catalog(self.cfg.pool.catalog),
                                   spec.align if spec.align is not None else {}, [t.task for t in self.targets],
                                   log=self.log)
            self.timings["align"] = time.perf_counter() - t0

    def _pool_fingerprint(self) -> str:
        assert self.pool is not None
        return content_hash([(t.id, sorted(t.instructions)) for t in self.pool.catalog])

    def _select(self, target: TargetInfo, spec: MethodSpec) -> Selection:
        """The selection of ``spec`` for ``target``, cached in ``<out>/selections/`` by what it depends on."""
        method = self.methods[spec.label]
        key = content_hash({
            "v": CACHE_VERSION, "kind": "selection", "method": method.describe(), "k": self.cfg.k,
            "pool": self._pool_fingerprint(),
            "target": target.id if method.depends_on_target else None,
            "target_instructions": target.task.instructions if method.depends_on_target else None,
            "samples": [s.id for s in target.samples] if "target_samples" in method.consumes else None,
        })
        path = self.selection_path(key)
        if path.is_file():
            try:
                res = Selection.from_dict(json.loads(path.read_text()))
                res.target["id"] = target.id
                self.stats["selections_cached"] += 1
                return res
            except (ValueError, KeyError):
                pass
        first = spec.label not in self._selected_once
        res = method.select(target.task, self.pool.catalog, self.cfg.k if method.default_k is None else None,
                            target_samples=target.samples, target_info={"id": target.id})
        self._selected_once.add(spec.label)
        if first or res.seconds > 5:
            self.log(f"select {spec.label} for {target.id}: {', '.join(res.task_ids[:5])}"
                     f"{' ...' if len(res.task_ids) > 5 else ''} ({res.seconds:.1f} s)")
        atomic_write_json(path, res.to_dict())
        return res

    def _model_key(self, allocation: dict[str, int]) -> str:
        return content_hash({
            "v": CACHE_VERSION, "kind": "model", "base": self.base_identity(),
            "backend": self.backend.name, "allocation": sorted(allocation.items()),
            "mixture": self.cfg.key_options("mixture"),
            "dedup_against": sorted(t.id for t in self.targets), "train": self.cfg.key_options("train"),
            "pool": self._pool_fingerprint(),
        })

    def _eval_key(self, model_key: str, target: TargetInfo) -> str:
        return content_hash({
            "v": CACHE_VERSION, "kind": "eval", "model": model_key,
            "base": self.base_identity() if model_key == "base" else None,
            "backend": self.backend.name, "target": target.id,
            "eval_ids": [ex.id for ex in target.eval_examples], "eval": self.cfg.key_options("eval"),
        })

    def plan(self) -> list[GridEntry]:
        """Selections for every (target, method) and the cell each grid entry reads (no training)."""
        if self.pool is None:
            self.prepare()
        self._ensure_aligned_encoders()
        t0 = time.perf_counter()
        entries = []
        for target in self.targets:
            if self.cfg.include_base:
                entries.append(GridEntry(target.id, "base", "base", "base", None, None, None, "base",
                                         self._eval_key("base", target)))
            for spec in self.cfg.methods:
                sel = self._select(target, spec)
                alloc = allocate_budget(sel.task_ids, self.cfg.n_total, seed=self.cfg.seed)
                mkey = self._model_key(alloc)
                entries.append(GridEntry(target.id, spec.label, spec.name, spec.group, spec.seed, sel, alloc, mkey,
                                         self._eval_key(mkey, target)))
        self.entries = entries
        self.timings["select"] = time.perf_counter() - t0
        self._log_plan()
        return entries

    def _log_plan(self) -> None:
        entries = self.entries
        n_models = len({e.model_key for e in entries if e.model_key != "base"})
        todo = {e.model_key for e in entries if e.model_key != "base" and not self.cell_path(e.eval_key).is_file()}
        n_cells = len({e.eval_key for e in entries})
        done = sum(1 for k in {e.eval_key for e in entries} if self.cell_path(k).is_file())
        self.log(f"plan: {len(self.targets)} targets x {len(self.cfg.methods)} methods"
                 f"{' + base' if self.cfg.include_base else ''}: {n_models} distinct models ({len(todo)} still to "
                 f"train), {n_cells} evaluation cells ({done} already done)")

    # -- phase 2: run
    def _records(self, allocation: dict[str, int]) -> list[dict[str, Any]]:
        """The training mixture of one model: exactly ``mixture.n_total`` records over its allocation."""
        from ..mixture import MixtureConfig, build_mixture

        pool = self.pool.catalog
        mix_cfg = self.cfg.mixture
        tasks = [pool.get(t) for t in allocation]
        mcfg = MixtureConfig(per_task=max(allocation.values()), caps=dict(allocation), mixing="equal",
                             seed=int(self.cfg.seed if mix_cfg.seed is None else mix_cfg.seed),
                             dedup=bool(mix_cfg.dedup), dedup_ngram=int(mix_cfg.dedup_ngram),
                             max_scan=mix_cfg.max_scan, allow_empty=False)
        target_examples = [ex for t in self.targets for ex in t.eval_examples] if mcfg.dedup else None
        mix = build_mixture(tasks, mcfg, target_examples=target_examples, catalog_name=pool.name)
        if len(mix) != self.cfg.n_total:
            raise InstaError(f"mixture holds {len(mix)} records, not the budget {self.cfg.n_total}")
        return mix.records

    def _job(self, mkey: str, group: list[GridEntry]) -> ModelJob | None:
        """The engine job of one model: its missing cells, and the records to train it on unless it is trained."""
        target_by_id = {t.id: t for t in self.targets}
        keys = list({e.eval_key: target_by_id[e.target] for e in group}.items())
        evals = self.missing_evals(mkey, keys)
        if not evals:
            return None
        labels = sorted({e.label for e in group})
        return self.model_job(mkey, evals, lambda: self._records(group[0].allocation), score=score_evaluation,
                              train=self.cfg.key_options("train"), eval=self.cfg.key_options("eval"),
                              record_fields={"labels": labels, "allocation": group[0].allocation})

    def _models_to_run(self, by_model: dict[str, list[GridEntry]]) -> list[str]:
        """Models with a missing cell: the base model first, then shared models (several targets), then
        per-target models; counts the cached cells."""
        entries = self.entries
        order = sorted(by_model, key=lambda m: (m != "base", -len({e.target for e in by_model[m]}),
                                                min(entries.index(e) for e in by_model[m])))
        todo = [m for m in order if any(not self.cell_path(e.eval_key).is_file() for e in by_model[m])]
        n_cells_todo = len({e.eval_key for e in entries if not self.cell_path(e.eval_key).is_file()})
        self.stats["cells_cached"] = len({e.eval_key for e in entries}) - n_cells_todo
        if not todo:
            self.log("every cell is done: nothing to train or evaluate")
        return todo

    def _describe(self, mkey: str, group: list[GridEntry]) -> str:
        labels = sorted({e.label for e in group})
        shared = len({e.target for e in group}) > 1
        return (f"base model {self.cfg.model}" if mkey == "base" else
                f"{'/'.join(labels)}{' (shared by all targets)' if shared else ''} ({mkey})")

    def _report(self, info: dict[str, Any], labels: list[str]) -> None:
        self.stats["trained"] += int(bool(info.get("trained")))
        self.stats["evaluated"] += len(info.get("cells", []))
        for c in info.get("cells", []):
            self.log(f"  {'/'.join(labels) or 'base'} on {c['target']}: {_quick_primary(c['samples'])} "
                     f"({c['seconds']:.1f} s)")

    def run(self, executor: str | None = None) -> dict[str, Any]:
        """Run every missing cell (one engine job per model, see :mod:`insta.engine.jobs`), then assemble the
        results (see :func:`insta.experiment.results.assemble_results`)."""
        t_run = time.perf_counter()
        if not self.entries:
            self.plan()
        self.clean_stale()
        by_model: dict[str, list[GridEntry]] = {}
        for e in self.entries:
            by_model.setdefault(e.model_key, []).append(e)
        todo = self._models_to_run(by_model)
        labels = {m: sorted({e.label for e in group}) for m, group in by_model.items()}
        self.execute(todo, lambda m: self._job(m, by_model[m]), executor=executor,
                     describe=lambda m: self._describe(m, by_model[m]),
                     on_info=lambda info: self._report(info, labels[info["model_key"]]))
        self.timings["run"] = time.perf_counter() - t_run
        return assemble_results(self)


def _quick_primary(samples: dict[str, Any]) -> str:
    """A cell's accuracy in one phrase, for the progress log."""
    from ..metrics import balanced_accuracy_of

    labels, preds, golds = samples.get("label") or [], samples.get("pred_norm") or [], samples.get("gold") or []
    pairs = [(p, lab, g) for p, lab, g in zip(preds, labels, golds) if p is not None and lab is not None]
    if not pairs:
        em = [x for x in samples.get("exact_match") or [] if x is not None]
        return f"exact match {sum(em) / len(em):.3f}" if em else "no score"
    correct = [p == lab for p, lab, _ in pairs]
    bal = balanced_accuracy_of(correct, [g for _, _, g in pairs])
    return f"acc_norm {sum(correct) / len(correct):.3f}, bal_acc_norm {bal:.3f}"


def run_experiment(cfg: ExperimentConfig, *, out: str | os.PathLike | None = None, backend: Backend | None = None,
                   log: Callable[[str], None] | None = None, report: bool = True, command: str | None = None,
                   catalogs: dict[str, Catalog] | None = None, pool_encoder=None,
                   plan_only: bool = False) -> dict[str, Any]:
    """Validate, plan, run every missing cell, write the results and the report; returns the results dict."""
    t0 = time.perf_counter()
    exp = Experiment(cfg, out=out, backend=backend, log=log, catalogs=catalogs, pool_encoder=pool_encoder)
    if plan_only:
        exp.prepare()
        exp.out.mkdir(parents=True, exist_ok=True)
        exp.plan()
        return assemble_results(exp)
    from ..util.paths import run_lock

    with run_lock(exp.out, "experiment"):  # a second run on this folder is refused, not interleaved
        return _run_locked(exp, cfg, t0, report, command)


def _run_locked(exp: Experiment, cfg: ExperimentConfig, t0: float, report: bool, command: str | None
                ) -> dict[str, Any]:
    exp.prepare()
    exp.out.mkdir(parents=True, exist_ok=True)
    exp.plan()
    results = _with_p3_table(exp.run(), cfg, exp.out, exp.log)
    results["command"] = command
    results["seconds_total"] = round(time.perf_counter() - t0, 1)
    record_working_run(results, exp.out, exp.stats, command)
    if report:
        results["summary"] = report_results(results, exp.out, exp.log)  # means, seed spreads, paired comparisons
    else:
        atomic_write_json(exp.out / "results.json", results)
    exp.log(f"done: trained {exp.stats['trained']}, evaluated {exp.stats['evaluated']}, "
            f"{exp.stats['cells_cached']} cells cached; {results['seconds_total']:.0f} s; results in {exp.out}")
    return results


def _with_p3_table(results: dict[str, Any], cfg: ExperimentConfig, out: Path, log: Callable[[str], None]
                   ) -> dict[str, Any]:
    table = cached_p3_table(cfg, out, log=log)
    if table is not None:
        results["p3_table"] = table
    return results


def report_results(results: dict[str, Any], out: str | os.PathLike, log: Callable[[str], None]) -> dict[str, Any]:
    """The one summarise-and-report path: the summary of ``results`` (means, seed spreads, paired comparisons)
    and the report written from it into ``out`` (results.json, results.md, figures, report.html)."""
    from ..report import summarize, write_report

    summary = summarize(results)
    write_report(results, out, log=log, summary=summary)
    return summary


def report_existing(cfg: ExperimentConfig, *, partial: bool, log: Callable[[str], None]) -> dict[str, Any]:
    """Rewrite the report without training or evaluating: from ``<out>/results.json`` with the config's current
    report settings, or (``partial``) from the cells finished so far; returns the summary."""
    if partial:
        results = run_experiment(cfg, log=log, plan_only=True)
        if not results.get("cells"):
            raise InstaError(f"no finished cells under {cfg.out}: nothing to report yet")
        results = _with_p3_table(results, cfg, Path(cfg.out), log)
        results["partial"] = True
    else:
        from ..report import load_results

        path = Path(cfg.out) / "results.json"
        if not path.is_file():
            raise InstaError(f"no results at {path}: run the experiment first")
        results = load_results(path)
        results.pop("summary", None)
        results["config"] = {**(results.get("config") or {}), "report": cfg.raw.get("report") or {}}
    return report_results(results, cfg.out, log)


__all__ = ["Experiment", "GridEntry", "report_existing", "report_results", "run_experiment"]

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
   over the selected tasks (:func:`insta.methods.allocate_budget`), the same for every method, ``all`` included.
5. **Models** are keyed by what they are trained on (the allocation, the mixture, training options, the base
   model), not by the method or the target: ``all`` and each ``random`` seed select the same tasks for every
   target and are trained once and evaluated on every target; two methods that pick the same tasks share a model.
6. **Cells**: an evaluation of one model on one target's evaluation set is cached as ``<out>/cells/<hash>.json``
   (hash of the model key, the target, its evaluation example ids and the evaluation options), written
   atomically when it is complete. A rerun skips finished cells (no model is trained for them); an interrupted
   cell is simply redone. Trained models live in ``<out>/models/<hash>/`` and are deleted once all their
   evaluations are written (unless ``keep_models``).
7. **Report** (:mod:`insta.report`): ``results.json``, ``results.md``, plots and ``report.html`` in ``<out>``.

The backend that trains and evaluates is pluggable (:class:`Backend`): ``transformers`` (insta.train /
insta.evaluate) for real runs, ``dry-run`` (no model; deterministic pseudo-predictions) to test a configuration.
"""
from __future__ import annotations

import json
import os
import platform
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Protocol

from .catalogs.base import Catalog
from .errors import InstaError
from .experiment_jobs import GridModelJob
from .methods import allocate_budget, load_method
from .selection import Selection, SelectionMethod
from .paths import atomic_write_json, remove_stale_tmp
from .records import Example

from .experiment_config import (  # noqa: F401  (re-exported: the experiment's public names live here too)
    CACHE_VERSION,
    EVAL_OWN_KEYS,
    ExperimentConfig,
    MethodSpec,
    PoolConfig,
    _fail,
    config_from_dict,
    load_config,
)
from .experiment_pool import (  # noqa: F401
    Log,
    PoolInfo,
    TargetInfo,
    _fmt_s,
    _stable_key,
    build_pool,
    content_hash,
    merge_families,
    parse_target,
    prepare_targets,
    task_format_stats,
)

# ---------------------------------------------------------------- backends


class Backend(Protocol):
    """What the runner needs from a model library (tests and dry runs substitute a fake)."""

    name: str

    def base_identity(self, model: str) -> str: ...

    def train(self, records: list[dict[str, Any]], out_dir: Path, model: str,
              options: dict[str, Any]) -> dict[str, Any]:
        """Fine-tune ``model`` on ``records``; return ``{"model_dir": ..., "metrics": {...}}``."""

    def load(self, model_dir_or_name: str) -> Any: ...

    def evaluate(self, handle: Any, examples: list[Example], options: dict[str, Any], task_id: str,
                 catalog: str) -> dict[str, Any]:
        """An :func:`insta.evaluate.evaluate_examples`-style result (``metrics``, ``samples``)."""


class TransformersBackend:
    """insta.train.train_model + insta.evaluate.evaluate_examples (SmolLM2 by default)."""

    name = "transformers"

    def base_identity(self, model: str) -> str:
        from .encoder import model_fingerprint
        from .lm import resolve_model

        loc = resolve_model(model)
        return f"{model}@{model_fingerprint(loc) if Path(loc).is_dir() else loc}"

    def train(self, records, out_dir, model, options):
        from .train import TrainConfig, train_model

        cfg = TrainConfig(**{**options, "model": model, "output_dir": str(out_dir), "overwrite": True,
                             "resume": False})
        res = train_model(records, cfg)
        return {"model_dir": res.model_dir, "metrics": res.metrics}

    def load(self, model_dir_or_name):
        from .lm import load_model

        return load_model(model_dir_or_name)

    def evaluate(self, handle, examples, options, task_id, catalog):
        from .evaluate import EvalConfig, evaluate_examples

        opts = {k: v for k, v in options.items() if k not in EVAL_OWN_KEYS}
        if "stop" in opts:
            opts["stop"] = tuple(opts["stop"])
        opts.setdefault("progress", False)
        return evaluate_examples(handle, examples, EvalConfig(**opts), task_id=task_id, catalog=catalog)


class DryRunBackend:
    """No model: 'training' writes the mixture's task counts, 'evaluation' answers pseudo-randomly but
    deterministically per (model, example), with a small bias toward the gold option that grows with the share
    of the training mixture coming from tasks whose name shares a word with the target. For testing configs,
    the cache and the report; its numbers mean nothing."""

    name = "dry-run"

    def __init__(self):
        self.n_train = 0
        self.n_eval = 0

    def base_identity(self, model: str) -> str:
        return f"dry-run:{model}"

    def train(self, records, out_dir, model, options):
        self.n_train += 1
        out_dir = Path(out_dir)
        counts: dict[str, int] = {}
        for r in records:
            counts[r["task"]] = counts.get(r["task"], 0) + 1
        model_dir = out_dir / "model"
        atomic_write_json(model_dir / "dry_run_model.json", {"base": model, "counts": counts})
        return {"model_dir": str(model_dir), "metrics": {"n_examples": len(records), "train_seconds": 0.0,
                                                         "tasks": counts}}

    def load(self, model_dir_or_name):
        p = Path(model_dir_or_name) / "dry_run_model.json"
        counts = json.loads(p.read_text())["counts"] if p.is_file() else {}
        # a trained model is named by its key (<out>/models/<key>/model), so answers do not depend on <out>
        return {"name": Path(model_dir_or_name).parent.name if p.is_file() else str(model_dir_or_name),
                "counts": counts}

    def evaluate(self, handle, examples, options, task_id, catalog):
        import random as _random

        self.n_eval += 1
        words = set(task_id.replace("/", "_").split("_"))
        total = sum(handle["counts"].values()) or 1
        related = sum(n for t, n in handle["counts"].items() if words & set(t.replace("/", "_").split("_"))) / total
        samples = []
        for ex in examples:
            rng = _random.Random(_stable_key("dry-run", handle["name"] if handle["counts"] else "base", ex.id))
            if ex.options:
                n = len(ex.options)
                sums = [rng.gauss(-5.0, 1.0) for _ in range(n)]
                lab = ex.label if ex.label is not None else 0
                sums[lab] += 0.8 * related + 0.3 * rng.random()
                ntok = [max(1, len(o.split())) for o in ex.options]
                norms = [s / max(1, len(o)) for s, o in zip(sums, ex.options)]
                norms_tok = [s / t for s, t in zip(sums, ntok)]
                cal = [s + rng.gauss(0, 0.5) for s in sums]
                best = lambda xs: max(range(len(xs)), key=lambda i: xs[i])  # noqa: E731
                samples.append({"type": "rank", "id": ex.id, "options": list(ex.options), "label": lab,
                                "reference": ex.options[lab], "scores_sum": sums, "scores_norm": norms,
                                "scores_norm_token": norms_tok, "scores_calibrated": cal, "n_tokens": ntok,
                                "pred_sum": best(sums), "pred_norm": best(norms), "pred_norm_token": best(norms_tok),
                                "pred_calibrated": best(cal)})
            else:
                ok = rng.random() < 0.2 + 0.5 * related
                samples.append({"type": "generate", "id": ex.id, "options": None, "reference": ex.target,
                                "prediction": ex.target if ok else "", "exact_match": float(ok),
                                "rouge_l": 100.0 * ok})
        return {"task": task_id, "catalog": catalog, "n": len(samples), "metrics": {}, "samples": samples,
                "timings": {"seconds": 0.0}}


def make_backend(name: str) -> Backend:
    if name == "transformers":
        return TransformersBackend()
    if name == "dry-run":
        return DryRunBackend()
    raise _fail(f"unknown backend {name!r}")


# ---------------------------------------------------------------- per-example results


#: the form of a cell's per-example arrays (``samples``). Format 1 (no ``format`` key) predates the
#: lm-evaluation-harness names: its ``pred_norm`` divided by tokens and it has no per-character predictions.
SAMPLES_FORMAT = 2
PRED_KEYS = ("pred_sum", "pred_norm", "pred_norm_token", "pred_calibrated")


def compact_samples(result: dict[str, Any]) -> dict[str, Any]:
    """The per-example arrays the report needs (paired bootstrap), from an evaluation result."""
    from .metrics import gold_score

    samples = result.get("samples") or []
    out: dict[str, Any] = {"format": SAMPLES_FORMAT, "ids": [], "gold": [], "label": [],
                           **{k: [] for k in PRED_KEYS}, "gold_logprob": [], "gold_nll_per_token": [],
                           "n_options": [], "exact_match": []}
    for s in samples:
        out["ids"].append(s["id"])
        if s.get("type", "rank") == "rank":
            lab = s["label"]
            out["gold"].append(s.get("reference", s["options"][lab]))
            out["label"].append(lab)
            for key in PRED_KEYS:
                out[key].append(s.get(key))
            logprob, nll = gold_score(s)
            out["gold_logprob"].append(round(logprob, 5))
            out["gold_nll_per_token"].append(round(nll, 5))
            out["n_options"].append(len(s["options"]))
            out["exact_match"].append(None)
        else:
            for key in ("label", *PRED_KEYS, "gold_logprob", "gold_nll_per_token", "n_options"):
                out[key].append(None)
            out["gold"].append(s.get("reference"))
            out["exact_match"].append(float(s.get("exact_match", 0.0)))
    return out


def upgrade_samples(samples: dict[str, Any]) -> dict[str, Any]:
    """A cell's per-example arrays in the current :data:`SAMPLES_FORMAT`: format 1's ``pred_norm`` (per token)
    becomes ``pred_norm_token``, and per-character predictions stay absent (they were never computed)."""
    if samples.get("format", 1) >= SAMPLES_FORMAT:
        return samples
    out = {"format": SAMPLES_FORMAT}
    for key, value in samples.items():
        out["pred_norm_token" if key == "pred_norm" else key] = value
    return out


def upgrade_cell(cell: dict[str, Any]) -> dict[str, Any]:
    """A cell (or a results.json cell entry) with its samples and metric names in today's form (see
    :data:`insta.metrics.LEGACY_RANK_METRICS`)."""
    from .metrics import LEGACY_RANK_METRICS

    out = dict(cell)
    if isinstance(out.get("samples"), dict):
        out["samples"] = upgrade_samples(out["samples"])
    for key in ("metrics", "evaluate_metrics"):  # the old names: rank metrics with acc_sum among them
        if isinstance(out.get(key), dict) and "acc_sum" in out[key]:
            out[key] = {LEGACY_RANK_METRICS.get(k, k): v for k, v in out[key].items()}
            if out.get("primary_metric_evaluate") in LEGACY_RANK_METRICS:
                out["primary_metric_evaluate"] = LEGACY_RANK_METRICS[out["primary_metric_evaluate"]]
    return out


def upgrade_results(results: dict[str, Any]) -> dict[str, Any]:
    """A results.json of any cell format in today's form (samples and cell metrics renamed, numbers kept)."""
    out = dict(results)
    out["samples"] = {k: upgrade_samples(v) for k, v in (results.get("samples") or {}).items()}
    out["cells"] = [upgrade_cell(c) for c in results.get("cells") or []]
    return out


# ---------------------------------------------------------------- the runner


@dataclass
class GridEntry:
    target: str  # TargetInfo.id
    label: str  # method label ("base" for the untrained model)
    method: str
    group: str
    seed: int | None
    selection: Selection | None
    allocation: dict[str, int] | None
    model_key: str  # "base" or a model hash
    eval_key: str


class Experiment:
    """Plans and runs a grid; see the module docstring. ``backend`` and ``log`` are hooks for tests."""

    def __init__(self, cfg: ExperimentConfig, *, out: str | os.PathLike | None = None, backend: Backend | None = None,
                 log: Callable[[str], None] | None = None, catalogs: dict[str, Catalog] | None = None,
                 pool_encoder=None):
        self.cfg = cfg
        self.out = Path(out or cfg.out)
        self.backend = backend or make_backend(cfg.backend)
        self.log = log or Log()
        self._catalogs = catalogs or {}
        self.pool_encoder = pool_encoder
        self.targets: list[TargetInfo] = []
        self.pool: PoolInfo | None = None
        self.methods: dict[str, SelectionMethod] = {}
        self.entries: list[GridEntry] = []
        self.stats = {"trained": 0, "evaluated": 0, "cells_cached": 0, "selections_cached": 0}
        self.timings: dict[str, float] = {}
        self._selected_once: set[str] = set()
        self._base_id: str | None = None

    # -- paths
    def cell_path(self, key: str) -> Path:
        return self.out / "cells" / f"{key}.json"

    def model_dir(self, key: str) -> Path:
        return self.out / "models" / key

    def train_record_path(self, key: str) -> Path:
        return self.out / "trained" / f"{key}.json"

    def selection_path(self, key: str) -> Path:
        return self.out / "selections" / f"{key}.json"

    # -- catalogs
    def catalog(self, name: str) -> Catalog:
        if name not in self._catalogs:
            from .catalogs import load_catalog

            self._catalogs[name] = load_catalog(name, self.cfg.data_dir)
        return self._catalogs[name]

    # -- phase 1: validation and planning (no training, no evaluation)
    def prepare(self) -> None:
        t0 = time.perf_counter()
        cfg = self.cfg
        cats = {cfg.pool.catalog: self.catalog(cfg.pool.catalog)}
        for spec in cfg.targets:
            cat, _ = parse_target(spec, cfg.pool.catalog)
            cats[cat] = self.catalog(cat)
        self.targets = prepare_targets(cfg, cats)
        for spec in cfg.methods:
            self.methods[spec.label] = load_method(spec.name, label=spec.label, **spec.options)
        if isinstance(self.backend, TransformersBackend):
            from .lm import builtin_name, resolve_model

            if not builtin_name(cfg.model):
                resolve_model(cfg.model)  # a missing model directory is an error now, not after the selections
        self.pool = build_pool(cfg, cats[cfg.pool.catalog], self.targets, encoder=self.pool_encoder, log=self.log)
        for spec in cfg.methods:
            self.methods[spec.label].check(self.pool.catalog, cfg.k)
        if cfg.n_total < 1:
            raise _fail("mixture.n_total must be at least 1")
        self.timings["prepare"] = time.perf_counter() - t0

    def _ensure_aligned_encoders(self) -> None:
        for spec in self.cfg.methods:
            if spec.name != "insta-aligned":
                continue
            enc = Path(spec.options["encoder"])
            if enc.is_dir() and (enc / "modules.json").is_file():
                continue
            self.log(f"insta-aligned: training the aligned encoder into {enc} (align: {spec.align})")
            from .align import align_for_targets

            t0 = time.perf_counter()
            align_for_targets(self.catalog(self.cfg.pool.catalog), [t.task for t in self.targets], enc,
                              spec.align, log=lambda m: self.log(f"align: {m}"))
            self.timings["align"] = time.perf_counter() - t0

    def _pool_fingerprint(self) -> str:
        assert self.pool is not None
        return content_hash([(t.id, sorted(t.instructions)) for t in self.pool.catalog])

    def _select(self, target: TargetInfo, spec: MethodSpec) -> Selection:
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

    def _base_identity(self) -> str:
        if self._base_id is None:
            self._base_id = self.backend.base_identity(self.cfg.model)
        return self._base_id

    def _model_key(self, allocation: dict[str, int]) -> str:
        return content_hash({
            "v": CACHE_VERSION, "kind": "model", "base": self._base_identity(),
            "backend": self.backend.name, "allocation": sorted(allocation.items()),
            "mixture": {k: v for k, v in self.cfg.mixture.items() if k != "n_total"},
            "dedup_against": sorted(t.id for t in self.targets), "train": self.cfg.train,
            "pool": self._pool_fingerprint(),
        })

    def _eval_key(self, model_key: str, target: TargetInfo) -> str:
        return content_hash({
            "v": CACHE_VERSION, "kind": "eval", "model": model_key,
            "base": self._base_identity() if model_key == "base" else None,
            "backend": self.backend.name, "target": target.id,
            "eval_ids": [ex.id for ex in target.eval_examples], "eval": self.cfg.eval,
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
        n_models = len({e.model_key for e in entries if e.model_key != "base"})
        todo = {e.model_key for e in entries if e.model_key != "base" and not self.cell_path(e.eval_key).is_file()}
        n_cells = len({e.eval_key for e in entries})
        done = sum(1 for k in {e.eval_key for e in entries} if self.cell_path(k).is_file())
        self.log(f"plan: {len(self.targets)} targets x {len(self.cfg.methods)} methods"
                 f"{' + base' if self.cfg.include_base else ''}: {n_models} distinct models ({len(todo)} still to "
                 f"train), {n_cells} evaluation cells ({done} already done)")
        return entries

    # -- phase 2: run
    def _records(self, allocation: dict[str, int]) -> list[dict[str, Any]]:
        from .mixture import MixtureConfig, build_mixture

        pool = self.pool.catalog
        tasks = [pool.get(t) for t in allocation]
        mcfg = MixtureConfig(per_task=max(allocation.values()), caps=dict(allocation), mixing="equal",
                             seed=int(self.cfg.mixture.get("seed", self.cfg.seed)),
                             dedup=bool(self.cfg.mixture.get("dedup", True)),
                             dedup_ngram=int(self.cfg.mixture.get("dedup_ngram", 8)),
                             max_scan=self.cfg.mixture.get("max_scan"), allow_empty=False)
        target_examples = [ex for t in self.targets for ex in t.eval_examples] if mcfg.dedup else None
        mix = build_mixture(tasks, mcfg, target_examples=target_examples, catalog_name=pool.name)
        if len(mix) != self.cfg.n_total:
            raise InstaError(f"mixture holds {len(mix)} records, not the budget {self.cfg.n_total}")
        return mix.records

    def _job(self, mkey: str, group: list[GridEntry]) -> GridModelJob | None:
        """The job of one model: its missing cells, and the records to train it on unless it is trained."""
        from .experiment_jobs import GridEval, GridModelJob, trained_record

        target_by_id = {t.id: t for t in self.targets}
        missing: dict[str, GridEntry] = {}
        for e in group:
            if not self.cell_path(e.eval_key).is_file():
                missing.setdefault(e.eval_key, e)
        if not missing:
            return None
        evals = [GridEval(k, e.target, target_by_id[e.target].task.id, target_by_id[e.target].catalog,
                          list(target_by_id[e.target].eval_examples)) for k, e in missing.items()]
        job = GridModelJob(model_key=mkey, model=self.cfg.model, backend=self.backend.name, out=str(self.out),
                           labels=sorted({e.label for e in group}), allocation=group[0].allocation,
                           train=dict(self.cfg.train), eval=dict(self.cfg.eval), evals=evals,
                           keep_model=self.cfg.keep_models)
        if mkey != "base":
            done = trained_record(self.out, mkey)
            if done is not None:
                job.trained_dir, job.train_record = done
            else:
                t0 = time.perf_counter()
                job.records = self._records(group[0].allocation)
                job.mixture_seconds = time.perf_counter() - t0
        return job

    def run(self, executor: str | None = None) -> dict[str, Any]:
        """Run every missing cell (one job per model, see :mod:`insta.experiment_jobs`), then assemble the
        results (see :func:`assemble_results`)."""
        from .executors import run_jobs
        from .experiment_jobs import execute_grid_model

        t_run = time.perf_counter()
        if not self.entries:
            self.plan()
        self._clean_stale()
        entries = self.entries
        by_model: dict[str, list[GridEntry]] = {}
        for e in entries:
            by_model.setdefault(e.model_key, []).append(e)
        # base first, then shared models (several targets), then per-target models
        order = sorted(by_model, key=lambda m: (m != "base", -len({e.target for e in by_model[m]}),
                                                min(entries.index(e) for e in by_model[m])))
        todo = [m for m in order if any(not self.cell_path(e.eval_key).is_file() for e in by_model[m])]
        n_cells_todo = len({e.eval_key for e in entries if not self.cell_path(e.eval_key).is_file()})
        self.stats["cells_cached"] = len({e.eval_key for e in entries}) - n_cells_todo
        if not todo:
            self.log("every cell is done: nothing to train or evaluate")
        executor = executor or self.cfg.executor

        def describe(mkey: str) -> str:
            labels = sorted({e.label for e in by_model[mkey]})
            shared = len({e.target for e in by_model[mkey]}) > 1
            return (f"base model {self.cfg.model}" if mkey == "base" else
                    f"{'/'.join(labels)}{' (shared by all targets)' if shared else ''} ({mkey})")

        def report(info: dict[str, Any]) -> None:
            self.stats["trained"] += int(bool(info.get("trained")))
            self.stats["evaluated"] += len(info.get("cells", []))
            for c in info.get("cells", []):
                self.log(f"  {'/'.join(info['labels']) or 'base'} on {c['target']}: {_quick_primary(c['samples'])} "
                         f"({c['seconds']:.1f} s)")

        def work(job, backend=None):
            info = execute_grid_model(job, backend)
            if executor == "sequential":
                report(info)
            return info

        infos = run_jobs(work, todo, lambda m: self._job(m, by_model[m]), executor,
                         backend=self.backend if executor == "sequential" else None, describe=describe,
                         log=self.log, progress=False)
        if executor != "sequential":
            for info in infos:
                report(info)
        self.timings["run"] = time.perf_counter() - t_run
        return assemble_results(self)

    def _clean_stale(self) -> None:
        """Before anything runs: remove model dirs whose training did not finish (no record) and the temp files
        of atomic writes that a killed run left in the output folders."""
        for sub in ("", "cells", "trained", "selections"):
            remove_stale_tmp(self.out / sub)
        root = self.out / "models"
        if not root.is_dir():
            return
        for d in root.iterdir():
            if d.is_dir() and not self.train_record_path(d.name).is_file():
                shutil.rmtree(d, ignore_errors=True)


def _quick_primary(samples: dict[str, Any]) -> str:
    from .metrics import balanced_accuracy_of

    labels, preds, golds = samples.get("label") or [], samples.get("pred_norm") or [], samples.get("gold") or []
    pairs = [(p, lab, g) for p, lab, g in zip(preds, labels, golds) if p is not None and lab is not None]
    if not pairs:
        em = [x for x in samples.get("exact_match") or [] if x is not None]
        return f"exact match {sum(em) / len(em):.3f}" if em else "no score"
    correct = [p == lab for p, lab, _ in pairs]
    bal = balanced_accuracy_of(correct, [g for _, _, g in pairs])
    return f"acc_norm {sum(correct) / len(correct):.3f}, bal_acc_norm {bal:.3f}"


# ---------------------------------------------------------------- results


def machine_info() -> dict[str, Any]:
    info = {"python": platform.python_version(), "platform": platform.platform(), "cpus": os.cpu_count()}
    try:
        info["cpus_available"] = len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover
        pass
    try:
        import torch

        info["torch"] = torch.__version__
        info["torch_threads"] = torch.get_num_threads()
        info["cuda"] = torch.cuda.is_available()
    except ImportError:  # pragma: no cover
        pass
    return info


def assemble_results(exp: Experiment) -> dict[str, Any]:
    """Everything the report needs, from the config, the plan and the cell files."""
    cfg = exp.cfg
    cells_out = []
    samples: dict[str, Any] = {}
    missing = []
    for e in exp.entries:
        path = exp.cell_path(e.eval_key)
        if not path.is_file():
            missing.append(f"{e.target}/{e.label}")
            continue
        cell = upgrade_cell(json.loads(path.read_text()))
        samples[e.eval_key] = cell["samples"]
        train_path = exp.train_record_path(e.model_key)
        train = json.loads(train_path.read_text()) if train_path.is_file() else {}
        cells_out.append({
            "target": e.target, "label": e.label, "method": e.method, "group": e.group, "seed": e.seed,
            "selected": e.selection.task_ids if e.selection else [],
            "selection": e.selection.to_dict() if e.selection else None,
            "allocation": e.allocation, "model_key": e.model_key, "eval_key": e.eval_key,
            "shared_model": len({x.target for x in exp.entries if x.model_key == e.model_key}) > 1,
            "evaluate_metrics": cell.get("metrics", {}),
            "eval_seconds": cell.get("seconds"), "finished": cell.get("finished"),
            "train": {k: train.get(k) for k in ("seconds", "metrics", "mixture_seconds") if k in train},
        })
    methods = [{"label": "base", "method": "base", "group": "base", "consumes": [], "depends_on_target": False,
                "params": {"model": cfg.model}}] if cfg.include_base else []
    for spec in cfg.methods:
        d = exp.methods[spec.label].describe()
        methods.append({"label": spec.label, "method": spec.name, "group": spec.group, "seed": spec.seed,
                        "consumes": d["consumes"], "depends_on_target": d["depends_on_target"], "params": d["params"]})
    train_recs = []
    for mkey in sorted({e.model_key for e in exp.entries if e.model_key != "base"}):
        p = exp.train_record_path(mkey)
        if p.is_file():
            train_recs.append(json.loads(p.read_text()))
    return {
        "name": cfg.name,
        "config_path": cfg.path,
        "config": cfg.raw,
        "k": cfg.k,
        "n_total": cfg.n_total,
        "model": cfg.model,
        "backend": exp.backend.name,
        "targets": [t.summary() for t in exp.targets],
        "pool": exp.pool.summary() if exp.pool else {},
        "methods": methods,
        "cells": cells_out,
        "samples": samples,
        "missing_cells": missing,
        "plan": [{"target": e.target, "label": e.label, "selected": e.selection.task_ids if e.selection else [],
                  "model_key": e.model_key, "eval_key": e.eval_key, "done": exp.cell_path(e.eval_key).is_file()}
                 for e in exp.entries],
        "trained_models": train_recs,
        "stats": dict(exp.stats),
        "timings": {k: round(v, 2) for k, v in exp.timings.items()},
        "machine": machine_info(),
        "finished": time.strftime("%Y-%m-%dT%H:%M:%S"),
    }


def p3_selection_table(data_dir: str | None, k: int = 5, encoder: str | None = None,
                       aligned_encoder: str | None = None, log: Callable[[str], None] = lambda m: None,
                       catalog: Catalog | None = None, encoders: dict[str, Any] | None = None) -> dict[str, Any]:
    """Top-k of the P3 training pool (``t0_train``) for every T0 held-out target (``t0_eval``) under INSTA
    (``insta-mean``, default encoder) and INSTA-aligned (``insta-aligned``, top-k vote, ``aligned_encoder``)
    when one is given and present, both through :func:`insta.methods.load_method`.

    No training: P3 instances are not available offline. ANLI R1-R3 share one promptsource folder, so the 11 T0
    held-out targets are 9 rows here (``anli`` stands for R1, R2 and R3). Tasks in a tie group carry its number.
    """
    if catalog is None:
        from .catalogs import load_catalog

        catalog = load_catalog("p3", data_dir)
    encoders = encoders or {}
    pool = catalog.subset(catalog.pool("t0_train"))
    targets = [catalog.get(t) for t in catalog.pool("t0_eval")]
    variants = [("insta-mean", load_method("insta-mean", encoder=encoders.get("default") or encoder),
                 "mean", encoder or "all-MiniLM-L6-v2")]
    aligned_note = None
    if aligned_encoder:
        if (Path(aligned_encoder) / "modules.json").is_file() or "aligned" in encoders:
            variants.append(("insta-aligned", load_method("insta-aligned", encoder=encoders.get("aligned")
                                                          or str(aligned_encoder)), "topk-vote", str(aligned_encoder)))
        else:
            aligned_note = (f"aligned encoder {aligned_encoder} not found (or not finished): INSTA-aligned column "
                            "left out")
    else:
        aligned_note = ("no aligned P3 encoder configured (p3_table.aligned_encoder): train one with "
                        "`insta align --catalog p3 --pool t0_train` to fill the INSTA-aligned column")
    rows = []
    for tgt in targets:
        row: dict[str, Any] = {"target": tgt.id, "n_instructions": len(tgt.instructions)}
        for name, method, _, _ in variants:
            sel = method.select(tgt, pool, k)
            row[name] = [{"task": s.task, "score": round(s.score, 4),
                          **({"tie_group": s.tie_group} if s.tie_group else {})} for s in sel.selected]
        rows.append(row)
    log(f"P3 table: {len(rows)} targets x {len(variants)} variant(s)")
    return {"k": k, "pool_size": len(pool), "variants": [{"name": n, "aggregation": a, "encoder": e}
                                                         for n, _, a, e in variants],
            "rows": rows, "note": aligned_note,
            "anli": "anli = ANLI R1, R2 and R3 (one promptsource folder, the same instructions)"}


def ensure_p3_aligned_encoder(cfg: ExperimentConfig, log: Callable[[str], None] = lambda m: None) -> Path | None:
    """Train the P3 table's aligned encoder when the config says how (``p3_table.align``) and it is missing.

    It is aligned on the P3 ``t0_train`` pool by default, with the T0 evaluation datasets left out as
    ``insta align`` always does, so a fresh checkout reproduces the report's INSTA-aligned column.
    """
    p3 = cfg.p3_table
    target, opts = p3.get("aligned_encoder"), p3.get("align")
    if not target or opts is None or (Path(target) / "modules.json").is_file():
        return None
    from .align import AlignConfig, align_encoder
    from .catalogs import load_catalog

    config = AlignConfig(**{"pool": "t0_train", "progress": False, **dict(opts)})
    log(f"p3 table: training the aligned encoder into {target} (align: {dict(opts)})")
    return align_encoder(load_catalog("p3", cfg.data_dir), config, target, log=lambda m: log(f"align: {m}"))


def cached_p3_table(cfg: ExperimentConfig, out: Path, log: Callable[[str], None] = lambda m: None) -> dict | None:
    """The P3 selection table of the report (``None`` when disabled), cached in ``<out>/p3_table.json``."""
    p3 = cfg.p3_table
    if not p3.get("enabled"):
        return None
    ensure_p3_aligned_encoder(cfg, log=log)
    p3_path = Path(out) / "p3_table.json"
    aligned = p3.get("aligned_encoder")
    key = content_hash({"k": p3.get("k", 5), "enc": p3.get("encoder") or cfg.encoder, "aligned": aligned,
                        "aligned_present": bool(aligned and (Path(aligned) / "modules.json").is_file())})
    table = json.loads(p3_path.read_text()) if p3_path.is_file() else None
    if not table or table.get("key") != key:
        table = p3_selection_table(cfg.data_dir, int(p3.get("k", 5)), p3.get("encoder") or cfg.encoder, aligned,
                                   log=log)
        table["key"] = key
        atomic_write_json(p3_path, table)
    return table


def run_experiment(cfg: ExperimentConfig, *, out: str | os.PathLike | None = None, backend: Backend | None = None,
                   log: Callable[[str], None] | None = None, report: bool = True, command: str | None = None,
                   catalogs: dict[str, Catalog] | None = None, pool_encoder=None,
                   plan_only: bool = False) -> dict[str, Any]:
    """Validate, plan, run every missing cell, write the results and the report; returns the results dict."""
    t0 = time.perf_counter()
    exp = Experiment(cfg, out=out, backend=backend, log=log, catalogs=catalogs, pool_encoder=pool_encoder)
    exp.prepare()
    exp.out.mkdir(parents=True, exist_ok=True)
    exp.plan()
    if plan_only:
        return assemble_results(exp)
    results = exp.run()
    table = cached_p3_table(cfg, exp.out, log=exp.log)
    if table is not None:
        results["p3_table"] = table
    results["command"] = command
    results["seconds_total"] = round(time.perf_counter() - t0, 1)
    # the run that trained or evaluated something; a rerun that found every cell cached keeps the earlier record
    results["working_run"] = {"command": command, "seconds_total": results["seconds_total"],
                              "stats": dict(exp.stats), "finished": results.get("finished"),
                              "machine": results.get("machine")}
    prev = exp.out / "results.json"
    if prev.is_file() and exp.stats["trained"] == 0 and exp.stats["evaluated"] == 0:
        try:
            old = json.loads(prev.read_text())
        except ValueError:
            old = {}
        if isinstance(old.get("working_run"), dict):
            results["working_run"] = old["working_run"]
        elif "seconds_total_of_run_that_did_the_work" in old:  # results.json written before "working_run"
            results["working_run"].update(command=old.get("command_of_run_that_did_the_work"),
                                          seconds_total=old["seconds_total_of_run_that_did_the_work"])
    if report:
        from .report import summarize, write_report

        results["summary"] = summarize(results)  # returned too: means, seed spreads, paired comparisons
        write_report(results, exp.out, log=exp.log, summary=results["summary"])
    else:
        atomic_write_json(exp.out / "results.json", results)
    exp.log(f"done: trained {exp.stats['trained']}, evaluated {exp.stats['evaluated']}, "
            f"{exp.stats['cells_cached']} cells cached; {results['seconds_total']:.0f} s; results in {exp.out}")
    return results


__all__ = [
    "Backend", "DryRunBackend", "Experiment", "ExperimentConfig", "MethodSpec", "PoolConfig", "TransformersBackend",
    "assemble_results", "build_pool", "compact_samples", "config_from_dict", "content_hash", "load_config",
    "merge_families", "upgrade_cell", "upgrade_results",
    "cached_p3_table", "ensure_p3_aligned_encoder", "p3_selection_table", "prepare_targets", "run_experiment",
]

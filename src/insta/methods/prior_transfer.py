"""Selection that learns from transfer already measured: ``prior-transfer`` and its ``popular-source`` baseline.

``prior-transfer`` reads a prior transfer matrix (insta's long CSV/JSON, or a user's in the same format,
:func:`insta.matrix.matrix.read_matrix`) and scores a pool's sources for a target the matrix does not hold
from a popular-source prior, pivots through the matrix's targets (TaskShop's idea, Kim et al. 2023) and direct
INSTA similarity; the arithmetic and the fitting of its weights live in :mod:`insta.matrix.prior`.

What the matrix may look like, and what happens when it is not clean:

* sources are matched to pool tasks by task id, else by family (a BIG-bench family row serves each of its
  tasks); sources the pool does not hold are not candidates; a pool task the matrix does not hold is ranked by
  similarity alone (0 in the prior and pivot components). No source of the matrix in the pool: one error line.
* targets are pivots: each needs its instructions, so ``catalog:task`` ids are looked up in that catalog (plain
  ids in ``target_catalog``, default the matrix's ``source_catalog`` or the pool's catalog); an unknown id is
  one error line.
* non-finite values are one error line; missing cells are left out of that source's means; a target with fewer
  than three measured sources is left out (listed under ``prior_matrix_dropped`` in the selection's config).
* a selection target that is itself a target of the matrix: its column is left out before anything is
  computed (leave-one-target-out), and the config says so; a matrix target that is also a pool task stays a
  candidate like any other (the target's own relatives are removed by the leakage guard as always).

The weights are fitted on the matrix by leave-one-target-out (nested when the target's column is left out), or
given (``weights=[prior, pivot, similarity]``, ``temperature=T``); the fitted ones are written into every
selection's config (``prior_transfer_fit``), so passing them back reproduces the selection without refitting.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

import numpy as np

from ..catalogs.base import Catalog
from ..errors import InstaError
from ..records import Example, Task
from ..selection import Scores, SelectionMethod, clean_instructions, leakage_guard
from ..selection import unit_rows
from .insta import InstaMethod, best_pair_lines
from .resources import encoder_name, get_encoder, instance_text, unlabelled_samples


def _weights_option(weights: Any) -> tuple[float, float, float] | None:
    from ..matrix.prior import COMPONENTS

    if weights is None:
        return None
    if isinstance(weights, dict):
        unknown = set(weights) - set(COMPONENTS)
        if unknown:
            raise InstaError(f"prior-transfer: unknown weight(s) {', '.join(sorted(map(str, unknown)))} "
                             f"(known: {', '.join(COMPONENTS)})")
        weights = [weights.get(c, 0.0) for c in COMPONENTS]
    if (not isinstance(weights, (list, tuple)) or len(weights) != 3
            or not all(isinstance(w, (int, float)) and not isinstance(w, bool) and w >= 0 for w in weights)
            or sum(weights) <= 0):
        raise InstaError("prior-transfer: weights must be three numbers >= 0 (prior, pivot, similarity), not all 0 "
                         f"(got {weights!r})")
    return tuple(float(w) / float(sum(weights)) for w in weights)  # type: ignore[return-value]


def prior_why_text(w: dict) -> str:
    """What drove a prior-transfer pick: a pivot target and its measured transfer, the prior, or similarity."""
    if w["driver"] == "pivot" and "pivot_target" in w:
        return (f"pivot {w['pivot_target']} (weight {w['pivot_weight']:.2f}): measured transfer "
                f"{w['pivot_transfer']:+.4f}, rank {w['pivot_rank']} of {w['pivot_n_sources']}")
    if w["driver"] == "prior" and "prior_percentile" in w:
        return (f"prior: mean percentile {w['prior_percentile']:.2f} over {w['n_targets_measured']} measured "
                f"targets (best: {w['best_target']} {w['best_transfer']:+.4f})")
    if not w.get("in_matrix", True):
        return f"not in the prior matrix: instruction similarity {w.get('similarity', float('nan')):.3f}"
    return f"instruction similarity {w.get('similarity', float('nan')):.3f}"


class PriorTransferMethod(SelectionMethod):
    """Scores sources for a new target from a prior transfer matrix (see the module docstring).

    Options: ``prior_matrix`` (a file or a :class:`~insta.matrix.matrix.TransferMatrix`), ``metric``,
    ``encoder`` (instructions, output spaces and inputs), ``weights`` / ``temperature`` (skip the fit),
    ``target_inputs`` (also compare the target's unlabelled inputs with each matrix target's: needs target
    samples), ``n_pivot_samples`` (inputs per matrix target), ``data_dir`` / ``target_catalog`` (where the
    matrix's targets are looked up: a catalog name, or a :class:`~insta.catalogs.base.Catalog` object;
    ``catalogs``, a function from a catalog name to a catalog, replaces loading them from ``data_dir``).
    """

    name = "prior-transfer"
    consumes: tuple[str, ...] = ("instructions", "prior_matrix")
    shared_encoder = True
    #: fixed weights of a subclass (``popular-source``: the prior alone); ``None``: fitted or given
    fixed_weights: tuple[float, float, float] | None = None

    @classmethod
    def why_lines(cls, why: dict[str, Any], n_samples: int | None = None) -> list[str]:
        lines = best_pair_lines(why) + ([prior_why_text(why)] if "driver" in why else [])
        return lines + super().why_lines(why, n_samples)

    def __init__(self, label: str | None = None, *, prior_matrix: Any = None, metric: str | None = None,
                 encoder: Any = None, weights: Any = None, temperature: float | None = None,
                 target_inputs: bool = False, n_pivot_samples: int = 32, data_dir: str | None = None,
                 target_catalog: str | Catalog | None = None, catalogs: Any = None, **options: Any):
        super().__init__(label, **options)
        from ..matrix.matrix import TransferMatrix, read_matrix
        from ..matrix.prior import TEMPERATURES, PriorMatrix

        if prior_matrix is None or prior_matrix == "":
            raise InstaError(f"method {self.name!r} needs a prior transfer matrix (--prior-matrix FILE, "
                             "or -o prior_matrix=FILE)")
        if isinstance(prior_matrix, TransferMatrix):
            self.matrix_path, matrix = "<in memory>", prior_matrix
        else:
            self.matrix_path = str(prior_matrix)
            matrix = read_matrix(Path(str(prior_matrix)).expanduser())
        where = f"prior matrix {self.matrix_path}"
        self.prior = PriorMatrix.from_matrix(matrix, metric, where)
        self.matrix_meta = dict(matrix.meta or {})
        given = self.fixed_weights or _weights_option(weights)
        if temperature is not None and (isinstance(temperature, bool) or not isinstance(temperature, (int, float))
                                        or not temperature > 0):
            raise InstaError(f"{self.name}: temperature must be a number > 0 (got {temperature!r})")
        if given and given[1] > 0 and temperature is None:
            raise InstaError(f"{self.name}: weights with a pivot share need temperature=T too "
                             f"(the fit picks one of {', '.join(map(str, TEMPERATURES))})")
        self.weights, self.temperature = given, (float(temperature) if temperature is not None else None)
        if isinstance(target_inputs, str):
            target_inputs = target_inputs.strip().lower() in ("1", "true", "yes")
        self.target_inputs = bool(target_inputs)
        if self.target_inputs:
            self.consumes = (*type(self).consumes, "target_samples")
        if isinstance(n_pivot_samples, bool) or not isinstance(n_pivot_samples, int) or n_pivot_samples < 1:
            raise InstaError(f"{self.name}: n_pivot_samples must be a positive integer (got {n_pivot_samples!r})")
        self.n_pivot_samples = n_pivot_samples
        self.encoder_name = encoder
        self.data_dir = data_dir
        self.target_catalog = target_catalog
        if catalogs is not None and not callable(catalogs):
            raise InstaError(f"{self.name}: catalogs must be a function from a catalog name to a catalog")
        self.catalogs = catalogs
        self.insta = InstaMethod(encoder=encoder, aggregation="mean")
        self._pivot_tasks: dict[str, Task] | None = None
        self._embedded: dict[str, Any] = {}
        self._fits: dict[tuple, Any] = {}
        self.last_fit: dict[str, Any] | None = None

    # ------------------------------------------------------------------ description
    def params(self) -> dict[str, Any]:
        out: dict[str, Any] = {"prior_matrix": self.matrix_path, "matrix_fingerprint": self.prior.fingerprint(),
                               "metric": self.prior.metric}
        if self.uses_similarity:
            out["encoder"] = encoder_name(self.encoder_name)
        if self.weights:
            out["weights"] = [round(w, 6) for w in self.weights]
            if self.weights[1] > 0:
                out["temperature"] = self.temperature
        else:
            out["weights"] = "fitted leave-one-target-out on the matrix"
        if self.target_inputs:
            out.update(target_inputs=True, n_pivot_samples=self.n_pivot_samples)
        return out

    @property
    def uses_similarity(self) -> bool:
        return self.weights is None or self.weights[1] > 0 or self.weights[2] > 0

    # ------------------------------------------------------------------ matrix targets as tasks
    def _catalog_of(self, name: str, cache: dict[str, Catalog]) -> Catalog:
        from ..catalogs import load_catalog

        if name not in cache:
            cache[name] = self.catalogs(name) if self.catalogs else load_catalog(name, self.data_dir)
        return cache[name]

    def pivot_tasks(self, pool: Catalog) -> dict[str, Task]:
        """Matrix target id -> its task (instructions, examples); one error line for an id not found."""
        if self._pivot_tasks is None:
            given = self.target_catalog if isinstance(self.target_catalog, Catalog) else None
            default = ((given.name if given else self.target_catalog) or self.matrix_meta.get("source_catalog")
                       or pool.name)
            cache: dict[str, Catalog] = {given.name: given} if given else {}
            out = {}
            for t in self.prior.targets:
                cat, sep, tid = t.partition(":")
                cat, tid = (cat, tid) if sep else (default, t)
                try:
                    catalog = pool if (cat == pool.name and tid in pool) else self._catalog_of(cat, cache)
                except InstaError as err:
                    raise InstaError(f"prior matrix target {t!r}: {err}") from None
                if tid not in catalog:
                    raise InstaError(f"prior matrix target {t!r} is not a task of catalog {cat!r} (the pivots need "
                                     "its instructions; -o target_catalog=NAME names the catalog of plain ids)")
                out[t] = catalog.get(tid)
            self._pivot_tasks = out
        return self._pivot_tasks

    def matrix_id(self, task: Task) -> str | None:
        """The matrix target id naming ``task`` (``catalog:id`` or a plain id), if the matrix holds it."""
        for t in self.prior.targets + list(self.prior.dropped):
            if t == f"{task.catalog}:{task.id}" or (t == task.id and ":" not in t):
                return t
        return None

    def source_index(self, pool: Catalog) -> np.ndarray:
        """Per pool task: its column in the matrix (by id, else by family), ``-1`` if the matrix lacks it."""
        col = {s: j for j, s in enumerate(self.prior.sources)}
        idx = np.asarray([col.get(t.id, col.get(t.family, -1)) for t in pool], dtype=np.int64)
        if not (idx >= 0).any():
            raise InstaError(f"none of the prior matrix's {len(self.prior.sources)} sources is a task or family of "
                             f"pool {pool.name!r} (matrix sources: {', '.join(self.prior.sources[:4])} ...)")
        return idx

    # ------------------------------------------------------------------ similarity signals
    def _encode(self, texts: Sequence[str]) -> np.ndarray:
        missing = [t for t in dict.fromkeys(texts) if t not in self._embedded]
        if missing:
            enc = get_encoder(self.encoder_name)
            for t, v in zip(missing, unit_rows(np.asarray(enc.encode(missing)))):
                self._embedded[t] = v
        return np.vstack([self._embedded[t] for t in texts]) if texts else np.zeros((0, 1))

    def _profile(self, task: Task, samples: Sequence[Example] | None) -> dict[str, Any]:
        """What the pivot similarity compares: instruction vectors, the output space vector, input vectors."""
        from ..taskformat import target_output_space

        space = target_output_space(task, samples or ())
        out: dict[str, Any] = {"instructions": self._encode(clean_instructions(task.instructions)),
                               "space": self._encode([space])[0] if space else None}
        if self.target_inputs:
            out["inputs"] = self._encode([instance_text(s) for s in samples]) if samples else None
        return out

    def _signals(self, a: dict[str, Any], others: Sequence[dict[str, Any]]) -> list[np.ndarray]:
        inst = np.asarray([float(np.mean(a["instructions"] @ b["instructions"].T)) for b in others])
        space = np.asarray([float(a["space"] @ b["space"]) if a["space"] is not None and b["space"] is not None
                            else np.nan for b in others])
        out = [inst, space]
        if self.target_inputs:
            out.append(np.asarray([float(np.mean(np.max(a["inputs"] @ b["inputs"].T, axis=1)))
                                   if a.get("inputs") is not None and b.get("inputs") is not None else np.nan
                                   for b in others]))
        return out

    def _pivot_samples(self, mt: str, task: Task) -> list[Example]:
        return unlabelled_samples(task, self.n_pivot_samples, set(self.prior.eval_ids.get(mt, [])))

    # ------------------------------------------------------------------ fitting
    def fit(self, pool: Catalog, prior: Any, tasks: dict[str, Task], profiles: dict[str, dict[str, Any]],
            src: np.ndarray) -> Any:
        """The weights fitted leave-one-target-out on ``prior`` (whose held-out column is already gone)."""
        from ..matrix.prior import Fold, fit_weights, pivot_similarity

        key = (tuple(prior.targets), tuple(pool.ids), self.target_inputs)
        if key in self._fits:
            return self._fits[key]
        pct = prior.percentiles()
        on_pool = np.where(src[None, :] >= 0, pct[:, np.maximum(src, 0)], np.nan)
        gold_all = np.where(src[None, :] >= 0, prior.transfer[:, np.maximum(src, 0)], np.nan)
        folds = []
        for i, mt in enumerate(prior.targets):
            rest = [j for j in range(len(prior.targets)) if j != i]
            task = tasks[mt]
            gone = set(leakage_guard(pool, task))
            allowed = np.asarray([t not in gone for t in pool.ids], bool)
            if allowed.sum() < 2:
                continue
            sim = pivot_similarity(self._signals(profiles[mt], [profiles[prior.targets[j]] for j in rest]))
            direct = self.insta._score(task, pool, [], allowed).score
            gold, seen = gold_all[i].copy(), set()
            for p in np.flatnonzero(allowed & (src >= 0)):  # a family's row counts once, not once per task of it
                if src[p] in seen:
                    gold[p] = np.nan
                seen.add(src[p])
            folds.append(Fold(mt, on_pool[rest], sim, np.asarray(direct, float), allowed, gold))
        fit = fit_weights(folds)
        self._fits[key] = fit
        return fit

    # ------------------------------------------------------------------ scoring
    # long: the three components combined in one place, so the weights read as they are applied
    def _score(self, target: Task, pool: Catalog, samples: list[Example], allowed: np.ndarray) -> Scores:
        from ..matrix.prior import combine, pivot_similarity, pivot_weights, prior_and_pivot

        own = self.matrix_id(target)
        prior = self.prior.without([own]) if own else self.prior
        if not prior.targets:
            raise InstaError("the prior matrix holds no target besides the selection target")
        src = self.source_index(pool)
        info: dict[str, Any] = {"prior_matrix": self.matrix_path, "metric": prior.metric,
                                "n_matrix_targets": len(prior.targets),
                                "n_pool_sources_in_matrix": int((src >= 0).sum()),
                                "n_matrix_sources_not_in_pool": len(set(prior.sources) - {prior.sources[j]
                                                                                          for j in src if j >= 0}),
                                "n_missing_cells": prior.n_missing}
        if prior.dropped:
            info["prior_matrix_dropped"] = dict(prior.dropped)
        weights, temperature = self.weights, self.temperature
        pct = prior.percentiles()
        on_pool = np.where(src[None, :] >= 0, pct[:, np.maximum(src, 0)], np.nan)
        if self.uses_similarity:
            tasks = {t: self.pivot_tasks(pool)[t] for t in prior.targets}
            profiles = {t: self._profile(tasks[t], self._pivot_samples(t, tasks[t]) if self.target_inputs else None)
                        for t in prior.targets}
            mine = self._profile(target, samples)
            sim = pivot_similarity(self._signals(mine, [profiles[t] for t in prior.targets]))
            direct_sc = self.insta._score(target, pool, samples, allowed)
            direct = np.asarray(direct_sc.score, float)
            if weights is None:
                fit = self.fit(pool, prior, tasks, profiles, src)
                weights, temperature = fit.weights, fit.temperature
                info["prior_transfer_fit"] = fit.to_dict()
                self.last_fit = fit.to_dict()
        else:
            sim, direct_sc, direct = np.zeros(len(prior.targets)), None, np.zeros(len(pool))
        info["weights"] = dict(zip(("prior", "pivot", "similarity"), weights))
        if weights[1] > 0:
            info["temperature"] = temperature
        omega = pivot_weights(sim, temperature or 1.0)
        prior_s, pivot_s = prior_and_pivot(on_pool, omega)
        score, parts = combine(weights, prior_s, pivot_s, direct, allowed)
        info["pivots"] = {t: round(float(w), 4) for t, w in sorted(zip(prior.targets, omega), key=lambda p: -p[1])[:5]}
        transfer_on_pool = np.where(src[None, :] >= 0, prior.transfer[:, np.maximum(src, 0)], np.nan)

        def why(i: int) -> dict[str, Any]:
            out: dict[str, Any] = {"contributions": {c: round(float(v), 4) for c, v in
                                                     zip(("prior", "pivot", "similarity"), parts[:, i])}}
            if src[i] < 0:
                out.update(driver="similarity", in_matrix=False)
            else:
                used = [c for c, w in enumerate(weights) if w > 0]  # the largest contribution among the weighted
                out["driver"] = ("prior", "pivot", "similarity")[max(used, key=lambda c: parts[c, i])]
                out["prior_percentile"] = round(float(prior_s[i]), 4)
                col = pct[:, src[i]]
                measured = np.isfinite(col)
                out["n_targets_measured"] = int(measured.sum())
                j = int(np.nanargmax(np.where(measured, omega * col, -np.inf)))
                if weights[1] > 0 and measured[j]:
                    out.update(pivot_target=prior.targets[j], pivot_weight=round(float(omega[j]), 4),
                               pivot_transfer=float(transfer_on_pool[j, i]),
                               pivot_rank=int(np.sum(prior.transfer[j] > prior.transfer[j, src[i]]) + 1),
                               pivot_n_sources=int(np.isfinite(prior.transfer[j]).sum()))
                b = int(np.nanargmax(np.where(measured, col, -np.inf)))
                out.update(best_target=prior.targets[b], best_transfer=float(transfer_on_pool[b, i]))
            if direct_sc is not None:
                out["similarity"] = round(float(direct[i]), 4)
                if direct_sc.why and out["driver"] == "similarity":
                    out.update({k: v for k, v in direct_sc.why(i).items() if k.startswith("best_")
                                and k not in out})
            return out

        return Scores(score, direct if direct_sc is not None else None,
                      "instruction similarity" if direct_sc is not None else None, why, info)


class PopularSourceMethod(PriorTransferMethod):
    """The popular-source baseline: sources ranked by their mean per-target percentile in the prior matrix
    alone (nothing about the target but its own column, left out); sources the matrix lacks tie at the
    candidates' mean."""

    name = "popular-source"
    consumes = ("prior_matrix",)
    fixed_weights = (1.0, 0.0, 0.0)

    def __init__(self, label: str | None = None, **options: Any):
        for key in ("weights", "temperature", "target_inputs"):
            if options.get(key) not in (None, False):
                raise InstaError(f"method 'popular-source' takes no {key} option (it is the prior alone)")
        super().__init__(label, **options)

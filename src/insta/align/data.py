"""Alignment data: the leakage-free split of a catalog and the training/dev pairs of INSTA-aligned (see
:mod:`insta.align` for the whole recipe); the configuration is :mod:`insta.align.config`, the task-aware batches
:mod:`insta.align.batches` (both re-exported here)."""
from __future__ import annotations

import math
import random
from dataclasses import dataclass
from typing import Any, Mapping, Sequence

import numpy as np

from .batches import TaskAwareBatchSampler
from .config import EVAL_POOLS, FORMAT_VERSION, METADATA_FILE, OBJECTIVES, UNITS, WORK_DIR, AlignConfig
from ..catalogs import evaluation_families
from ..catalogs.base import Catalog
from ..errors import InstaError
from ..util.helpers import text_rng

# ---------------------------------------------------------------- split


@dataclass
class AlignmentSplit:
    """Which units and instructions alignment may use, and which are kept out (and why)."""

    catalog: str
    unit: str
    excluded: dict[str, str]  # task id -> reason
    train: dict[str, list[str]]  # unit -> training instructions
    dev: dict[str, list[str]]
    heldout: dict[str, list[str]]
    unit_tasks: dict[str, list[str]]  # unit -> task ids
    n_outside_pool: int = 0  # catalog tasks left out because they are not in the chosen pool

    def seen_texts(self) -> set[str]:
        """Every instruction text that alignment saw (training or dev)."""
        return {t for d in (self.train, self.dev) for texts in d.values() for t in texts}

    def to_dict(self) -> dict[str, Any]:
        return {
            "catalog": self.catalog,
            "unit": self.unit,
            "n_units": len(self.train),
            "n_train_instructions": sum(map(len, self.train.values())),
            "n_dev_instructions": sum(map(len, self.dev.values())),
            "n_heldout_instructions": sum(map(len, self.heldout.values())),
            "n_outside_pool": self.n_outside_pool,
            "excluded_tasks": dict(sorted(self.excluded.items())),
            "train": self.train,
            "dev": {u: v for u, v in self.dev.items() if v},
            "heldout": {u: v for u, v in self.heldout.items() if v},
            "unit_tasks": self.unit_tasks,
        }

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "AlignmentSplit":
        return cls(
            catalog=d["catalog"], unit=d["unit"], excluded=dict(d.get("excluded_tasks", {})),
            train={k: list(v) for k, v in d["train"].items()}, dev={k: list(v) for k, v in d.get("dev", {}).items()},
            heldout={k: list(v) for k, v in d.get("heldout", {}).items()},
            unit_tasks={k: list(v) for k, v in d.get("unit_tasks", {}).items()},
            n_outside_pool=int(d.get("n_outside_pool", 0)),
        )


def unit_of(task, unit: str) -> str:
    return task.family if unit == "family" else task.id


def catalog_units(catalog: Catalog, unit: str = "family") -> dict[str, list[str]]:
    """Unit -> its distinct instruction texts (stripped, in catalog order)."""
    out: dict[str, dict[str, None]] = {}
    for task in catalog:
        bucket = out.setdefault(unit_of(task, unit), {})
        for text in task.instructions:
            if isinstance(text, str) and text.strip():
                bucket.setdefault(text.strip(), None)
    return {u: list(texts) for u, texts in out.items() if texts}


def default_exclusions(catalog: Catalog) -> dict[str, str]:
    """Task id -> reason, for the tasks that are evaluation targets (or their relatives) in this catalog."""
    reasons: dict[str, str] = {}
    families: dict[str, str] = {}
    for task in catalog:
        for pool in EVAL_POOLS:
            if pool in task.pools:
                reasons.setdefault(task.id, f"evaluation pool {pool}")
                families.setdefault(task.family, f"family of an evaluation target ({pool})")
    for family, reason in evaluation_families(catalog.name).items():  # BIG-bench: the parents of BBH targets
        families.setdefault(family, reason)
    for task in catalog:
        if task.id not in reasons and task.family in families:
            reasons[task.id] = families[task.family]
    return reasons


def _stochastic_round(x: float, rng: random.Random) -> int:
    base = math.floor(x)
    return base + (1 if rng.random() < x - base else 0)


def split_catalog(catalog: Catalog, config: AlignConfig) -> AlignmentSplit:
    """Exclude evaluation targets, then hold out a seeded share of each unit's instructions (see module doc)."""
    if len(catalog) == 0:
        raise InstaError(f"catalog {catalog.name!r} has no tasks: nothing to align on")
    source = catalog.subset(catalog.pool(config.pool)) if config.pool else catalog
    excluded: dict[str, str] = {}
    if config.default_exclusions:  # recorded even when outside the pool: the metadata names every target
        excluded.update(default_exclusions(catalog))
    for tid in config.exclude_tasks:
        excluded.setdefault(catalog.resolve(tid), "excluded by the caller")
    fams = set(config.exclude_families)
    for task in catalog:
        if task.family in fams:
            excluded.setdefault(task.id, "family excluded by the caller")
    kept = [t for t in source if t.id not in excluded]
    units = catalog_units(Catalog(catalog.name, kept), config.unit)
    if not units:
        raise InstaError(
            f"catalog {catalog.name!r}{' pool ' + config.pool if config.pool else ''} has no instructions left "
            f"after excluding {len(excluded)} evaluation task(s)"
        )
    unit_tasks: dict[str, list[str]] = {}
    for task in kept:
        unit_tasks.setdefault(unit_of(task, config.unit), []).append(task.id)
    train, dev, heldout = {}, {}, {}
    for u, texts in units.items():
        rng = text_rng(config.seed, "split", u)
        order = list(texts)
        rng.shuffle(order)
        n = len(order)
        n_test = min(_stochastic_round(n * config.heldout_fraction, rng), n - 1)
        n_dev = min(_stochastic_round(n * config.dev_fraction, rng), n - 1 - n_test)
        held, dv, tr = order[:n_test], order[n_test:n_test + n_dev], order[n_test + n_dev:]
        keep_order = {t: i for i, t in enumerate(texts)}
        train[u] = sorted(tr, key=keep_order.get)
        dev[u] = sorted(dv, key=keep_order.get)
        heldout[u] = sorted(held, key=keep_order.get)
    if not any(len(v) >= 2 for v in train.values()):
        multi = sum(1 for v in units.values() if len(v) >= 2)
        if multi == 0:
            raise InstaError(
                f"no task has two instructions in catalog {catalog.name!r}: alignment needs same-task instruction "
                "pairs as positives"
            )
        raise InstaError(
            f"no task keeps two training instructions after holding out {config.heldout_fraction:.0%} + "
            f"{config.dev_fraction:.0%} of them ({multi} task(s) have two or more): lower --heldout-fraction / "
            "--dev-fraction"
        )
    if len(train) < 2:
        raise InstaError(f"alignment needs at least two tasks (negatives come from other tasks); got {len(train)}")
    return AlignmentSplit(catalog.name, config.unit, excluded, train, dev, heldout, unit_tasks,
                          n_outside_pool=len(catalog) - len(source))


# ---------------------------------------------------------------- pairs


@dataclass
class Pair:
    """Two instructions and their target similarity (1 = same unit, 0 = different units)."""

    a: str
    b: str
    label: float
    unit_a: str
    unit_b: str

    def to_list(self) -> list:
        return [self.a, self.b, self.label, self.unit_a, self.unit_b]

    @classmethod
    def from_list(cls, row: Sequence) -> "Pair":
        return cls(row[0], row[1], float(row[2]), row[3], row[4])


@dataclass
class PairSet:
    positives: list[Pair]
    negatives: list[Pair]
    stats: dict[str, Any]

    @property
    def pairs(self) -> list[Pair]:
        return self.positives + self.negatives


def text_units(groups: Mapping[str, Sequence[str]]) -> dict[str, set[str]]:
    """Instruction text -> the units it belongs to (a text may be shared by several)."""
    out: dict[str, set[str]] = {}
    for u, texts in groups.items():
        for t in texts:
            out.setdefault(t, set()).add(u)
    return out


def _embed(encoder, texts: list[str]) -> np.ndarray:
    vecs = np.asarray(encoder.encode(texts), dtype=np.float32)
    norms = np.linalg.norm(vecs, axis=1, keepdims=True)
    return vecs / np.maximum(norms, 1e-12)


def _progress(iterable, total: int | None, desc: str, enabled: bool):
    if not enabled:
        return iterable
    from ..util.helpers import progress_bar

    return progress_bar(iterable, total=total, desc=desc, mininterval=1.0, dynamic_ncols=True)


# long: the authors' pair recipe (positives, then thresholded negatives) in one place
def build_pairs(
    groups: Mapping[str, Sequence[str]],
    encoder,
    *,
    positive_fraction: float = 0.4,
    negative_threshold: float = 0.3,
    max_negative_reuse: int = 4,
    max_positive_pairs_per_unit: int | None = None,
    seed: int = 42,
    progress: bool = False,
) -> PairSet:
    """The authors' training pairs from unit -> instructions (METHOD.md §2).

    Positives: every pair of two different instructions of one unit (at most ``max_positive_pairs_per_unit``
    per unit, a seeded sample), then a seeded ``positive_fraction`` of them all. Negatives: for each
    instruction (in seeded order) one instruction of another unit, drawn at random among those whose cosine
    under ``encoder`` is below ``negative_threshold`` and that were used fewer than ``max_negative_reuse``
    times as a negative; an instruction with no such candidate gets none (counted in ``stats``). A text that
    belongs to the anchor's unit is never its negative, even if it also belongs to another unit.
    """
    rng = text_rng(seed, "pairs")
    units = {u: list(dict.fromkeys(t for t in texts if t.strip())) for u, texts in groups.items()}
    owners = text_units(units)
    positives: list[Pair] = []
    n_all, n_capped = 0, 0
    for u, texts in units.items():
        combos = [(a, b) for i, a in enumerate(texts) for b in texts[i + 1:]]
        n_all += len(combos)
        if max_positive_pairs_per_unit is not None and len(combos) > max_positive_pairs_per_unit:
            combos = text_rng(seed, "cap", u).sample(combos, max_positive_pairs_per_unit)
            n_capped += 1
        positives.extend(Pair(a, b, 1.0, u, u) for a, b in combos)
    n_before = len(positives)
    n_keep = int(len(positives) * positive_fraction) if positive_fraction < 1 else len(positives)
    if positive_fraction < 1:
        n_keep = max(n_keep, 1) if positives else 0
        positives = rng.sample(positives, n_keep)
    # orient each positive randomly (MNRL treats a pair as anchor -> positive)
    positives = [p if rng.random() < 0.5 else Pair(p.b, p.a, 1.0, p.unit_a, p.unit_b) for p in positives]

    anchors = [(u, t) for u, texts in units.items() for t in texts]
    all_texts = list(owners)
    negatives, missing, reuse = [], 0, np.zeros(len(all_texts), dtype=np.int64)
    if anchors and max_negative_reuse > 0:
        emb = _embed(encoder, all_texts)
        index = {t: i for i, t in enumerate(all_texts)}
        owner_sets = [owners[t] for t in all_texts]
        order = list(range(len(anchors)))
        rng.shuffle(order)
        for k in _progress(order, len(order), "negative pairs", progress):
            u, text = anchors[k]
            i = index[text]
            sims = emb @ emb[i]
            ok = (sims < negative_threshold) & (reuse < max_negative_reuse)
            cands = [j for j in np.flatnonzero(ok) if u not in owner_sets[j] and j != i]
            if not cands:
                missing += 1
                continue
            j = cands[rng.randrange(len(cands))]
            reuse[j] += 1
            other = sorted(owner_sets[j])[0]
            negatives.append(Pair(text, all_texts[j], 0.0, u, other))
    stats = {
        "n_units": len(units),
        "n_instructions": len(anchors),
        "n_positive_candidates": n_all,
        "n_positive_after_cap": n_before,
        "n_units_capped": n_capped,
        "n_positive": len(positives),
        "n_negative": len(negatives),
        "n_without_negative": missing,
        "max_negative_reuse_seen": int(reuse.max()) if len(reuse) else 0,
    }
    return PairSet(positives, negatives, stats)


def build_dev_pairs(
    split: AlignmentSplit, encoder, *, negative_threshold: float, seed: int, progress: bool = False
) -> PairSet:
    """Dev pairs: each dev instruction with each training instruction of its unit (1) and one training
    instruction of another unit under the threshold (0)."""
    rng = text_rng(seed, "dev")
    owners = text_units(split.train)
    for u, texts in split.dev.items():
        for t in texts:
            owners.setdefault(t, set()).add(u)
    positives, negatives = [], []
    dev = [(u, t) for u, texts in split.dev.items() for t in texts]
    if not dev:
        return PairSet([], [], {"n_positive": 0, "n_negative": 0})
    train_texts = list(dict.fromkeys(t for texts in split.train.values() for t in texts))
    emb_train = _embed(encoder, train_texts)
    emb_dev = _embed(encoder, [t for _, t in dev])
    missing = 0
    for k, (u, text) in enumerate(_progress(dev, len(dev), "dev pairs", progress)):
        positives.extend(Pair(text, t, 1.0, u, u) for t in split.train.get(u, []) if t != text)
        sims = emb_train @ emb_dev[k]
        cands = [j for j in np.flatnonzero(sims < negative_threshold) if u not in owners[train_texts[j]]]
        if not cands:
            missing += 1
            continue
        j = cands[rng.randrange(len(cands))]
        negatives.append(Pair(text, train_texts[j], 0.0, u, sorted(owners[train_texts[j]])[0]))
    return PairSet(positives, negatives, {"n_positive": len(positives), "n_negative": len(negatives),
                                          "n_without_negative": missing})


__all__ = [
    "EVAL_POOLS", "FORMAT_VERSION", "METADATA_FILE", "OBJECTIVES", "UNITS", "WORK_DIR", "AlignConfig", "AlignmentSplit",
    "Pair", "PairSet", "TaskAwareBatchSampler", "build_dev_pairs", "build_pairs", "catalog_units", "default_exclusions",
    "split_catalog", "text_units", "unit_of",
]

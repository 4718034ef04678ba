"""Building a mixture: :class:`MixtureConfig` and :func:`build_mixture` (seeded per-task samples, proportional or
equal mixing, caps, a total budget, leakage filtering; see :mod:`insta.mixture`)."""
from __future__ import annotations

import random
import time
from dataclasses import asdict, dataclass
from typing import Any, Iterable, Sequence

from ..errors import InstaError
from ..util.helpers import progress_bar, stable_rng, text_rng, timestamp
from ..util.options import option
from ..records import Example, Task
from .leakage import LeakFilter
from .records import Mixture, make_record


MIXINGS = ("proportional", "equal")


@dataclass
class MixtureConfig:
    """Every knob of the mixture builder."""

    per_task: int = option(100, "instances per task, at most", minimum=1)
    caps: dict[str, int] = option({}, "per-task overrides of per_task (--cap TASK=N, repeatable)")
    mixing: str = option("proportional", "proportional: min(size, cap) per task; equal: exactly cap per task, small "
                         "tasks repeated", choices=MIXINGS)
    total: int | None = option(None, "total number of records (scaled over tasks)", minimum=1)
    seed: int = option(42, "random seed of the samples and the shuffle")
    shuffle: bool = option(True, "shuffle the records (seeded); --no-shuffle keeps them grouped by task")
    exclude_target: str | None = option(None, "target task: dropped with its family, and its instances deduplicated "
                                        "against (default: the selection's target)", metavar="TASK")
    dedup: bool = option(True, "deduplicate against the target's instances (needs a target)")
    dedup_ngram: int = option(8, "word n-gram length for leak detection")
    max_scan: int | None = option(None, "read at most this many instances per task", minimum=1)
    allow_empty: bool = option(False, "skip selected tasks without instances instead of failing")

    def validate(self) -> None:
        if self.mixing not in MIXINGS:
            raise InstaError(f"unknown mixing {self.mixing!r} (choose from {', '.join(MIXINGS)})")
        if self.per_task < 1:
            raise InstaError(f"per_task must be at least 1 (got {self.per_task})")
        for task, cap in self.caps.items():
            if not isinstance(cap, int) or cap < 0:
                raise InstaError(f"cap for task {task!r} must be a non-negative integer (got {cap!r})")
        if self.total is not None and self.total < 1:
            raise InstaError(f"total must be at least 1 (got {self.total})")
        if self.dedup_ngram < 3:
            raise InstaError(f"dedup_ngram must be at least 3 (got {self.dedup_ngram})")
        if self.max_scan is not None and self.max_scan < 1:
            raise InstaError(f"max_scan must be at least 1 (got {self.max_scan})")


def _task_rng(seed: int, task_id: str, salt: str = "") -> random.Random:
    return text_rng("insta-mixture", seed, task_id, salt)


def _reservoir(examples: Iterable[Example], k: int, rng: random.Random, keep, max_scan: int | None):
    """A uniform sample of up to k examples passing ``keep``; returns (sample in stream order, n kept, n dropped,
    n scanned)."""
    sample: list[tuple[int, Example]] = []
    seen = dropped = scanned = 0
    for ex in examples:
        if max_scan is not None and scanned >= max_scan:
            break
        scanned += 1
        if not keep(ex):
            dropped += 1
            continue
        if len(sample) < k:
            sample.append((seen, ex))
        else:
            j = rng.randint(0, seen)
            if j < k:
                sample[j] = (seen, ex)
        seen += 1
    sample.sort(key=lambda t: t[0])
    return [ex for _, ex in sample], seen, dropped, scanned


def _largest_remainder(weights: list[int], total: int) -> list[int]:
    s = sum(weights)
    if s <= total:
        return list(weights)
    raw = [w * total / s for w in weights]
    out = [int(x) for x in raw]
    order = sorted(range(len(raw)), key=lambda i: (out[i] - raw[i], i))
    for i in order[: total - sum(out)]:
        out[i] += 1
    return out


def allocate_budget(task_ids: Sequence[str], n_total: int, seed: int = 0) -> dict[str, int]:
    """How many training instances each selected task gets so that the mixture holds exactly ``n_total``.

    With at most ``n_total`` tasks: an equal share, the remainder one each to the best-ranked tasks (the largest
    remainder rule of :func:`_largest_remainder` on equal weights). With more tasks than instances (``all`` over a
    large pool): ``n_total`` tasks drawn with the seed, one instance each.
    """
    ids = list(task_ids)
    if not ids:
        raise InstaError("no task to allocate the training budget to")
    if n_total < 1:
        raise InstaError(f"the training budget must be at least 1 instance (got {n_total})")
    if len(ids) <= n_total:
        return dict(zip(ids, _largest_remainder([n_total] * len(ids), n_total)))
    chosen = set(stable_rng("budget", seed).sample(sorted(ids), n_total))
    return {t: 1 for t in ids if t in chosen}


def build_mixture(
    tasks: Sequence[Task],
    config: MixtureConfig | None = None,
    target_examples: Sequence[Example] | None = None,
    target_task: Task | None = None,
    catalog_name: str = "",
    progress: bool = False,
) -> Mixture:
    """Build a mixture from source tasks.

    ``target_examples`` (or ``target_task``'s examples) are the target's evaluation instances to deduplicate
    against; ``target_task`` and every task of its family are also removed from ``tasks``.
    """
    config = config or MixtureConfig()
    config.validate()
    t0 = time.perf_counter()
    _check_tasks(tasks, config)
    excluded: list[str] = []
    if target_task is not None:
        kept = [t for t in tasks if t.id != target_task.id and t.family != target_task.family]
        excluded = [t.id for t in tasks if t not in kept]
        tasks = kept
        if not tasks:
            raise InstaError(f"every selected task is the target {target_task.id!r} or of its family")
        if target_examples is None:
            target_examples = target_task.examples()
    leak = LeakFilter(target_examples, n=config.dedup_ngram) if config.dedup and target_examples else None
    samples, per_task_info, empty = _sample_tasks(tasks, config, leak, progress)
    if empty and not config.allow_empty:
        raise InstaError(f"selected task(s) without instances: {', '.join(empty)} (check the data directory "
                         "or pass allow_empty / --allow-empty to skip them)")
    live = [t for t in tasks if samples[t.id]]
    if config.mixing == "proportional":  # how many of each task
        counts = [len(samples[t.id]) for t in live]
        if config.total is not None:
            counts = _largest_remainder(counts, config.total)
    else:
        counts = [per_task_info[t.id]["cap"] for t in live]
    records: list[dict[str, Any]] = []
    for task, n in zip(live, counts):
        records.extend(_records_of(task, samples[task.id], n, config.seed, catalog_name or task.catalog))
        per_task_info[task.id]["taken"] = n
    if config.shuffle:
        text_rng("insta-mixture-shuffle", config.seed).shuffle(records)
    manifest = {
        "n_records": len(records),
        "tasks": [t.id for t in live],
        "per_task": per_task_info,
        "skipped_empty": empty,
        "excluded_target_family": excluded,
        "target": target_task.id if target_task is not None else config.exclude_target,
        "n_target_examples_checked": len(target_examples) if target_examples else 0,
        "config": asdict(config),
        "catalog": catalog_name,
        "seconds": round(time.perf_counter() - t0, 3),
        "created": timestamp(),
    }
    return Mixture(records, manifest)


def _check_tasks(tasks: Sequence[Task], config: MixtureConfig) -> None:
    """Clear errors for no task, a task listed twice, and a cap for a task not in the mixture."""
    if not tasks:
        raise InstaError("no source tasks for the mixture")
    ids = [t.id for t in tasks]
    dup = sorted({i for i in ids if ids.count(i) > 1})
    if dup:
        raise InstaError(f"task(s) listed twice in the mixture: {', '.join(dup)}")
    stray = sorted(set(config.caps) - set(ids))
    if stray:
        raise InstaError(f"cap for task(s) not in the mixture: {', '.join(stray)} (its tasks: {', '.join(ids[:10])}"
                         f"{' ...' if len(ids) > 10 else ''})")


def _sample_tasks(tasks: Sequence[Task], config: MixtureConfig, leak: LeakFilter | None, progress: bool
                  ) -> tuple[dict[str, list[Example]], dict[str, dict[str, Any]], list[str]]:
    """Each task's seeded sample of up to its cap (leaking instances dropped), what was scanned, and the tasks
    left without instances."""
    per_task_info: dict[str, dict[str, Any]] = {}
    samples: dict[str, list[Example]] = {}
    iterator: Iterable[Task] = progress_bar(tasks, desc="sampling tasks", unit="task") if progress else tasks
    empty = []
    for task in iterator:
        cap = config.caps.get(task.id, config.per_task)
        if config.mixing == "equal" and config.total is not None:
            cap = min(cap, max(1, config.total // len(tasks)))
        keep = (lambda ex: not leak.leaks(ex.input)) if leak is not None else (lambda ex: True)
        sample, n_avail, n_leak, n_scanned = _reservoir(
            task.iter_examples(), cap, _task_rng(config.seed, task.id), keep, config.max_scan
        )
        sample = [ex for ex in sample if ex.target]
        if not sample:
            empty.append(task.id)
        samples[task.id] = sample
        per_task_info[task.id] = {
            "available": n_avail, "leaked_dropped": n_leak, "scanned": n_scanned,
            "scan_truncated": config.max_scan is not None and n_scanned >= config.max_scan, "cap": cap,
        }
    return samples, per_task_info, empty


def _records_of(task: Task, pool: list[Example], n: int, seed: int, catalog: str) -> list[dict[str, Any]]:
    """``n`` records of a task from its sample: a seeded subsample, or (equal mixing) the sample repeated."""
    chosen: list[tuple[Example, int]]
    if n <= len(pool):
        rng = _task_rng(seed, task.id, "subsample")
        idx = sorted(rng.sample(range(len(pool)), n)) if n < len(pool) else list(range(len(pool)))
        chosen = [(pool[i], 0) for i in idx]
    else:  # equal mixing: repeat a small task
        chosen = [(pool[i % len(pool)], i // len(pool)) for i in range(n)]
    return [make_record(task, ex, catalog, repeat=rep) for ex, rep in chosen]

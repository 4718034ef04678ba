"""The config sections every run of models x targets shares (the comparison grid's and the transfer matrix's),
read into typed dataclasses and checked before any work starts: :class:`RunConfig` (the top-level fields both
configs have), ``pool`` (:class:`PoolConfig`), ``train`` (:class:`insta.train.TrainConfig`) and ``eval``
(:class:`RunEvalConfig`, an :class:`insta.evaluate.EvalConfig` plus the run's ``n`` and ``seed``).

Cache keys hash the options a config sets (:func:`explicit_options`): what the file writes, in its order, and
any field changed since; defaults added to a dataclass later leave every key unchanged.
"""
from __future__ import annotations

from dataclasses import dataclass, field, fields
from typing import Any, Iterable

from ..errors import InstaError
from ..eval_config import EvalConfig
from ..util.options import check_keys, checked, checked_mapping, option, read_section
from ..train import TrainConfig
from .executors import EXECUTORS

BACKENDS = ("transformers", "dry-run")
TARGET_CATALOGS = ("bigbench", "bbh", "p3", "niv2")
#: Keys of the ``eval`` section that are the run's (which examples), not the evaluation's.
EVAL_OWN_KEYS = {"n", "seed"}


@dataclass
class PoolConfig:
    """Which source tasks make the pool, and which are removed (see :func:`insta.engine.pool.build_pool`)."""

    catalog: str = "bigbench"
    unit: str = "family"  # family | task
    exclude_t0_eval: bool = True  # drop the 14 T0 BIG-bench evaluation tasks (and their subtasks)
    exclude_bbh_parents: str = "all"  # all | targets | none: BIG-bench parents of BBH tasks
    exclude: list[str] = field(default_factory=list)  # more task ids or families to drop
    include: list[str] | None = None  # keep only these (ids or families), before the other rules
    pools: list[str] | None = None  # keep only tasks of these catalog pools (P3: t0_train; NIV2: train)
    language: str | None = None  # keep only tasks in this language (NIV2: en)
    split: str | None = None  # the catalog split the pool's instances come from (P3: train; default: the reader's)
    stem_match: bool = True  # drop units whose family name extends a target's family name (or vice versa)
    near_duplicate_cosine: float | None = 0.95  # drop units with an instruction this close to a target's
    near_duplicate_encoder: str | None = None  # default: the run's encoder
    max_input_chars: int = 1500  # median rendered input length
    max_target_words_mc: int = 30  # median gold option length (multiple choice)
    max_target_words_gen: int = 10  # median target length (generation)
    min_examples: int = 10


@dataclass
class RunEvalConfig(EvalConfig):
    """The evaluation options of every cell (:class:`insta.evaluate.EvalConfig`) plus the run's own: ``n``
    evaluation examples per target, drawn in a stable order seeded by ``seed``. No progress bars by default."""

    progress: bool = False
    n: int = 100
    seed: int = 0


@dataclass
class RunSettings:
    """Where a run writes and how it runs (top-level keys of both configs; the commands' flags are made from
    these fields, see :mod:`insta.commands._run`)."""

    out: str = option("", "output folder (default: the config's 'out', else experiments/<name>)")
    data_dir: str | None = option(None, "upstream data folder (default: the config's data_dir, $INSTA_DATA_DIR)")
    executor: str = option("sequential", "where the models are trained and evaluated (default: the config's, else "
                           "sequential); ray joins $RAY_ADDRESS or starts a local instance", choices=EXECUTORS)
    keep_models: bool = option(False, "keep trained model folders (default: the config's, else deleted once "
                               "evaluated)")


@dataclass(kw_only=True)
class RunConfig(RunSettings):
    """The top-level fields of every run config (:class:`insta.experiment.ExperimentConfig`,
    :class:`insta.transfer.TransferConfig`): targets, the pool they are kept out of, the base model, the
    backend, where it runs."""

    name: str
    targets: list[str]
    path: str = ""
    seed: int = 42
    encoder: str | None = None  # near-duplicate filter of the pool, default of methods (None: all-MiniLM-L6-v2)
    pool: PoolConfig = field(default_factory=PoolConfig)
    model: str = "smollm2"
    train: TrainConfig = field(default_factory=TrainConfig)
    eval: RunEvalConfig = field(default_factory=RunEvalConfig)
    backend: str = "transformers"
    raw: dict[str, Any] = field(default_factory=dict)
    #: the keys each section sets in the file (what cache keys hash, with any field changed since)
    written: dict[str, list[str]] = field(default_factory=dict, repr=False)

    def key_options(self, section: str, exclude: Iterable[str] = ()) -> dict[str, Any]:
        """The options of a section that models and cells are keyed by (:func:`explicit_options`)."""
        return explicit_options(getattr(self, section), self.written.get(section, ()), exclude)


def explicit_options(obj: Any, written: Iterable[str], exclude: Iterable[str] = ()) -> dict[str, Any]:
    """The fields of the dataclass ``obj`` set on purpose: those in ``written`` (in that order), then those not at
    their default."""
    written, exclude = [w for w in written if w not in set(exclude)], set(exclude)
    out = {name: getattr(obj, name) for name in written}
    for f in fields(obj):
        if f.name in exclude or f.name in out:
            continue
        value = getattr(obj, f.name)
        default = f.default_factory() if callable(f.default_factory) else f.default
        if value != default:
            out[f.name] = value
    return out


def pool_config(raw: Any, prefix: str = "", where: str | None = None) -> PoolConfig:
    """The ``pool`` section, checked."""
    pool = read_section(PoolConfig, raw, "pool", where=where, prefix=prefix)
    if pool.unit not in ("family", "task"):
        raise InstaError(f"{prefix}pool.unit must be 'family' or 'task' (got {pool.unit!r})")
    if pool.exclude_bbh_parents not in ("all", "targets", "none"):
        raise InstaError(f"{prefix}pool.exclude_bbh_parents must be all, targets or none")
    return pool


def train_config(raw: Any, reserved: Iterable[str], prefix: str = "", where: str | None = None) -> TrainConfig:
    """The ``train`` section as a :class:`~insta.train.TrainConfig`, checked; ``reserved``: the fields the run
    sets itself."""
    return read_section(TrainConfig, raw, "train", exclude=reserved, where=where, prefix=prefix)


def eval_config(raw: Any, allowed: Iterable[str] | None = None, prefix: str = "", where: str | None = None,
                cls: type[RunEvalConfig] = RunEvalConfig) -> RunEvalConfig:
    """The ``eval`` section as a :class:`RunEvalConfig` (or the subclass ``cls``), checked; ``allowed`` narrows
    the keys it may set (default: every evaluation option but ``limit`` / ``limit_per_template``: ``n`` is the
    run's limit)."""
    names = {f.name for f in fields(cls)}
    keep = set(allowed) if allowed is not None else names - {"limit", "limit_per_template"}
    evalc = read_section(cls, raw, "eval", exclude=names - keep, where=where, prefix=prefix)
    if evalc.n < 1:
        raise InstaError(f"{prefix}eval.n must be a positive integer (got {evalc.n!r})")
    return evalc


def check_targets(raw: dict[str, Any], prefix: str = "", what: str = "the config") -> list[str]:
    """The ``targets`` list: non-empty task ids, none twice."""
    targets = raw.get("targets")
    if not isinstance(targets, list) or not targets or not all(isinstance(t, str) and t for t in targets):
        raise InstaError(f"{prefix}{what} needs a non-empty 'targets' list of task ids (e.g. bbh:snarks)")
    if len(set(targets)) != len(targets):
        raise InstaError(f"{prefix}a target is listed twice")
    return list(targets)


def check_runner(raw: dict[str, Any], prefix: str = "") -> None:
    """``backend`` and ``executor``: known names."""
    if raw.get("backend", "transformers") not in BACKENDS:
        raise InstaError(f"{prefix}unknown backend {raw.get('backend')!r} (choose from {', '.join(BACKENDS)})")
    if raw.get("executor", "sequential") not in EXECUTORS:
        raise InstaError(f"{prefix}unknown executor {raw.get('executor')!r} (choose from {', '.join(EXECUTORS)})")


def run_fields(raw: dict[str, Any], path: str, sections: dict[str, Any], prefix: str = "",
               default_name: str = "run") -> dict[str, Any]:
    """The :class:`RunConfig` fields of a checked config mapping (``sections``: its typed sections)."""
    from pathlib import Path

    name = checked(raw.get("name") or (Path(path).stem if path else default_name), str, "name", prefix=prefix)
    out = checked(raw.get("out") or "", str, "out", prefix=prefix)
    return {
        "name": str(name), "targets": list(raw["targets"]), "path": str(path),
        "data_dir": checked(raw.get("data_dir"), str | None, "data_dir", prefix=prefix),
        "out": out or str(Path("experiments") / str(name)),
        "seed": checked(raw.get("seed", 42), int, "seed", prefix=prefix),
        "encoder": checked(raw.get("encoder"), str | None, "encoder", prefix=prefix),
        "model": checked(raw.get("model", "smollm2"), str, "model", prefix=prefix),
        "keep_models": checked(raw.get("keep_models", False), bool, "keep_models", prefix=prefix),
        "backend": raw.get("backend", "transformers"), "executor": raw.get("executor", "sequential"),
        "raw": raw, "written": {sec: list(checked_mapping(raw.get(sec), sec, prefix)) for sec in sections},
        **sections,
    }


__all__ = ["BACKENDS", "EVAL_OWN_KEYS", "PoolConfig", "RunConfig", "RunEvalConfig", "RunSettings", "TARGET_CATALOGS",
           "check_keys", "check_runner", "check_targets", "eval_config", "explicit_options", "pool_config",
           "run_fields", "train_config"]

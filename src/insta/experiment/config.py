"""Experiment configuration: the YAML schema of ``insta experiment``, read into typed sections and checked before
any work starts (unknown keys, wrong types and bad values are one error line at load time).

``ExperimentConfig`` composes the stage configs: ``pool`` (:class:`PoolConfig`), ``mixture``
(:class:`MixtureSettings`), ``train`` (:class:`insta.train.TrainConfig`), ``eval`` (:class:`GridEvalConfig`, an
:class:`insta.evaluate.EvalConfig` plus the grid's ``n`` and ``seed``), ``report`` (:class:`ReportSettings`) and
``p3_table`` (:class:`P3TableSettings`). Cache keys hash the options a config sets
(:meth:`ExperimentConfig.key_options`).
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, Iterable, Sequence

from ..align_data import AlignConfig
from ..errors import InstaError
from ..evaluate import EvalConfig
from ..options import check_keys, checked_get, checked_mapping, read_section
from ..train import TrainConfig
from .methodspec import MethodSpec, align_config, method_specs

CACHE_VERSION = 1
TARGET_CATALOGS = ("bigbench", "bbh", "p3", "niv2")
BACKENDS = ("transformers", "dry-run")
#: Training options the experiment sets itself (one output dir per model; no resume across configs).
TRAIN_RESERVED = {"model", "output_dir", "overwrite", "resume"}
#: Keys of the ``eval`` section that are the grid's, not the evaluation's.
EVAL_OWN_KEYS = {"n", "seed"}

# ---------------------------------------------------------------- typed sections


@dataclass
class PoolConfig:
    """Which source tasks make the pool, and which are removed (see :func:`insta.experiment.pool.build_pool`)."""

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
    near_duplicate_encoder: str | None = None  # default: the experiment's encoder
    max_input_chars: int = 1500  # median rendered input length
    max_target_words_mc: int = 30  # median gold option length (multiple choice)
    max_target_words_gen: int = 10  # median target length (generation)
    min_examples: int = 10


@dataclass
class MixtureSettings:
    """The training budget of every model of the grid and how its mixture is drawn (:mod:`insta.mixture`)."""

    n_total: int = 100  # training instances per model, the same for every method
    dedup: bool = True  # drop training instances that near-duplicate an evaluation example
    dedup_ngram: int = field(default=8, metadata={"minimum": 3})
    max_scan: int | None = field(default=None, metadata={"minimum": 1})
    seed: int | None = None  # None: the experiment's seed


@dataclass
class GridEvalConfig(EvalConfig):
    """The evaluation options of every cell (:class:`insta.evaluate.EvalConfig`) plus the grid's own: ``n``
    evaluation examples per target, drawn in a stable order seeded by ``seed``. No progress bars by default."""

    progress: bool = False
    n: int = 100
    seed: int = 0


@dataclass
class ReportSettings:
    """How the report summarises the cells (read by :mod:`insta.report` from ``results.json``'s config)."""

    primary: str | None = None
    normalisation: str = "char"  # char (lm-evaluation-harness's acc_norm) | token
    bootstrap: int = field(default=2000, metadata={"minimum": 1})
    confidence: float = 0.95
    interval: str = "percentile"
    focus: list[str] | None = None
    baselines: list[str] | None = None
    seed: int = 0


@dataclass
class P3TableSettings:
    """The report's P3 selection table (no training): top-``k`` of ``t0_train`` for every T0 held-out target."""

    enabled: bool = False
    k: int = field(default=5, metadata={"minimum": 1})
    aligned_encoder: str | None = None
    encoder: str | None = None
    align: AlignConfig | None = None  # how to train ``aligned_encoder`` when it is missing


@dataclass
class ExperimentConfig:
    """Everything one comparison grid depends on (see ``configs/*.yaml``)."""

    name: str
    targets: list[str]
    methods: list[MethodSpec]
    path: str = ""
    data_dir: str | None = None
    out: str = ""
    seed: int = 42
    k: int = 5
    include_base: bool = True
    encoder: str | None = None  # default encoder of insta-mean / insta-topk-vote / roe (None: all-MiniLM-L6-v2)
    target_samples: int = 32  # unlabelled target instances for roe / dsir
    library_size: int = 100  # instances per source task for roe / dsir
    pool: PoolConfig = field(default_factory=PoolConfig)
    mixture: MixtureSettings = field(default_factory=MixtureSettings)
    model: str = "smollm2"
    train: TrainConfig = field(default_factory=TrainConfig)
    eval: GridEvalConfig = field(default_factory=GridEvalConfig)
    report: ReportSettings = field(default_factory=ReportSettings)
    p3_table: P3TableSettings = field(default_factory=P3TableSettings)
    keep_models: bool = False
    backend: str = "transformers"
    executor: str = "sequential"  # sequential | ray (insta.executors)
    raw: dict[str, Any] = field(default_factory=dict)
    #: the keys each section sets in the file (what cache keys hash, with any field changed since)
    written: dict[str, list[str]] = field(default_factory=dict, repr=False)

    @property
    def n_eval(self) -> int:
        return self.eval.n

    @property
    def eval_seed(self) -> int:
        return self.eval.seed

    @property
    def n_total(self) -> int:
        return self.mixture.n_total

    def key_options(self, section: str) -> dict[str, Any]:
        """The options of ``train``, ``mixture`` or ``eval`` that models and cells are keyed by: every key the
        file sets, and any other field that differs from its default (the experiment's own ``train`` fields and
        ``mixture.n_total``, keyed separately, left out)."""
        exclude = {"train": TRAIN_RESERVED, "mixture": {"n_total"}}.get(section, set())
        return explicit_options(getattr(self, section), self.written.get(section, ()), exclude)


def explicit_options(obj: Any, written: Iterable[str], exclude: Iterable[str] = ()) -> dict[str, Any]:
    """The fields of the dataclass ``obj`` set on purpose: those in ``written`` and those not at their default."""
    written, exclude = set(written), set(exclude)
    out = {}
    for f in fields(obj):
        if f.name in exclude:
            continue
        value = getattr(obj, f.name)
        default = f.default_factory() if callable(f.default_factory) else f.default
        if f.name in written or value != default:
            out[f.name] = value
    return out


# ---------------------------------------------------------------- reading


TOP_KEYS = {
    "name", "description", "data_dir", "out", "seed", "targets", "k", "methods", "include_base", "encoder",
    "target_samples", "library_size", "pool", "mixture", "model", "train", "eval", "report", "p3_table",
    "keep_models", "backend", "executor",
}
SECTIONS = ("pool", "mixture", "train", "eval", "report", "p3_table")


def _fail(msg: str) -> InstaError:
    return InstaError(msg)


def _where(section: str) -> str:
    return f"section {section!r} of the experiment config"


def pool_config(raw: Any, prefix: str = "", where: str | None = None) -> PoolConfig:
    """The ``pool`` section, checked (also the transfer matrix's)."""
    pool = read_section(PoolConfig, raw, "pool", where=where, prefix=prefix)
    if pool.unit not in ("family", "task"):
        raise InstaError(f"{prefix}pool.unit must be 'family' or 'task' (got {pool.unit!r})")
    if pool.exclude_bbh_parents not in ("all", "targets", "none"):
        raise InstaError(f"{prefix}pool.exclude_bbh_parents must be all, targets or none")
    return pool


def train_config(raw: Any, reserved: Iterable[str] = TRAIN_RESERVED, prefix: str = "",
                 where: str | None = None) -> TrainConfig:
    """The ``train`` section as a :class:`~insta.train.TrainConfig`, checked (also the transfer matrix's)."""
    return read_section(TrainConfig, raw, "train", exclude=reserved, where=where, prefix=prefix)


def eval_config(raw: Any, allowed: Iterable[str] | None = None, prefix: str = "",
                where: str | None = None) -> GridEvalConfig:
    """The ``eval`` section as a :class:`GridEvalConfig`, checked; ``allowed`` narrows the keys it may set
    (default: every evaluation option but ``limit`` / ``limit_per_template``: ``n`` is the grid's limit)."""
    names = {f.name for f in fields(GridEvalConfig)}
    keep = set(allowed) if allowed is not None else names - {"limit", "limit_per_template"}
    evalc = read_section(GridEvalConfig, raw, "eval", exclude=names - keep, where=where, prefix=prefix)
    if evalc.n < 1:
        raise InstaError(f"{prefix}eval.n must be a positive integer (got {evalc.n!r})")
    return evalc


def _check_top(raw: dict[str, Any]) -> None:
    """Types of the plain-valued top-level keys."""
    for key, default, tp in (("name", None, str | None), ("description", None, str | None),
                             ("data_dir", None, str | None), ("out", None, str | None), ("encoder", None, str | None),
                             ("model", "smollm2", str), ("include_base", True, bool), ("keep_models", False, bool)):
        checked_get(raw, key, default, tp)
    if isinstance(raw.get("model"), str) and not raw["model"].strip():
        raise _fail("model must be a non-empty string")
    checked_get(raw, "seed", 42, int)
    checked_get(raw, "library_size", 100, int, minimum=1)
    targets = raw.get("targets")
    if not isinstance(targets, list) or not targets or not all(isinstance(t, str) and t for t in targets):
        raise _fail("the experiment config needs a non-empty 'targets' list of task ids (e.g. bbh:snarks)")
    if len(set(targets)) != len(targets):
        raise _fail("a target is listed twice")
    for key, default in (("k", 5), ("target_samples", 32)):
        value = raw.get(key, default)
        if not isinstance(value, int) or isinstance(value, bool) or value < 1:
            raise _fail(f"{key} must be a positive integer (got {value!r})")
    if raw.get("backend", "transformers") not in BACKENDS:
        raise _fail(f"unknown backend {raw.get('backend')!r} (choose from {', '.join(BACKENDS)})")
    from ..executors import EXECUTORS

    if raw.get("executor", "sequential") not in EXECUTORS:
        raise _fail(f"unknown executor {raw.get('executor')!r} (choose from {', '.join(EXECUTORS)})")


def _mixture(raw: Any) -> MixtureSettings:
    mixture = read_section(MixtureSettings, raw, "mixture", where=_where("mixture"))
    if isinstance(mixture.n_total, bool) or mixture.n_total < 1:
        raise _fail(f"mixture.n_total must be a positive integer (got {mixture.n_total!r})")
    return mixture


def _report(raw: Any) -> ReportSettings:
    from ..report.stats import INTERVALS

    report = read_section(ReportSettings, raw, "report", where=_where("report"))
    if not 0 < report.confidence < 1:
        raise _fail(f"report.confidence must be between 0 and 1 (got {report.confidence!r})")
    if report.interval not in INTERVALS:
        raise _fail(f"report.interval must be one of {', '.join(INTERVALS)} (got {report.interval!r})")
    if report.normalisation not in ("char", "token"):
        raise _fail("report.normalisation must be char (lm-evaluation-harness's acc_norm) or token")
    return report


def _p3_table(raw: Any) -> P3TableSettings:
    raw = checked_mapping(raw, "p3_table")
    table = read_section(P3TableSettings, {k: v for k, v in raw.items() if k != "align"}, "p3_table",
                         where=_where("p3_table"))
    table.align = align_config(raw.get("align"), "p3_table.align", pool="t0_train")
    return table


def _sections(raw: dict[str, Any]) -> dict[str, Any]:
    """Every section, typed and checked (a section that is not a mapping fails first)."""
    for sec in SECTIONS:
        checked_mapping(raw.get(sec), sec)
    return {
        "pool": pool_config(raw.get("pool"), where=_where("pool")),
        "mixture": _mixture(raw.get("mixture")),
        "report": _report(raw.get("report")),
        "p3_table": _p3_table(raw.get("p3_table")),
        "train": train_config(raw.get("train"), where=_where("train")),
        "eval": eval_config(raw.get("eval"), where=_where("eval")),
    }


def config_from_dict(raw: dict[str, Any], path: str = "") -> ExperimentConfig:
    """Check and convert a parsed YAML/JSON config (see ``configs/*.yaml``)."""
    if not isinstance(raw, dict):
        raise _fail("the experiment config must be a mapping")
    check_keys(raw, TOP_KEYS, "the top level of the experiment config")
    _check_top(raw)
    sections = _sections(raw)
    name = str(raw.get("name") or (Path(path).stem if path else "experiment"))
    cfg = ExperimentConfig(
        name=name,
        targets=list(raw["targets"]),
        methods=method_specs(raw.get("methods"), raw),
        path=str(path),
        data_dir=raw.get("data_dir"),
        out=str(raw.get("out") or "") or str(Path("experiments") / name),
        seed=int(raw.get("seed", 42)),
        k=raw.get("k", 5),
        include_base=bool(raw.get("include_base", True)),
        encoder=raw.get("encoder"),
        target_samples=raw.get("target_samples", 32),
        library_size=int(raw.get("library_size", 100)),
        model=str(raw.get("model", "smollm2")),
        keep_models=bool(raw.get("keep_models", False)),
        backend=raw.get("backend", "transformers"),
        executor=raw.get("executor", "sequential"),
        raw=raw,
        written={sec: list(raw.get(sec) or {}) for sec in SECTIONS},
        **sections,
    )
    for spec in cfg.methods:
        if spec.name == "insta-aligned":
            enc = spec.options.get("encoder")
            if not Path(enc).is_dir() and spec.align is None:
                raise _fail(f"insta-aligned: encoder directory {enc!r} does not exist; train it with `insta align` "
                            "or add 'align: {...}' to the method to have the experiment train it first")
    return cfg


def load_config(path: str | os.PathLike, overrides: dict[str, Any] | None = None,
                only_methods: Sequence[str] | None = None) -> ExperimentConfig:
    """Read an experiment YAML (or JSON) file.

    ``overrides`` replace keys (``None`` values are ignored); a dotted key sets a nested one (``"eval.n": 10``).
    ``only_methods`` keeps the listed methods (by name or label) and drops the others.
    """
    from ..fileio import load_yaml
    from ..options import set_dotted

    p = Path(path)
    if not p.is_file():
        raise _fail(f"experiment config {str(p)!r} does not exist")
    raw = load_yaml(p, "experiment config")
    if isinstance(raw, dict):
        set_dotted(raw, overrides)
        if only_methods:
            raw["methods"] = _keep_methods(raw.get("methods") or [], set(only_methods))
    return config_from_dict(raw, str(p))


def _keep_methods(methods: list[Any], wanted: set[str]) -> list[Any]:
    """The config's methods named (or labelled) in ``wanted``; naming one that is not there is an error."""
    kept = [m for m in methods if (m if isinstance(m, str) else m.get("name")) in wanted
            or (isinstance(m, dict) and m.get("label") in wanted)]
    names = {m if isinstance(m, str) else m.get("name") for m in methods} | {
        m.get("label") for m in methods if isinstance(m, dict)}
    unknown = sorted(wanted - names)
    if unknown:
        raise _fail(f"--methods names method(s) not in the config: {', '.join(unknown)}")
    return kept


__all__ = ["BACKENDS", "CACHE_VERSION", "EVAL_OWN_KEYS", "ExperimentConfig", "GridEvalConfig", "MethodSpec",
           "MixtureSettings", "P3TableSettings", "PoolConfig", "ReportSettings", "TARGET_CATALOGS", "TRAIN_RESERVED",
           "align_config", "config_from_dict", "eval_config", "explicit_options", "load_config", "pool_config",
           "train_config"]

"""Experiment configuration: the YAML schema of ``insta experiment``, read into typed sections and checked before
any work starts (unknown keys, wrong types and bad values are one error line at load time).

``ExperimentConfig`` is a :class:`insta.engine.RunConfig` (the sections every run shares: ``pool``, ``train``,
``eval``) plus the grid's own: ``methods``, ``mixture`` (:class:`MixtureSettings`), ``report``
(:class:`ReportSettings`) and ``p3_table`` (:class:`P3TableSettings`). Cache keys hash the options a config sets
(:meth:`ExperimentConfig.key_options`).
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Sequence

from ..align.data import AlignConfig
from ..engine.sections import (
    EVAL_OWN_KEYS,
    RunConfig,
    RunEvalConfig,
    check_runner,
    check_targets,
    eval_config,
    pool_config,
    run_fields,
    train_config,
)
from ..errors import InstaError
from ..util.options import check_keys, checked_get, checked_mapping, read_section
from .methodspec import MethodSpec, align_config, method_specs

#: Training options the experiment sets itself (one output dir per model; no resume across configs).
TRAIN_RESERVED = {"model", "output_dir", "overwrite", "resume"}

# ---------------------------------------------------------------- typed sections


@dataclass
class MixtureSettings:
    """The training budget of every model of the grid and how its mixture is drawn (:mod:`insta.mixture`)."""

    n_total: int = 100  # training instances per model, the same for every method
    dedup: bool = True  # drop training instances that near-duplicate an evaluation example
    dedup_ngram: int = field(default=8, metadata={"minimum": 3})
    max_scan: int | None = field(default=None, metadata={"minimum": 1})
    seed: int | None = None  # None: the experiment's seed


#: the grid's evaluation section (the name of the shared :class:`insta.engine.RunEvalConfig` here)
GridEvalConfig = RunEvalConfig


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


@dataclass(kw_only=True)
class ExperimentConfig(RunConfig):
    """Everything one comparison grid depends on (see ``configs/*.yaml``): the shared run fields
    (:class:`insta.engine.RunConfig`) and the grid's methods, mixture, report and P3 table."""

    methods: list[MethodSpec]
    k: int = 5
    include_base: bool = True
    target_samples: int = 32  # unlabelled target instances for roe / dsir
    library_size: int = 100  # instances per source task for roe / dsir
    #: target -> its evaluation example ids (instead of ``eval.n`` drawn with ``eval.seed``): a grid scored on the
    #: very examples of another run (a transfer matrix's); the unlabelled samples are then drawn as
    #: ``insta eval-selection --transfer`` draws them: outside those examples, in the order seeded by ``samples_seed``
    eval_ids: dict[str, list[str]] | None = None
    samples_seed: int = 0
    mixture: MixtureSettings = field(default_factory=MixtureSettings)
    report: ReportSettings = field(default_factory=ReportSettings)
    p3_table: P3TableSettings = field(default_factory=P3TableSettings)

    @property
    def n_total(self) -> int:
        return self.mixture.n_total

    def key_options(self, section: str, exclude: Iterable[str] = ()) -> dict[str, Any]:
        """The options of ``train``, ``mixture`` or ``eval`` that models and cells are keyed by: every key the
        file sets, and any other field that differs from its default (the experiment's own ``train`` fields and
        ``mixture.n_total``, keyed separately, left out)."""
        own = {"train": TRAIN_RESERVED, "mixture": {"n_total"}}.get(section, set())
        return super().key_options(section, set(exclude) | own)


# ---------------------------------------------------------------- reading


TOP_KEYS = {
    "name", "description", "data_dir", "out", "seed", "targets", "k", "methods", "include_base", "encoder",
    "target_samples", "library_size", "pool", "mixture", "model", "train", "eval", "report", "p3_table",
    "keep_models", "backend", "executor", "eval_ids", "samples_seed",
}
SECTIONS = ("pool", "mixture", "train", "eval", "report", "p3_table")


def _fail(msg: str) -> InstaError:
    return InstaError(msg)


def _where(section: str) -> str:
    return f"section {section!r} of the experiment config"


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
    check_targets(raw, what="the experiment config")
    for key, default in (("k", 5), ("target_samples", 32)):
        value = raw.get(key, default)
        if not isinstance(value, int) or isinstance(value, bool) or value < 1:
            raise _fail(f"{key} must be a positive integer (got {value!r})")
    check_runner(raw)
    checked_get(raw, "samples_seed", 0, int)
    _check_eval_ids(raw.get("eval_ids"), raw["targets"])


def _check_eval_ids(eval_ids: Any, targets: list[str]) -> None:
    """``eval_ids``: absent, or a mapping of every target to a non-empty list of distinct example ids."""
    if eval_ids is None:
        return
    if not isinstance(eval_ids, dict):
        raise _fail("eval_ids must be a mapping of each target to its evaluation example ids")
    missing, stray = [t for t in targets if t not in eval_ids], [str(t) for t in eval_ids if t not in targets]
    if missing:
        raise _fail(f"eval_ids has no example ids for target(s) {', '.join(missing)}")
    if stray:
        raise _fail(f"eval_ids names {', '.join(stray)}: not a target of the config")
    for t, ids in eval_ids.items():
        ok = isinstance(ids, list) and ids and all(isinstance(i, str) and i for i in ids)
        if not ok or len(set(ids)) != len(ids):
            raise _fail(f"eval_ids[{t!r}] must be a non-empty list of distinct example ids")


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
        "train": train_config(raw.get("train"), TRAIN_RESERVED, where=_where("train")),
        "eval": eval_config(raw.get("eval"), where=_where("eval")),
    }


def config_from_dict(raw: dict[str, Any], path: str = "") -> ExperimentConfig:
    """Check and convert a parsed YAML/JSON config (see ``configs/*.yaml``)."""
    if not isinstance(raw, dict):
        raise _fail("the experiment config must be a mapping")
    check_keys(raw, TOP_KEYS, "the top level of the experiment config")
    _check_top(raw)
    cfg = ExperimentConfig(
        methods=method_specs(raw.get("methods"), raw),
        k=raw.get("k", 5),
        include_base=bool(raw.get("include_base", True)),
        target_samples=raw.get("target_samples", 32),
        library_size=int(raw.get("library_size", 100)),
        eval_ids={t: list(ids) for t, ids in raw["eval_ids"].items()} if raw.get("eval_ids") is not None else None,
        samples_seed=int(raw.get("samples_seed", 0)),
        **run_fields(raw, str(path), _sections(raw), default_name="experiment"),
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
    from ..util.fileio import load_yaml
    from ..util.options import set_dotted

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


__all__ = ["EVAL_OWN_KEYS", "ExperimentConfig", "GridEvalConfig", "MethodSpec", "MixtureSettings", "P3TableSettings",
           "ReportSettings", "TRAIN_RESERVED", "config_from_dict", "load_config"]

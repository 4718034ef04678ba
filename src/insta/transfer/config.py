"""The YAML schema of ``insta transfer``: sources, targets, model, budget per source, seeds; checked on load.

A transfer run trains one model per (source, seed) on that source alone and evaluates it zero-shot on every
target, so the whole config is read and type-checked before anything is trained: a wrong type or an unknown key
is one clear error at load time, never after hours of work.
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field, fields
from typing import Any

from ..engine.sections import (
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
from ..util.options import check_keys, checked, read_section

SOURCE_STRATEGIES = ("spread", "first", "random", "list")
#: training options the transfer run sets itself
TRAIN_RESERVED = {"model", "output_dir", "overwrite", "resume", "seed"}
EVAL_KEYS = {"n", "seed", "batch_size", "calibration", "content_free_prompt", "max_source_length", "share_prefix"}


@dataclass
class SourcesConfig:
    """Which pool units become sources: ``n`` of them spread over the pool's task types, or an explicit list."""

    strategy: str = "spread"  # spread (greedy keyword coverage) | first | random | list
    n: int | None = 40  # None: every pool unit
    list: list[str] = field(default_factory=list)  # strategy "list": these unit ids, in this order


@dataclass
class MatrixEvalConfig(RunEvalConfig):
    """The matrix's evaluation section: 50 examples per target unless ``n`` says otherwise."""

    n: int = 50


@dataclass
class ScoringSettings:
    """The report's scoring of selection methods against the matrix (:mod:`insta.evaluators.methods_vs_matrix`)."""

    enabled: bool = True
    methods: list[Any] | None = None  # method specs (default: every method of the comparison)
    encoder: str | None = None  # the encoder of the INSTA variants (None: all-MiniLM-L6-v2)
    aligned_encoder: str | None = None  # INSTA-aligned's encoder (left out when missing and ``align`` is not set)
    align: dict[str, Any] | None = None  # how to train ``aligned_encoder`` when it is missing
    metric: str | None = None  # None: the matrix's primary metric (nll_per_token)
    k: int = field(default=5, metadata={"minimum": 1})
    target_samples: int = field(default=32, metadata={"minimum": 1})
    library_size: int = field(default=50, metadata={"minimum": 1})
    draws: int = field(default=1000, metadata={"minimum": 1})
    bootstrap: int = field(default=10000, metadata={"minimum": 1})
    include_unreliable: bool = False


@dataclass(kw_only=True)
class TransferConfig(RunConfig):
    """Everything one transfer matrix depends on (see ``configs/transfer-*.yaml``): the shared run fields
    (:class:`insta.engine.RunConfig`: targets, pool, model, ``train``, ``eval``, backend) and the matrix's own."""

    seeds: list[int] = field(default_factory=lambda: [0, 1])
    sources: SourcesConfig = field(default_factory=SourcesConfig)
    instances: int = 100  # training instances per (source, seed); fewer when the source has fewer
    eval: MatrixEvalConfig = field(default_factory=MatrixEvalConfig)
    reliability_min: float = 0.5  # split-half reliability below this: the target is left out of method scoring
    scoring: ScoringSettings = field(default_factory=ScoringSettings)


TOP_KEYS = {f.name for f in fields(TransferConfig)} - {"path", "raw", "written"} | {"description"}


PREFIX = "transfer config: "


def _fail(msg: str) -> InstaError:
    return InstaError(PREFIX + msg)


def _typed(value: Any, tp: Any, what: str) -> Any:
    return checked(value, tp, what, prefix=PREFIX)


def _sources_config(raw: Any) -> SourcesConfig:
    if isinstance(raw, list):
        raw = {"strategy": "list", "list": raw, "n": None}
    src = read_section(SourcesConfig, raw, "sources", prefix=PREFIX)
    if src.strategy not in SOURCE_STRATEGIES:
        raise _fail(f"sources.strategy must be one of {', '.join(SOURCE_STRATEGIES)} (got {src.strategy!r})")
    if src.n is not None and src.n < 2:
        raise _fail(f"sources.n must be at least 2 (got {src.n})")
    if not all(isinstance(x, str) and x for x in src.list):
        raise _fail("sources.list must be a list of task ids")
    if len(set(src.list)) != len(src.list):
        twice = sorted({x for x in src.list if src.list.count(x) > 1})
        raise _fail(f"sources.list names {', '.join(twice)} twice (each source is one row of the matrix)")
    if src.strategy == "list" and len(src.list) < 2:
        raise _fail("sources.strategy 'list' needs at least 2 ids in sources.list")
    return src


def _scoring(raw: Any) -> ScoringSettings:
    scoring = read_section(ScoringSettings, raw, "scoring", prefix=PREFIX)
    from ..matrix.cells import METRICS

    if scoring.metric is not None and scoring.metric not in METRICS:
        raise _fail(f"scoring.metric must be one of {', '.join(METRICS)} (got {scoring.metric!r})")
    if scoring.methods is not None:  # checked now, not after the matrix has run
        from ..evaluators.methods_vs_matrix import parse_method_specs

        parse_method_specs(scoring.methods, "scoring.methods")
    return scoring


def _check_top(raw: dict[str, Any]) -> None:
    check_keys(raw, TOP_KEYS, "the top level", PREFIX)
    check_targets(raw, PREFIX, "a transfer config")
    seeds = raw.get("seeds", [0, 1])
    if not isinstance(seeds, list) or not seeds or not all(isinstance(s, int) and not isinstance(s, bool)
                                                           for s in seeds):
        raise _fail(f"seeds must be a non-empty list of integers (got {seeds!r})")
    if len(set(seeds)) != len(seeds):
        raise _fail("a seed is listed twice")
    checked(raw.get("instances", 100), int, "instances", minimum=1, prefix=PREFIX)
    check_runner(raw, PREFIX)


def config_from_dict(raw: Any, path: str = "") -> TransferConfig:
    """Check and convert a parsed YAML/JSON transfer config."""
    if not isinstance(raw, dict):
        raise _fail("must be a mapping")
    _check_top(raw)
    sections = {
        "train": train_config(raw.get("train"), TRAIN_RESERVED, prefix=PREFIX),
        "eval": eval_config(raw.get("eval"), allowed=EVAL_KEYS, prefix=PREFIX, cls=MatrixEvalConfig),
        "pool": pool_config(raw.get("pool"), prefix=PREFIX),
        "scoring": _scoring(raw.get("scoring")),
    }
    rel = _typed(raw.get("reliability_min", 0.5), float, "reliability_min")
    return TransferConfig(
        seeds=list(raw.get("seeds", [0, 1])),
        sources=_sources_config(raw.get("sources")),
        instances=raw.get("instances", 100),
        reliability_min=float(rel),
        **run_fields(raw, str(path), sections, PREFIX, default_name="transfer"),
    )
def load_transfer_config(path: str | os.PathLike, overrides: dict[str, Any] | None = None) -> TransferConfig:
    """Read a transfer YAML (or JSON) file; ``overrides`` set top-level or dotted keys (``"eval.n": 10``)."""
    from ..util.fileio import load_yaml
    from ..util.options import set_dotted

    raw = load_yaml(path, "transfer config")
    if isinstance(raw, dict):
        set_dotted(raw, overrides)
    return config_from_dict(raw, str(path))

"""The YAML schema of ``insta transfer``: sources, targets, model, budget per source, seeds; checked on load.

A transfer run trains one model per (source, seed) on that source alone and evaluates it zero-shot on every
target, so the whole config is read and type-checked before anything is trained: a wrong type or an unknown key
is one clear error at load time, never after hours of work.
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from ..errors import InstaError
from ..executors import EXECUTORS
from ..experiment.config import PoolConfig, eval_config, pool_config, train_config
from ..options import check_keys, checked, read_section

BACKENDS = ("transformers", "dry-run")
SOURCE_STRATEGIES = ("spread", "first", "random", "list")
#: training options the transfer run sets itself
TRAIN_RESERVED = {"model", "output_dir", "overwrite", "resume", "seed"}
SCORING_KEYS = {"align", "encoder", "enabled", "include_unreliable", "k", "target_samples", "library_size",
                "aligned_encoder", "draws", "bootstrap", "metric", "methods"}
EVAL_KEYS = {"n", "seed", "batch_size", "calibration", "content_free_prompt", "max_source_length", "share_prefix"}


@dataclass
class SourcesConfig:
    """Which pool units become sources: ``n`` of them spread over the pool's task types, or an explicit list."""

    strategy: str = "spread"  # spread (greedy keyword coverage) | first | random | list
    n: int | None = 40  # None: every pool unit
    list: list[str] = field(default_factory=list)  # strategy "list": these unit ids, in this order


@dataclass
class TransferConfig:
    """Everything one transfer matrix depends on (see ``configs/transfer-*.yaml``)."""

    name: str
    targets: list[str]
    path: str = ""
    data_dir: str | None = None
    out: str = ""
    seed: int = 42
    seeds: list[int] = field(default_factory=lambda: [0, 1])
    sources: SourcesConfig = field(default_factory=SourcesConfig)
    pool: PoolConfig = field(default_factory=PoolConfig)
    encoder: str | None = None  # near-duplicate filter of the pool (None: all-MiniLM-L6-v2)
    model: str = "smollm2"
    instances: int = 100  # training instances per (source, seed); fewer when the source has fewer
    train: dict[str, Any] = field(default_factory=dict)
    eval: dict[str, Any] = field(default_factory=dict)
    reliability_min: float = 0.5  # split-half reliability below this: the target is left out of method scoring
    scoring: dict[str, Any] = field(default_factory=dict)  # the report's method scoring (SCORING_KEYS)
    keep_models: bool = False
    backend: str = "transformers"
    executor: str = "sequential"
    raw: dict[str, Any] = field(default_factory=dict)

    # the attributes the experiment's pool and target helpers read (insta.experiment.pool.GridSettings)
    @property
    def n_eval(self) -> int:
        return int(self.eval.get("n", 50))

    @property
    def eval_seed(self) -> int:
        return self.eval.get("seed", 0)

    target_samples: int = 0  # no unlabelled target samples are drawn (kept for the shared target helper)


TOP_KEYS = {f.name for f in fields(TransferConfig)} - {"path", "raw", "target_samples"} | {"description"}


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


def _check_train_eval(train: dict[str, Any], evalc: dict[str, Any]) -> None:
    """The ``train`` and ``eval`` sections, read as the experiment reads them (they stay mappings: the cache
    keys hash them as written)."""
    train_config(train, reserved=TRAIN_RESERVED, prefix=PREFIX)
    eval_config(evalc, allowed=EVAL_KEYS, prefix=PREFIX)


def _check_scoring(scoring: dict[str, Any]) -> None:
    check_keys(scoring, SCORING_KEYS, "scoring", PREFIX)
    for key in ("k", "target_samples", "library_size", "draws", "bootstrap"):
        if key in scoring:
            checked(scoring[key], int, f"scoring.{key}", minimum=1, prefix=PREFIX)
    _typed(scoring.get("align"), dict | None, "scoring.align")
    for key in ("enabled", "include_unreliable"):
        if key in scoring:
            _typed(scoring[key], bool, f"scoring.{key}")
    for key in ("aligned_encoder", "metric", "encoder"):
        _typed(scoring.get(key), str | None, f"scoring.{key}")
    if scoring.get("metric") is not None:
        from .cells import METRICS

        if scoring["metric"] not in METRICS:
            raise _fail(f"scoring.metric must be one of {', '.join(METRICS)} (got {scoring['metric']!r})")
    if scoring.get("methods") is not None:  # checked now, not after the matrix has run
        from .methods_vs_matrix import parse_method_specs

        parse_method_specs(scoring["methods"], "scoring.methods")


def _check_top(raw: dict[str, Any]) -> None:
    check_keys(raw, TOP_KEYS, "the top level", PREFIX)
    targets = raw.get("targets")
    if not isinstance(targets, list) or not targets or not all(isinstance(t, str) and t for t in targets):
        raise _fail("needs a non-empty 'targets' list of task ids (e.g. bbh:snarks)")
    if len(set(targets)) != len(targets):
        raise _fail("a target is listed twice")
    seeds = raw.get("seeds", [0, 1])
    if not isinstance(seeds, list) or not seeds or not all(isinstance(s, int) and not isinstance(s, bool)
                                                           for s in seeds):
        raise _fail(f"seeds must be a non-empty list of integers (got {seeds!r})")
    if len(set(seeds)) != len(seeds):
        raise _fail("a seed is listed twice")
    checked(raw.get("instances", 100), int, "instances", minimum=1, prefix=PREFIX)
    backend = raw.get("backend", "transformers")
    if backend not in BACKENDS:
        raise _fail(f"unknown backend {backend!r} (choose from {', '.join(BACKENDS)})")
    executor = raw.get("executor", "sequential")
    if executor not in EXECUTORS:
        raise _fail(f"unknown executor {executor!r} (choose from {', '.join(EXECUTORS)})")


def config_from_dict(raw: Any, path: str = "") -> TransferConfig:
    """Check and convert a parsed YAML/JSON transfer config."""
    if not isinstance(raw, dict):
        raise _fail("must be a mapping")
    _check_top(raw)
    train = dict(_typed(raw.get("train") or {}, dict, "train"))
    evalc = dict(_typed(raw.get("eval") or {}, dict, "eval"))
    _check_train_eval(train, evalc)
    rel = _typed(raw.get("reliability_min", 0.5), float, "reliability_min")
    scoring = dict(_typed(raw.get("scoring") or {}, dict, "scoring"))
    _check_scoring(scoring)
    cfg = TransferConfig(
        name=str(_typed(raw.get("name") or (Path(path).stem if path else "transfer"), str, "name")),
        targets=list(raw["targets"]),
        path=str(path),
        data_dir=_typed(raw.get("data_dir"), str | None, "data_dir"),
        out=str(_typed(raw.get("out") or "", str, "out")),
        seed=_typed(raw.get("seed", 42), int, "seed"),
        seeds=list(raw.get("seeds", [0, 1])),
        sources=_sources_config(raw.get("sources")),
        pool=pool_config(raw.get("pool"), prefix=PREFIX),
        encoder=_typed(raw.get("encoder"), str | None, "encoder"),
        model=_typed(raw.get("model", "smollm2"), str, "model"),
        instances=raw.get("instances", 100),
        train=train,
        eval=evalc,
        reliability_min=float(rel),
        scoring=scoring,
        keep_models=_typed(raw.get("keep_models", False), bool, "keep_models"),
        backend=raw.get("backend", "transformers"),
        executor=raw.get("executor", "sequential"),
        raw=raw,
    )
    if not cfg.out:
        cfg.out = str(Path("experiments") / cfg.name)
    return cfg


def load_transfer_config(path: str | os.PathLike, overrides: dict[str, Any] | None = None) -> TransferConfig:
    """Read a transfer YAML (or JSON) file; ``overrides`` set top-level or dotted keys (``"eval.n": 10``)."""
    from ..fileio import load_yaml
    from ..options import set_dotted

    raw = load_yaml(path, "transfer config")
    if isinstance(raw, dict):
        set_dotted(raw, overrides)
    return config_from_dict(raw, str(path))

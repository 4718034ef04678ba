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
from ..experiment_config import PoolConfig

from ..executors import EXECUTORS
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

    # the attributes the experiment's pool and target helpers read
    @property
    def n_eval(self) -> int:
        return int(self.eval.get("n", 50))

    target_samples: int = 0  # no unlabelled target samples are drawn (kept for the shared target helper)


TOP_KEYS = {f.name for f in fields(TransferConfig)} - {"path", "raw", "target_samples"} | {"description"}


def _fail(msg: str) -> InstaError:
    return InstaError(f"transfer config: {msg}")


def _check_keys(section: str, given: dict, allowed: set[str]) -> None:
    unknown = sorted(set(given) - set(allowed))
    if unknown:
        import difflib

        hints = []
        for u in unknown:
            close = difflib.get_close_matches(u, sorted(allowed), 1)
            hints.append(f"{u} (did you mean {close[0]}?)" if close else u)
        raise _fail(f"unknown key(s) in {section or 'the top level'}: {', '.join(hints)}")


def _typed(value: Any, want: type | tuple[type, ...], what: str, allow_none: bool = False) -> Any:
    """``value`` if it has the wanted type (bool is not an int here), else a clear error."""
    if value is None and allow_none:
        return None
    wants = want if isinstance(want, tuple) else (want,)
    ok = isinstance(value, wants) and not (isinstance(value, bool) and bool not in wants)
    if float in wants and isinstance(value, int) and not isinstance(value, bool):
        ok = True
    if not ok:
        names = " or ".join(w.__name__ for w in wants)
        raise _fail(f"{what} must be {names} (got {value!r})")
    return value


def _pool_config(raw: Any) -> PoolConfig:
    raw = _typed(raw or {}, dict, "pool")
    _check_keys("pool", raw, {f.name for f in fields(PoolConfig)})
    defaults = PoolConfig()
    for f in fields(PoolConfig):
        if f.name in raw:
            default = getattr(defaults, f.name)
            kind: Any = type(default) if default is not None else (float if "cosine" in f.name else str)
            if isinstance(default, list) or f.name == "include":
                kind = list
            _typed(raw[f.name], kind, f"pool.{f.name}", allow_none=default is None or f.name == "include")
    pool = PoolConfig(**raw)
    if pool.unit not in ("family", "task"):
        raise _fail(f"pool.unit must be 'family' or 'task' (got {pool.unit!r})")
    if pool.exclude_bbh_parents not in ("all", "targets", "none"):
        raise _fail("pool.exclude_bbh_parents must be all, targets or none")
    return pool


def _sources_config(raw: Any) -> SourcesConfig:
    if isinstance(raw, list):
        raw = {"strategy": "list", "list": raw, "n": None}
    raw = _typed(raw or {}, dict, "sources")
    _check_keys("sources", raw, {"strategy", "n", "list"})
    src = SourcesConfig(**raw)
    if src.strategy not in SOURCE_STRATEGIES:
        raise _fail(f"sources.strategy must be one of {', '.join(SOURCE_STRATEGIES)} (got {src.strategy!r})")
    _typed(src.n, int, "sources.n", allow_none=True)
    if src.n is not None and src.n < 2:
        raise _fail(f"sources.n must be at least 2 (got {src.n})")
    if not isinstance(src.list, list) or not all(isinstance(x, str) and x for x in src.list):
        raise _fail("sources.list must be a list of task ids")
    if src.strategy == "list" and len(src.list) < 2:
        raise _fail("sources.strategy 'list' needs at least 2 ids in sources.list")
    return src


def _check_train_eval(train: dict[str, Any], evalc: dict[str, Any]) -> None:
    from ..evaluate import EvalConfig
    from ..train import TrainConfig

    allowed = {f.name for f in fields(TrainConfig)} - TRAIN_RESERVED
    _check_keys("train", train, allowed)
    defaults = TrainConfig()
    for key, value in train.items():
        default = getattr(defaults, key)
        if default is None or key == "lora_target_modules":
            continue
        _typed(value, float if isinstance(default, float) else type(default), f"train.{key}")
    try:
        TrainConfig(**train).validate()
    except InstaError as err:
        raise _fail(f"train: {err}") from None
    _check_keys("eval", evalc, EVAL_KEYS)
    for key in ("n", "batch_size", "max_source_length"):
        if key in evalc:
            _typed(evalc[key], int, f"eval.{key}")
            if evalc[key] < 1:
                raise _fail(f"eval.{key} must be at least 1 (got {evalc[key]})")
    if "seed" in evalc:
        _typed(evalc["seed"], int, "eval.seed")
    opts = {k: v for k, v in evalc.items() if k not in ("n", "seed")}
    try:
        EvalConfig(mode="rank", **opts).validate()
    except (InstaError, TypeError) as err:
        raise _fail(f"eval: {err}") from None


def config_from_dict(raw: Any, path: str = "") -> TransferConfig:
    """Check and convert a parsed YAML/JSON transfer config."""
    if not isinstance(raw, dict):
        raise _fail("must be a mapping")
    _check_keys("", raw, TOP_KEYS)
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
    instances = _typed(raw.get("instances", 100), int, "instances")
    if instances < 1:
        raise _fail(f"instances must be at least 1 (got {instances})")
    train = dict(_typed(raw.get("train") or {}, dict, "train"))
    evalc = dict(_typed(raw.get("eval") or {}, dict, "eval"))
    _check_train_eval(train, evalc)
    backend = raw.get("backend", "transformers")
    if backend not in BACKENDS:
        raise _fail(f"unknown backend {backend!r} (choose from {', '.join(BACKENDS)})")
    executor = raw.get("executor", "sequential")
    if executor not in EXECUTORS:
        raise _fail(f"unknown executor {executor!r} (choose from {', '.join(EXECUTORS)})")
    rel = _typed(raw.get("reliability_min", 0.5), float, "reliability_min")
    scoring = dict(_typed(raw.get("scoring") or {}, dict, "scoring"))
    _check_keys("scoring", scoring, SCORING_KEYS)
    for key in ("k", "target_samples", "library_size", "draws", "bootstrap"):
        if key in scoring and (_typed(scoring[key], int, f"scoring.{key}") < 1):
            raise _fail(f"scoring.{key} must be at least 1 (got {scoring[key]})")
    if scoring.get("align") is not None:
        _typed(scoring["align"], dict, "scoring.align")
    for key in ("enabled", "include_unreliable"):
        if key in scoring:
            _typed(scoring[key], bool, f"scoring.{key}")
    for key in ("aligned_encoder", "metric", "encoder"):
        _typed(scoring.get(key), str, f"scoring.{key}", allow_none=True)
    if scoring.get("methods") is not None:  # checked now, not after the matrix has run
        from .methods_vs_matrix import parse_method_specs

        parse_method_specs(scoring["methods"], "scoring.methods")
    cfg = TransferConfig(
        name=str(_typed(raw.get("name") or (Path(path).stem if path else "transfer"), str, "name")),
        targets=list(targets),
        path=str(path),
        data_dir=_typed(raw.get("data_dir"), str, "data_dir", allow_none=True),
        out=str(_typed(raw.get("out") or "", str, "out")),
        seed=_typed(raw.get("seed", 42), int, "seed"),
        seeds=list(seeds),
        sources=_sources_config(raw.get("sources")),
        pool=_pool_config(raw.get("pool")),
        encoder=_typed(raw.get("encoder"), str, "encoder", allow_none=True),
        model=_typed(raw.get("model", "smollm2"), str, "model"),
        instances=instances,
        train=train,
        eval=evalc,
        reliability_min=float(rel),
        scoring=scoring,
        keep_models=_typed(raw.get("keep_models", False), bool, "keep_models"),
        backend=backend,
        executor=executor,
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

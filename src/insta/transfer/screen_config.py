"""The YAML schema of ``insta screen`` (see :mod:`insta.transfer.screen`): candidates, the oracle budget, the
learning curve and the pass rule, checked on load so that a wrong key or type is one error before any training."""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable

from ..engine.sections import RunEvalConfig, explicit_options
from ..errors import InstaError
from ..train import TrainConfig
from ..util.options import check_keys, checked, read_section

PREFIX = "screen config: "
EVAL_KEYS = {"n", "seed", "batch_size", "max_source_length", "share_prefix"}
TRAIN_RESERVED = {"model", "output_dir", "overwrite", "resume", "seed"}
#: metrics the pass rule may use, and the per-example changes every verdict reports
PASS_METRICS = ("margin_z", "margin", "acc")
REPORTED = ("margin_z", "margin", "acc", "nll_per_token")


@dataclass
class CandidatesConfig:
    """Which tasks are candidate targets: every task of ``catalogs`` with enough usable examples (one per family)
    and the ``include`` tasks, minus ``exclude``; ``later`` ones are screened after all the others."""

    catalogs: list[str] = field(default_factory=lambda: ["bigbench"])
    include: list[str] = field(default_factory=list)  # "catalog:task" ids added to the catalogs' tasks
    exclude: list[str] = field(default_factory=list)  # "catalog:task" ids or "catalog:family" families
    later: list[str] = field(default_factory=list)  # "catalog:task" or "catalog:family": screened last
    min_train: int = 100  # fewest training instances (renderings) left after the evaluation split
    max_input_chars: int = 1500  # median input length above this: too long for the evaluation budget
    one_per_family: bool = True  # the subtask with most usable examples stands for its family


@dataclass
class CurveConfig:
    """A learning curve: oracles of ``targets`` at each (instances, learning rate) budget."""

    targets: list[str] = field(default_factory=list)
    instances: list[int] = field(default_factory=list)
    learning_rates: list[float] = field(default_factory=list)


@dataclass
class ScreenEvalConfig(RunEvalConfig):
    """The screen's ``eval`` section: a run's evaluation options with 200 held-out examples per candidate."""

    n: int = 200


@dataclass
class ScreenConfig:
    """Everything a learnability screen depends on (see ``configs/screen-*.yaml``)."""

    name: str
    path: str = ""
    data_dir: str | None = None
    out: str = ""
    seed: int = 42
    seeds: list[int] = field(default_factory=lambda: [0])
    candidates: CandidatesConfig = field(default_factory=CandidatesConfig)
    model: str = "smollm2"
    instances: int = 400  # the screen's budget: training instances of each oracle
    train: TrainConfig = field(default_factory=TrainConfig)
    eval: ScreenEvalConfig = field(default_factory=ScreenEvalConfig)
    curve: CurveConfig = field(default_factory=CurveConfig)
    constant_share: float = 0.95  # a model whose top answer covers this share of the examples is constant
    metric: str = "margin_z"  # the primary metric of the pass rule (margin_z, margin, acc)
    confidence: float = 0.95
    bootstrap: int = 10000
    backend: str = "transformers"
    executor: str = "sequential"
    keep_models: bool = False
    description: str = ""
    #: the keys the ``train`` and ``eval`` sections set in the file (what cache keys hash)
    written: dict[str, list[str]] = field(default_factory=dict, repr=False)

    @property
    def n_eval(self) -> int:
        return self.eval.n

    @property
    def eval_seed(self) -> int:
        return self.eval.seed

    @property
    def learning_rate(self) -> float:
        return self.train.resolved_lr()

    def key_options(self, section: str, exclude: Iterable[str] = ()) -> dict[str, Any]:
        """The options of ``train`` or ``eval`` that models and cells are keyed by (those the file sets, in its
        order, and any changed since: :func:`insta.engine.sections.explicit_options`)."""
        return explicit_options(getattr(self, section), self.written.get(section, ()), exclude)


def _fail(msg: str) -> InstaError:
    return InstaError(PREFIX + msg)


def _ids(value: Any, what: str) -> list[str]:
    if not isinstance(value, list) or not all(isinstance(x, str) and ":" in x for x in value):
        raise _fail(f"{what} must be a list of 'catalog:task' ids (got {value!r})")
    if len(set(value)) != len(value):
        raise _fail(f"{what} lists an id twice")
    return list(value)


def screen_config_from_dict(raw: Any, path: str = "") -> ScreenConfig:
    """Check and convert a parsed screen config: unknown keys and wrong types are one clear error now."""
    from ..engine.sections import eval_config, train_config

    if not isinstance(raw, dict):
        raise _fail("must be a mapping")
    top = {"name", "description", "data_dir", "out", "seed", "seeds", "candidates", "model", "instances", "train",
           "eval", "curve", "constant_share", "confidence", "bootstrap", "backend", "executor", "keep_models",
           "metric"}
    check_keys(raw, top, "the top level", PREFIX)
    cand = read_section(CandidatesConfig, raw.get("candidates") or {}, "candidates", prefix=PREFIX)
    _ids(cand.include, "candidates.include")
    _ids(cand.exclude, "candidates.exclude")
    _ids(cand.later, "candidates.later")
    curve = read_section(CurveConfig, raw.get("curve") or {}, "curve", prefix=PREFIX)
    _ids(curve.targets, "curve.targets")
    if any(not isinstance(n, int) or isinstance(n, bool) or n < 1 for n in curve.instances):
        raise _fail("curve.instances must be positive integers")
    if any(not isinstance(x, (int, float)) or not math.isfinite(x) or x <= 0 for x in curve.learning_rates):
        raise _fail("curve.learning_rates must be positive finite numbers")
    train_raw = dict(checked(raw.get("train") or {}, dict, "train", prefix=PREFIX))
    eval_raw = dict(checked(raw.get("eval") or {}, dict, "eval", prefix=PREFIX))
    train = train_config(train_raw, reserved=TRAIN_RESERVED, prefix=PREFIX)
    evalc = eval_config(eval_raw, allowed=EVAL_KEYS, prefix=PREFIX, cls=ScreenEvalConfig)
    seeds = raw.get("seeds", [0])
    if not isinstance(seeds, list) or not seeds or not all(isinstance(s, int) and not isinstance(s, bool)
                                                           for s in seeds) or len(set(seeds)) != len(seeds):
        raise _fail(f"seeds must be a non-empty list of distinct integers (got {seeds!r})")
    share = checked(raw.get("constant_share", 0.95), float, "constant_share", prefix=PREFIX)
    conf = checked(raw.get("confidence", 0.95), float, "confidence", prefix=PREFIX)
    for name, v in (("constant_share", share), ("confidence", conf)):
        if not (math.isfinite(v) and 0 < v <= 1):
            raise _fail(f"{name} must be in (0, 1] (got {v!r})")
    metric = raw.get("metric", "margin_z")
    if metric not in PASS_METRICS:
        raise _fail(f"metric must be one of {', '.join(PASS_METRICS)} (got {metric!r})")
    backend = raw.get("backend", "transformers")
    if backend not in ("transformers", "dry-run"):
        raise _fail(f"unknown backend {backend!r} (choose from transformers, dry-run)")
    executor = raw.get("executor", "sequential")
    if executor not in ("sequential", "ray"):
        raise _fail(f"unknown executor {executor!r} (choose from sequential, ray)")
    cfg = ScreenConfig(
        name=str(checked(raw.get("name") or (Path(path).stem if path else "screen"), str, "name", prefix=PREFIX)),
        path=str(path), data_dir=checked(raw.get("data_dir"), str | None, "data_dir", prefix=PREFIX),
        out=str(checked(raw.get("out") or "", str, "out", prefix=PREFIX)),
        seed=checked(raw.get("seed", 42), int, "seed", prefix=PREFIX), seeds=list(seeds), candidates=cand,
        model=checked(raw.get("model", "smollm2"), str, "model", prefix=PREFIX),
        instances=checked(raw.get("instances", 400), int, "instances", minimum=1, prefix=PREFIX),
        train=train, eval=evalc, curve=curve, constant_share=float(share), confidence=float(conf),
        bootstrap=checked(raw.get("bootstrap", 10000), int, "bootstrap", minimum=100, prefix=PREFIX),
        backend=backend, executor=executor, metric=metric,
        keep_models=checked(raw.get("keep_models", False), bool, "keep_models", prefix=PREFIX),
        description=str(checked(raw.get("description") or "", str, "description", prefix=PREFIX)),
        written={"train": list(train_raw), "eval": list(eval_raw)},
    )
    if not cfg.out:
        cfg.out = str(Path("experiments") / cfg.name)
    return cfg


def load_screen_config(path: str, overrides: dict[str, Any] | None = None) -> ScreenConfig:
    """Read a screen YAML file; ``overrides`` set top-level or dotted keys (``None`` values are ignored)."""
    from ..util.fileio import load_yaml
    from ..util.options import set_dotted

    raw = load_yaml(path, "screen config")
    if isinstance(raw, dict):
        set_dotted(raw, {k: v for k, v in (overrides or {}).items() if v is not None})
    return screen_config_from_dict(raw, str(path))


__all__ = ["CandidatesConfig", "CurveConfig", "PASS_METRICS", "REPORTED", "ScreenConfig", "ScreenEvalConfig",
           "load_screen_config", "screen_config_from_dict"]

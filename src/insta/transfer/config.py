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

SOURCE_STRATEGIES = ("spread", "nearest-spread", "first", "random", "list")
COST_ESTIMATES = ("measured", "gpu")
#: training options the transfer run sets itself
TRAIN_RESERVED = {"model", "output_dir", "overwrite", "resume", "seed"}
EVAL_KEYS = {"n", "seed", "batch_size", "calibration", "content_free_prompt", "max_source_length", "share_prefix"}


@dataclass
class SourcesConfig:
    """Which pool units become sources: ``n`` of them spread over the pool's task types, or an explicit list."""

    strategy: str = "spread"  # spread (greedy keyword coverage) | nearest-spread | first | random | list
    n: int | None = 40  # None: every pool unit
    list: list[str] = field(default_factory=list)  # strategy "list": these unit ids, in this order
    nearest: int = field(default=2, metadata={"minimum": 1})  # nearest-spread: keyword-nearest units per target


@dataclass
class ScreenTargets:
    """``targets`` as matrix v2's pre-registered rule over a learnability screen (:mod:`insta.transfer.v2_targets`):
    the passing candidates, v1's targets last, in the screen's order, at most ``max``."""

    from_screen: str = ""  # the screen's config (configs/screen-*.yaml): its folder holds screen.json and the cells
    max: int = field(default=24, metadata={"minimum": 1})
    min: int = field(default=12, metadata={"minimum": 1})  # fewer pass: every one is used, and the plan says so
    exclude_v1: str | None = None  # a transfer config whose targets come last (added only to fill up to max)


@dataclass
class CostSettings:
    """The cost rule (:mod:`insta.transfer.v2_cost`): while the estimate is over ``budget_hours``, the most
    expensive target is dropped, down to ``targets.min`` (which wins over the budget)."""

    budget_hours: float | None = None  # None: no rule
    estimate: str = "measured"  # measured (the screen's seconds on this machine) | gpu (one H100, FLOPs counted)
    #: measured only: what ranks targets by cost: "seconds" (each base cell's seconds per example) or "tokens"
    #: (each target's evaluation tokens x the screen's seconds per token: free of machine load and of the scorer
    #: that measured each cell)
    rank_by: str = "seconds"


@dataclass
class BudgetRule:
    """``budget``: the instances and learning rate per (source, seed) chosen from a learnability screen's learning
    curve by the pre-registered rule (:mod:`insta.transfer.v2_budget`), in place of ``instances`` and
    ``train.learning_rate``; needs targets from a screen (the choice is frozen with them)."""

    from_curve: str = ""  # the screen config whose screen.json holds the curve (configs/screen-*.yaml)
    min_instances: int = field(default=400, metadata={"minimum": 1})  # candidates: budgets with at least this many
    fraction: float = 0.9  # the cheapest candidate whose mean change is at least this share of the largest
    metric: str = "margin_z"  # the oracle change averaged over the curve's targets


@dataclass
class SubsetSeeds:
    """More seeds on a subset of the sources (every ``every``-th in the source order), for split-half reliability
    at a fraction of the cost of seeding every source."""

    seeds: list[int] = field(default_factory=list)
    every: int = field(default=3, metadata={"minimum": 1})


@dataclass
class MatrixEvalConfig(RunEvalConfig):
    """The matrix's evaluation section: 50 examples per target unless ``n`` says otherwise."""

    n: int = 50


@dataclass
class ScoringSettings:
    """The report's scoring of selection methods against the matrix (:mod:`insta.evaluators.methods_vs_matrix`)."""

    enabled: bool = True
    #: method specs, or the path of a methods file (``insta eval-selection --methods``'s format); default: every
    #: method of the comparison
    methods: list[Any] | str | None = None
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
    #: seed of the target inputs RoE/DSIR/hybrid read (None: the run's seed). `insta eval-selection --transfer`
    #: draws with --seed (default 0): the same seed gives the same number in the report and on the command line
    seed: int | None = None


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
    subset_seeds: SubsetSeeds = field(default_factory=SubsetSeeds)
    cost: CostSettings = field(default_factory=CostSettings)
    #: ``budget:`` the learning-curve rule (None: ``instances`` and ``train.learning_rate`` as written)
    budget: BudgetRule | None = None
    budget_choice: Any = field(default=None, repr=False)  # the rule on the curve (v2_budget.BudgetChoice)
    #: ``targets:`` given as a screen rule (``targets`` then holds the rule's list, before the cost rule)
    target_rule: ScreenTargets | None = None
    screen: Any = field(default=None, repr=False)  # the screen read for the rule (v2_targets.ScreenSource)
    target_choice: Any = field(default=None, repr=False)  # the rule on the screen's verdicts (TargetChoice)


TOP_KEYS = {f.name for f in fields(TransferConfig)} - {"path", "raw", "written", "target_rule", "screen",
                                                       "target_choice", "budget_choice"} | {"description"}


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


def _target_rule(raw: Any, data_dir: str | None) -> tuple[ScreenTargets, Any, Any]:
    """``targets:`` as a mapping: the screen rule, the screen it reads and the rule applied to its verdicts."""
    from .v2_targets import choose_targets, read_screen, v1_targets

    rule = read_section(ScreenTargets, raw, "targets", prefix=PREFIX)
    if not rule.from_screen:
        raise _fail("targets.from_screen must name a screen config (e.g. configs/screen-bigbench-smollm2.yaml)")
    if rule.min > rule.max:
        raise _fail(f"targets.min ({rule.min}) is above targets.max ({rule.max})")
    screen = read_screen(rule.from_screen, data_dir)
    v1 = v1_targets(rule.exclude_v1) if rule.exclude_v1 else set()
    choice = choose_targets(screen.rows(), v1, rule.max, rule.min)
    if not choice.targets:
        raise _fail(f"targets: no candidate of {screen.folder} passes the screen yet ({choice.status_line()})")
    return rule, screen, choice


def _budget_rule(raw: dict[str, Any], screen: Any, data_dir: str | None) -> tuple[BudgetRule, Any]:
    """``budget:`` checked (it replaces ``instances`` and ``train.learning_rate``, so neither may be written too),
    and the rule applied to the curve of ``budget.from_curve`` (``screen``: the targets' screen, reused when it is
    the same config)."""
    from .screen_config import REPORTED
    from .v2_budget import curve_budget
    from .v2_targets import PREFIX as TARGETS_PREFIX, read_screen

    rule = read_section(BudgetRule, raw["budget"], "budget", prefix=PREFIX)
    if screen is None:
        raise _fail("budget.from_curve needs targets from a screen (targets: {from_screen: ...}): the budget is "
                    "decided and frozen with them")
    if not rule.from_curve:
        raise _fail("budget.from_curve must name a screen config with a learning curve "
                    "(e.g. configs/screen-bigbench-smollm2.yaml)")
    if not 0 < rule.fraction <= 1:
        raise _fail(f"budget.fraction must be in (0, 1] (got {rule.fraction!r})")
    if rule.metric not in REPORTED:
        raise _fail(f"budget.metric must be one of {', '.join(REPORTED)} (got {rule.metric!r})")
    written = [k for k in ("instances",) if k in raw]
    written += [f"train.{k}" for k in ("learning_rate",) if isinstance(raw.get("train"), dict) and k in raw["train"]]
    if written:
        raise _fail(f"{' and '.join(written)} would be set twice: budget.from_curve chooses "
                    f"{'them' if len(written) > 1 else 'it'} (remove {' and '.join(written)}, or the budget section)")
    same = Path(rule.from_curve).resolve() == Path(screen.config_path).resolve()
    try:
        curve_screen = screen if same else read_screen(rule.from_curve, data_dir)
    except InstaError as err:
        raise _fail("budget.from_curve: " + str(err).removeprefix(TARGETS_PREFIX)) from None
    try:
        choice = curve_budget(curve_screen, min_instances=rule.min_instances, fraction=rule.fraction,
                              metric=rule.metric)
    except InstaError as err:
        raise _fail(f"budget.from_curve: {err}") from None
    choice.notes += _curve_differences(curve_screen, raw)
    return rule, choice


def _curve_differences(curve_screen: Any, raw: dict[str, Any]) -> list[str]:
    """Notes where the curve's oracles were trained otherwise than this matrix's sources (another model, other
    training options than the learning rate): the budget then carries over less exactly."""
    notes = []
    if curve_screen.model != raw.get("model", "smollm2"):
        notes.append(f"the curve is {curve_screen.model}'s; this matrix trains {raw.get('model')}")
    theirs = {k: v for k, v in curve_screen.screen.cfg.key_options("train").items() if k != "learning_rate"}
    ours = {k: v for k, v in (raw.get("train") or {}).items() if k != "learning_rate"}
    diff = sorted(k for k in set(theirs) | set(ours) if theirs.get(k) != ours.get(k))
    if diff:
        notes.append("the curve's oracles were trained with other options than this matrix's sources ("
                     + ", ".join(f"{k}: {theirs.get(k)!r} there, {ours.get(k)!r} here" for k in diff) + ")")
    return notes


def _subset_seeds(raw: Any, seeds: list[int]) -> SubsetSeeds:
    sub = read_section(SubsetSeeds, raw, "subset_seeds", prefix=PREFIX)
    if not all(isinstance(s, int) and not isinstance(s, bool) for s in sub.seeds) or len(set(sub.seeds)) != len(
            sub.seeds):
        raise _fail(f"subset_seeds.seeds must be distinct integers (got {sub.seeds!r})")
    both = sorted(set(sub.seeds) & set(seeds))
    if both:
        raise _fail(f"subset_seeds.seeds repeats seed(s) of seeds: {both}")
    return sub


def _cost(raw: Any) -> CostSettings:
    cost = read_section(CostSettings, raw, "cost", prefix=PREFIX)
    if cost.estimate not in COST_ESTIMATES:
        raise _fail(f"cost.estimate must be one of {', '.join(COST_ESTIMATES)} (got {cost.estimate!r})")
    if cost.rank_by not in ("seconds", "tokens"):
        raise _fail(f"cost.rank_by must be seconds or tokens (got {cost.rank_by!r})")
    if cost.budget_hours is not None and not cost.budget_hours > 0:
        raise _fail(f"cost.budget_hours must be positive (got {cost.budget_hours!r})")
    return cost


def _scoring(raw: Any) -> ScoringSettings:
    scoring = read_section(ScoringSettings, raw, "scoring", prefix=PREFIX)
    from ..matrix.cells import METRICS

    if scoring.metric is not None and scoring.metric not in METRICS:
        raise _fail(f"scoring.metric must be one of {', '.join(METRICS)} (got {scoring.metric!r})")
    if scoring.methods is not None:  # checked now, not after the matrix has run
        from ..evaluators.methods_vs_matrix import method_specs

        # a methods file may name what the run writes before it scores (v2's popular-source-loo reads the run's
        # own matrix): its names and shape are checked now, its options when it is scored
        method_specs(scoring.methods, "scoring.methods", build=not isinstance(scoring.methods, str))
    return scoring


def _check_top(raw: dict[str, Any]) -> None:
    check_keys(raw, TOP_KEYS, "the top level", PREFIX)
    if not isinstance(raw.get("targets"), dict):
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
    original = raw
    rule = screen = choice = budget = budget_choice = None
    data_dir = checked(raw.get("data_dir"), str | None, "data_dir", prefix=PREFIX)
    if isinstance(raw.get("targets"), dict):  # matrix v2: the targets are the screen rule's
        rule, screen, choice = _target_rule(raw["targets"], data_dir)
        raw = {**raw, "targets": list(choice.targets)}
    if raw.get("budget") is not None:  # matrix v2: instances and learning rate from the screen's learning curve
        budget, budget_choice = _budget_rule(raw, screen, data_dir)
        raw = {**raw, "instances": budget_choice.instances,
               "train": {**(raw.get("train") or {}), "learning_rate": budget_choice.learning_rate}}
    sections = {
        "train": train_config(raw.get("train"), TRAIN_RESERVED, prefix=PREFIX),
        "eval": eval_config(raw.get("eval"), allowed=EVAL_KEYS, prefix=PREFIX, cls=MatrixEvalConfig),
        "pool": pool_config(raw.get("pool"), prefix=PREFIX),
        "scoring": _scoring(raw.get("scoring")),
    }
    rel = _typed(raw.get("reliability_min", 0.5), float, "reliability_min")
    seeds = list(raw.get("seeds", [0, 1]))
    cfg = TransferConfig(
        seeds=seeds,
        sources=_sources_config(raw.get("sources")),
        instances=raw.get("instances", 100),
        reliability_min=float(rel),
        subset_seeds=_subset_seeds(raw.get("subset_seeds"), seeds),
        cost=_cost(raw.get("cost")),
        target_rule=rule, screen=screen, target_choice=choice, budget=budget, budget_choice=budget_choice,
        **run_fields(raw, str(path), sections, PREFIX, default_name="transfer"),
    )
    if rule is not None:
        cfg.raw = original
        if cfg.eval.n != screen.screen.cfg.n_eval:
            raise _fail(f"eval.n is {cfg.eval.n}, the screen's is {screen.screen.cfg.n_eval}: matrix v2 evaluates "
                        "each target on the screen's own evaluation examples")
    return cfg
def load_transfer_config(path: str | os.PathLike, overrides: dict[str, Any] | None = None) -> TransferConfig:
    """Read a transfer YAML (or JSON) file; ``overrides`` set top-level or dotted keys (``"eval.n": 10``)."""
    from ..util.fileio import load_yaml
    from ..util.options import set_dotted

    raw = load_yaml(path, "transfer config")
    if isinstance(raw, dict):
        set_dotted(raw, overrides)
    return config_from_dict(raw, str(path))

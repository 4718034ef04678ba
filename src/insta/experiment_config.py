"""Experiment configuration: the YAML schema of ``insta experiment``, validated before any work starts."""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

from .errors import InstaError
from .methods import METHODS, SHARED_ENCODER_METHODS, make_method

CACHE_VERSION = 1
TARGET_CATALOGS = ("bigbench", "bbh")
BACKENDS = ("transformers", "dry-run")

# ---------------------------------------------------------------- configuration


@dataclass
class PoolConfig:
    catalog: str = "bigbench"
    unit: str = "family"  # family | task
    exclude_t0_eval: bool = True  # drop the 14 T0 BIG-bench evaluation tasks (and their subtasks)
    exclude_bbh_parents: str = "all"  # all | targets | none: BIG-bench parents of BBH tasks
    exclude: list[str] = field(default_factory=list)  # more task ids or families to drop
    include: list[str] | None = None  # keep only these (ids or families), before the other rules
    stem_match: bool = True  # drop units whose family name extends a target's family name (or vice versa)
    near_duplicate_cosine: float | None = 0.95  # drop units with an instruction this close to a target's
    near_duplicate_encoder: str | None = None  # default: the experiment's encoder
    max_input_chars: int = 1500  # median rendered input length
    max_target_words_mc: int = 30  # median gold option length (multiple choice)
    max_target_words_gen: int = 10  # median target length (generation)
    min_examples: int = 10


@dataclass
class MethodSpec:
    name: str
    label: str
    options: dict[str, Any] = field(default_factory=dict)
    seed: int | None = None
    group: str = ""  # label shared by the seeds of one method (random)
    align: dict[str, Any] | None = None  # insta-aligned: train the encoder if missing (AlignConfig options)


@dataclass
class ExperimentConfig:
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
    mixture: dict[str, Any] = field(default_factory=dict)
    model: str = "smollm2"
    train: dict[str, Any] = field(default_factory=dict)
    eval: dict[str, Any] = field(default_factory=dict)
    report: dict[str, Any] = field(default_factory=dict)
    p3_table: dict[str, Any] = field(default_factory=dict)
    keep_models: bool = False
    backend: str = "transformers"
    executor: str = "sequential"  # sequential | ray (insta.executors)
    raw: dict[str, Any] = field(default_factory=dict)

    @property
    def n_eval(self) -> int:
        return int(self.eval.get("n", 100))

    @property
    def n_total(self) -> int:
        return int(self.mixture.get("n_total", 100))


TOP_KEYS = {
    "name", "description", "data_dir", "out", "seed", "targets", "k", "methods", "include_base", "encoder",
    "target_samples", "library_size", "pool", "mixture", "model", "train", "eval", "report", "p3_table",
    "keep_models", "backend", "executor",
}
MIXTURE_KEYS = {"n_total", "dedup", "dedup_ngram", "max_scan", "seed"}
EVAL_OWN_KEYS = {"n", "seed"}
REPORT_KEYS = {"primary", "normalisation", "bootstrap", "confidence", "interval", "focus", "baselines", "seed"}
P3_KEYS = {"enabled", "k", "aligned_encoder", "encoder", "align"}
#: Training options the experiment sets itself (one output dir per model; no resume across configs).
TRAIN_RESERVED = {"model", "output_dir", "overwrite", "resume"}


def _fail(msg: str) -> InstaError:
    return InstaError(msg)


def _check_keys(section: str, given: dict, allowed: set[str]) -> None:
    unknown = sorted(set(given) - allowed)
    if unknown:
        import difflib

        hints = [f"{u} (did you mean {difflib.get_close_matches(u, allowed, 1)[0]}?)"
                 if difflib.get_close_matches(u, allowed, 1) else u for u in unknown]
        where = f"section {section!r}" if section else "the top level"
        raise _fail(f"unknown key(s) in {where} of the experiment config: {', '.join(hints)}")


def _get(section: dict[str, Any], key: str, default: Any, tp: Any, where: str = "",
         minimum: float | None = None) -> Any:
    """``section[key]`` (or ``default``), checked against the type ``tp`` (and ``minimum``) with a one-line error
    naming the key: ``seed: abc`` or ``include_base: "false"`` must fail at load time, not after the grid."""
    from .options import describe_type, value_matches

    value = section.get(key, default)
    name = f"{where}.{key}" if where else key
    if not value_matches(value, tp):
        raise _fail(f"{name} must be {describe_type(tp)} (got {value!r})")
    if minimum is not None and value is not None and value < minimum:
        raise _fail(f"{name} must be at least {minimum} (got {value!r})")
    return value


def _check_sections(raw: dict[str, Any]) -> None:
    """Types of the plain-valued keys of the top level and of ``mixture``, ``eval``, ``report``, ``p3_table``."""
    for key, default, tp in (("name", None, str | None), ("description", None, str | None),
                             ("data_dir", None, str | None), ("out", None, str | None), ("encoder", None, str | None),
                             ("model", "smollm2", str), ("include_base", True, bool), ("keep_models", False, bool)):
        _get(raw, key, default, tp)
    if isinstance(raw.get("model"), str) and not raw["model"].strip():
        raise _fail("model must be a non-empty string")
    _get(raw, "seed", 42, int)
    _get(raw, "library_size", 100, int, minimum=1)
    mixture = raw.get("mixture") or {}
    _get(mixture, "dedup", True, bool, "mixture")
    _get(mixture, "dedup_ngram", 8, int, "mixture", minimum=3)
    _get(mixture, "max_scan", None, int | None, "mixture", minimum=1)
    _get(mixture, "seed", 0, int, "mixture")
    _get(raw.get("eval") or {}, "seed", 0, int, "eval")
    report = raw.get("report") or {}
    _get(report, "bootstrap", 2000, int, "report", minimum=1)
    conf = _get(report, "confidence", 0.95, float, "report")
    if not 0 < conf < 1:
        raise _fail(f"report.confidence must be between 0 and 1 (got {conf!r})")
    interval = _get(report, "interval", "percentile", str, "report")
    from .report.stats import INTERVALS

    if interval not in INTERVALS:
        raise _fail(f"report.interval must be one of {', '.join(INTERVALS)} (got {interval!r})")
    _get(report, "primary", None, str | None, "report")
    _get(report, "focus", None, list[str] | None, "report")
    _get(report, "baselines", None, list[str] | None, "report")
    _get(report, "seed", 0, int, "report")
    p3 = raw.get("p3_table") or {}
    _get(p3, "enabled", False, bool, "p3_table")
    _get(p3, "k", 5, int, "p3_table", minimum=1)
    _get(p3, "aligned_encoder", None, str | None, "p3_table")
    _get(p3, "encoder", None, str | None, "p3_table")
    _get(p3, "align", None, dict | None, "p3_table")


def _method_specs(raw: Any, top: dict[str, Any]) -> list[MethodSpec]:
    if not isinstance(raw, list) or not raw:
        raise _fail("the experiment config needs a non-empty 'methods' list")
    specs: list[MethodSpec] = []
    for i, item in enumerate(raw):
        if isinstance(item, str):
            item = {"name": item}
        if not isinstance(item, dict) or not isinstance(item.get("name"), str):
            raise _fail(f"methods[{i}] must be a method name or a mapping with 'name'")
        opts = dict(item)
        name = opts.pop("name")
        label = opts.pop("label", None)
        align = opts.pop("align", None)
        seeds = opts.pop("seeds", None)
        if name == "base":
            raise _fail("'base' is not a selection method: the untrained model is evaluated when include_base is true")
        if name in SHARED_ENCODER_METHODS and top.get("encoder") and "encoder" not in opts:
            opts["encoder"] = top["encoder"]
        if name in METHODS and "source_instances" in METHODS[name].consumes and "library_size" not in opts \
                and top.get("library_size"):
            opts["library_size"] = top["library_size"]
        if name == "insta-aligned" and opts.get("encoder"):
            opts["encoder"] = str(Path(opts["encoder"]).expanduser())
        if name == "random":
            if seeds is None:
                seeds = [opts.pop("seed", 0)]
            if not isinstance(seeds, list) or not seeds or not all(isinstance(s, int) for s in seeds):
                raise _fail("random: 'seeds' must be a non-empty list of integers")
            for s in seeds:
                make_method(name, seed=s, **opts)  # validates the options
                specs.append(MethodSpec(name, f"{label or 'random'}-s{s}", {**opts, "seed": s}, seed=s,
                                        group=label or "random"))
            continue
        if seeds is not None:
            raise _fail(f"method {name!r} takes no 'seeds' (only random does)")
        make_method(name, **opts)  # unknown name or option: a clear error now
        lab = label or name
        specs.append(MethodSpec(name, lab, opts, group=lab, align=align))
    labels = [s.label for s in specs]
    dup = sorted({x for x in labels if labels.count(x) > 1})
    if dup:
        raise _fail(f"method label(s) used twice: {', '.join(dup)} (give each a distinct 'label')")
    return specs


def config_from_dict(raw: dict[str, Any], path: str = "") -> ExperimentConfig:
    """Check and convert a parsed YAML/JSON config (see ``configs/*.yaml``)."""
    if not isinstance(raw, dict):
        raise _fail("the experiment config must be a mapping")
    _check_keys("", raw, TOP_KEYS)
    targets = raw.get("targets")
    if not isinstance(targets, list) or not targets or not all(isinstance(t, str) and t for t in targets):
        raise _fail("the experiment config needs a non-empty 'targets' list of task ids (e.g. bbh:snarks)")
    if len(set(targets)) != len(targets):
        raise _fail("a target is listed twice")
    k = raw.get("k", 5)
    if not isinstance(k, int) or k < 1:
        raise _fail(f"k must be a positive integer (got {k!r})")
    pool_raw = raw.get("pool") or {}
    if not isinstance(pool_raw, dict):
        raise _fail("'pool' must be a mapping")
    _check_keys("pool", pool_raw, set(PoolConfig.__dataclass_fields__))
    pool = PoolConfig(**pool_raw)
    from .options import check_types

    check_types(pool, "pool")
    if pool.unit not in ("family", "task"):
        raise _fail(f"pool.unit must be 'family' or 'task' (got {pool.unit!r})")
    if pool.exclude_bbh_parents not in ("all", "targets", "none"):
        raise _fail("pool.exclude_bbh_parents must be all, targets or none")
    for sec, allowed in (("mixture", MIXTURE_KEYS), ("report", REPORT_KEYS), ("p3_table", P3_KEYS)):
        val = raw.get(sec) or {}
        if not isinstance(val, dict):
            raise _fail(f"'{sec}' must be a mapping")
        _check_keys(sec, val, allowed)
    _check_sections(raw)
    if (raw.get("report") or {}).get("normalisation", "char") not in ("char", "token"):
        raise _fail("report.normalisation must be char (lm-evaluation-harness's acc_norm) or token")
    mixture = dict(raw.get("mixture") or {})
    n_total = mixture.get("n_total", 100)
    if not isinstance(n_total, int) or n_total < 1:
        raise _fail(f"mixture.n_total must be a positive integer (got {n_total!r})")
    train = dict(raw.get("train") or {})
    evalc = dict(raw.get("eval") or {})
    backend = raw.get("backend", "transformers")
    if backend not in BACKENDS:
        raise _fail(f"unknown backend {backend!r} (choose from {', '.join(BACKENDS)})")
    from .executors import EXECUTORS

    executor = raw.get("executor", "sequential")
    if executor not in EXECUTORS:
        raise _fail(f"unknown executor {executor!r} (choose from {', '.join(EXECUTORS)})")
    _check_train_eval(train, evalc)
    n_eval = evalc.get("n", 100)
    if not isinstance(n_eval, int) or n_eval < 1:
        raise _fail(f"eval.n must be a positive integer (got {n_eval!r})")
    ts = raw.get("target_samples", 32)
    if not isinstance(ts, int) or ts < 1:
        raise _fail(f"target_samples must be a positive integer (got {ts!r})")
    cfg = ExperimentConfig(
        name=str(raw.get("name") or (Path(path).stem if path else "experiment")),
        targets=list(targets),
        methods=_method_specs(raw.get("methods"), raw),
        path=str(path),
        data_dir=raw.get("data_dir"),
        out=str(raw.get("out") or ""),
        seed=int(raw.get("seed", 42)),
        k=k,
        include_base=bool(raw.get("include_base", True)),
        encoder=raw.get("encoder"),
        target_samples=ts,
        library_size=int(raw.get("library_size", 100)),
        pool=pool,
        mixture=mixture,
        model=str(raw.get("model", "smollm2")),
        train=train,
        eval=evalc,
        report=dict(raw.get("report") or {}),
        p3_table=dict(raw.get("p3_table") or {}),
        keep_models=bool(raw.get("keep_models", False)),
        backend=backend,
        executor=executor,
        raw=raw,
    )
    if not cfg.out:
        cfg.out = str(Path("experiments") / cfg.name)
    for spec in cfg.methods:
        if spec.name == "insta-aligned":
            enc = spec.options.get("encoder")
            if not Path(enc).is_dir() and spec.align is None:
                raise _fail(f"insta-aligned: encoder directory {enc!r} does not exist; train it with `insta align` "
                            "or add 'align: {...}' to the method to have the experiment train it first")
    return cfg


def _check_train_eval(train: dict, evalc: dict) -> None:
    from dataclasses import fields

    from .options import check_types

    try:
        from .train import TrainConfig
    except ImportError:  # pragma: no cover - the train stage ships with insta
        TrainConfig = None
    try:
        from .evaluate import EvalConfig
    except ImportError:  # pragma: no cover
        EvalConfig = None
    if TrainConfig is not None:
        allowed = {f.name for f in fields(TrainConfig)} - TRAIN_RESERVED
        _check_keys("train", train, allowed)
        try:
            tc = TrainConfig(**train)
        except TypeError as err:
            raise _fail(f"train: {err}") from None
        check_types(tc, "train")
        tc.validate()
    if EvalConfig is not None:
        allowed = {f.name for f in fields(EvalConfig)} | EVAL_OWN_KEYS
        _check_keys("eval", evalc, allowed - {"limit", "limit_per_template"})
        opts = {k: v for k, v in evalc.items() if k not in EVAL_OWN_KEYS}
        if "stop" in opts:
            opts["stop"] = tuple(opts["stop"])
        try:
            ec = EvalConfig(**opts)
        except TypeError as err:
            raise _fail(f"eval: {err}") from None
        check_types(ec, "eval")
        ec.validate()


def load_config(path: str | os.PathLike, overrides: dict[str, Any] | None = None,
                only_methods: Sequence[str] | None = None) -> ExperimentConfig:
    """Read an experiment YAML (or JSON) file.

    ``overrides`` replace keys (``None`` values are ignored); a dotted key sets a nested one (``"eval.n": 10``).
    ``only_methods`` keeps the listed methods (by name or label) and drops the others.
    """
    from .fileio import load_yaml
    from .options import set_dotted

    p = Path(path)
    if not p.is_file():
        raise _fail(f"experiment config {str(p)!r} does not exist")
    raw = load_yaml(p, "experiment config")
    if isinstance(raw, dict):
        set_dotted(raw, overrides)
        if only_methods:
            wanted = set(only_methods)
            methods = raw.get("methods") or []
            kept = [m for m in methods if (m if isinstance(m, str) else m.get("name")) in wanted
                    or (isinstance(m, dict) and m.get("label") in wanted)]
            names = {m if isinstance(m, str) else m.get("name") for m in methods} | {
                m.get("label") for m in methods if isinstance(m, dict)}
            unknown = sorted(wanted - names)
            if unknown:
                raise _fail(f"--methods names method(s) not in the config: {', '.join(unknown)}")
            raw["methods"] = kept
    return config_from_dict(raw, str(p))

"""Matrix v2's mixtures experiment (issue #22 item 6) derived from the v2 transfer config, nothing set by hand.

The pre-registered design (``experiments/transfer-v2-bigbench-smollm2/PREREGISTRATION.md``, last decision rule):
for the first ``targets`` v2 targets (the frozen decision's order, ``<v2 out>/targets.json``), the top-``k``
mixtures of insta-mean, the best listed variant (:func:`choose_variant`), roe and random (seed ``random_seed``),
each trained at v2's per-source budget x ``k`` and evaluated on v2's own evaluation examples of the target.

:func:`derive_design` reads everything from matrix v2 (a prepared :class:`~insta.transfer.runner.TransferRun`
after its target decision, its ``matrix.json`` and its method scoring) and returns the comparison grid's config as
plain data (:attr:`MixturesDesign.grid`): pool = v2's sources (``pool.include``), evaluation examples = the
matrix's (``eval_ids``), RoE's target inputs drawn as v2's scoring drew them (``samples_seed``), v2's training
and evaluation options, ``mixture.n_total`` = ``k`` x v2's ``instances``. The grid itself runs it (``insta
transfer CONFIG`` on this config, :mod:`insta.commands._mixtures`), and :mod:`.mixtures_analysis` compares the
order the matrix predicts with the measured one.
"""
from __future__ import annotations

import dataclasses
import math
import os
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from ..errors import InstaError
from ..util.options import check_keys, checked

PREFIX = "mixtures config: "
#: the score and the reference of the pre-registered decision rule
RULE_SCORE, RULE_REFERENCE = "ndcg_linear", "insta-mean"
#: methods that hold their own slot of the experiment, or form no top-k mixture: never "the best variant"
NOT_A_VARIANT = ("insta-mean", "roe", "random", "all")


@dataclass
class MixturesConfig:
    """The experiment's own settings (see ``configs/mixtures-v2-bigbench-smollm2.yaml``); everything else is v2's."""

    from_transfer: str
    methods: str  # v2's pre-registered methods file (methods.yaml): the specs of insta-mean, the variant and roe
    name: str = "mixtures"
    out: str = ""
    path: str = ""
    data_dir: str | None = None
    scoring: str | None = None  # v2's method scoring (JSON); None: <v2 out>/results.json's "scoring"
    targets: int = field(default=6, metadata={"minimum": 1})  # the first this many v2 targets
    k: int = field(default=5, metadata={"minimum": 1})
    variant: str = "rule"  # rule (pre-registered) | a label of the methods file (then reported as chosen by hand)
    random_seed: int = 0
    bootstrap: int = field(default=10000, metadata={"minimum": 1})
    seed: int = 0  # of the bootstrap over targets and examples
    executor: str | None = None  # None: v2's
    keep_models: bool = False
    backend: str | None = None  # None: v2's


KEYS = {f.name for f in dataclasses.fields(MixturesConfig)} - {"path"} | {"description"}


def is_mixtures_config(path: str | os.PathLike) -> bool:
    """Whether the YAML at ``path`` is a mixtures config (it names ``from_transfer``)."""
    from ..util.fileio import load_yaml

    try:
        raw = load_yaml(path, "config")
    except InstaError:
        return False
    return isinstance(raw, dict) and "from_transfer" in raw


def load_mixtures_config(path: str | os.PathLike, overrides: dict[str, Any] | None = None) -> MixturesConfig:
    """Read and check a mixtures config; ``overrides`` (``None`` values ignored) win over the file."""
    from ..util.fileio import load_yaml

    raw = load_yaml(path, "mixtures config")
    if not isinstance(raw, dict):
        raise InstaError(PREFIX + "must be a mapping")
    raw = {**raw, **{k: v for k, v in (overrides or {}).items() if v is not None}}
    check_keys(raw, KEYS, "the top level", PREFIX)
    types = typing.get_type_hints(MixturesConfig)
    minimum = {f.name: f.metadata.get("minimum") for f in dataclasses.fields(MixturesConfig)}
    values = {key: checked(value, types[key], key, minimum=minimum[key], prefix=PREFIX)
              for key, value in raw.items() if key != "description"}
    for key in ("from_transfer", "methods"):
        if not values.get(key):
            raise InstaError(f"{PREFIX}'{key}' is required (see configs/mixtures-v2-bigbench-smollm2.yaml)")
    name = values.get("name") or Path(path).stem
    return MixturesConfig(**{**values, "name": name, "out": values.get("out") or str(Path("experiments") / name),
                             "path": str(path)})


# ---------------------------------------------------------------- the variant


def read_scoring(path: str | os.PathLike) -> dict[str, Any]:
    """v2's method scoring: ``results.json`` of ``insta transfer`` (its ``scoring``) or the JSON of ``insta
    eval-selection --transfer``; one error line when there is none yet."""
    from ..util.fileio import parse_json, read_text

    p = Path(path)
    if not p.is_file():
        raise InstaError(f"matrix v2 is not scored yet: {p} does not exist (score it with `insta transfer CONFIG "
                         "--report-only` or `insta eval-selection --transfer ... --json`, then set 'scoring')")
    data = parse_json(read_text(p, "v2 scoring"), str(p))
    if isinstance(data, dict) and isinstance(data.get("scoring"), dict):
        data = data["scoring"]
    if not isinstance(data, dict) or not isinstance(data.get("summary"), dict) or not isinstance(
            data.get("paired"), dict):
        why = data.get("scoring_skipped") if isinstance(data, dict) else None
        raise InstaError(f"matrix v2 is not scored yet: {p} holds no method scoring"
                         + (f" ({why})" if why else ""))
    return data


def _mean(row: dict[str, Any] | None) -> float:
    v = (row or {}).get("mean")
    return float(v) if isinstance(v, (int, float)) and math.isfinite(v) else -math.inf


def choose_variant(scoring: dict[str, Any], listed: list[str]) -> dict[str, Any]:
    """The pre-registered rule on v2's scoring: among the listed methods that are not in a slot of their own
    (:data:`NOT_A_VARIANT`), those whose paired 95% CI of linear-gain NDCG minus insta-mean's is above 0; the one
    with the highest mean; none passing: the highest mean of all candidates (ties: the earlier in the file)."""
    summary, paired = scoring["summary"], scoring["paired"]
    candidates = [lab for lab in listed if lab not in NOT_A_VARIANT]
    if not candidates:
        raise InstaError(f"{PREFIX}the methods file lists no variant besides {', '.join(NOT_A_VARIANT)}")
    unscored = [lab for lab in candidates + [RULE_REFERENCE] if lab not in summary]
    if unscored:
        raise InstaError(f"v2's scoring has no row for pre-registered method(s) {', '.join(unscored)}: score v2 with "
                         "the methods file (`insta eval-selection --transfer <v2 matrix.json> --metric margin_z "
                         "--methods <methods file> --json FILE`) and name FILE in the config's 'scoring'")
    rows = []
    for lab in candidates:
        diff = (paired.get(f"{lab} - {RULE_REFERENCE}") or {}).get(RULE_SCORE) or {}
        lo = diff.get("lo")
        rows.append({"label": lab, "mean": summary[lab].get(RULE_SCORE, {}).get("mean"), "diff": diff.get("mean"),
                     "lo": lo, "hi": diff.get("hi"),
                     "passes": isinstance(lo, (int, float)) and math.isfinite(lo) and lo > 0})
    passing = [r for r in rows if r["passes"]]
    pick = max(passing or rows, key=lambda r: (_mean(summary[r["label"]].get(RULE_SCORE)), -rows.index(r)))
    return {"label": pick["label"], "by": "rule: beats insta-mean" if passing else "rule: none beats insta-mean, "
            "best by mean", "score": RULE_SCORE, "candidates": rows,
            "reference_mean": summary[RULE_REFERENCE].get(RULE_SCORE, {}).get("mean")}


# ---------------------------------------------------------------- the design


@dataclass
class MixturesDesign:
    """Everything the experiment reads from matrix v2, and the grid config it runs (plain data)."""

    cfg: MixturesConfig
    v2: Any  # the prepared TransferRun of v2 (after its target decision)
    matrix: Any  # v2's TransferMatrix
    targets: list[str]
    variant: dict[str, Any]
    slots: list[dict[str, str]]  # [{"label", "role"}] in the report's order
    grid: dict[str, Any]
    oracle: dict[str, Any] | None = None
    notes: list[str] = field(default_factory=list)


def _v2_targets(v2: Any, n: int, matrix: Any) -> list[str]:
    """The first ``n`` v2 targets in the frozen decision's order; each must be a target of the matrix."""
    d = v2.target_decision
    if d is not None and not d.get("frozen"):
        raise InstaError(f"matrix v2 has not frozen its targets ({v2.out / 'targets.json'} of this configuration "
                         "is missing): run matrix v2 first")
    targets = [t.id for t in v2.targets][:n]
    missing = [t for t in targets if t not in matrix.targets]
    if missing:
        raise InstaError(f"target(s) {', '.join(missing)} of v2 are missing from v2's matrix "
                         f"({v2.out / 'matrix.json'})")
    return targets


def _eval_ids(v2: Any, matrix: Any, targets: list[str]) -> dict[str, list[str]]:
    """The matrix's evaluation examples of each target (v2's run must give the same ones)."""
    meta_ids = (matrix.meta or {}).get("eval_ids") or {}
    by_target = {t.id: [ex.id for ex in t.eval_examples] for t in v2.targets}
    out = {}
    for t in targets:
        ids = meta_ids.get(t) or by_target[t]
        if sorted(ids) != sorted(by_target[t]):
            raise InstaError(f"v2's matrix evaluated {t} on other examples than v2's config gives: the matrix was "
                             "made by another configuration")
        out[t] = list(ids)
    return out


def _method_items(methods: list[tuple[str, str, dict[str, Any]]], variant: str, random_seed: int
                  ) -> tuple[list[Any], list[dict[str, str]]]:
    """The grid's ``methods`` list and the report's slots: insta-mean, the variant, roe, random."""
    by_label = {lab: (name, opts) for lab, name, opts in methods}
    for lab in (RULE_REFERENCE, "roe", variant):
        if lab not in by_label:
            raise InstaError(f"{PREFIX}the methods file has no method labelled {lab!r}")
    items = [{"name": by_label[lab][0], "label": lab, **by_label[lab][1]} for lab in (RULE_REFERENCE, variant, "roe")]
    items.append({"name": "random", "label": "random", "seeds": [random_seed]})
    slots = [{"label": RULE_REFERENCE, "role": "insta-mean"}, {"label": variant, "role": "variant"},
             {"label": "roe", "role": "roe"}, {"label": f"random-s{random_seed}", "role": "random"}]
    return items, slots


def _grid_config(cfg: MixturesConfig, v2: Any, targets: list[str], eval_ids: dict[str, list[str]],
                 items: list[Any]) -> dict[str, Any]:
    """The comparison grid's config: v2's pool limited to its sources, examples, options and budget."""
    v = v2.cfg
    sc = v.scoring
    return {
        "name": cfg.name, "out": cfg.out, "data_dir": cfg.data_dir or v.data_dir, "seed": v.seed,
        "targets": targets, "eval_ids": eval_ids, "samples_seed": v.seed if sc.seed is None else sc.seed,
        "k": cfg.k, "methods": items, "include_base": True, "encoder": v.encoder,
        "target_samples": sc.target_samples, "library_size": sc.library_size,
        "pool": {**dataclasses.asdict(v.pool), "include": list(v2.sources)},
        "mixture": {"n_total": cfg.k * v.instances},
        "model": v.model, "train": {**v.key_options("train"), "seed": v.seeds[0]}, "eval": v.key_options("eval"),
        "backend": cfg.backend or v.backend, "executor": cfg.executor or v.executor, "keep_models": cfg.keep_models,
    }


def derive_design(cfg: MixturesConfig, *, log: Callable[[str], None] = lambda m: None, backend: Any = None,
                  catalogs: dict | None = None) -> MixturesDesign:
    """Read matrix v2 (config, frozen targets, matrix, scoring) and derive the experiment (see the module
    docstring); one error line for whatever v2 does not have yet."""
    from ..evaluators.methods_vs_matrix import read_method_specs, with_encoder
    from ..matrix import read_matrix
    from .config import load_transfer_config
    from .runner import TransferRun

    v2cfg = load_transfer_config(cfg.from_transfer, {"data_dir": cfg.data_dir} if cfg.data_dir else None)
    matrix_path = Path(v2cfg.out) / "matrix.json"
    if not matrix_path.is_file():
        raise InstaError(f"matrix v2 has no matrix yet ({matrix_path}): run `insta transfer {cfg.from_transfer}` first")
    matrix = read_matrix(matrix_path, metric="margin_z")
    scoring = read_scoring(cfg.scoring or Path(v2cfg.out) / "results.json")
    if scoring.get("metric") != "margin_z":
        raise InstaError(f"v2's scoring is on {scoring.get('metric')!r}: the pre-registered rule reads margin_z "
                         "(score v2 with --metric margin_z)")
    v2 = TransferRun(v2cfg, log=log, backend=backend, catalogs=catalogs)
    v2.prepare()
    if set(matrix.sources) != set(v2.sources):
        differ = len(set(matrix.sources) ^ set(v2.sources))
        raise InstaError(f"v2's matrix has other sources than v2's config chooses ({differ} differ): the matrix was "
                         "made by another configuration")
    targets = _v2_targets(v2, cfg.targets, matrix)
    methods = with_encoder(read_method_specs(cfg.methods), v2cfg.scoring.encoder)
    labels = [lab for lab, _, _ in methods]
    if cfg.variant == "rule":
        variant = choose_variant(scoring, labels)
    else:
        if cfg.variant not in labels or cfg.variant in NOT_A_VARIANT:
            raise InstaError(f"{PREFIX}variant {cfg.variant!r} is not a variant of {cfg.methods}")
        variant = {"label": cfg.variant, "by": "chosen by hand in the config (not the pre-registered rule)"}
    items, slots = _method_items(methods, variant["label"], cfg.random_seed)
    grid = _grid_config(cfg, v2, targets, _eval_ids(v2, matrix, targets), items)
    oracle = None
    if v2cfg.screen is not None:
        from .v2_targets import oracle_reference

        oracle = oracle_reference(v2cfg.screen, [t for t in v2.targets if t.id in targets], v2cfg.model)
    notes = [f"v2 has {len(targets)} target(s), fewer than the {cfg.targets} asked for: all are used"
             ] if len(targets) < cfg.targets else []
    return MixturesDesign(cfg, v2, matrix, targets, variant, slots, grid, oracle, notes)


__all__ = ["MixturesConfig", "MixturesDesign", "choose_variant", "derive_design", "is_mixtures_config",
           "load_mixtures_config", "read_scoring"]

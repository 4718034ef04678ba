"""Every selection method ranks a transfer matrix's sources for each of its targets, then gets scored.

What each method may see is what it would see in practice: INSTA variants and lexical BM25 read the target's
instructions; RoE and DSIR read ``target_samples`` unlabelled target inputs (never the matrix's evaluation
examples when the matrix says which those were), drawn with the recorded ``seed``, so one matrix gives one number
everywhere; ``random`` and ``all`` read nothing. The scores, the random fill of a target a method cannot score,
and the paired differences are :func:`insta.matrix.scoring.score_rankings`'s.
"""
from __future__ import annotations

from typing import Any, Callable, Sequence

from ..catalogs.base import Catalog
from ..errors import InstaError
from ..methods import unlabelled_samples  # noqa: F401  (was defined here)
from ..selection import leakage_guard, ranking_scores
from ..matrix.cells import METRICS, PRIMARY
from ..matrix.matrix import TransferMatrix, reliability
from ..matrix.scoring import REFERENCE_METHODS, score_rankings

#: (label, method name, options): the methods scored by default
DEFAULT_METHODS: list[tuple[str, str, dict[str, Any]]] = [
    ("insta-mean", "insta-mean", {}),
    ("insta-max", "insta-mean", {"aggregation": "max"}),
    ("insta-topk-vote", "insta-topk-vote", {}),
    ("insta-format", "insta-format", {}),  # beyond the paper: instructions + the task's output space
    ("hybrid", "hybrid", {}),  # beyond the paper: instructions + unlabelled target inputs
    ("lexical", "lexical", {}),
    ("roe", "roe", {}),
    ("dsir", "dsir", {}),
    ("all", "all", {}),
]


def with_encoder(methods: Sequence[tuple[str, str, dict[str, Any]]], encoder: str | None
                 ) -> list[tuple[str, str, dict[str, Any]]]:
    """The methods with ``encoder`` as the sentence encoder of INSTA (base) and RoE."""
    if not encoder:
        return list(methods)
    with_encoder = ("insta-mean", "insta-topk-vote", "insta-format", "hybrid", "roe")
    return [(lab, name, {**opts, "encoder": encoder} if name in with_encoder else opts)
            for lab, name, opts in methods]


def aligned_methods(encoder: str) -> list[tuple[str, str, dict[str, Any]]]:
    """INSTA-aligned with each aggregation, for an encoder directory written by ``insta align``."""
    return [("insta-aligned-mean", "insta-aligned", {"encoder": encoder, "aggregation": "mean"}),
            ("insta-aligned-max", "insta-aligned", {"encoder": encoder, "aggregation": "max"}),
            ("insta-aligned-topk-vote", "insta-aligned", {"encoder": encoder, "aggregation": "topk-vote"})]


def parse_method_specs(raw: Any, where: str = "methods", build: bool = True) -> list[tuple[str, str, dict[str, Any]]]:
    """Method specs from data: a list whose items are a method name or ``{method, label, options}``.

    ``label`` defaults to the method name; labels must be unique (they name the table's rows). Each spec is
    built once here, so an unknown method or option fails when the list is read, not after the ranking starts;
    ``build=False`` checks the names and the list's shape only (for a list whose options name files a run writes
    before it scores, such as its own matrix).
    """
    from ..methods import METHODS, load_method

    if not isinstance(raw, list) or not raw:
        raise InstaError(f"{where}: expected a non-empty list of methods (names or {{method, label, options}})")
    specs: list[tuple[str, str, dict[str, Any]]] = []
    for i, item in enumerate(raw):
        if isinstance(item, str):
            item = {"method": item}
        if not isinstance(item, dict) or not isinstance(item.get("method"), str):
            raise InstaError(f"{where}[{i}]: expected a method name or a mapping with a 'method' name")
        unknown = set(item) - {"method", "label", "options"}
        if unknown:
            raise InstaError(f"{where}[{i}]: unknown key(s) {', '.join(sorted(map(str, unknown)))} "
                             "(allowed: method, label, options)")
        label = item.get("label", item["method"])
        options = item.get("options") or {}
        if not isinstance(label, str) or not label.strip():
            raise InstaError(f"{where}[{i}]: label must be a non-empty string")
        if not isinstance(options, dict) or not all(isinstance(k, str) for k in options):
            raise InstaError(f"{where}[{i}] ({label}): options must be a mapping of option names to values")
        if any(label == s[0] for s in specs):
            raise InstaError(f"{where}[{i}]: label {label!r} is used twice")
        if not build and item["method"] not in METHODS:
            raise InstaError(f"{where}[{i}]: unknown selection method {item['method']!r}")
        if build:
            try:
                load_method(item["method"], label=label, **options)
            except InstaError as err:
                raise InstaError(f"{where}[{i}] ({label}): {err}") from None
        specs.append((label, item["method"], dict(options)))
    return specs


def read_method_specs(path: str, build: bool = True) -> list[tuple[str, str, dict[str, Any]]]:
    """Method specs from a YAML or JSON file (a list, or a mapping with a ``methods`` list)."""
    import yaml

    from ..util.fileio import check_aliases

    try:
        with open(path, encoding="utf-8") as f:
            text = f.read()
        raw = check_aliases(yaml.safe_load(text), text, f"methods file {path}")
    except OSError as err:
        raise InstaError(f"cannot read methods file {path}: {err.strerror or err}") from None
    except yaml.YAMLError as err:
        raise InstaError(f"methods file {path} is not valid YAML/JSON ({type(err).__name__})") from None
    if isinstance(raw, dict) and set(raw) == {"methods"}:
        raw = raw["methods"]
    return parse_method_specs(raw, where=str(path), build=build)


def method_specs(value: list[Any] | str, where: str = "methods", build: bool = True
                 ) -> list[tuple[str, str, dict[str, Any]]]:
    """Method specs given inline (a list, :func:`parse_method_specs`) or as the path of a methods file
    (:func:`read_method_specs`), as a config's ``scoring.methods`` may give them."""
    if isinstance(value, str):
        return read_method_specs(value, build=build)
    return parse_method_specs(value, where, build=build)


def _source_pool(matrix: TransferMatrix, catalogs: Callable[[str], Catalog], source_catalog: str | None,
                 unit: str | None) -> tuple[Catalog, str, str]:
    """The matrix's sources as a catalog (families merged for ``unit: family``), its catalog name and unit."""
    from ..engine.pool import merge_families

    meta = matrix.meta or {}
    cat_name = source_catalog or meta.get("source_catalog")
    if not cat_name:
        raise InstaError("the matrix does not say which catalog its sources come from: pass --catalog")
    unit = unit or meta.get("unit") or "task"
    source = catalogs(cat_name)
    if unit == "family":
        source = merge_families(source, source.name)
    missing = [s for s in matrix.sources if s not in source]
    if missing:
        raise InstaError(f"{len(missing)} source(s) of the matrix are not tasks of catalog {cat_name!r} "
                         f"(unit {unit}): {', '.join(missing[:5])}")
    return Catalog(source.name, [source.get(s) for s in matrix.sources]), cat_name, unit


def _matrix_metric(matrix: TransferMatrix, metric: str) -> str:
    """``metric`` if the matrix has it, else its only metric; an error when it has several others."""
    names = matrix.metrics
    if metric in names:
        return metric
    if len(names) == 1:
        return names[0]
    raise InstaError(f"the matrix has no metric {metric!r} (it has: {', '.join(names)})")


def _scored_targets(matrix: TransferMatrix, rel: dict[str, dict[str, Any]], include_unreliable: bool
                    ) -> tuple[list[str], dict[str, str]]:
    """The targets methods are scored on, and the ones left out because their seeds disagree (with why)."""
    kept, left_out = [], {}
    for t in matrix.targets:
        r = rel[t]
        if r["n_seeds"] >= 2 and not r["reliable"] and not include_unreliable:
            left_out[t] = r["why"]
        else:
            kept.append(t)
    if not kept:
        raise InstaError("no target of the matrix is reliable enough to score methods on "
                         "(pass --include-unreliable to score them anyway)")
    return kept, left_out


# long: a wide signature and its docstring; one pass over methods and targets
def evaluate_methods_on_matrix(
    matrix: TransferMatrix,
    catalogs: Callable[[str], Catalog],
    *,
    source_catalog: str | None = None,
    unit: str | None = None,
    metric: str = PRIMARY,
    methods: Sequence[tuple[str, str, dict[str, Any]]] | None = None,
    k: int = 5,
    target_samples: int = 32,
    library_size: int = 50,
    reliability_min: float = 0.5,
    include_unreliable: bool = False,
    draws: int = 1000,
    n_boot: int = 10000,
    seed: int = 0,
    references: Sequence[str] = REFERENCE_METHODS,
    log: Callable[[str], None] = lambda m: None,
) -> dict[str, Any]:
    """Rank the matrix's sources with every method for every (reliable) target and score the rankings.

    ``seed`` draws the unlabelled target inputs, the random permutations and the bootstrap resamples (the same
    seed, the same JSON). A target's relatives among the sources (the leakage guard) are left out of its gold for
    every method alike (``sources_left_out``); a target with fewer than 2 sources left is not scored.
    ``references`` names the methods the tables compare every method with."""
    from ..engine.pool import parse_target
    from ..methods import load_method

    meta = matrix.meta or {}
    pool, cat_name, unit = _source_pool(matrix, catalogs, source_catalog, unit)
    metric = _matrix_metric(matrix, metric)
    rel = reliability(matrix, metric, reliability_min)
    kept, left_out = _scored_targets(matrix, rel, include_unreliable)
    specs = list(methods or DEFAULT_METHODS)
    built = {}
    for label, name, opts in specs:
        if name in ("roe", "dsir", "hybrid") and "library_size" not in opts:
            opts = {**opts, "library_size": library_size}
        if name in ("prior-transfer", "popular-source") and "catalogs" not in opts:
            opts = {**opts, "catalogs": catalogs}  # its prior matrix's targets come from the same catalogs
        built[label] = load_method(name, label=label, **opts)
    higher = METRICS.get(metric, True)
    gold, perf, scores = {}, {}, {lab: {} for lab in built}
    eval_ids = meta.get("eval_ids") or {}
    guarded: dict[str, list[str]] = {}
    sample_ids: dict[str, list[str]] = {}
    for t in list(kept):
        cat, tid = parse_target(t, cat_name) if ":" in t else (cat_name, t)
        task = catalogs(cat).get(tid)
        gone = set(leakage_guard(pool, task))
        gold[t] = {s: v for s, v in matrix.mean_transfer(t, metric).items() if s not in gone}
        if len(gold[t]) < 2:
            del gold[t]
            kept.remove(t)
            left_out[t] = "fewer than 2 sources besides its own relatives"
            continue
        if gone:
            guarded[t] = sorted(gone)
        values: dict[str, list[float]] = {}
        for r in matrix.rows:
            if r["target"] == t and r["metric"] == metric and r.get("value") is not None:
                values.setdefault(r["source"], []).append(float(r["value"]))
        perf[t] = {s: (sum(v) / len(v)) * (1 if higher else -1) for s, v in values.items()}
        samples = unlabelled_samples(task, target_samples, set(eval_ids.get(t, [])), seed)
        sample_ids[t] = [ex.id for ex in samples]
        for label, m in built.items():
            if "target_samples" in m.consumes and not samples:
                log(f"{label}: no unlabelled instances of {t}: given random's expectation there")
                continue
            scores[label][t] = ranking_scores(m, task, pool, samples)
        log(f"ranked {len(pool)} sources for {t} with {len(built)} method(s)")
    if not kept:
        raise InstaError("no target of the matrix has 2 or more sources besides its own relatives to score")
    result = score_rankings(gold, perf, scores, k=k, draws=draws, n_boot=n_boot, seed=seed)
    result.update({"metric": metric, "reliability": rel, "targets_scored": kept, "targets_left_out": left_out,
                   "sources_left_out": guarded, "references": [r for r in references if r in result["summary"]],
                   "n_sources": len(pool), "source_catalog": cat_name, "unit": unit,
                   "methods": [{"label": lab, "method": m.name, "consumes": list(m.consumes),
                                "params": m.params()} for lab, m in built.items()]
                              + [{"label": "random", "method": "random", "consumes": ["seed"],
                                  "params": {"draws": draws}}],
                   "target_samples": target_samples, "target_sample_ids": sample_ids})
    return result

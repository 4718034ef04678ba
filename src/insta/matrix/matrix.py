"""The transfer matrix as data: long-format rows, CSV/JSON files, per-target reliability and noise figures.

One row per (target, source, seed, metric): ``value`` (the model trained on the source), ``base_value`` (the
untrained model on the same examples) and ``transfer`` (the improvement: ``base - value`` for a loss such as
``nll_per_token``, ``value - base`` for an accuracy), so higher transfer is always better. pandas reads the CSV
directly (``pd.read_csv``); a matrix from a published study needs only ``target, source, transfer`` (or
``value`` and ``base_value``) to be scored by ``insta eval-selection --transfer``.
"""
from __future__ import annotations

import csv
import io
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Sequence

import numpy as np

from ..errors import InstaError
from .cells import METRICS, PRIMARY, per_example

COLUMNS = ("target", "source", "seed", "metric", "value", "base_value", "transfer")


@dataclass
class TransferMatrix:
    """Long-format transfer rows plus what produced them (``meta``: catalogs, unit, model, config)."""

    rows: list[dict[str, Any]]
    meta: dict[str, Any] = field(default_factory=dict)

    @property
    def targets(self) -> list[str]:
        return list(dict.fromkeys(r["target"] for r in self.rows))

    @property
    def sources(self) -> list[str]:
        return list(dict.fromkeys(r["source"] for r in self.rows))

    @property
    def metrics(self) -> list[str]:
        return list(dict.fromkeys(r["metric"] for r in self.rows))

    def seeds(self, metric: str | None = None) -> list[Any]:
        return list(dict.fromkeys(r["seed"] for r in self.rows if metric is None or r["metric"] == metric))

    def per_seed(self, target: str, metric: str) -> dict[Any, dict[str, float]]:
        """seed -> source -> transfer, for one target and metric."""
        out: dict[Any, dict[str, float]] = {}
        for r in self.rows:
            if r["target"] == target and r["metric"] == metric and _finite(r["transfer"]):
                out.setdefault(r["seed"], {})[r["source"]] = float(r["transfer"])
        return out

    def mean_transfer(self, target: str, metric: str = PRIMARY) -> dict[str, float]:
        """source -> transfer averaged over seeds (the gold relevance of selection scoring)."""
        acc: dict[str, list[float]] = {}
        for by_src in self.per_seed(target, metric).values():
            for s, v in by_src.items():
                acc.setdefault(s, []).append(v)
        return {s: float(np.mean(v)) for s, v in acc.items()}

    # -- files
    def to_csv(self) -> str:
        buf = io.StringIO()
        w = csv.DictWriter(buf, fieldnames=COLUMNS, lineterminator="\n")
        w.writeheader()
        for r in self.rows:
            w.writerow({k: _fmt(r.get(k)) for k in COLUMNS})
        return buf.getvalue()

    def to_dict(self) -> dict[str, Any]:
        return {"meta": self.meta, "columns": list(COLUMNS), "rows": self.rows}


def _finite(x: Any) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x)


def _fmt(x: Any) -> Any:
    if x is None:
        return ""
    if isinstance(x, float):
        return f"{x:.6g}"
    return x


def transfer_value(metric: str, value: float, base: float) -> float:
    """Improvement over the base model, signed so that higher is better."""
    higher_better = METRICS.get(metric, True)
    return (value - base) if higher_better else (base - value)


def matrix_from_cells(cells: Iterable[dict[str, Any]], base_cells: dict[str, dict[str, Any]],
                      meta: dict[str, Any] | None = None) -> TransferMatrix:
    """Rows for every (source, seed) cell whose target has a base-model cell."""
    rows = []
    for c in cells:
        base = base_cells.get(c["target"])
        if base is None or c.get("source") is None:
            continue
        for metric in METRICS:
            v, b = c["metrics"].get(metric), base["metrics"].get(metric)
            if not (_finite(v) and _finite(b)):
                continue
            rows.append({"target": c["target"], "source": c["source"], "seed": c["seed"], "metric": metric,
                         "value": round(float(v), 6), "base_value": round(float(b), 6),
                         "transfer": round(transfer_value(metric, float(v), float(b)), 6)})
    rows.sort(key=lambda r: (r["target"], r["metric"], r["source"], str(r["seed"])))
    return TransferMatrix(rows, dict(meta or {}))


# ---------------------------------------------------------------- reading a user's matrix


def read_matrix(path: str | Path, metric: str | None = None) -> TransferMatrix:
    """A matrix from a CSV or JSON file in the long format (see the module docstring); one clear error if not.

    Needed columns: ``target``, ``source`` and ``transfer`` (or ``value`` + ``base_value``, with ``metric``
    saying whether higher is better). ``seed`` and ``metric`` are optional (one seed / one metric).
    """
    from ..util.fileio import parse_json, read_text

    p = Path(path)
    text = read_text(p, "transfer matrix")
    meta: dict[str, Any] = {}
    if p.suffix == ".json":
        data = parse_json(text, f"transfer matrix {p}")
        if isinstance(data, dict):
            meta = data.get("meta") if isinstance(data.get("meta"), dict) else {}
            data = data.get("rows")
        if not isinstance(data, list) or not all(isinstance(r, dict) for r in data):
            raise InstaError(f"transfer matrix {p}: expected a list of row objects (or {{'rows': [...]}})")
        raw_rows = data
    else:
        try:
            raw_rows = list(csv.DictReader(io.StringIO(text)))
        except csv.Error as err:
            raise InstaError(f"transfer matrix {p}: malformed CSV ({err})") from None
    rows = [_row(r, i, p) for i, r in enumerate(raw_rows, start=2 if p.suffix != ".json" else 0)]
    if not rows:
        raise InstaError(f"transfer matrix {p} holds no rows")
    m = TransferMatrix(rows, meta)
    if metric is not None and metric not in m.metrics:
        raise InstaError(f"transfer matrix {p} has no metric {metric!r} (it has: {', '.join(m.metrics)})")
    seen = set()
    for r in rows:
        key = (r["target"], r["source"], str(r["seed"]), r["metric"])
        if key in seen:
            raise InstaError(f"transfer matrix {p}: duplicate row for target {r['target']!r}, source "
                             f"{r['source']!r}, seed {r['seed']!r}, metric {r['metric']!r}")
        seen.add(key)
    return m


def _num(x: Any, what: str, where: str) -> float | None:
    if x is None or x == "":
        return None
    try:
        v = float(x)
    except (TypeError, ValueError):
        raise InstaError(f"{where}: {what} is not a number ({x!r})") from None
    if not math.isfinite(v):
        raise InstaError(f"{where}: {what} is not finite ({x!r})")
    if abs(v) > MAX_VALUE:
        raise InstaError(f"{where}: {what} {x!r} is beyond +-{MAX_VALUE:g}: the reliability and the confidence "
                         "intervals square these values, which would overflow; rescale the matrix")
    return v


#: the largest magnitude a matrix value may have: its square (in variances and correlations) stays finite
MAX_VALUE = 1e150


def _row(r: dict[str, Any], i: int, p: Path) -> dict[str, Any]:
    where = f"transfer matrix {p}, {'line' if p.suffix != '.json' else 'row'} {i}"
    for col in ("target", "source"):
        if not isinstance(r.get(col), str) or not r[col].strip():
            raise InstaError(f"{where}: missing {col!r} (columns needed: target, source, transfer)")
    metric = str(r["metric"]).strip() if r.get("metric") not in (None, "") else "transfer"
    value = _num(r.get("value"), "value", where)
    base = _num(r.get("base_value"), "base_value", where)
    transfer = _num(r.get("transfer"), "transfer", where)
    if transfer is None:
        if value is None or base is None:
            raise InstaError(f"{where}: needs 'transfer', or 'value' and 'base_value'")
        transfer = transfer_value(metric, value, base)
        if not math.isfinite(transfer):
            raise InstaError(f"{where}: value - base_value overflows ({value!r}, {base!r}): rescale the matrix")
    seed = r.get("seed")
    return {"target": r["target"].strip(), "source": r["source"].strip(),
            "seed": 0 if seed in (None, "") else seed, "metric": metric, "value": value, "base_value": base,
            "transfer": transfer}


# ---------------------------------------------------------------- reliability


def _pearson(a: Sequence[float], b: Sequence[float]) -> float | None:
    a, b = np.asarray(a, float), np.asarray(b, float)
    if len(a) < 3 or a.std() == 0 or b.std() == 0:
        return None
    return float(np.corrcoef(a, b)[0, 1])


def _spearman(a: Sequence[float], b: Sequence[float]) -> float | None:
    from scipy.stats import rankdata

    if len(a) < 3:
        return None
    return _pearson(rankdata(a), rankdata(b))


def reliability(m: TransferMatrix, metric: str = PRIMARY, threshold: float = 0.5) -> dict[str, dict[str, Any]]:
    """Split-half reliability of each target's per-source transfer across seeds.

    Seeds are split into two halves (first half / second half of the seed list); each half's mean transfer per
    source gives one vector. ``r`` is their Pearson correlation over the sources both halves share,
    ``spearman`` the rank version, and ``reliability`` the Spearman-Brown estimate for the mean of all seeds,
    ``2r / (1 + r)``. A target below ``threshold`` (or with a single seed) is marked ``reliable: False``.
    """
    out = {}
    for t in m.targets:
        by_seed = m.per_seed(t, metric)
        seeds = list(by_seed)
        row: dict[str, Any] = {"n_seeds": len(seeds), "n_sources": len({s for v in by_seed.values() for s in v})}
        if len(seeds) < 2:
            row.update(r=None, spearman=None, reliability=None, reliable=False, why="one seed only")
            out[t] = row
            continue
        half = len(seeds) // 2
        halves = [seeds[:half], seeds[half:]]
        common = sorted(set.intersection(*(set(by_seed[s]) for s in seeds)))
        vecs = [[float(np.mean([by_seed[s][src] for s in h])) for src in common] for h in halves]
        r = _pearson(*vecs)
        sb = None if r is None else (2 * r / (1 + r) if r > -1 else -1.0)
        row.update(r=r, spearman=_spearman(*vecs), reliability=sb, n_common=len(common))
        row["reliable"] = bool(sb is not None and sb >= threshold)
        row["why"] = (f"split-half reliability {sb:.2f} {'>=' if row['reliable'] else '<'} {threshold}"
                      if sb is not None else "no variation across sources")
        out[t] = row
    return out


def noise_figures(cells: Sequence[dict[str, Any]], base_cells: dict[str, dict[str, Any]],
                  metric: str = PRIMARY) -> dict[str, dict[str, float | None]]:
    """Per target: the standard error of one model's mean metric, the paired SE of a transfer (trained - base
    on the same examples), and the spread (sd) of the mean transfer between sources, to show that the
    evaluation sample is large enough (SE well below the spread)."""
    out: dict[str, dict[str, float | None]] = {}
    by_target: dict[str, list[dict[str, Any]]] = {}
    for c in cells:
        if c.get("source") is not None:
            by_target.setdefault(c["target"], []).append(c)
    for t, cs in by_target.items():
        base = base_cells.get(t)
        if base is None:
            continue
        b = np.asarray(per_example(base["samples"], metric), float)
        ses, paired, means = [], [], {}
        for c in cs:
            v = np.asarray(per_example(c["samples"], metric), float)
            if len(v) != len(b):
                continue
            ses.append(np.nanstd(v, ddof=1) / math.sqrt(len(v)))
            paired.append(np.nanstd(v - b, ddof=1) / math.sqrt(len(v)))
            means.setdefault(c["source"], []).append(float(np.nanmean(b - v) if not METRICS[metric]
                                                           else np.nanmean(v - b)))
        src_means = [float(np.mean(x)) for x in means.values()]
        out[t] = {"n": int(len(b)), "se_mean": float(np.mean(ses)) if ses else None,
                  "se_paired_transfer": float(np.mean(paired)) if paired else None,
                  "sd_between_sources": float(np.std(src_means, ddof=1)) if len(src_means) > 1 else None}
    return out

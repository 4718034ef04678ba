"""Selection from a prior transfer matrix, leave one target out on the committed matrix (v1).

    .venv/bin/python benchmarks/prior_transfer_loo.py --data-dir DATA

For each target of experiments/transfer-bigbench-smollm2/matrix.json, every method ranks the matrix's 40
sources; the methods that read a prior matrix get the matrix *without that target's rows* (the held-out column
is not in memory), and prior-transfer fits its weights on the remaining targets by leave-one-target-out (nested).
Scores per target: NDCG with exponential gains (the table's headline), NDCG with linear gains, precision@5,
best-of-5 regret (best transfer minus the best within the top 5, nll per token) and the table's relative
Regret@5; means over targets with 95% bootstrap CIs, and paired differences (same targets) of prior-transfer
with INSTA default (insta-mean), the popular-source baseline, RoE and hybrid.

The settings of prior-transfer (grid, normalisation, objective) were committed before this script first ran
(commit 375c655). Writes benchmarks/results/prior_transfer_loo.{json,md}; benchmarks/methods_table.py renders the
same figures as a section of the methods table.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path
from types import SimpleNamespace

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
MATRIX = REPO / "experiments" / "transfer-bigbench-smollm2" / "matrix.json"
K = 5
#: (label, method, options); the prior-matrix methods get the matrix without the held-out target's rows
METHODS = [
    ("insta-mean", "insta-mean", {}),
    ("popular-source", "popular-source", {}),
    ("prior-transfer", "prior-transfer", {}),
    ("prior-transfer-inputs", "prior-transfer", {"target_inputs": True}),
    ("roe", "roe", {"library_size": 50}),
    ("hybrid-0.5", "hybrid", {"weight": 0.5, "library_size": 50}),
]
PRIOR_METHODS = ("popular-source", "prior-transfer")
FOCUS = ("prior-transfer", "prior-transfer-inputs")
BASELINES = ("insta-mean", "popular-source", "roe", "hybrid-0.5")
METRICS = {"ndcg": "NDCG (exp. gain)", "ndcg_linear": "NDCG (linear gain)", "precision": f"precision@{K}",
           "best_regret": f"best-of-{K} regret", "regret": f"Regret@{K} (relative)"}
LOWER_BETTER = ("best_regret", "regret")


def _rel(p: Path | str) -> str:
    return os.path.relpath(p, REPO)


def loo_protocol(data_dir: str) -> SimpleNamespace:
    """The protocol every leave-one-target-out benchmark on v1 shares: the matrix, its catalogs (loaded once), its
    40 sources as a pool, the metric, the scored targets (and those left out), the metric's orientation."""
    from insta.catalogs import load_catalog
    from insta.evaluators.methods_vs_matrix import _matrix_metric, _scored_targets, _source_pool
    from insta.matrix.cells import METRICS as METRIC_ORIENTATION
    from insta.matrix.matrix import read_matrix, reliability

    matrix = read_matrix(MATRIX)
    cats: dict = {}

    def catalogs(name: str):
        if name not in cats:
            cats[name] = load_catalog(name, data_dir)
        return cats[name]

    pool, cat_name, _ = _source_pool(matrix, catalogs, None, None)
    metric = _matrix_metric(matrix, "nll_per_token")
    targets, left_out = _scored_targets(matrix, reliability(matrix, metric, 0.5), False)
    return SimpleNamespace(matrix=matrix, catalogs=catalogs, pool=pool, cat_name=cat_name, metric=metric,
                           targets=targets, left_out=left_out,
                           sign=1 if METRIC_ORIENTATION.get(metric, True) else -1,
                           eval_ids=matrix.meta.get("eval_ids") or {})


def loo_fold(proto: SimpleNamespace, t: str, target_samples: int) -> tuple:
    """One held-out target: its task, its unlabelled inputs (never its evaluation examples), the matrix without its
    rows, its gold mean transfer per source and the oriented performance per source (for Regret@k)."""
    from insta.engine.pool import parse_target
    from insta.matrix.matrix import TransferMatrix
    from insta.methods import unlabelled_samples

    matrix, metric = proto.matrix, proto.metric
    cat, tid = parse_target(t, proto.cat_name) if ":" in t else (proto.cat_name, t)
    task = proto.catalogs(cat).get(tid)
    samples = unlabelled_samples(task, target_samples, set(proto.eval_ids.get(t, [])), 0)
    held_out = TransferMatrix([r for r in matrix.rows if r["target"] != t], dict(matrix.meta))
    assert t not in held_out.targets
    gold = matrix.mean_transfer(t, metric)
    values: dict[str, list[float]] = {}
    for r in matrix.rows:
        if r["target"] == t and r["metric"] == metric and r.get("value") is not None:
            values.setdefault(r["source"], []).append(float(r["value"]))
    perf = {s: proto.sign * sum(v) / len(v) for s, v in values.items()}
    return task, samples, held_out, gold, perf


def run(data_dir: str, target_samples: int = 32, n_boot: int = 10000, log=print) -> dict:
    from insta.methods import load_method
    from insta.report.stats import bootstrap_mean_ci
    from insta.selection import ranking_scores
    from insta.matrix.topk_metrics import best_of_k_regret, ndcg, precision_at_k, rank_linear_ndcg, regret_at_k

    proto = loo_protocol(data_dir)
    pool, metric, targets, left_out = proto.pool, proto.metric, proto.targets, proto.left_out
    fixed = {lab: load_method(name, label=lab, **opts) for lab, name, opts in METHODS if name not in PRIOR_METHODS}
    per: dict[str, dict[str, dict[str, float]]] = {lab: {} for lab, _, _ in METHODS}
    fits: dict[str, dict] = {}
    for t in targets:
        t0 = time.perf_counter()
        task, samples, held_out, gold, perf = loo_fold(proto, t, target_samples)
        for lab, name, opts in METHODS:
            m = fixed.get(lab) or load_method(name, label=lab, prior_matrix=held_out, data_dir=data_dir, **opts)
            if "target_samples" in m.consumes and not samples:  # as eval-selection: not scored there
                log(f"{lab}: no unlabelled inputs of {t} besides its evaluation examples: not scored there")
                continue
            sc = ranking_scores(m, task, pool, samples)
            src = [s for s in sorted(gold) if s in sc]
            tr, scores = [gold[s] for s in src], [sc[s] for s in src]
            per[lab][t] = {"ndcg": ndcg(tr, scores), "ndcg_linear": rank_linear_ndcg(tr, scores),
                           "precision": precision_at_k(tr, scores, K), "best_regret": best_of_k_regret(tr, scores, K),
                           "regret": regret_at_k([perf.get(s, gold[s]) for s in src], scores, K)}
            if lab in FOCUS and getattr(m, "last_fit", None):
                fits.setdefault(lab, {})[t] = {k: m.last_fit[k] for k in ("weights", "temperature", "objective_value")}
        log(f"{t}: {len(METHODS)} methods in {time.perf_counter() - t0:.1f} s")

    def ci(vals):
        mean, lo, hi = bootstrap_mean_ci(vals, n_boot, seed=0)
        return {"mean": mean, "lo": lo, "hi": hi, "n": len(vals)}

    summary = {lab: {k: ci([v[k] for v in by_t.values()]) for k in METRICS} for lab, by_t in per.items()}
    paired = {}
    for a in FOCUS:
        for b in [*BASELINES, *(f for f in FOCUS if f != a)]:
            common = [t for t in per[a] if t in per[b]]
            paired[f"{a} - {b}"] = {k: ci([per[a][t][k] - per[b][t][k] for t in common]) for k in METRICS}
    paired["popular-source - insta-mean"] = {k: ci([per["popular-source"][t][k] - per["insta-mean"][t][k]
                                                    for t in targets]) for k in METRICS}
    return {"matrix": _rel(MATRIX), "metric": metric, "k": K, "targets": targets, "targets_left_out": left_out,
            "n_sources": len(pool), "target_samples": target_samples, "bootstrap": n_boot,
            "methods": [{"label": lab, "method": name, "options": opts} for lab, name, opts in METHODS],
            "per_target": per, "summary": summary, "paired": paired, "fits": fits,
            "settings_commit": "375c655"}


def fmt(r: dict, signed: bool = False) -> str:
    f = "{:+.3f}" if signed else "{:.3f}"
    return f"{f.format(r['mean'])} [{f.format(r['lo'])}, {f.format(r['hi'])}]"


def markdown_section(res: dict, level: str = "##") -> str:
    """The leave-one-target-out figures as markdown (this script's file and a section of the methods table)."""
    lines = [f"{level} Selection from a prior transfer matrix (leave one target out on v1)", "",
             f"Each of the {len(res['targets'])} targets of `{res['matrix']}` in turn is the new target: the methods "
             "that read a prior matrix get the matrix without its rows, and prior-transfer fits its weights on the "
             "other targets alone (nested leave-one-target-out). Its settings (weight grid, per-target percentile "
             f"normalisation, objective) were fixed in commit {res['settings_commit']}, before these numbers were "
             f"first computed. {res['n_sources']} sources, {res['metric']}; means over targets with 95% bootstrap "
             f"CIs. Best-of-{res['k']} regret is in {res['metric']} units (lower is better), as is the relative "
             f"Regret@{res['k']}.", "",
             "| method | targets | " + " | ".join(METRICS.values()) + " |", "|---|---|" + "---|" * len(METRICS)]
    order = sorted(res["summary"], key=lambda m: -res["summary"][m]["ndcg"]["mean"])
    for lab in order:
        row = res["summary"][lab]
        lines.append(f"| {lab} | {row['ndcg']['n']} | " + " | ".join(fmt(row[k]) for k in METRICS) + " |")
    lines += ["", "Paired differences (same targets; for the regrets, negative is better):", "",
              "| comparison | " + " | ".join(METRICS.values()) + " |", "|---|" + "---|" * len(METRICS)]
    for key, row in res["paired"].items():
        lines.append(f"| {key} | " + " | ".join(fmt(row[k], True) for k in METRICS) + " |")
    lines += ["", "Read from the paired CIs (better / worse: the 95% CI excludes 0; otherwise not separated):", ""]
    for key, row in res["paired"].items():
        better = [METRICS[k] for k in METRICS if (row[k]["hi"] < 0 if k in LOWER_BETTER else row[k]["lo"] > 0)]
        worse = [METRICS[k] for k in METRICS if (row[k]["lo"] > 0 if k in LOWER_BETTER else row[k]["hi"] < 0)]
        a, b = key.split(" - ")
        lines.append(f"- {a} vs {b}: better on {', '.join(better) or 'nothing'}; worse on "
                     f"{', '.join(worse) or 'nothing'}.")
    fits = res.get("fits", {}).get("prior-transfer", {})
    if fits:
        counts: dict[str, int] = {}
        for f in fits.values():
            w = f["weights"]
            key = f"prior {w['prior']:.2f} / pivot {w['pivot']:.2f} / similarity {w['similarity']:.2f}, " \
                  f"temperature {f['temperature']}"
            counts[key] = counts.get(key, 0) + 1
        lines += ["", "Weights prior-transfer fitted in the folds (how many folds chose each):", ""]
        lines += [f"- {k}: {v}" for k, v in sorted(counts.items(), key=lambda kv: -kv[1])]
    return "\n".join(lines) + "\n"


def main() -> None:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    sys.path.insert(0, str(REPO / "src"))
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--data-dir", default=os.environ.get("INSTA_DATA_DIR") or str(REPO.parent / "shared" / "data"))
    ap.add_argument("--out", default=str(HERE / "results" / "prior_transfer_loo"))
    args = ap.parse_args()
    res = run(args.data_dir, log=lambda m: print(m, file=sys.stderr))
    res["command"] = ".venv/bin/python benchmarks/prior_transfer_loo.py --data-dir DATA"
    Path(args.out + ".json").write_text(json.dumps(res, indent=1) + "\n")
    md = markdown_section(res, "#") + f"\nRegenerate: `{res['command']}`\n"
    Path(args.out + ".md").write_text(md)
    print(md)


if __name__ == "__main__":
    main()

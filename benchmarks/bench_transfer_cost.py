"""Cost of the transfer-matrix design against the comparison grid, from the times recorded in their cells.

    .venv/bin/python benchmarks/bench_transfer_cost.py \\
        --transfer experiments/transfer-bigbench-smollm2 --grid experiments/bigbench-smollm2

Reads what the runs recorded (no model is run): seconds per source model (training), per evaluated example and
per (model, target) evaluation, from the transfer run's `trained/*.json` and `cells/*.json`, and the same from the
grid's `results.json`. Then compares, for the same M methods and T targets, the grid's cost (one model per
target-dependent method and target, each evaluated on its target) with the matrix's (N sources x S seeds models,
each evaluated on every target, once, whatever the number of methods). Writes
benchmarks/results/transfer_cost.json and .md.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "benchmarks" / "results"


def _load(folder: Path, pattern: str) -> list[dict]:
    out = []
    for p in sorted(folder.glob(pattern)):
        try:
            out.append(json.loads(p.read_text()))
        except ValueError:
            continue
    return out


def transfer_costs(out: Path) -> dict:
    trains = _load(out / "trained", "*.json")
    cells = _load(out / "cells", "*.json")
    per_ex = [c["seconds"] / max(1, len(c["samples"]["ids"])) for c in cells]
    n_targets = len({c["target"] for c in cells}) or 1
    return {"trainings": len(trains), "evaluations": len(cells),
            "train_s_median": statistics.median(t["seconds"] for t in trains) if trains else None,
            "train_s_mean": statistics.mean(t["seconds"] for t in trains) if trains else None,
            "eval_s_per_example_median": statistics.median(per_ex) if per_ex else None,
            "eval_s_per_cell_mean": statistics.mean(c["seconds"] for c in cells) if cells else None,
            "n_targets": n_targets,
            "examples_per_target": statistics.median(len(c["samples"]["ids"]) for c in cells) if cells else None}


def grid_costs(out: Path) -> dict:
    res = json.loads((out / "results.json").read_text())
    trains = [t["seconds"] for t in res.get("trained_models", []) if t.get("seconds")]
    evals = [c["eval_seconds"] for c in res["cells"] if c.get("eval_seconds")]
    n_ex = [len(res["samples"][c["eval_key"]]["ids"]) for c in res["cells"] if c["eval_key"] in res["samples"]]
    per_ex = [c["eval_seconds"] / n for c, n in zip(res["cells"], n_ex) if c.get("eval_seconds") and n]
    methods = [m for m in res["methods"] if m["label"] != "base"]
    return {"trainings": len(trains), "evaluations": len(evals), "train_s_median": statistics.median(trains),
            "eval_s_per_example_median": statistics.median(per_ex), "targets": len(res["targets"]),
            "methods": len(methods), "target_dependent_methods": sum(m["depends_on_target"] for m in methods),
            "examples_per_target": statistics.median(n_ex)}


def design_cost(train_s: float, eval_s_per_ex: float, n_ex: float, methods: int, targets: int, seeds: int,
                sources: int, grid_seeds: int = 1) -> dict:
    """Seconds of each design for the same methods and targets (all methods target-dependent, worst case)."""
    grid = methods * targets * grid_seeds * (train_s + n_ex * eval_s_per_ex) + targets * n_ex * eval_s_per_ex
    matrix = sources * seeds * train_s + (sources * seeds + 1) * targets * n_ex * eval_s_per_ex
    return {"grid_hours": grid / 3600, "matrix_hours": matrix / 3600}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--transfer", default="experiments/transfer-bigbench-smollm2")
    ap.add_argument("--grid", default="experiments/bigbench-smollm2")
    ap.add_argument("--sources", type=int, default=40)
    ap.add_argument("--seeds", type=int, default=2)
    args = ap.parse_args()
    tr = transfer_costs(REPO / args.transfer)
    gr = grid_costs(REPO / args.grid)
    train_s = tr["train_s_median"] or gr["train_s_median"]
    ev = tr["eval_s_per_example_median"] or gr["eval_s_per_example_median"]
    n_ex = tr["examples_per_target"] or 32
    rows = []
    for methods, targets, grid_seeds in ((10, 12, 1), (10, 12, 3), (20, 12, 3), (10, 33, 3)):
        c = design_cost(train_s, ev, n_ex, methods, targets, args.seeds, args.sources, grid_seeds)
        rows.append({"methods": methods, "targets": targets, "grid_seeds": grid_seeds, **c})
    out = {"command": "python benchmarks/bench_transfer_cost.py --transfer " + args.transfer + " --grid " + args.grid,
           "transfer": tr, "grid": gr, "designs": rows, "sources": args.sources, "seeds": args.seeds,
           "machine": {"cpus": os.cpu_count(), "platform": platform.platform(), "load_average": os.getloadavg()},
           "measured_at": time.strftime("%Y-%m-%d %H:%M")}
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "transfer_cost.json").write_text(json.dumps(out, indent=2) + "\n")
    f = lambda x, d=1: "–" if x is None else f"{x:.{d}f}"  # noqa: E731
    md = [f"# Transfer matrix vs comparison grid: cost on this machine ({out['measured_at']})", "",
          f"`{out['command']}` (reads the times recorded in the runs' cells; 2-core machine, other work ran beside "
          "the transfer run part of the time, so its times are upper bounds).", "",
          "| | trainings recorded | s per training (median) | s per evaluated example (median) | examples per target |",
          "|---|---|---|---|---|",
          f"| transfer run | {tr['trainings']} | {f(tr['train_s_median'])} | {f(tr['eval_s_per_example_median'], 3)} | "
          f"{f(tr['examples_per_target'], 0)} |",
          f"| comparison grid | {gr['trainings']} | {f(gr['train_s_median'])} | "
          f"{f(gr['eval_s_per_example_median'], 3)} | "
          f"{f(gr['examples_per_target'], 0)} |", "",
          f"Design cost for the same methods and targets, from the transfer run's per-unit costs ({args.sources} "
          f"sources x {args.seeds} seeds for the matrix; the grid trains one model per target-dependent method, "
          "target and seed, and evaluates it on its target; base model included in both):", "",
          "| methods | targets | grid seeds | grid (h) | matrix (h) |", "|---|---|---|---|---|"]
    md += [f"| {r['methods']} | {r['targets']} | {r['grid_seeds']} | {f(r['grid_hours'])} | {f(r['matrix_hours'])} |"
           for r in rows]
    md += ["", "The matrix costs the same for any number of methods (scoring a method against it takes seconds); "
           "the grid grows with methods x targets x seeds."]
    (RESULTS / "transfer_cost.md").write_text("\n".join(md) + "\n")
    print("\n".join(md))


if __name__ == "__main__":
    main()

"""Scoring a large user transfer matrix through the CLI: ``insta eval-selection --transfer`` on N sources.

    python benchmarks/bench_matrix_scale.py [N ...]        # default: 1000 2000 10000

Builds, in a temp folder, a user catalog of N source tasks plus 3 targets (one instruction each, words drawn from
a fixed vocabulary with a seed) and a long-format matrix (3 targets x N sources, one seed, transfer from a normal
draw), then runs ``insta eval-selection --transfer`` with a methods file of the instruction-only methods
(insta-mean on the dependency-free ``hashing`` encoder, lexical, all) and 1,000 random draws. Prints, and writes to
benchmarks/results/matrix_scale.json, the wall seconds and whether every NDCG and Regret is finite.
"""
from __future__ import annotations

import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
WORDS = ("classify answer question review sentiment translate sentence summarize story math count animal plant "
         "color city country date time logic puzzle word letter number code program fact science history sport "
         "movie food").split()


def build(folder: Path, n: int, seed: int = 0) -> tuple[Path, Path, Path]:
    """(user catalog, matrix CSV, methods file) for ``n`` sources and 3 targets."""
    rng = np.random.default_rng(seed)
    ids = [f"src{i:05d}" for i in range(n)] + ["tgt_a", "tgt_b", "tgt_c"]
    lines = ["tasks:"]
    for tid in ids:
        words = " ".join(rng.choice(WORDS, size=6))
        lines += [f"  - id: {tid}", f"    instructions: [\"{words}\"]"]
    catalog = folder / "tasks.yaml"
    catalog.write_text("\n".join(lines) + "\n")
    rows = ["target,source,transfer"]
    for t in ids[n:]:
        rows += [f"{t},{s},{v:.6f}" for s, v in zip(ids[:n], rng.normal(size=n))]
    matrix = folder / "matrix.csv"
    matrix.write_text("\n".join(rows) + "\n")
    methods = folder / "methods.yaml"
    methods.write_text("- {method: insta-mean, options: {encoder: hashing}}\n- lexical\n- all\n")
    return catalog, matrix, methods


def run(n: int) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        catalog, matrix, methods = build(Path(tmp), n)
        out = Path(tmp) / "scores.json"
        t0 = time.perf_counter()
        proc = subprocess.run([sys.executable, "-m", "insta.cli", "eval-selection", "--transfer", str(matrix),
                               "-c", str(catalog), "--methods", str(methods), "--json", str(out), "-q"],
                              capture_output=True, text=True)
        seconds = time.perf_counter() - t0
        if proc.returncode:
            return {"n_sources": n, "rc": proc.returncode, "stderr": proc.stderr[-500:]}
        res = json.loads(out.read_text())
        values = [v[m] for by_t in res["per_target"].values() for v in by_t.values() for m in ("ndcg", "regret")]
        return {"n_sources": n, "rc": 0, "seconds": round(seconds, 1), "all_finite": bool(np.isfinite(values).all()),
                "ndcg_mean": {m: round(r["ndcg"]["mean"], 4) for m, r in res["summary"].items()}}


def main() -> None:
    sizes = [int(a) for a in sys.argv[1:]] or [1000, 2000, 10000]
    results = [run(n) for n in sizes]
    for r in results:
        print(json.dumps(r))
    out = REPO / "benchmarks" / "results" / "matrix_scale.json"
    out.write_text(json.dumps({"command": "python benchmarks/bench_matrix_scale.py " + " ".join(map(str, sizes)),
                               "results": results}, indent=2) + "\n")


if __name__ == "__main__":
    main()

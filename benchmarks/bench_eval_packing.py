"""Rank-classification evaluation speed: packed scoring vs the KV-cache path (vs scoring sequences whole).

    HF_HUB_OFFLINE=1 INSTA_DATA_DIR=../shared/data .venv/bin/python benchmarks/bench_eval_packing.py

The evaluation of the learnability screen and of transfer matrix v2 (SmolLM2-135M, 200 examples per target, no
calibration, batch 8, prompts up to 512 tokens) on BIG-bench targets of the screen, one side at a time:

* ``packed-N``: the default; prompts and their options packed into forward passes of up to N tokens under a
  block mask (:data:`insta.evaluate.packing.PACK_TOKENS` is the default N);
* ``kv``: the path before packing: each prompt once, its KV cache repeated over its options (batch 8);
* ``plain``: every (prompt, option) sequence whole, as lm-evaluation-harness scores it (slow on many options).

Sides alternate in order across repeats (side order reversed on odd repeats); the table gives the median seconds per
example, the speedup over ``kv`` and the largest difference of a summed option log-likelihood from ``kv``'s.
Writes benchmarks/results/eval_packing.json and .md with the command, versions and the load average (other
processes on a 2-core machine change the numbers).
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # as insta.lm sets it; must precede the torch import
REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "benchmarks" / "results"
TASKS = "date_understanding,checkmate_in_one,movie_recommendation,cs_algorithms/valid_parentheses"


def _data_dir() -> Path:
    env = os.environ.get("INSTA_DATA_DIR")
    return Path(env) if env else REPO.parent / "shared" / "data"


def _run_side(lm, side: str, examples, task_id: str) -> tuple[float, list[list[float]]]:
    """Seconds and per-example option scores of one side on one task."""
    from insta.evaluate import EvalConfig, evaluate_examples
    from insta.evaluate import packing

    cfg = EvalConfig(calibration="none", batch_size=8, max_source_length=512, progress=False,
                     share_prefix=side != "plain")
    old = packing.PACK_TOKENS
    lm.packing_ok = False if side == "kv" else True  # packed sides: the model passed the check (tests cover it)
    if side.startswith("packed-"):
        packing.PACK_TOKENS = int(side.split("-", 1)[1])
    try:
        t0 = time.perf_counter()
        res = evaluate_examples(lm, examples, cfg, task_id=task_id, catalog="bigbench")
        seconds = time.perf_counter() - t0
    finally:
        packing.PACK_TOKENS = old
        lm.packing_ok = None
    return seconds, [s["scores_sum"] for s in res["samples"]]


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="smollm2")
    ap.add_argument("--tasks", default=TASKS, help="comma-separated BIG-bench task ids")
    ap.add_argument("--examples", type=int, default=24, help="examples per task")
    ap.add_argument("--sides", default="packed-1024,packed-512,packed-2048,kv")
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--out", default=str(RESULTS / "eval_packing"))
    args = ap.parse_args(argv)

    import torch
    import transformers

    from insta.catalogs import load_catalog
    from insta.lm import load_model

    sides = [s.strip() for s in args.sides.split(",") if s.strip()]
    if "kv" not in sides:
        sides.append("kv")
    load_before = os.getloadavg()
    catalog = load_catalog("bigbench", _data_dir())
    lm = load_model(args.model)
    rows = []
    for tid in [t.strip() for t in args.tasks.split(",") if t.strip()]:
        examples = [e for e in catalog.get(tid).iter_examples() if e.options][: args.examples]
        n_opts = sum(len(e.options) for e in examples)
        times: dict[str, list[float]] = {s: [] for s in sides}
        scores: dict[str, list[list[float]]] = {}
        for r in range(args.repeats):
            for side in (sides if r % 2 == 0 else sides[::-1]):
                sec, sc = _run_side(lm, side, examples, tid)
                times[side].append(sec / len(examples))
                scores.setdefault(side, sc)
                print(f"{tid} {side} repeat {r}: {sec / len(examples):.3f} s/example", file=sys.stderr)
        kv = statistics.median(times["kv"])
        for side in sides:
            diff = max(abs(a - b) for x, y in zip(scores[side], scores["kv"]) for a, b in zip(x, y))
            med = statistics.median(times[side])
            rows.append({"task": tid, "examples": len(examples),
                         "options_per_example": round(n_opts / len(examples), 1), "side": side,
                         "s_per_example": round(med, 4), "runs": [round(t, 4) for t in times[side]],
                         "speedup_vs_kv": round(kv / med, 2), "max_abs_diff_vs_kv": diff})
    load_after = os.getloadavg()
    cmd = "HF_HUB_OFFLINE=1 INSTA_DATA_DIR=../shared/data .venv/bin/python benchmarks/bench_eval_packing.py "
    meta = {"command": cmd + " ".join(argv if argv is not None else sys.argv[1:]),
            "measured": time.strftime("%Y-%m-%dT%H:%M:%S"), "cpus": os.cpu_count(),
            "torch_threads": torch.get_num_threads(),
            "torch": torch.__version__, "transformers": transformers.__version__, "python": platform.python_version(),
            "load_before": [round(x, 2) for x in load_before], "load_after": [round(x, 2) for x in load_after],
            "model": args.model, "repeats": args.repeats}
    out = Path(args.out)
    out.with_suffix(".json").write_text(json.dumps({**meta, "rows": rows}, indent=1) + "\n")
    lines = ["# Rank-classification evaluation: packed scoring vs the KV-cache path", "",
             f"Command: `{meta['command'].strip()}`", "",
             f"Measured {meta['measured']} on {meta['cpus']} CPU cores (torch threads {meta['torch_threads']}), "
             f"torch {meta['torch']}, transformers {meta['transformers']}; model {args.model}, fp32, no calibration, "
             f"batch 8, prompts up to 512 tokens; load average before {meta['load_before']}, after "
             f"{meta['load_after']} (above the core count: other processes shared the CPU). Median of "
             f"{args.repeats} runs per side, sides alternating in order.", "",
             "| task | examples | options/example | side | s/example | runs | speedup vs kv | max abs diff vs kv |",
             "|---|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['task']} | {r['examples']} | {r['options_per_example']} | {r['side']} | "
                     f"{r['s_per_example']:.3f} | {', '.join(f'{t:.3f}' for t in r['runs'])} | "
                     f"{r['speedup_vs_kv']:.2f}x | {r['max_abs_diff_vs_kv']:.1e} |")
    out.with_suffix(".md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())

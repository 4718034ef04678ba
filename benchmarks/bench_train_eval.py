"""Training and evaluation throughput of SmolLM2-135M-Instruct on this machine.

    HF_HUB_OFFLINE=1 INSTA_DATA_DIR=../shared/data .venv/bin/python benchmarks/bench_train_eval.py

Measures
* training tokens/s (real tokens, padding excluded) for full fine-tuning and LoRA: 16 BIG-bench examples,
  batch 4, max length 128 (prompt <= 96 + target <= 32), 4 optimiser steps (one epoch), fp32, AdamW;
* evaluation examples/s for rank classification (code_line_description, 4 options each, sum + norm scores),
  with the prompt shared across options (KV cache, the default) and without; and with calibration on;
* generation examples/s (greedy, 16 new tokens).

Writes benchmarks/results/train_eval.json and .md (with the command, versions, CPU count and load average,
since other processes on a 2-core machine change the numbers a lot). Takes about 3-6 minutes on 2 idle cores.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # as insta.lm sets it; must precede the torch import
REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "benchmarks" / "results"


def _data_dir() -> Path:
    env = os.environ.get("INSTA_DATA_DIR")
    return Path(env) if env else REPO.parent / "shared" / "data"


def _examples(catalog, task_ids, n_per_task):
    out = []
    for tid in task_ids:
        out.extend(catalog.get(tid).examples(n_per_task))
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="smollm2")
    ap.add_argument("--train-examples", type=int, default=16)
    ap.add_argument("--batch-size", type=int, default=4)
    ap.add_argument("--max-length", type=int, default=128)
    ap.add_argument("--eval-examples", type=int, default=16)
    ap.add_argument("--gen-examples", type=int, default=8)
    ap.add_argument("--out", default=str(RESULTS / "train_eval"))
    args = ap.parse_args(argv)

    import torch
    import transformers

    from insta.catalogs import load_catalog
    from insta.evaluate import EvalConfig, evaluate_examples
    from insta.lm import load_model, resolve_model
    from insta.mixture import MixtureConfig, mixture_from_selection
    from insta.train import TrainConfig, train_model

    load_before = os.getloadavg()
    t0 = time.perf_counter()
    resolve_model(args.model)  # convert once if needed (not timed below)
    convert_s = time.perf_counter() - t0
    catalog = load_catalog("bigbench", _data_dir())

    # ---- training
    # tasks with long prompts, so that most sequences reach the length cap
    mix = mixture_from_selection(["auto_debugging", "hhh_alignment/helpful", "cs_algorithms/lcs"],
                                 MixtureConfig(per_task=args.train_examples, total=args.train_examples, seed=0),
                                 catalog=catalog)
    train = {}
    tmp = Path(tempfile.mkdtemp(prefix="insta-bench-"))
    try:
        for mode in ("full", "lora"):
            cfg = TrainConfig(model=args.model, output_dir=str(tmp / mode), lora=mode == "lora",
                              batch_size=args.batch_size, epochs=1, max_source_length=args.max_length - 32,
                              max_target_length=32, progress=False, save_steps=10_000, logging_steps=1)
            res = train_model(mix, cfg)
            m = res.metrics
            step_s = m["train_seconds"] / max(1, m["global_step"])
            train[mode] = {
                "tokens_per_example": round(m["tokens_seen"] / max(1, m["n_examples"]), 1),
                "steps": m["global_step"], "examples": m["n_examples"], "tokens": m["tokens_seen"],
                "seconds": m["train_seconds"], "tokens_per_second": m["tokens_per_second"],
                "seconds_per_step": round(step_s, 3), "trainable_params": m["n_trainable"],
                "first_loss": m["first_loss"], "last_loss": m["last_loss"],
            }
            print(f"train {mode}: {m['tokens_seen']} tokens in {m['train_seconds']:.1f}s = "
                  f"{m['tokens_per_second']:.1f} tokens/s ({step_s:.2f} s/step)", flush=True)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)

    # ---- evaluation
    lm = load_model(args.model)
    exs = catalog.get("code_line_description").examples(args.eval_examples)
    evals = {}
    for name, cfg in (
        ("rank_shared_prefix", EvalConfig(progress=False, calibration="none")),
        ("rank_no_sharing", EvalConfig(progress=False, calibration="none", share_prefix=False)),
        ("rank_shared_calibrated", EvalConfig(progress=False, calibration="fixed")),
    ):
        res = evaluate_examples(lm, exs, cfg, task_id="code_line_description")
        t = res["timings"]
        evals[name] = {"examples": res["n"], "seconds": t["seconds"], "examples_per_second": t["examples_per_second"],
                       "sequences": t["n_sequences_scored"], "acc": res["metrics"]["acc"],
                       "acc_norm": res["metrics"]["acc_norm"], "acc_norm_token": res["metrics"]["acc_norm_token"]}
        print(f"eval {name}: {res['n']} examples in {t['seconds']:.1f}s = {t['examples_per_second']} ex/s", flush=True)
    gen_task = "simple_arithmetic_json" if "simple_arithmetic_json" in catalog else "object_counting"
    gex = catalog.get(gen_task).examples(args.gen_examples)
    res = evaluate_examples(lm, gex, EvalConfig(progress=False, max_new_tokens=16), task_id=gen_task)
    evals["generate"] = {"task": gen_task, "examples": res["n"], "seconds": res["timings"]["seconds"],
                         "examples_per_second": res["timings"]["examples_per_second"], "max_new_tokens": 16}
    print(f"eval generate ({gen_task}): {res['n']} examples in {res['timings']['seconds']:.1f}s = "
          f"{res['timings']['examples_per_second']} ex/s", flush=True)

    record = {
        "command": "HF_HUB_OFFLINE=1 INSTA_DATA_DIR=../shared/data .venv/bin/python benchmarks/bench_train_eval.py "
                   + " ".join(sys.argv[1:] if argv is None else argv),
        "created": time.strftime("%Y-%m-%dT%H:%M:%S"),
        "machine": {"cpus": os.cpu_count(), "torch_threads": torch.get_num_threads(),
                    "platform": platform.platform(), "python": platform.python_version(),
                    "torch": torch.__version__, "omp_wait_policy": os.environ.get("OMP_WAIT_POLICY"),
                    "transformers": transformers.__version__,
                    "load_average_before": [round(x, 2) for x in load_before],
                    "load_average_after": [round(x, 2) for x in os.getloadavg()]},
        "model": args.model,
        "conversion_or_cache_seconds": round(convert_s, 2),
        "train_setup": {"examples": args.train_examples, "batch_size": args.batch_size, "max_length": args.max_length,
                        "epochs": 1, "dtype": "float32", "optimizer": "AdamW (Trainer default)"},
        "train": train,
        "eval": evals,
    }
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.with_suffix(".json").write_text(json.dumps(record, indent=2) + "\n")
    out.with_suffix(".md").write_text(_markdown(record))
    print(f"wrote {out.with_suffix('.json')} and {out.with_suffix('.md')}")
    return 0


def _markdown(r: dict) -> str:
    mach = r["machine"]
    lines = [
        "# Training and evaluation throughput: SmolLM2-135M-Instruct on CPU",
        "",
        f"Command: `{r['command']}`",
        "",
        f"Measured {r['created']} on {mach['cpus']} CPU cores (torch threads {mach['torch_threads']}), torch "
        f"{mach['torch']}, transformers {mach['transformers']}, OMP_WAIT_POLICY={mach.get('omp_wait_policy')}; "
        f"load average before {mach['load_average_before']}, "
        f"after {mach['load_average_after']} (a load above the core count means other processes shared the CPU and "
        "the figures are pessimistic).",
        "",
        "## Training (fp32, AdamW, Trainer)",
        "",
        f"{r['train_setup']['examples']} BIG-bench examples, batch {r['train_setup']['batch_size']}, max length "
        f"{r['train_setup']['max_length']} (prompt <= {r['train_setup']['max_length'] - 32}, target <= 32), one epoch, "
        "examples of auto_debugging, hhh_alignment/helpful and cs_algorithms/lcs. Tokens = real (non-padding) "
        "tokens fed to the model.",
        "",
        "| mode | steps | tokens (per example) | seconds | tokens/s | s/step | trainable params | loss first -> last |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for mode, t in r["train"].items():
        lines.append(f"| {mode} | {t['steps']} | {t['tokens']} ({t['tokens_per_example']}) | {t['seconds']:.1f} | "
                     f"{t['tokens_per_second']:.1f} | "
                     f"{t['seconds_per_step']:.2f} | {t['trainable_params']:,} | {t['first_loss']:.3f} -> "
                     f"{t['last_loss']:.3f} |")
    lines += [
        "",
        "## Evaluation",
        "",
        "| setting | examples | sequences scored | seconds | examples/s |",
        "|---|---|---|---|---|",
    ]
    for name, e in r["eval"].items():
        lines.append(f"| {name} | {e['examples']} | {e.get('sequences', '-')} | {e['seconds']:.1f} | "
                     f"{e['examples_per_second']} |")
    lines += [
        "",
        "rank_*: code_line_description, 4 options per example, sum and length-normalised scores from one pass; "
        "`shared_prefix` runs each prompt once and its options on top of the KV cache (default), `no_sharing` "
        "scores every (prompt, option) sequence in full; `calibrated` adds the content-free prompt's option "
        "scores. generate: greedy, 16 new tokens.",
        "",
    ]
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())

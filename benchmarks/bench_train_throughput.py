"""Training throughput: ``insta train`` against a minimal plain transformers ``Trainer`` (benchmarks/plain_trainer.py)
and TRL's ``SFTTrainer`` (benchmarks/trl_trainer.py), with the fraction of the machine's measured matmul peak.

    HF_HUB_OFFLINE=1 INSTA_DATA_DIR=../shared/data .venv/bin/python benchmarks/bench_train_throughput.py

One run alternates the sides (plain, insta, TRL) ``--repeats`` times on each mixture and mode (the order reverses
every repeat, so slow drift in the machine's load hits every side alike). Each training run is a fresh process:
model loading, imports and tokenisation are not timed; the time is the Trainer's ``train()`` call, first step to
the end.

Setup (the issue's): SmolLM2-135M-Instruct, fp32, 2 threads, batch 8, prompts <= 160 and targets <= 32 tokens, the
Trainer's seeded random sampler on every side (same batches, same order), ``--max-steps`` optimiser steps. Two
mixtures of the five BIG-bench tasks of the README's selection for BBH snarks (``insta select --catalog bigbench
--target-catalog bbh --task snarks -k 5``):

* ``varied``: 20 examples of each task (seed 0), 15-180 tokens;
* ``uniform``: of all the five tasks' examples that insta keeps whole (no truncation), the 100 whose lengths lie in
  the narrowest window (the shortest such window, examples in the pool's order).

insta and the plain script train on insta's token ids (its features, written once for the plain script); TRL gets
the same examples as prompt/completion text (:func:`trl_trainer.trl_records`) and tokenizes them itself: the record
says how many it tokenized to exactly insta's ids and labels. Real tokens = non-padding tokens of the batches
trained on, counted by each side.

Roof: an fp32 matmul benchmark in a fresh process with the same threads (``torch.nn.functional.linear`` at the
model's shapes and a large square one), before and after the runs; the peak is the fastest shape. Model FLOPs per
trained example of L tokens with T target tokens: ``6 N_body L + 6 N_head T + 6 n_layers d_attn L (L + 1)``, with
N_body the weights of the transformer's linear layers, N_head the LM head's (d_model x vocab): every position
needs the forward and backward through the body (the targets attend to the prompt), the LM head is needed only
where a target is predicted, and causal attention scores L (L + 1) / 2 query-key pairs per layer (QK and AV, x3 for
training). The same count for every side (what the update needs, not what a side computes): fraction of roof =
model FLOPs of the trained batches / seconds of ``train()`` / peak FLOP/s. ``--profile`` adds a torch profile of
one insta training step (the top ops by self CPU time).

Writes benchmarks/results/train_throughput.json and .md with the command, versions, the machine's load average
before and after every run, each run's figures and the ratios insta / plain and insta / TRL of real tokens per
second (median of the per-repeat ratios, and the range).
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ENV0 = dict(os.environ)  # before anything imports insta (which sets OMP_WAIT_POLICY for its own process)
REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "benchmarks" / "results"
SNARKS_SELECTION = ["irony_identification", "dark_humor_detection", "presuppositions_as_nli",
                    "evaluating_information_essentiality", "sentence_ambiguity"]
MIXTURES = {"varied": "20 examples of each task (seed 0)",
            "uniform": "the {n} examples kept whole whose lengths lie in the narrowest window ({lo}-{hi} tokens) "
                       "of all {pool} examples of the five tasks"}


def _data_dir() -> Path:
    env = ENV0.get("INSTA_DATA_DIR")
    return Path(env) if env else REPO.parent / "shared" / "data"


def _load() -> list[float]:
    return [round(x, 2) for x in os.getloadavg()]


def narrowest_window(lengths: list[int], n: int) -> list[int]:
    """Indices of ``n`` items whose lengths span the narrowest range (the shortest such range; ties: the first in
    sorted order), in their original order."""
    if len(lengths) < n:
        raise ValueError(f"only {len(lengths)} items, {n} wanted")
    order = sorted(range(len(lengths)), key=lambda i: (lengths[i], i))
    best = min(range(len(order) - n + 1), key=lambda s: lengths[order[s + n - 1]] - lengths[order[s]])
    return sorted(order[best:best + n])


def prepare(work: Path, args: argparse.Namespace, mixture: str) -> dict:
    """The mixture JSONL (for insta train), the same examples' features (for the plain script) and TRL
    prompt/completion text (for the TRL script), in ``work/<mixture>``; the model dir."""
    sys.path.insert(0, str(REPO / "src"))
    sys.path.insert(0, str(REPO / "benchmarks"))
    from trl_trainer import trl_records

    from insta.catalogs import load_catalog
    from insta.lm import encode_causal, load_tokenizer, resolve_model
    from insta.mixture import MixtureConfig, mixture_from_selection
    from insta.train import TrainConfig, build_features

    location = resolve_model(args.model)
    tok = load_tokenizer(location)
    catalog = load_catalog("bigbench", _data_dir())
    cfg = TrainConfig(max_source_length=args.max_source_length, max_target_length=args.max_target_length)
    if mixture == "varied":
        mix = mixture_from_selection(SNARKS_SELECTION, MixtureConfig(per_task=20, seed=0), catalog=catalog)
        records = [{"input": r["input"], "target": r["target"]} for r in mix.records]
        described = MIXTURES["varied"]
    else:
        pool = mixture_from_selection(SNARKS_SELECTION, MixtureConfig(per_task=10**9, seed=0), catalog=catalog)
        recs = [{"input": r["input"], "target": r["target"]} for r in pool.records if r["target"].strip()]
        feats, _ = build_features(recs, tok, "causal", cfg)
        whole = [i for i, (r, f) in enumerate(zip(recs, feats))
                 if encode_causal(tok, r["input"], r["target"], add_eos=cfg.add_eos)[0] == f["input_ids"]]
        pick = [whole[i] for i in narrowest_window([len(feats[i]["input_ids"]) for i in whole], args.examples)]
        records = [recs[i] for i in pick]
        lens = [len(feats[i]["input_ids"]) for i in pick]
        described = MIXTURES["uniform"].format(n=len(pick), lo=min(lens), hi=max(lens), pool=len(recs))
    out = work / mixture
    out.mkdir(parents=True, exist_ok=True)
    mix_path = out / "mixture.jsonl"
    mix_path.write_text("".join(json.dumps(r) + "\n" for r in records), encoding="utf-8")
    feats, stats = build_features(records, tok, "causal", cfg)
    feat_path = out / "features.jsonl"
    feat_path.write_text("".join(json.dumps({"input_ids": f["input_ids"], "labels": f["labels"]}) + "\n"
                                 for f in feats), encoding="utf-8")
    trl_path = out / "trl.jsonl"
    trl_path.write_text("".join(json.dumps(r) + "\n" for r in trl_records(records, feats, tok)), encoding="utf-8")
    for p in Path(location).glob("*.safetensors"):  # page cache: the first run pays no cold read
        p.read_bytes()
    lengths = [len(f["input_ids"]) for f in feats]
    return {"name": mixture, "described": described, "mixture": str(mix_path), "features": str(feat_path),
            "trl": str(trl_path), "location": location, "stats": stats,
            "length_mean": round(statistics.mean(lengths), 1), "length_min": min(lengths),
            "length_max": max(lengths),
            "examples": [[len(f["input_ids"]), sum(x != -100 for x in f["labels"])] for f in feats]}


def _env(args: argparse.Namespace) -> dict[str, str]:
    env = dict(ENV0)
    env["OMP_NUM_THREADS"] = str(args.threads)
    env["HF_HUB_OFFLINE"] = "1"
    env["PYTHONPATH"] = str(REPO / "src") + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    if args.omp_wait_policy != "natural":
        env["OMP_WAIT_POLICY"] = args.omp_wait_policy
    return env


def _run_json(cmd: list[str], out: Path, env: dict[str, str]) -> dict:
    subprocess.run(cmd, check=True, env=env, stdout=subprocess.DEVNULL)
    return json.loads(out.read_text())


def run_plain(prep: dict, lora: bool, args: argparse.Namespace, work: Path) -> dict:
    out = work / "plain.json"
    cmd = [sys.executable, str(REPO / "benchmarks" / "plain_trainer.py"), "--features", prep["features"],
           "--model", prep["location"], "--batch-size", str(args.batch_size), "--max-steps", str(args.max_steps),
           "--threads", str(args.threads), "--seed", str(args.seed), "--json", str(out)]
    if lora:
        cmd.append("--lora")
    if args.plain_pad_to_max:
        cmd += ["--pad-to-max-length", "--max-length", str(args.max_source_length + args.max_target_length)]
    return _run_json(cmd, out, _env(args))


def run_trl(prep: dict, args: argparse.Namespace, work: Path) -> dict:
    out = work / "trl.json"
    cmd = [sys.executable, str(REPO / "benchmarks" / "trl_trainer.py"), "--data", prep["trl"],
           "--features", prep["features"], "--model", prep["location"], "--batch-size", str(args.batch_size),
           "--max-steps", str(args.max_steps), "--threads", str(args.threads), "--seed", str(args.seed),
           "--json", str(out)]
    return _run_json(cmd, out, _env(args))


def run_insta(prep: dict, lora: bool, args: argparse.Namespace, work: Path, extra: list[str],
              omp: str | None = None) -> dict:
    run_dir = work / "insta-run"
    cmd = [sys.executable, "-m", "insta.cli", "train", "--mixture", prep["mixture"], "--model", args.model,
           "--out", str(run_dir), "--overwrite", "--no-resume", "--epochs", "1", "--max-steps", str(args.max_steps),
           "--batch-size", str(args.batch_size), "--seed", str(args.seed),
           "--max-source-length", str(args.max_source_length), "--max-target-length", str(args.max_target_length),
           "--no-progress", *(["--lora"] if lora else []), *extra]
    env = _env(args)
    if omp:
        env["OMP_WAIT_POLICY"] = omp
    subprocess.run(cmd, check=True, env=env, stdout=subprocess.DEVNULL)
    m = json.loads((run_dir / "train_result.json").read_text())["metrics"]
    steps = max(1, m["steps_this_run"])
    return {"side": "insta", "lora": lora, "steps": m["global_step"], "tokens": m["tokens_seen"],
            "train_seconds": m["train_seconds"], "train_cpu_seconds": m["train_cpu_seconds"],
            "steps_seconds": m["steps_seconds"],
            "tokens_per_second": m["tokens_per_second"], "seconds_per_step": round(m["steps_seconds"] / steps, 3),
            "train_loss": m["train_loss"], "first_loss": m["first_loss"], "batching": m["batching"],
            "flags": extra, "omp_wait_policy": env.get("OMP_WAIT_POLICY") or "PASSIVE (insta's default)"}


#: insta variants for --ablation, run once (first repeat, full fine-tuning): flags, and an OMP_WAIT_POLICY
VARIANTS: dict[str, tuple[list[str], str | None]] = {
    "padded": (["--no-padding-free", "--no-target-logits-only"], None),  # insta's batching before this change
    "padding-free only": (["--no-target-logits-only"], None),
    "target logits only": (["--no-padding-free"], None),
    "omp-active": ([], "ACTIVE"),  # spinning OpenMP waits, as the plain script has them by default
    "rows of 160": (["--packing-row-tokens", "160"], None),  # smaller packed rows: less masked attention
    "rows of 256": (["--packing-row-tokens", "256"], None),
}


def model_dims(location: str) -> dict:
    """The model's sizes for the FLOP count: weights of the body's linear layers (N_body), of the LM head (N_head),
    the attention width and the layer count (the model built on the meta device from its config: no weights read)."""
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM

    cfg = AutoConfig.from_pretrained(location)
    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(cfg)
    head = model.get_output_embeddings()
    n_body = sum(m.weight.numel() for m in model.modules() if isinstance(m, torch.nn.Linear) and m is not head)
    text = cfg.get_text_config()
    head_dim = getattr(text, "head_dim", None) or text.hidden_size // text.num_attention_heads
    return {"n_body": n_body, "n_head": head.weight.numel(), "n_params": sum(p.numel() for p in model.parameters()),
            "layers": text.num_hidden_layers, "d_model": text.hidden_size,
            "d_attn": text.num_attention_heads * head_dim, "d_ff": text.intermediate_size, "vocab": text.vocab_size}


def example_flops(length: int, targets: int, dims: dict) -> int:
    """Model FLOPs of one training example (see the module docstring)."""
    return (6 * dims["n_body"] * length + 6 * dims["n_head"] * targets
            + 6 * dims["layers"] * dims["d_attn"] * length * (length + 1))


def matmul_shapes(dims: dict, rows: int = 512) -> dict[str, tuple[int, int, int]]:
    """(m, k, n) of ``linear(x[m, k], w[n, k])``: the model's projections on a row of ``rows`` tokens, and a
    large square matmul."""
    d = dims["d_model"]
    return {"attention q/o": (rows, d, dims["d_attn"]), "MLP up/gate": (rows, d, dims["d_ff"]),
            "MLP down": (rows, dims["d_ff"], d), "LM head": (rows, d, dims["vocab"]), "square 2048": (2048, 2048, 2048)}


def matmul_peak(shapes: dict[str, tuple[int, int, int]], threads: int, seconds: float = 0.5) -> dict[str, float]:
    """fp32 GFLOP/s of ``torch.nn.functional.linear`` at each shape: the best of 3 rounds of >= ``seconds``."""
    import torch
    import torch.nn.functional as F

    torch.set_num_threads(threads)
    out = {}
    for name, (m, k, n) in shapes.items():
        x, w = torch.randn(m, k), torch.randn(n, k)
        F.linear(x, w)
        best = 0.0
        for _ in range(3):
            calls, t0 = 0, time.perf_counter()
            while (dt := time.perf_counter() - t0) < seconds:
                F.linear(x, w)
                calls += 1
            best = max(best, 2 * m * k * n * calls / dt / 1e9)
        out[name] = round(best, 1)
    return out


def run_matmul_peak(location: str, args: argparse.Namespace, work: Path) -> dict[str, float]:
    out = work / "peak.json"
    cmd = [sys.executable, str(Path(__file__).resolve()), "--measure-peak", str(out), "--model-dir", location,
           "--threads", str(args.threads)]
    return _run_json(cmd, out, _env(args))


MATMUL_OPS = ("aten::mm", "aten::addmm", "aten::bmm")


def profile_insta_step(mixture: str, location: str, args: argparse.Namespace, out: Path) -> dict:
    """A torch profile of insta's second training step (the first warms up) on ``mixture``: the step's wall time,
    the top ops by self CPU time, and the matmuls' share and GFLOP/s (in-process: run it in a fresh process)."""
    import torch
    from torch.profiler import ProfilerActivity, profile
    from transformers import TrainerCallback

    from insta.train import TrainConfig, train_model

    torch.set_num_threads(args.threads)
    prof: dict = {}

    class ProfileStep(TrainerCallback):
        def on_step_begin(self, a, state, control, **kw):
            if state.global_step == 1:
                prof["p"] = profile(activities=[ProfilerActivity.CPU], with_flops=True)
                prof["p"].__enter__()
                prof["t0"] = time.perf_counter()

        def on_step_end(self, a, state, control, **kw):
            if "t0" in prof and "wall" not in prof:
                prof["wall"] = time.perf_counter() - prof["t0"]
                prof["p"].__exit__(None, None, None)

    with tempfile.TemporaryDirectory(prefix="insta-profile-") as tmp:
        cfg = TrainConfig(model=location, output_dir=tmp, epochs=1, max_steps=3, batch_size=args.batch_size,
                          seed=args.seed, max_source_length=args.max_source_length,
                          max_target_length=args.max_target_length, progress=False, resume=False, overwrite=True)
        train_model(mixture, cfg, callbacks=[ProfileStep()])
    events = prof["p"].key_averages()
    total_us = prof["wall"] * 1e6
    matmul = [e for e in events if e.key in MATMUL_OPS]
    mm_us = sum(e.self_cpu_time_total for e in matmul)
    mm_flops = sum(e.flops for e in matmul)
    top = sorted(events, key=lambda e: -e.self_cpu_time_total)[:args.profile_top]
    record = {"step_seconds": round(prof["wall"], 3),
              "matmul_share": round(mm_us / total_us, 3), "matmul_gflops": round(mm_flops / mm_us / 1e3, 1),
              "matmul_gflop": round(mm_flops / 1e9, 1),
              "top": [{"op": e.key, "calls": e.count, "self_seconds": round(e.self_cpu_time_total / 1e6, 3),
                       "share": round(e.self_cpu_time_total / total_us, 3),
                       **({"gflops": round(e.flops / e.self_cpu_time_total / 1e3, 1)} if e.key in MATMUL_OPS else {})}
                      for e in top]}
    out.write_text(json.dumps(record, indent=2))
    return record


def run_profile(prep: dict, args: argparse.Namespace, work: Path) -> dict:
    out = work / "profile.json"
    cmd = [sys.executable, str(Path(__file__).resolve()), "--profile-step", str(out), "--model-dir",
           prep["location"], "--profile-mixture", prep["mixture"], "--threads", str(args.threads),
           "--batch-size", str(args.batch_size), "--seed", str(args.seed),
           "--max-source-length", str(args.max_source_length), "--max-target-length", str(args.max_target_length)]
    env = _env(args)
    env.setdefault("TOKENIZERS_PARALLELISM", "false")
    return _run_json(cmd, out, env)


def _split(text: str) -> list[str]:
    return [v.strip() for v in text.split(",") if v.strip()]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="smollm2")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--max-steps", type=int, default=5)
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument("--max-source-length", type=int, default=160)
    ap.add_argument("--max-target-length", type=int, default=32)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--seed", type=int, default=42)
    ap.add_argument("--examples", type=int, default=100, help="examples of the uniform mixture")
    ap.add_argument("--mixtures", default="varied,uniform", help=f"comma-separated: {', '.join(MIXTURES)}")
    ap.add_argument("--sides", default="plain,insta,trl", help="comma-separated: plain, insta, trl (trl: full "
                    "fine-tuning only)")
    ap.add_argument("--modes", default="full", help="comma-separated: full, lora")
    ap.add_argument("--omp-wait-policy", default="natural", choices=["natural", "PASSIVE", "ACTIVE"],
                    help="natural: each side as it comes (insta sets PASSIVE unless set; the plain and TRL scripts "
                    "leave the OpenMP default); or force one policy on all")
    ap.add_argument("--plain-pad-to-max", action="store_true",
                    help="the plain script pads every batch to the max length (naive) instead of the longest")
    ap.add_argument("--ablation", default="", help="comma-separated insta variants to run once (first repeat of the "
                    f"first mixture, full fine-tuning), or 'all': {', '.join(VARIANTS)}")
    ap.add_argument("--ablation-every-repeat", action="store_true", help="run the --ablation variants in every "
                    "repeat, alternating with the sides, instead of once")
    ap.add_argument("--profile", action="store_true", help="profile one insta step on the first mixture")
    ap.add_argument("--profile-top", type=int, default=12, help="ops listed in the profile")
    ap.add_argument("--out", default=str(RESULTS / "train_throughput"))
    ap.add_argument("--wrapped-by", default="", help="the command this one ran under (e.g. one that pauses a "
                    "background job), written before it in the results")
    # the matmul benchmark and the profile, each in a fresh process (internal)
    ap.add_argument("--measure-peak", default=None, help=argparse.SUPPRESS)
    ap.add_argument("--profile-step", default=None, help=argparse.SUPPRESS)
    ap.add_argument("--profile-mixture", default=None, help=argparse.SUPPRESS)
    ap.add_argument("--model-dir", default=None, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.measure_peak:
        peak = matmul_peak(matmul_shapes(model_dims(args.model_dir)), args.threads)
        Path(args.measure_peak).write_text(json.dumps(peak))
        return 0
    if args.profile_step:
        sys.path.insert(0, str(REPO / "src"))
        profile_insta_step(args.profile_mixture, args.model_dir, args, Path(args.profile_step))
        return 0
    given = [a for a in (sys.argv[1:] if argv is None else argv) if not a.startswith("--wrapped-by")]
    if args.wrapped_by and args.wrapped_by in given:
        given.remove(args.wrapped_by)
    command = (f"{args.wrapped_by} HF_HUB_OFFLINE=1 INSTA_DATA_DIR=../shared/data .venv/bin/python "
               f"benchmarks/bench_train_throughput.py {' '.join(given)}").strip()
    modes, mixtures, sides_wanted = _split(args.modes), _split(args.mixtures), _split(args.sides)
    ablation = list(VARIANTS) if args.ablation == "all" else _split(args.ablation)
    choices = (("--ablation variant", ablation, VARIANTS), ("--mixtures", mixtures, MIXTURES),
               ("--sides", sides_wanted, ("plain", "insta", "trl")), ("--modes", modes, ("full", "lora")))
    for name, got, known in choices:
        if any(v not in known for v in got):
            ap.error(f"unknown {name} {[v for v in got if v not in known]}: choose from {', '.join(known)}")

    t_start = time.perf_counter()
    load_start = _load()
    runs: list[dict] = []
    preps: dict[str, dict] = {}
    peaks: list[dict[str, float]] = []
    profile: dict | None = None
    with tempfile.TemporaryDirectory(prefix="insta-bench-train-") as tmp:
        work = Path(tmp)
        for mixture in mixtures:
            preps[mixture] = prepare(work, args, mixture)
        location = preps[mixtures[0]]["location"]
        peaks.append(run_matmul_peak(location, args, work))
        print(f"matmul GFLOP/s: {peaks[-1]}", flush=True)
        for mixture in mixtures:
            prep = preps[mixture]
            for rep in range(args.repeats):
                for mode in modes:
                    lora = mode == "lora"
                    sides = [s for s in sides_wanted if not (s == "trl" and lora)]
                    if not lora and (args.ablation_every_repeat or (rep == 0 and mixture == mixtures[0])):
                        sides += ablation
                    if rep % 2:
                        sides = sides[::-1]
                    for side in sides:
                        before = _load()
                        if side == "plain":
                            r = run_plain(prep, lora, args, work)
                        elif side == "trl":
                            r = run_trl(prep, args, work)
                        else:
                            flags, omp = VARIANTS.get(side, ([], None))
                            r = run_insta(prep, lora, args, work, flags, omp)
                            r["side"] = "insta" if side == "insta" else f"insta ({side})"
                        r.update(mixture=mixture, repeat=rep, mode=mode, load_before=before, load_after=_load())
                        runs.append(r)
                        print(f"[{mixture} {rep}] {mode:4s} {r['side']:26s} {r['tokens']:5d} tokens "
                              f"{r['train_seconds']:7.1f} s {r['tokens_per_second']:7.1f} tok/s "
                              f"{r['seconds_per_step']:6.2f} s/step cpu {r['train_cpu_seconds']:6.1f} s "
                              f"loss {r['train_loss']:.4f} load {before[0]}->{r['load_after'][0]}", flush=True)
        peaks.append(run_matmul_peak(location, args, work))
        print(f"matmul GFLOP/s: {peaks[-1]}", flush=True)
        if args.profile:
            profile = run_profile(preps[mixtures[0]], args, work)
            print(f"profile: step {profile['step_seconds']} s, matmuls {profile['matmul_share']:.0%} of it at "
                  f"{profile['matmul_gflops']} GFLOP/s", flush=True)

    import torch
    import transformers
    import trl

    dims = model_dims(location)
    peak = {name: max(p[name] for p in peaks) for name in peaks[0]}
    roof = max(peak.values())
    flops = attach_flops(runs, preps, dims, roof)
    summary = summarize(runs)
    record = {
        "command": command,
        "created": time.strftime("%Y-%m-%dT%H:%M:%S"),
        "wall_seconds": round(time.perf_counter() - t_start, 1),
        "commit": _git("rev-parse", "--short", "HEAD"),
        "machine": {"cpus": os.cpu_count(), "threads": args.threads, "platform": platform.platform(),
                    "processor": _cpu_model(), "python": platform.python_version(), "torch": torch.__version__,
                    "transformers": transformers.__version__, "trl": trl.__version__,
                    "omp_wait_policy": args.omp_wait_policy,
                    "load_average_before": load_start, "load_average_after": _load()},
        "setup": {"model": args.model, "batch_size": args.batch_size, "max_steps": args.max_steps,
                  "max_source_length": args.max_source_length, "max_target_length": args.max_target_length,
                  "plain_padding": "max_length" if args.plain_pad_to_max else "longest (DataCollatorForSeq2Seq "
                                                                             "default)",
                  "repeats": args.repeats, "selection": SNARKS_SELECTION,
                  "ablation_every_repeat": args.ablation_every_repeat,
                  "mixtures": {k: {"described": v["described"], "examples": v["stats"]["n_examples"],
                                   "tokens_per_epoch": v["stats"]["tokens_per_epoch"],
                                   "target_tokens_per_epoch": v["stats"]["target_tokens_per_epoch"],
                                   "truncated": v["stats"]["n_truncated"], "length_mean": v["length_mean"],
                                   "length_min": v["length_min"], "length_max": v["length_max"]}
                               for k, v in preps.items()}},
        "model_dims": dims,
        "matmul_gflops": {"before": peaks[0], "after": peaks[-1], "peak": roof},
        "flops": flops,
        "summary": summary,
        "profile": profile,
        "runs": runs,
    }
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.with_suffix(".json").write_text(json.dumps(record, indent=2) + "\n")
    out.with_suffix(".md").write_text(markdown(record))
    print(f"wrote {out.with_suffix('.json')} and {out.with_suffix('.md')}")
    for key, x in summary.items():
        print(f"{key}: insta / plain {x.get('insta_vs_plain')}, insta / TRL {x.get('insta_vs_trl')}")
    return 0


def attach_flops(runs: list[dict], preps: dict[str, dict], dims: dict, roof: float) -> dict:
    """Model FLOPs per real token of each mixture's trained batches (the plain side notes them; every side trains
    the same batches, which the equal token counts confirm; without a plain run, the whole mixture's average),
    and each run's model GFLOP/s and fraction of the matmul roof."""
    out = {}
    for mixture, prep in preps.items():
        plain = next((r for r in runs if r["mixture"] == mixture and r["side"] == "plain" and r.get("batches")), None)
        if plain:
            examples = [e for b in plain["batches"] for e in b]
            source = "the plain run's trained batches"
        else:
            examples, source = prep["examples"], "the whole mixture (no plain run)"
        tokens = sum(n for n, _ in examples)
        per_token = sum(example_flops(n, t, dims) for n, t in examples) / tokens
        out[mixture] = {"flops_per_token": round(per_token), "tokens": tokens, "source": source,
                        "target_share": round(sum(t for _, t in examples) / tokens, 4)}
        for r in runs:
            if r["mixture"] == mixture and r["mode"] == "full":
                r["model_gflops"] = round(per_token * r["tokens_per_second"] / 1e9, 1)
                r["roof_fraction"] = round(r["model_gflops"] / roof, 3)
                r["same_batches"] = r["tokens"] == tokens if plain else None
    return out


def _cpu_model() -> str | None:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or None


def _git(*a: str) -> str | None:
    try:
        return subprocess.run(["git", *a], cwd=REPO, capture_output=True, text=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return None


def _ratios(xs: list[dict], base: dict[int, dict]) -> list[float]:
    return [round(r["tokens_per_second"] / base[r["repeat"]]["tokens_per_second"], 3)
            for r in xs if r["repeat"] in base]


def _median_range(values: list[float]) -> dict:
    return {"median": round(statistics.median(values), 2), "min": min(values), "max": max(values)} if values else {}


def summarize(runs: list[dict]) -> dict:
    """Per mixture and mode (``"varied/full"``), per side: median (and range) tokens/s, s/step, CPU s, fraction
    of the roof, and the ratios of tokens/s to the plain and TRL runs of the same repeat (each side against the
    runs measured next to it)."""
    out: dict = {}
    for key in dict.fromkeys(f"{r['mixture']}/{r['mode']}" for r in runs):
        rs = [r for r in runs if f"{r['mixture']}/{r['mode']}" == key]
        base = {name: {r["repeat"]: r for r in rs if r["side"] == name} for name in ("plain", "trl")}
        sides: dict = {}
        for side in dict.fromkeys(r["side"] for r in rs):
            xs = [r for r in rs if r["side"] == side]
            tps = [r["tokens_per_second"] for r in xs]
            sps = [r["seconds_per_step"] for r in xs]
            v = {"tokens_per_second_median": round(statistics.median(tps), 2),
                 "tokens_per_second_range": [min(tps), max(tps)],
                 "seconds_per_step_median": round(statistics.median(sps), 3),
                 "seconds_per_step_range": [min(sps), max(sps)],
                 "train_cpu_seconds_median": round(statistics.median(r["train_cpu_seconds"] for r in xs), 1),
                 "train_loss_median": round(statistics.median(r["train_loss"] for r in xs), 4),
                 "tokens": sorted({r["tokens"] for r in xs}), "runs": len(xs),
                 "omp_wait_policy": xs[0].get("omp_wait_policy")}
            if all("roof_fraction" in r for r in xs):
                v["model_gflops_median"] = round(statistics.median(r["model_gflops"] for r in xs), 1)
                v["roof_fraction"] = _median_range([r["roof_fraction"] for r in xs])
            if "same_ids_as_insta" in xs[0]:
                v["same_ids_as_insta"] = f"{xs[0]['same_ids_as_insta']}/{xs[0]['examples']}"
            for name in ("plain", "trl"):
                if side != name and (ratios := _ratios(xs, base[name])):
                    v[f"vs_{name}"] = {"ratios": ratios, **_median_range(ratios)}
            sides[side] = v
        insta = sides.get("insta", {})
        out[key] = {"sides": sides, "insta_vs_plain": insta.get("vs_plain"), "insta_vs_trl": insta.get("vs_trl"),
                    "same_tokens": len({r["tokens"] for r in rs}) == 1}
    return out


def _ratio_cell(v: dict | None, bold: bool) -> str:
    if not v:
        return ""
    text = f"{v['median']:.2f}x" + (f" ({v['min']:.2f}-{v['max']:.2f})" if len(v["ratios"]) > 1 else "")
    return f"**{text}**" if bold else text


def markdown(r: dict) -> str:
    m, s, mm = r["machine"], r["setup"], r["matmul_gflops"]
    lines = [
        "# Training throughput: insta train vs a plain transformers Trainer and TRL's SFTTrainer",
        "",
        f"Command: `{r['command']}`",
        "",
        f"Measured {r['created']} (commit {r['commit']}, {r['wall_seconds']:.0f} s in all) on {m['cpus']} CPU cores "
        f"({m['processor']}), {m['threads']} torch threads, torch {m['torch']}, transformers {m['transformers']}, "
        f"trl {m['trl']}; load average before {m['load_average_before']}, after {m['load_average_after']} (each "
        "run's own is in the JSON; a load above the core count means other processes shared the CPU).",
        "",
        f"SmolLM2-135M-Instruct, fp32, full fine-tuning, AdamW (the Trainer's default), lr 5e-5, batch "
        f"{s['batch_size']}, {s['max_steps']} optimiser steps, prompt <= {s['max_source_length']} and target <= "
        f"{s['max_target_length']} tokens, the same sampler order on every side; {s['repeats']} repeats, sides "
        "alternating (the order reverses every repeat), each run a fresh process. Mixtures (BIG-bench tasks of "
        f"the README's selection for BBH snarks: {', '.join(s['selection'])}):",
        "",
    ]
    for name, x in s["mixtures"].items():
        lines.append(f"* `{name}`: {x['described']}; {x['examples']} examples, {x['length_mean']} tokens on average "
                     f"({x['length_min']}-{x['length_max']}), {x['target_tokens_per_epoch']} of "
                     f"{x['tokens_per_epoch']} tokens are targets, {x['truncated']} truncated.")
    lines += [
        "",
        "Sides: `plain` = benchmarks/plain_trainer.py (a stock `Trainer`, `DataCollatorForSeq2Seq` padding to the "
        f"{s['plain_padding'].split(' ')[0]}, full logits); `insta` = `insta train` (its defaults: padding-free "
        "balanced rows of about 512 tokens, LM head and loss only at the target tokens); `trl` = "
        "benchmarks/trl_trainer.py (`SFTTrainer`, prompt/completion data, `completion_only_loss=True`, "
        "`padding_free=True`, `bf16=False`, `gradient_checkpointing=False`: the batch in one row, its chunked LM "
        "head at every position on a CPU). insta and plain train on insta's token ids; TRL tokenizes the "
        "prompt/completion text itself (same ids: see the table). Real tokens/s = non-padding tokens of the "
        "batches trained on / seconds of `trainer.train()`.",
        "",
        f"**Roof.** fp32 `torch.nn.functional.linear`, {m['threads']} threads, best of 3 rounds, GFLOP/s "
        "(before / after the runs): " + ", ".join(f"{k} {mm['before'][k]:.0f} / {mm['after'][k]:.0f}"
                                                  for k in mm["before"])
        + f". Peak = the fastest: **{mm['peak']:.0f} GFLOP/s**.",
        "",
        "**Model FLOPs** per trained example of L tokens with T target tokens: 6 N_body L + 6 N_head T + "
        "6 n_layers d_attn L (L + 1), with N_body = "
        f"{r['model_dims']['n_body'] / 1e6:.1f}M (the transformer's linear layers), N_head = "
        f"{r['model_dims']['n_head'] / 1e6:.1f}M (LM head, {r['model_dims']['d_model']} x "
        f"{r['model_dims']['vocab']}), {r['model_dims']['layers']} layers, d_attn {r['model_dims']['d_attn']}: "
        "forward and backward through the body at every position (the targets attend to the prompt, so the "
        "prompt's activations need their gradients too), the LM head only where a target is predicted, causal "
        "attention scores and values. The same count for every side (what the update needs, not what a side "
        "computes); per trained token: " + ", ".join(
            f"{k} {v['flops_per_token'] / 1e6:.0f} MFLOP (targets {v['target_share']:.1%} of the tokens)"
            for k, v in r["flops"].items())
        + ". Fraction of roof = model FLOPs / s of `train()` / peak.",
        "",
        "| mixture | side | OMP_WAIT_POLICY | real tokens | tokens/s (median, range) | s/step (median, range) | "
        "CPU s | model GFLOP/s | fraction of roof | train loss | vs plain (median, range) | vs TRL (median, range) |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for key, x in r["summary"].items():
        for side, v in x["sides"].items():
            tr, sr = v["tokens_per_second_range"], v["seconds_per_step_range"]
            roof = v.get("roof_fraction")
            roof_cell = (f"{roof['median']:.0%}" + (f" ({roof['min']:.0%}-{roof['max']:.0%})"
                                                    if v["runs"] > 1 else "")) if roof else ""
            lines.append(
                f"| {key.replace('/full', '')} | {side} | {v.get('omp_wait_policy')} | "
                f"{'/'.join(map(str, v['tokens']))} | {v['tokens_per_second_median']:.1f} ({tr[0]:.1f}-{tr[1]:.1f}) | "
                f"{v['seconds_per_step_median']:.2f} ({sr[0]:.2f}-{sr[1]:.2f}) | {v['train_cpu_seconds_median']:.1f} | "
                f"{v.get('model_gflops_median', '')} | {roof_cell} | {v['train_loss_median']:.4f} | "
                f"{_ratio_cell(v.get('vs_plain'), side == 'insta')} | "
                f"{_ratio_cell(v.get('vs_trl'), side == 'insta')} |")
    same = [f"{k.split('/')[0]} {v['sides']['trl']['same_ids_as_insta']}" for k, v in r["summary"].items()
            if "same_ids_as_insta" in v["sides"].get("trl", {})]
    lines += [
        "",
        "Ratios: tokens/s over the plain (TRL) run of the same repeat. CPU s: the process's CPU time in "
        "`trainer.train()` (all threads, median). Train loss: the mean loss of the run (median over repeats): the "
        "sides train the same batches with the same optimiser, so it agrees to a few decimals when they compute "
        "the same thing (TRL's padding-free rows on the CPU's SDPA attention included)."
        + (f" Examples TRL tokenized to exactly insta's ids and labels: {', '.join(same)}." if same else ""),
        "",
    ]
    lines += _variants_note(r) + _profile_lines(r.get("profile"))
    return "\n".join(lines)


def _variants_note(r: dict) -> list[str]:
    variants = {side for x in r["summary"].values() for side in x["sides"] if side.startswith("insta (")}
    if not variants:
        return []
    when = ("in every repeat, alternating with the sides" if r["setup"].get("ablation_every_repeat")
            else "once, in the first repeat of the first mixture")
    return [f"insta variants ({when}): `padded` = padded batches and full logits; "
            "`padding-free only` / `target logits only` = one of insta's two batching speed-ups alone; "
            "`omp-active` = insta's default batching with OMP_WAIT_POLICY=ACTIVE (spinning OpenMP waits, which "
            "the plain and TRL scripts get by default, where insta sets PASSIVE at import so that it does not slow "
            "to a crawl on a shared machine); `rows of 160` / `rows of 256` = `--packing-row-tokens 160` / `256` "
            "(packed rows of about 160 / 256 tokens instead of 512: less attention computed under the "
            "block-diagonal mask).", ""]


def _profile_lines(p: dict | None) -> list[str]:
    if not p:
        return []
    lines = [
        f"**Where insta's time goes** (torch profiler, insta's second training step on the first mixture, "
        f"{p['step_seconds']:.2f} s with the profiler on): matmuls (aten::mm/addmm/bmm) take "
        f"{p['matmul_share']:.0%} of the step at {p['matmul_gflops']:.0f} GFLOP/s ({p['matmul_gflop']:.0f} GFLOP); "
        "top ops by self CPU time:",
        "",
        "| op | calls | self s | share of the step | GFLOP/s |",
        "|---|---|---|---|---|",
    ]
    lines += [f"| `{t['op']}` | {t['calls']} | {t['self_seconds']:.3f} | {t['share']:.1%} | {t.get('gflops', '')} |"
              for t in p["top"]]
    return lines + [""]


if __name__ == "__main__":
    sys.exit(main())

"""The CUDA check: a few training steps and a rank-classification evaluation on one GPU in bf16, compared with the
same run on the CPU in fp32 within stated tolerances (:data:`TOLERANCES`).

``scripts/gpu_check.sh [MODEL] [OUT]`` runs both sides (the CPU side with ``CUDA_VISIBLE_DEVICES=`` so that the
trainer cannot pick the GPU) and the comparison; where no GPU exists it prints one line and exits 0. By hand::

    python -m insta.gpu_check side --device cuda --model smollm2 --out gpu.json
    CUDA_VISIBLE_DEVICES= python -m insta.gpu_check side --device cpu --model smollm2 --out cpu.json
    python -m insta.gpu_check compare cpu.json gpu.json

Both sides train the same records in the same order from the same seed (insta's trainer: padding-free batches,
loss on the target tokens); the GPU side uses bf16 mixed precision (fp32 master weights, as the paper configs
train) and evaluates with bf16 weights, the CPU side stays in fp32. bf16 keeps 8 significant bits (relative
rounding 2^-8 = 0.4% per operation), so the tolerances are loose enough for accumulated rounding and tight enough
to catch a wrong device path (a dropped attention mask, a misplaced position id, a loss over the prompt).
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any, Sequence

from .errors import InstaError

#: what "the same" means: per-step training loss within 0.05 nats + 5% of its size; each option's summed
#: log-likelihood within 0.25 nats + 5%; the argmax option equal on at least 90% of the examples
TOLERANCES = {"loss_abs": 0.05, "loss_rel": 0.05, "loglik_abs": 0.25, "loglik_rel": 0.05, "agreement": 0.90}

_FACTS = [("Is seven an odd number?", "yes"), ("Is ten an odd number?", "no"), ("Is water wet?", "yes"),
          ("Is fire cold?", "no"), ("Do fish swim?", "yes"), ("Do stones fly?", "no"), ("Is the sun hot?", "yes"),
          ("Is snow black?", "no"), ("Can birds fly?", "yes"), ("Can cars talk?", "no"), ("Is ice frozen?", "yes"),
          ("Is a mouse larger than a horse?", "no"), ("Is Paris in France?", "yes"), ("Is Rome in Norway?", "no"),
          ("Do bees make honey?", "yes"), ("Is two larger than five?", "no")]
_HELD_OUT = [("Is grass green?", "yes"), ("Is milk blue?", "no"), ("Do dogs bark?", "yes"), ("Is nine even?", "no"),
             ("Is the sea salty?", "yes"), ("Do trees walk?", "no"), ("Is gold a metal?", "yes"),
             ("Is a week ten days long?", "no")]


def _prompt(question: str) -> str:
    return f"Question: {question} Answer yes or no.\nAnswer:"


def check_records() -> list[dict[str, Any]]:
    """The training records of the check (16 hand-written yes/no questions)."""
    return [{"id": f"gpu-check::{i}", "task": "gpu-check", "input": _prompt(q), "target": a}
            for i, (q, a) in enumerate(_FACTS)]


def check_examples() -> list:
    """The evaluation examples of the check (8 other yes/no questions, options yes / no)."""
    from .records import Example

    return [Example(id=f"gpu-check-eval:{i}", input=_prompt(q), references=[a], options=["yes", "no"],
                    label=["yes", "no"].index(a), provenance={"task": "gpu-check"})
            for i, (q, a) in enumerate(_HELD_OUT)]


def run_side(model: str, device: str, out_dir: str | Path, steps: int = 4, seed: int = 0) -> dict[str, Any]:
    """Train ``steps`` steps and evaluate the base and the trained model on ``device`` (cpu: fp32; cuda: bf16)."""
    import torch

    from .evaluate import EvalConfig, evaluate_examples
    from .lm import load_model, resolve_model
    from .train import TrainConfig, train_model

    if device == "cuda" and not torch.cuda.is_available():
        raise InstaError("no CUDA device: the GPU side of the check needs one")
    if device == "cpu" and torch.cuda.is_available():
        raise InstaError("a GPU is visible: run the CPU side with CUDA_VISIBLE_DEVICES= (the trainer would use it)")
    if device not in ("cpu", "cuda"):
        raise InstaError(f"device must be cpu or cuda (got {device!r})")
    gpu = device == "cuda"
    loc = resolve_model(model)
    cfg = TrainConfig(model=loc, output_dir=str(Path(out_dir) / f"train-{device}"), max_steps=steps, batch_size=4,
                      learning_rate=1e-4, lr_scheduler="constant", seed=seed, logging_steps=1, save_steps=10_000,
                      overwrite=True, resume=False, progress=False, bf16=gpu, dtype="float32")
    res = train_model(check_records(), cfg)
    dtype = "bfloat16" if gpu else "float32"
    ev = EvalConfig(mode="rank", calibration="none", batch_size=4, progress=False, samples=True)
    loglik = {}
    for name, where in (("base", loc), ("trained", res.model_dir)):
        lm = load_model(where, dtype=dtype, device=device)
        out = evaluate_examples(lm, check_examples(), ev, task_id="gpu-check")
        loglik[name] = [[float(x) for x in s["scores_sum"]] for s in out["samples"]]
        del lm
    return {"device": device, "dtype": f"{'bf16 mixed precision' if gpu else 'fp32'} training, {dtype} evaluation",
            "gpu": torch.cuda.get_device_name(0) if gpu else None, "torch": torch.__version__, "model": model,
            "steps": steps, "seed": seed, "losses": [h["loss"] for h in res.metrics["loss_history"]],
            "loglik_base": loglik["base"], "loglik_trained": loglik["trained"]}


def _argmax(xs: Sequence[float]) -> int:
    return max(range(len(xs)), key=lambda i: xs[i])


def compare(cpu: dict[str, Any], gpu: dict[str, Any], tol: dict[str, float] | None = None) -> dict[str, Any]:
    """Each check of the GPU side against the CPU side: its largest deviation, its limit and whether it passes."""
    tol = {**TOLERANCES, **(tol or {})}
    checks = []
    lc, lg = cpu.get("losses") or [], gpu.get("losses") or []
    if not lc or len(lc) != len(lg):
        raise InstaError(f"the sides logged {len(lc)} and {len(lg)} training losses: run both with the same steps")
    excess = [abs(g - c) - (tol["loss_abs"] + tol["loss_rel"] * abs(c)) for c, g in zip(lc, lg)]
    checks.append({"name": "training loss per step (nats)", "max_diff": max(abs(g - c) for c, g in zip(lc, lg)),
                   "limit": f"{tol['loss_abs']} + {tol['loss_rel']:.0%} of the CPU value", "ok": max(excess) <= 0})
    for which in ("loglik_base", "loglik_trained"):
        a, b = cpu.get(which) or [], gpu.get(which) or []
        if not a or len(a) != len(b) or any(len(x) != len(y) for x, y in zip(a, b)):
            raise InstaError(f"{which}: the sides scored different examples or options")
        excess = [abs(y - x) - (tol["loglik_abs"] + tol["loglik_rel"] * abs(x))
                  for xs, ys in zip(a, b) for x, y in zip(xs, ys)]
        worst = max(abs(y - x) for xs, ys in zip(a, b) for x, y in zip(xs, ys))
        name = "base" if which == "loglik_base" else "trained"
        checks.append({"name": f"option log-likelihood, {name} model (nats)", "max_diff": worst,
                       "limit": f"{tol['loglik_abs']} + {tol['loglik_rel']:.0%} of the CPU value",
                       "ok": max(excess) <= 0})
        agree = sum(_argmax(x) == _argmax(y) for x, y in zip(a, b)) / len(a)
        checks.append({"name": f"same predicted option, {name} model", "max_diff": 1 - agree,
                       "limit": f">= {tol['agreement']:.0%} agree", "ok": agree >= tol["agreement"]})
    return {"ok": all(c["ok"] for c in checks), "checks": checks, "cpu": cpu.get("dtype"), "gpu": gpu.get("dtype"),
            "gpu_name": gpu.get("gpu"), "tolerances": tol}


def describe(result: dict[str, Any]) -> list[str]:
    """The comparison as printable lines, the verdict first."""
    head = (f"gpu_check: {'PASS' if result['ok'] else 'FAIL'}: {result.get('gpu_name') or 'GPU'} "
            f"({result.get('gpu')}) vs CPU ({result.get('cpu')})")
    return [head] + [f"  {'ok  ' if c['ok'] else 'FAIL'} {c['name']}: largest deviation {c['max_diff']:.4g} "
                     f"(limit {c['limit']})" for c in result["checks"]]


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m insta.gpu_check side|compare ...`` (see the module docstring)."""
    p = argparse.ArgumentParser(prog="python -m insta.gpu_check", description="CUDA bf16 vs CPU fp32 check")
    sub = p.add_subparsers(dest="cmd", required=True)
    s = sub.add_parser("side", help="train and evaluate on one device, write the numbers as JSON")
    s.add_argument("--device", required=True, choices=["cpu", "cuda"])
    s.add_argument("--model", default="smollm2")
    s.add_argument("--steps", type=int, default=4)
    s.add_argument("--out", required=True)
    c = sub.add_parser("compare", help="compare a CPU side with a GPU side")
    c.add_argument("cpu")
    c.add_argument("gpu")
    c.add_argument("--out", help="write the comparison as JSON")
    args = p.parse_args(argv)
    try:
        if args.cmd == "side":
            out = Path(args.out)
            res = run_side(args.model, args.device, out.parent / "work", steps=args.steps)
            out.parent.mkdir(parents=True, exist_ok=True)
            out.write_text(json.dumps(res, indent=2))
            print(f"gpu_check {args.device}: losses {', '.join(f'{x:.4f}' for x in res['losses'])} -> {out}")
            return 0
        result = compare(json.loads(Path(args.cpu).read_text()), json.loads(Path(args.gpu).read_text()))
        if args.out:
            Path(args.out).write_text(json.dumps(result, indent=2))
        print("\n".join(describe(result)))
        return 0 if result["ok"] else 1
    except (InstaError, OSError, ValueError) as err:
        print(f"gpu_check: error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())

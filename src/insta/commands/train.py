"""``insta train``: fine-tune a causal or seq2seq LM on a mixture (full or LoRA)."""
from __future__ import annotations

import argparse


def add_parser(sub) -> None:
    from ..train import SCHEDULERS
    from ._common import positive_int

    p = sub.add_parser(
        "train",
        help="fine-tune an LM on a mixture (transformers Trainer; full or LoRA)",
        description="Fine-tune a causal or seq2seq LM on a mixture JSONL. Checkpoints go to OUT/checkpoints and a "
        "rerun resumes from the last one; the final model (or LoRA adapter) goes to OUT/model. Several GPUs: "
        "`accelerate launch -m insta.cli train ...` or `torchrun --nproc_per_node N -m insta.cli train ...`.",
    )
    p.add_argument("--mixture", "-m", required=True,
                   help="mixture JSONL (insta, alpaca, messages or TRL prompt/completion records)")
    p.add_argument("--model", default="smollm2", help="smollm2 (default), a local model dir, or a hub id")
    p.add_argument("--out", "-o", required=True, help="run directory")
    sched = p.add_argument_group("schedule")
    sched.add_argument("--epochs", type=float, default=3.0)
    sched.add_argument("--max-steps", type=int, default=-1, help="overrides --epochs when > 0")
    sched.add_argument("--lr", type=float, default=None, help="learning rate (default 5e-5 full, 2e-4 LoRA)")
    sched.add_argument("--batch-size", type=positive_int, default=8, help="per device")
    sched.add_argument("--grad-accum", type=positive_int, default=1)
    sched.add_argument("--warmup-ratio", type=float, default=0.0)
    sched.add_argument("--weight-decay", type=float, default=0.0)
    sched.add_argument("--scheduler", default="linear", choices=SCHEDULERS, help="lr scheduler type (default linear)")
    sched.add_argument("--seed", type=int, default=42)
    data = p.add_argument_group("data")
    data.add_argument("--max-source-length", type=positive_int, default=256)
    data.add_argument("--max-target-length", type=positive_int, default=64)
    lora = p.add_argument_group("LoRA")
    lora.add_argument("--lora", action="store_true", help="train a LoRA adapter (peft) instead of all weights")
    lora.add_argument("--lora-r", type=positive_int, default=8)
    lora.add_argument("--lora-alpha", type=int, default=16)
    lora.add_argument("--lora-dropout", type=float, default=0.05)
    lora.add_argument("--lora-targets", default="all-linear", help="comma-separated module names, or all-linear")
    lora.add_argument("--merge-lora", action="store_true", help="save merged full weights (adapter in OUT/adapter)")
    speed = p.add_argument_group("batching (none changes what is learned but --group-by-length, which changes "
                                 "which examples share a batch)")
    speed.add_argument("--padding-free", action=argparse.BooleanOptionalAction, default=True,
                       help="causal LMs: lay a batch's examples end to end with restarting positions, no padding "
                       "(checked on the model first; default on)")
    speed.add_argument("--packing-row-tokens", type=positive_int, default=512, metavar="N",
                       help="padding-free: split a batch of more tokens into balanced rows of about N (default 512)")
    speed.add_argument("--target-logits-only", action=argparse.BooleanOptionalAction, default=True,
                       help="causal LMs: LM head and loss only at the target tokens (default on)")
    speed.add_argument("--group-by-length", action=argparse.BooleanOptionalAction, default=False,
                       help="batches of similar lengths, shuffled every epoch (helps padded batches: seq2seq, "
                       "--no-padding-free)")
    run_g = p.add_argument_group("checkpoints and device")
    run_g.add_argument("--save-steps", type=positive_int, default=200)
    run_g.add_argument("--save-total-limit", type=positive_int, default=2)
    run_g.add_argument("--no-resume", action="store_true", help="do not resume from OUT/checkpoints")
    run_g.add_argument("--overwrite", action="store_true", help="delete an earlier run in OUT first")
    run_g.add_argument("--logging-steps", type=positive_int, default=5)
    run_g.add_argument("--bf16", action="store_true", help="bf16 mixed precision (GPU)")
    run_g.add_argument("--gradient-checkpointing", action="store_true")
    run_g.add_argument("--no-progress", action="store_true", help="no progress bars (also --quiet)")
    dist = p.add_argument_group("passed through to transformers' TrainingArguments")
    dist.add_argument("--report-to", default="none", help="none (default), tensorboard, wandb, ... (comma-separated; "
                      "the integration must be installed)")
    dist.add_argument("--deepspeed", metavar="CONFIG", default=None, help="DeepSpeed config JSON (under a launcher: "
                      "deepspeed / accelerate launch / torchrun)")
    dist.add_argument("--fsdp", default="", help="FSDP options, e.g. 'full_shard auto_wrap' (under torchrun or "
                      "accelerate launch)")
    dist.add_argument("--fsdp-config", metavar="CONFIG", default=None, help="FSDP config JSON (with --fsdp)")
    from ._common import add_output_args

    add_output_args(p, json_help="write the run's result (model folder, metrics, timings) as JSON")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from ..train import TrainConfig, train_model

    targets = args.lora_targets
    if targets != "all-linear":
        targets = [t.strip() for t in targets.split(",") if t.strip()]
    config = TrainConfig(
        model=args.model, output_dir=args.out, epochs=args.epochs, max_steps=args.max_steps,
        learning_rate=args.lr, batch_size=args.batch_size, grad_accum=args.grad_accum,
        warmup_ratio=args.warmup_ratio, weight_decay=args.weight_decay, lr_scheduler=args.scheduler, seed=args.seed,
        max_source_length=args.max_source_length, max_target_length=args.max_target_length,
        lora=args.lora, lora_r=args.lora_r, lora_alpha=args.lora_alpha, lora_dropout=args.lora_dropout,
        lora_target_modules=targets, merge_lora=args.merge_lora, save_steps=args.save_steps,
        save_total_limit=args.save_total_limit, resume=not args.no_resume, overwrite=args.overwrite,
        logging_steps=args.logging_steps, bf16=args.bf16, gradient_checkpointing=args.gradient_checkpointing,
        progress=not args.no_progress, report_to=args.report_to, deepspeed=args.deepspeed, fsdp=args.fsdp,
        fsdp_config=args.fsdp_config, padding_free=args.padding_free, packing_row_tokens=args.packing_row_tokens,
        target_logits_only=args.target_logits_only, group_by_length=args.group_by_length,
    )
    result = train_model(args.mixture, config)
    from ._common import emit_json

    emit_json(args, {"model_dir": str(result.model_dir), "metrics": result.metrics})
    if args.quiet or args.json_out == "-":
        return 0
    m = result.metrics
    loss = (f"loss {m['first_loss']:.4f} -> {m['last_loss']:.4f}" if m.get("first_loss") is not None
            and m.get("last_loss") is not None else "no loss logged")
    print(f"trained {m['kind']} model {args.model} ({'LoRA' if m['lora'] else 'full'}) on {m['n_examples']} examples: "
          f"{m['global_step']} steps, {loss}, {m['tokens_per_second']} tokens/s")
    if m.get("resumed_from"):
        print(f"resumed from {m['resumed_from']}")
    print(f"model: {result.model_dir}")
    return 0

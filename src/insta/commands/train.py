"""``insta train``: fine-tune a causal or seq2seq LM on a mixture (full or LoRA)."""
from __future__ import annotations

import argparse

#: older flag names of TrainConfig fields (each still works)
ALIASES = {"output_dir": ["--out", "-o"], "learning_rate": ["--lr"], "lr_scheduler": ["--scheduler"],
           "lora_target_modules": ["--lora-targets"]}


def _targets(text: str) -> list[str] | str:
    """``--lora-target-modules``: ``all-linear`` or comma-separated module names."""
    if text == "all-linear":
        return text
    return [t.strip() for t in text.split(",") if t.strip()]


def add_parser(sub) -> None:
    from ..train import TrainConfig
    from ._config import add_config_file_flag, add_config_flags

    p = sub.add_parser(
        "train",
        help="fine-tune an LM on a mixture (transformers Trainer; full or LoRA)",
        description="Fine-tune a causal or seq2seq LM on a mixture JSONL. Checkpoints go to OUT/checkpoints and a "
        "rerun resumes from the last one; the final model (or LoRA adapter) goes to OUT/model. Several GPUs: "
        "`accelerate launch -m insta.cli train ...` or `torchrun --nproc_per_node N -m insta.cli train ...`.",
    )
    p.add_argument("--mixture", "-m", required=True,
                   help="mixture JSONL (insta, alpaca, messages or TRL prompt/completion records)")
    add_config_file_flag(p, "training (TrainConfig)")
    add_config_flags(p, TrainConfig, aliases=ALIASES, types_={"lora_target_modules": _targets, "report_to": str},
                     required=("output_dir",))
    from ._common import add_output_args

    add_output_args(p, json_help="write the run's result (model folder, metrics, timings) as JSON")
    p.set_defaults(func=run)


def config_from_args(args: argparse.Namespace):
    """TrainConfig from its defaults, ``--config`` and the flags given."""
    from ..train import TrainConfig
    from ._config import build_config

    return build_config(TrainConfig, args, "training")


def run(args: argparse.Namespace) -> int:
    from ..train import train_model

    config = config_from_args(args)
    result = train_model(args.mixture, config)
    from ._common import emit_json

    emit_json(args, {"model_dir": str(result.model_dir), "metrics": result.metrics})
    if args.quiet or args.json_out == "-":
        return 0
    m = result.metrics
    if m.get("already_trained"):
        from ..util.textsafe import safe_text

        print(safe_text(f"{config.output_dir} already holds this finished run ({m.get('global_step')} steps): "
                        f"nothing to train; --overwrite trains it again\nmodel: {result.model_dir}"))
        return 0
    loss = (f"loss {m['first_loss']:.4f} -> {m['last_loss']:.4f}" if m.get("first_loss") is not None
            and m.get("last_loss") is not None else "no loss logged")
    kind = "LoRA" if m["lora"] else "full"
    print(f"trained {m['kind']} model {config.model} ({kind}) on {m['n_examples']} examples: "
          f"{m['global_step']} steps, {loss}, {m['tokens_per_second']} tokens/s")
    if m.get("resumed_from"):
        print(f"resumed from {m['resumed_from']}")
    print(f"model: {result.model_dir}")
    return 0

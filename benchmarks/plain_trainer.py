"""A minimal plain ``transformers.Trainer`` fine-tuning script: the baseline of bench_train_throughput.py.

    python benchmarks/plain_trainer.py --features feats.jsonl --model DIR [--lora] [--max-steps N] --json out.json

What a stock script does, nothing more: ``AutoModelForCausalLM`` in fp32, optionally a peft LoRA adapter (r 8,
alpha 16, dropout 0.05, all linear layers: insta's defaults), ``DataCollatorForSeq2Seq`` (its default padding,
``padding=True``, pads each batch to its longest example; ``--pad-to-max-length`` pads every batch to
``--max-length`` as a naive script would), labels padded with -100, the Trainer's default random sampler,
optimizer (AdamW, fused in torch >= 2.8) and linear schedule, no checkpoints, no evaluation.

The training data are tokenised features, one JSON object per line with ``input_ids`` and ``labels`` (the
prompt masked with -100): the benchmark writes them once so that both sides train on identical token sequences.
Real (non-padding) tokens are the Trainer's own count (``include_num_input_tokens_seen="non_padding"``), so only
the batches it trained on count. Each trained batch's examples are noted as ``[tokens, target tokens]`` (the
benchmark counts model FLOPs from them). Prints one JSON record (and writes it with ``--json``).
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from typing import Any, Callable


def recording(collator: Callable[[list[dict]], Any], batches: list[list[list[int]]]) -> Callable[[list[dict]], Any]:
    """``collator`` that also notes each batch's examples as ``[tokens, target tokens]`` (the batches made, in
    order; the first ``global_step`` of them are the ones trained on): the benchmark counts model FLOPs from them."""
    def collate(features: list[dict]) -> Any:
        batches.append([[len(f["input_ids"]), sum(x != -100 for x in f["labels"])] for f in features])
        return collator(features)
    return collate


def timed_train(trainer: Any) -> dict[str, Any]:
    """``trainer.train()`` timed: wall and CPU seconds of the call, and the seconds from the first step's start to
    the last step's end (as insta reports them); steps, losses."""
    from transformers import TrainerCallback

    timer: dict[str, float] = {}

    class StepTimer(TrainerCallback):
        def on_step_begin(self, a, state, control, **kw):
            timer.setdefault("first", time.perf_counter())

        def on_step_end(self, a, state, control, **kw):
            timer["last"] = time.perf_counter()
            timer["steps"] = timer.get("steps", 0) + 1

    trainer.add_callback(StepTimer())
    t0, cpu0 = time.perf_counter(), time.process_time()
    out = trainer.train()
    train_s, train_cpu = time.perf_counter() - t0, time.process_time() - cpu0
    steps_s = timer.get("last", 0.0) - timer.get("first", 0.0)
    losses = [h["loss"] for h in trainer.state.log_history if "loss" in h]
    return {"steps": trainer.state.global_step, "train_seconds": round(train_s, 3),
            "train_cpu_seconds": round(train_cpu, 3), "steps_seconds": round(steps_s, 3),
            "seconds_per_step": round(steps_s / max(1, timer.get("steps", 0)), 3), "train_loss": out.training_loss,
            "first_loss": losses[0] if losses else None}


def write_record(record: dict[str, Any], path: str | None) -> None:
    """Print the run's record as one JSON line, and write it to ``path`` if given."""
    print(json.dumps(record))
    if path:
        with open(path, "w", encoding="utf-8") as fh:
            json.dump(record, fh, indent=2)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--features", required=True, help="JSONL of {input_ids, labels}")
    ap.add_argument("--model", required=True, help="a local model directory")
    ap.add_argument("--lora", action="store_true")
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument("--epochs", type=float, default=1.0)
    ap.add_argument("--max-steps", type=int, default=-1)
    ap.add_argument("--lr", type=float, default=None, help="default 5e-5 full, 2e-4 LoRA (as insta)")
    ap.add_argument("--seed", type=int, default=42)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--pad-to-max-length", action="store_true", help="pad every batch to --max-length")
    ap.add_argument("--max-length", type=int, default=192)
    ap.add_argument("--json", default=None, help="write the result record here")
    args = ap.parse_args(argv)

    import torch
    from transformers import (
        AutoModelForCausalLM,
        AutoTokenizer,
        DataCollatorForSeq2Seq,
        Trainer,
        TrainingArguments,
    )

    torch.set_num_threads(args.threads)
    with open(args.features, encoding="utf-8") as fh:
        feats = [json.loads(line) for line in fh if line.strip()]
    for f in feats:
        f["attention_mask"] = [1] * len(f["input_ids"])

    tok = AutoTokenizer.from_pretrained(args.model)
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    model = AutoModelForCausalLM.from_pretrained(args.model, dtype=torch.float32)
    if args.lora:
        from peft import LoraConfig, TaskType, get_peft_model

        model = get_peft_model(model, LoraConfig(task_type=TaskType.CAUSAL_LM, r=8, lora_alpha=16, lora_dropout=0.05,
                                                 target_modules="all-linear"))
    collator = DataCollatorForSeq2Seq(tok, model=model, label_pad_token_id=-100,
                                      padding="max_length" if args.pad_to_max_length else True,
                                      max_length=args.max_length if args.pad_to_max_length else None)

    lr = args.lr if args.lr is not None else (2e-4 if args.lora else 5e-5)
    with tempfile.TemporaryDirectory(prefix="plain-trainer-") as tmp:
        targs = TrainingArguments(
            output_dir=tmp, per_device_train_batch_size=args.batch_size, num_train_epochs=args.epochs,
            max_steps=args.max_steps, learning_rate=lr, seed=args.seed, data_seed=args.seed, save_strategy="no",
            report_to="none", logging_steps=5, disable_tqdm=True, use_cpu=not torch.cuda.is_available(),
            include_num_input_tokens_seen="non_padding", remove_unused_columns=False,
        )
        batches: list[list[list[int]]] = []
        trainer = Trainer(model=model, args=targs, train_dataset=feats, data_collator=recording(collator, batches))
        run = timed_train(trainer)
    record = {
        "side": "plain", "lora": args.lora, "padding": "max_length" if args.pad_to_max_length else "longest",
        **run, "tokens": int(trainer.state.num_input_tokens_seen),
        "batches": batches[:run["steps"]], "torch_threads": torch.get_num_threads(),
        "omp_wait_policy": os.environ.get("OMP_WAIT_POLICY") or "unset (OpenMP default)", "optim": str(targs.optim),
    }
    record["tokens_per_second"] = round(record["tokens"] / run["train_seconds"], 2)
    write_record(record, args.json)
    return 0


if __name__ == "__main__":
    sys.exit(main())

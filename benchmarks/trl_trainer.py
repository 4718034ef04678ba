"""A minimal TRL ``SFTTrainer`` fine-tuning script: the TRL side of bench_train_throughput.py.

    python benchmarks/trl_trainer.py --data trl.jsonl --model DIR [--max-steps N] [--features F.jsonl] --json out.json

What a practitioner does with TRL (>= 1.0) for completion-only fine-tuning: a prompt/completion JSONL (what
``insta mixture --format trl`` writes), ``SFTConfig(completion_only_loss=True, padding_free=True)``, the model in
fp32 and the Trainer's defaults otherwise (AdamW, linear schedule; learning rate 5e-5 as the other sides, where
TRL's default is 2e-5). Two of TRL's defaults are turned off because they are a trap on a CPU: bf16 autocast and
gradient checkpointing (both on by default in TRL; about 10x slower here). ``max_length=None``: padding-free
without packing does not truncate (TRL refuses a ``max_length`` there), so the data come truncated as insta
truncates them (:func:`trl_records`). TRL tokenizes the text itself (prompt, then prompt + completion + EOS) and
masks the prompt; its padding-free collator lays the batch's examples end to end in one row with restarting
``position_ids`` and no attention mask; its loss is a chunked LM head over the vocabulary (on a CPU at every
position, on CUDA with Triton only where a label is set).

Real tokens = the tokens of the batches trained on (TRL's own count: the width of each padding-free row, which
has no padding). With ``--features`` (insta's tokenised features of the same examples), the record also says how
many examples TRL tokenised to exactly insta's ids and labels. Prints one JSON record (and writes it with
``--json``).
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
from pathlib import Path
from typing import Any, Sequence

sys.path.insert(0, str(Path(__file__).resolve().parent))
from plain_trainer import timed_train, write_record  # noqa: E402


def trl_records(records: Sequence[dict[str, Any]], feats: Sequence[dict[str, Any]], tokenizer) -> list[dict]:
    """The examples as TRL prompt/completion text, so that TRL tokenizes them to insta's training ids.

    An example insta kept whole is insta's own TRL export (``export_record(record, "trl")``, where ``prompt +
    completion`` is the text insta trains on); one insta truncated (prompt from the left, target from the right)
    is the decoded text of insta's truncated ids, prompt and completion split where insta's labels start (the EOS
    left off: TRL appends it). TRL always appends the EOS, so an example whose target insta cut (EOS included) has
    one token more on the TRL side. ``feats`` are :func:`insta.train.build_features`'s, in ``records``' order.
    """
    from insta.lm import encode_causal
    from insta.mixture import export_record

    out = []
    for rec, f in zip(records, feats, strict=True):
        ids = list(f["input_ids"])
        k = next(i for i, x in enumerate(f["labels"]) if x != -100)
        whole, _ = encode_causal(tokenizer, rec["input"], rec["target"], add_eos=True)
        if whole == ids:
            row = export_record(rec, "trl")
            out.append({"prompt": row["prompt"], "completion": row["completion"]})
            continue
        tail = ids[k:-1] if ids[-1] == tokenizer.eos_token_id else ids[k:]
        out.append({"prompt": tokenizer.decode(ids[:k]), "completion": tokenizer.decode(tail)})
    return out


def sft_config(output_dir: str, *, batch_size: int = 8, max_steps: int = -1, epochs: float = 1.0,
               learning_rate: float = 5e-5, seed: int = 42) -> Any:
    """The benchmark's ``SFTConfig``: completion-only loss, padding-free, fp32 without gradient checkpointing."""
    import torch
    from trl import SFTConfig

    return SFTConfig(
        output_dir=output_dir, per_device_train_batch_size=batch_size, num_train_epochs=epochs, max_steps=max_steps,
        learning_rate=learning_rate, seed=seed, data_seed=seed, save_strategy="no", report_to="none",
        logging_steps=5, disable_tqdm=True, use_cpu=not torch.cuda.is_available(),
        completion_only_loss=True, padding_free=True, max_length=None, bf16=False, gradient_checkpointing=False,
        dataset_num_proc=None,
    )


def build_trainer(rows: list[dict[str, str]], model: Any, tokenizer: Any, config: Any) -> Any:
    """TRL's ``SFTTrainer`` on the prompt/completion ``rows`` (it tokenizes and masks them when built)."""
    import datasets
    from trl import SFTTrainer

    return SFTTrainer(model=model, args=config, train_dataset=datasets.Dataset.from_list(rows),
                      processing_class=tokenizer)


def same_as_features(trainer: Any, feats: Sequence[dict[str, Any]]) -> int:
    """How many of TRL's tokenised examples have exactly insta's ``input_ids`` and ``labels``."""
    return sum(row["input_ids"] == f["input_ids"] and row["labels"] == f["labels"]
               for row, f in zip(trainer.train_dataset, feats))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", required=True, help="JSONL of {prompt, completion}")
    ap.add_argument("--model", required=True, help="a local model directory")
    ap.add_argument("--features", default=None, help="insta's features of the same examples (JSONL of {input_ids, "
                    "labels}): count the examples TRL tokenizes identically")
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument("--epochs", type=float, default=1.0)
    ap.add_argument("--max-steps", type=int, default=-1)
    ap.add_argument("--lr", type=float, default=5e-5)
    ap.add_argument("--seed", type=int, default=42)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--json", default=None, help="write the result record here")
    args = ap.parse_args(argv)

    import torch
    import trl
    from transformers import AutoModelForCausalLM, AutoTokenizer

    torch.set_num_threads(args.threads)
    with open(args.data, encoding="utf-8") as fh:
        rows = [{k: r[k] for k in ("prompt", "completion")} for r in map(json.loads, fh) if r]
    tok = AutoTokenizer.from_pretrained(args.model)
    model = AutoModelForCausalLM.from_pretrained(args.model, dtype=torch.float32)
    with tempfile.TemporaryDirectory(prefix="trl-trainer-") as tmp:
        cfg = sft_config(tmp, batch_size=args.batch_size, max_steps=args.max_steps, epochs=args.epochs,
                         learning_rate=args.lr, seed=args.seed)
        trainer = build_trainer(rows, model, tok, cfg)
        run = timed_train(trainer)
    record = {"side": "trl", "lora": False, "padding": "padding-free (one row per batch)", **run,
              "tokens": int(trainer._total_train_tokens), "torch_threads": torch.get_num_threads(),
              "omp_wait_policy": os.environ.get("OMP_WAIT_POLICY") or "unset (OpenMP default)",
              "optim": str(cfg.optim), "trl": trl.__version__, "bf16": cfg.bf16,
              "gradient_checkpointing": cfg.gradient_checkpointing}
    record["tokens_per_second"] = round(record["tokens"] / run["train_seconds"], 2)
    if args.features:
        with open(args.features, encoding="utf-8") as fh:
            feats = [json.loads(line) for line in fh if line.strip()]
        record["same_ids_as_insta"] = same_as_features(trainer, feats)
        record["examples"] = len(feats)
    write_record(record, args.json)
    return 0


if __name__ == "__main__":
    sys.exit(main())

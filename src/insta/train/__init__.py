"""Fine-tune a causal or seq2seq LM on a mixture with the transformers ``Trainer``.

* Causal LMs: each example is ``prompt [+ " "] + target + EOS`` (see :func:`insta.lm.encode_causal`); the prompt
  tokens and the padding are masked out of the loss (label -100).
* Seq2seq LMs: encoder input = prompt, labels = target + EOS, padded by ``DataCollatorForSeq2Seq``.
* Batches (:mod:`insta.train.collate`): causal LMs train padding-free (a batch's examples end to end, positions
  restarting per example) with the LM head and loss on the target positions only, where a start-up check on the
  model shows it supports them; padded batches otherwise. Optional length-grouped batches. ``tokens_seen`` counts
  the real tokens of the batches trained on.
* Full fine-tuning or LoRA (peft); epochs or max steps; gradient accumulation; seeded; checkpoints every
  ``save_steps`` under ``<output_dir>/checkpoints`` and automatic resume from the newest complete one (a kill while
  saving leaves a half-written one, which is removed with a warning); the final model in
  ``<output_dir>/model`` (a LoRA run saves the adapter there, which :func:`insta.lm.load_model` loads on top of
  its base; ``merge_lora`` saves merged full weights instead and the adapter in ``<output_dir>/adapter``).

Several GPUs need no code change, the Trainer picks up the launcher::

    accelerate launch -m insta.cli train --mixture mix.jsonl --model smollm2 --out runs/m1
    torchrun --nproc_per_node 4 -m insta.cli train --mixture mix.jsonl --model smollm2 --out runs/m1

(``--batch-size`` is per device: the effective batch is batch_size x grad_accum x n_devices.)
"""
from __future__ import annotations

from .checkpoints import checkpoint_problem, find_resume_checkpoint, safetensors_problem
from .config import DEFAULT_LR_FULL, DEFAULT_LR_LORA, MODEL_MARKER, SCHEDULERS, TrainConfig, TrainResult
from .features import build_features
from .trainer import REPORT_TO_PACKAGES, train_model, trainer_passthrough

__all__ = ["DEFAULT_LR_FULL", "DEFAULT_LR_LORA", "MODEL_MARKER", "REPORT_TO_PACKAGES", "SCHEDULERS", "TrainConfig",
           "TrainResult", "build_features", "checkpoint_problem", "find_resume_checkpoint", "safetensors_problem",
           "train_model", "trainer_passthrough"]

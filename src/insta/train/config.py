"""What a training run is configured by (:class:`TrainConfig`, whose fields also generate the CLI flags) and
what it returns (:class:`TrainResult`)."""
from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

from ..errors import InstaError
from ..util.options import option as _f

DEFAULT_LR_FULL = 5e-5
DEFAULT_LR_LORA = 2e-4
#: Learning-rate schedules (transformers ``SchedulerType`` values that need no extra arguments).
SCHEDULERS = ("linear", "cosine", "cosine_with_restarts", "polynomial", "constant", "constant_with_warmup",
              "inverse_sqrt")
#: The marker file of a model directory written by ``insta train``.
MODEL_MARKER = "insta_model.json"


_RUN = "checkpoints and device"
_BATCHING = "batching (none changes what is learned but --group-by-length, which changes which examples share a batch)"
_PASS = "passed through to transformers' TrainingArguments"


@dataclass
class TrainConfig:
    """Every knob of a training run, in one place (the CLI flags map one to one)."""

    model: str = _f("smollm2", "smollm2 (built-in), a local model dir, or a hub id")
    output_dir: str = _f("runs/insta", "run directory (checkpoints in OUT/checkpoints, the model in OUT/model)")
    # schedule
    epochs: float = _f(3.0, "training epochs", "schedule")
    max_steps: int = _f(-1, "overrides epochs when > 0", "schedule")
    learning_rate: float | None = _f(None, "learning rate (default 5e-5 full, 2e-4 LoRA)", "schedule")
    batch_size: int = _f(8, "examples per device and step", "schedule", minimum=1)
    grad_accum: int = _f(1, "gradient accumulation steps", "schedule", minimum=1)
    weight_decay: float = _f(0.0, "AdamW weight decay", "schedule")
    warmup_ratio: float = _f(0.0, "warm-up steps as a share of all steps", "schedule")
    lr_scheduler: str = _f("linear", "lr scheduler type", "schedule", choices=SCHEDULERS)
    max_grad_norm: float = _f(1.0, "gradient clipping norm", "schedule")
    seed: int = _f(42, "random seed", "schedule")
    # data
    max_source_length: int = _f(256, "prompt tokens kept (causal: truncated from the left; seq2seq: from the "
                                "right)", "data", minimum=1)
    max_target_length: int = _f(64, "target tokens kept", "data", minimum=1)
    add_eos: bool = _f(True, "end each target with the EOS token", "data")
    # LoRA
    lora: bool = _f(False, "train a LoRA adapter (peft) instead of all weights", "LoRA")
    lora_r: int = _f(8, "LoRA rank", "LoRA", minimum=1)
    lora_alpha: int = _f(16, "LoRA alpha", "LoRA")
    lora_dropout: float = _f(0.05, "LoRA dropout", "LoRA")
    lora_target_modules: list[str] | str = _f("all-linear", "comma-separated module names, or all-linear", "LoRA")
    merge_lora: bool = _f(False, "save merged full weights (adapter in OUT/adapter)", "LoRA")
    # checkpoints, logging
    save_steps: int = _f(200, "checkpoint every N steps", _RUN, minimum=1)
    save_total_limit: int | None = _f(2, "checkpoints kept", _RUN, minimum=1)
    resume: bool = _f(True, "continue from the last checkpoint in OUT/checkpoints", _RUN)
    overwrite: bool = _f(False, "delete an earlier run's checkpoints and model in OUT first", _RUN)
    logging_steps: int = _f(5, "log the loss every N steps", _RUN, minimum=1)
    progress: bool = _f(True, "progress bars (--no-progress: none; also --quiet)", _RUN)
    # device and precision
    dtype: str = _f("float32", "the weights' dtype when loading", _RUN)
    bf16: bool = _f(False, "bf16 mixed precision (GPU)", _RUN)
    gradient_checkpointing: bool = _f(False, "recompute activations in the backward pass (less memory)", _RUN)
    dataloader_num_workers: int = _f(0, "data loader worker processes", _RUN)
    # batching (see insta.train.collate): none of these changes what is learned, except group_by_length (batch makeup)
    padding_free: bool = _f(True, "causal LMs: lay a batch's examples end to end with restarting positions, no "
                            "padding (checked on the model first)", _BATCHING)
    packing_row_tokens: int = _f(512, "padding-free: split a batch of more tokens into balanced rows of about N",
                                 _BATCHING, minimum=1, metavar="N")
    target_logits_only: bool = _f(True, "causal LMs: LM head and loss only at the target tokens", _BATCHING)
    group_by_length: bool = _f(False, "batches of similar lengths, shuffled every epoch (helps padded batches: "
                               "seq2seq, --no-padding-free)", _BATCHING)
    # passed through to transformers.TrainingArguments (see :func:`trainer_passthrough`)
    report_to: str | list[str] = _f("none", "none, tensorboard, wandb, ... (comma-separated; the integration must "
                                    "be installed)", _PASS)
    deepspeed: str | None = _f(None, "DeepSpeed config JSON (under a launcher: deepspeed / accelerate launch / "
                               "torchrun)", _PASS, metavar="CONFIG")
    fsdp: str = _f("", "FSDP options, e.g. 'full_shard auto_wrap' (under torchrun or accelerate launch)", _PASS)
    fsdp_config: str | None = _f(None, "FSDP config JSON (with --fsdp)", _PASS, metavar="CONFIG")

    def resolved_lr(self) -> float:
        if self.learning_rate is not None:
            return self.learning_rate
        return DEFAULT_LR_LORA if self.lora else DEFAULT_LR_FULL

    def validate(self) -> None:
        if self.max_steps <= 0 and self.epochs <= 0:
            raise InstaError("give a positive number of epochs or max steps")
        for name in ("batch_size", "grad_accum", "max_source_length", "max_target_length", "save_steps",
                     "logging_steps", "lora_r", "packing_row_tokens"):
            if getattr(self, name) < 1:
                raise InstaError(f"{name} must be at least 1 (got {getattr(self, name)})")
        if self.resolved_lr() <= 0:
            raise InstaError(f"learning rate must be positive (got {self.learning_rate})")
        if not 0 <= self.warmup_ratio < 1:
            raise InstaError(f"warmup_ratio must be in [0, 1) (got {self.warmup_ratio})")
        if self.merge_lora and not self.lora:
            raise InstaError("merge_lora needs lora")
        if self.lr_scheduler not in SCHEDULERS:
            raise InstaError(f"unknown lr scheduler {self.lr_scheduler!r} (choose from {', '.join(SCHEDULERS)})")
        if isinstance(self.lora_target_modules, list) and not self.lora_target_modules:
            raise InstaError("lora_target_modules is empty: give module names or 'all-linear'")

    def fingerprint(self) -> dict[str, Any]:
        """What must match for a run to resume an earlier one."""
        keep = ("model", "epochs", "max_steps", "learning_rate", "batch_size", "grad_accum", "seed",
                "max_source_length", "max_target_length", "lora", "lora_r", "lora_alpha", "lr_scheduler")
        fp = {k: getattr(self, k) for k in keep}
        if self.group_by_length:  # changes the batches; absent when off, so earlier runs' records still match
            fp["group_by_length"] = True
        return fp


@dataclass
class TrainResult:
    output_dir: str
    model_dir: str
    metrics: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


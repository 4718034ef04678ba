"""``train_model``: the transformers ``Trainer`` run itself, in named steps (output folder, base model, LoRA,
arguments, resume point, final save, metrics)."""
from __future__ import annotations

import logging

import shutil
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any, Sequence

from ..errors import InstaError
from ..util.options import apply_overrides
from .checkpoints import (find_resume_checkpoint, finished_run, refuse_foreign_outputs, refuse_sentence_encoder,
                          run_fingerprint)
from .config import MODEL_MARKER, TrainConfig, TrainResult
from .features import (base_for_metadata, build_features, choose_batching, mixture_digest, records_of,
                       training_dataset)

logger = logging.getLogger(__name__)


def trainer_class():
    """A ``transformers.Trainer`` that counts the real tokens of the batches it trains on, can compute the causal
    loss on the target positions only, and can take insta's length-grouped example order."""
    from transformers import Trainer

    from .collate import TOKENS_KEY, target_only_loss

    class InstaTrainer(Trainer):
        def __init__(self, *args: Any, target_logits: bool = False, sampler: Any = None, **kwargs: Any):
            super().__init__(*args, **kwargs)
            self.insta_target_logits = target_logits
            self.insta_sampler = sampler
            self.insta_tokens = 0  # real tokens of the batches trained on by this process

        def _get_train_sampler(self, train_dataset=None):
            if self.insta_sampler is not None:
                return self.insta_sampler
            return super()._get_train_sampler(train_dataset)

        def training_step(self, model, inputs, num_items_in_batch=None):
            # counted here, not in the collator: the dataloader prefetches batches that may never be trained on
            self.insta_tokens += int(inputs.pop(TOKENS_KEY, 0))
            return super().training_step(model, inputs, num_items_in_batch)

        def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
            inputs.pop(TOKENS_KEY, None)
            if (not self.insta_target_logits or "labels" not in inputs or self.label_smoother is not None
                    or self.compute_loss_func is not None):
                return super().compute_loss(model, inputs, return_outputs=return_outputs,
                                            num_items_in_batch=num_items_in_batch)
            # as the Trainer does: normalise by the accumulated batch's target count when it passes one
            n_items = num_items_in_batch if self.model_accepts_loss_kwargs else None
            loss, outputs = target_only_loss(model, inputs, n_items)
            if self.args.average_tokens_across_devices and n_items is not None and self.args.n_gpu <= 1:
                loss = loss * self.accelerator.num_processes
            return (loss, outputs) if return_outputs else loss

    return InstaTrainer


def insta_callbacks(config: TrainConfig, timer: dict[str, float]) -> list[Any]:
    """insta's own Trainer callbacks: no checkpoint at the very end (the final model is saved anyway; a periodic
    one at a multiple of ``save_steps`` is kept), and the wall time from the first step to the last."""
    from transformers import TrainerCallback

    class _InstaCallback(TrainerCallback):
        def on_step_begin(self, args, state, control, **kw):
            timer.setdefault("first_step_start", time.perf_counter())

        def on_step_end(self, args, state, control, **kw):
            timer["last_step_end"] = time.perf_counter()
            timer["steps"] = timer.get("steps", 0) + 1
            if state.global_step >= state.max_steps and state.global_step % max(1, config.save_steps):
                control.should_save = False
            return control

    return [_InstaCallback()]


REPORT_TO_PACKAGES = {"tensorboard": ("tensorboard", "tensorboardX"), "wandb": ("wandb",), "mlflow": ("mlflow",),
                      "comet_ml": ("comet_ml",), "clearml": ("clearml",), "trackio": ("trackio",)}


def trainer_passthrough(config: TrainConfig) -> dict[str, Any]:
    """The ``TrainingArguments`` insta passes through unchanged: ``report_to``, ``deepspeed``, ``fsdp`` and
    ``fsdp_config``, checked first so that a missing integration or file is one line, not a traceback."""
    import importlib.util

    report = [config.report_to] if isinstance(config.report_to, str) else list(config.report_to)
    report = [r.strip() for item in report for r in str(item).split(",") if r.strip()] or ["none"]
    for r in report:
        if r in ("none", "all"):
            continue
        pkgs = REPORT_TO_PACKAGES.get(r)
        if pkgs and not any(importlib.util.find_spec(m) for m in pkgs):
            raise InstaError(f"--report-to {r} needs the {pkgs[0]} package: pip install {pkgs[0]}")
    out: dict[str, Any] = {"report_to": "none" if report == ["none"] else report}
    if config.deepspeed:
        if not Path(config.deepspeed).is_file():
            raise InstaError(f"DeepSpeed config {config.deepspeed} does not exist")
        if importlib.util.find_spec("deepspeed") is None:
            raise InstaError("--deepspeed needs the deepspeed package: pip install deepspeed")
        out["deepspeed"] = config.deepspeed
    if config.fsdp:
        out["fsdp"] = config.fsdp
    if config.fsdp_config:
        if not Path(config.fsdp_config).is_file():
            raise InstaError(f"FSDP config {config.fsdp_config} does not exist")
        if not config.fsdp:
            raise InstaError("--fsdp-config needs --fsdp (e.g. --fsdp 'full_shard auto_wrap')")
        out["fsdp_config"] = config.fsdp_config
    return out


def _prepare_output(config: TrainConfig, out: Path, fp: dict[str, Any]) -> None:
    """``--overwrite`` clears the earlier run's model folders; otherwise the folder must hold this same run (or
    nothing insta did not write)."""
    ckpt_dir, final_dir, meta_path = out / "checkpoints", out / "model", out / "train_config.json"
    if config.overwrite:
        for p in (ckpt_dir, final_dir, out / "adapter"):
            if p.is_dir():
                shutil.rmtree(p)
            elif p.exists():
                p.unlink()
        return
    if meta_path.is_file() and (ckpt_dir.is_dir() or final_dir.is_dir()):
        old = run_fingerprint(meta_path)
        diff = [k for k in fp if old.get(k) != fp[k]]
        if diff:
            raise InstaError(f"{out} holds a different run (differs in {', '.join(diff)}): use another --out or "
                             "--overwrite")
    refuse_foreign_outputs(out, meta_path)


def _load_base(config: TrainConfig) -> tuple[str, str, Any, Any, float]:
    """(location, kind, tokenizer, model, load seconds) of the base model, refusing what is no LM to train."""
    import torch
    from transformers import AutoModelForCausalLM, AutoModelForSeq2SeqLM
    from transformers.utils import logging as hf_logging

    from ..lm import is_adapter_dir, load_tokenizer, model_kind, resolve_model

    location = resolve_model(config.model)
    if is_adapter_dir(location):
        raise InstaError(f"{config.model!r} is a LoRA adapter: train from its base model or a merged model")
    refuse_sentence_encoder(location, config.model)
    kind = model_kind(location)
    tokenizer = load_tokenizer(location)
    t_load = time.perf_counter()
    cls = AutoModelForSeq2SeqLM if kind == "seq2seq" else AutoModelForCausalLM
    bars, verbosity = hf_logging.is_progress_bar_enabled(), hf_logging.get_verbosity()
    if not config.progress:  # --no-progress: no weight-loading bar either
        hf_logging.disable_progress_bar()
    hf_logging.set_verbosity_error()  # its multi-line load report: summarised below in one line
    try:
        model, loading = cls.from_pretrained(location, dtype=getattr(torch, config.dtype), output_loading_info=True)
    except (OSError, ValueError) as err:
        raise InstaError(f"cannot load model {config.model!r}: {str(err).splitlines()[0]}") from err
    finally:
        hf_logging.set_verbosity(verbosity)
        if bars:
            hf_logging.enable_progress_bar()
    missing = sorted(loading.get("missing_keys") or [])
    if missing:  # e.g. an encoder checkpoint loaded as BertLMHeadModel: its LM head would start random
        raise InstaError(f"{config.model!r} is not a {kind} language model: {len(missing)} weight(s) of "
                         f"{type(model).__name__} are missing from it ({', '.join(missing[:3])}"
                         f"{', ...' if len(missing) > 3 else ''})")
    unused = sorted(loading.get("unexpected_keys") or [])
    if unused:
        logger.warning(f"{len(unused)} weight(s) of {config.model!r} are not used by {type(model).__name__} "
                       f"({', '.join(unused[:3])}{', ...' if len(unused) > 3 else ''})")
    if getattr(model.config, "pad_token_id", None) is None:
        model.config.pad_token_id = tokenizer.pad_token_id
    return location, kind, tokenizer, model, time.perf_counter() - t_load


def _with_lora(model: Any, config: TrainConfig, kind: str) -> Any:
    """``model`` wrapped in a peft LoRA adapter (``config.lora``), or unchanged."""
    if not config.lora:
        return model
    try:
        from peft import LoraConfig, TaskType, get_peft_model
    except ImportError as err:
        raise InstaError("LoRA needs peft: pip install peft") from err
    lcfg = LoraConfig(
        task_type=TaskType.SEQ_2_SEQ_LM if kind == "seq2seq" else TaskType.CAUSAL_LM,
        r=config.lora_r, lora_alpha=config.lora_alpha, lora_dropout=config.lora_dropout,
        target_modules=config.lora_target_modules,
    )
    try:
        model = get_peft_model(model, lcfg)
    except ValueError as err:  # target modules that match nothing
        names = sorted({n.rsplit(".", 1)[-1] for n, m in model.named_modules() if type(m).__name__ == "Linear"})
        raise InstaError(f"LoRA target modules {config.lora_target_modules!r} do not fit {config.model!r} "
                         f"({str(err).splitlines()[0][:160]}); its linear modules: {', '.join(names)}") from None
    if config.gradient_checkpointing:
        model.enable_input_require_grads()
    return model


def _training_arguments(config: TrainConfig, ckpt_dir: Path, passthrough: dict[str, Any]) -> Any:
    """The ``TrainingArguments`` of the run (CPU unless CUDA is there; bf16 only on a GPU)."""
    import torch
    from transformers import TrainingArguments

    use_cpu = not torch.cuda.is_available()
    # transformers 5.x renamed gradient checkpointing to activation checkpointing (the old name warns)
    ckpt_field = ("activation_checkpointing" if "activation_checkpointing" in TrainingArguments.__dataclass_fields__
                  else "gradient_checkpointing")
    return TrainingArguments(
        output_dir=str(ckpt_dir),
        num_train_epochs=config.epochs,
        max_steps=config.max_steps if config.max_steps > 0 else -1,
        learning_rate=config.resolved_lr(),
        per_device_train_batch_size=config.batch_size,
        gradient_accumulation_steps=config.grad_accum,
        weight_decay=config.weight_decay,
        warmup_steps=config.warmup_ratio,
        lr_scheduler_type=config.lr_scheduler,
        max_grad_norm=config.max_grad_norm,
        seed=config.seed,
        data_seed=config.seed,
        logging_steps=config.logging_steps,
        logging_first_step=True,
        save_strategy="steps",
        save_steps=config.save_steps,
        save_total_limit=config.save_total_limit,
        **passthrough,
        disable_tqdm=not config.progress,
        use_cpu=use_cpu,
        bf16=config.bf16 and not use_cpu,
        dataloader_num_workers=config.dataloader_num_workers,
        remove_unused_columns=False,
        **{ckpt_field: config.gradient_checkpointing},
    )


def _make_trainer(config: TrainConfig, args: Any, model: Any, tokenizer: Any, kind: str, feats: list[dict],
                  batching: dict[str, Any], collator: Any, callbacks: Sequence[Any], timer: dict[str, float]) -> Any:
    """insta's Trainer with its collator, optional length-grouped order and callbacks."""
    sampler = None
    if config.group_by_length:
        from .collate import LengthGroupedSampler

        lengths = [len(f["input_ids"]) + (len(f["labels"]) if kind == "seq2seq" else 0) for f in feats]
        sampler = LengthGroupedSampler(lengths, config.batch_size, seed=config.seed)
    trainer = trainer_class()(model=model, args=args, train_dataset=training_dataset(feats), data_collator=collator,
                              processing_class=tokenizer, callbacks=insta_callbacks(config, timer) + list(callbacks),
                              target_logits=batching["target_logits_only"], sampler=sampler)
    if not config.progress:  # without bars the Trainer prints each log dict to stdout instead: no progress at all
        from transformers.trainer_callback import PrinterCallback

        trainer.remove_callback(PrinterCallback)
    return trainer


def _resume_point(trainer: Any, config: TrainConfig, out: Path, record: dict[str, Any]) -> str | None:
    """The checkpoint to resume from (half-written ones removed with a warning); writes the run's record."""
    from ..util.paths import atomic_write_json

    ckpt_dir = out / "checkpoints"
    resume_from, broken = None, []
    if config.resume and ckpt_dir.is_dir():
        resume_from, broken = find_resume_checkpoint(ckpt_dir)
    if trainer.is_world_process_zero():
        for path, problem in broken:  # a kill while saving: never resumable, and in the way of the rotation
            logger.warning(f"checkpoint {path} is incomplete ({problem}); removed"
                           + (f", resuming from {Path(resume_from).name}" if resume_from else ", starting over"))
            shutil.rmtree(path, ignore_errors=True)
        out.mkdir(parents=True, exist_ok=True)
        atomic_write_json(out / "train_config.json", record)
    return resume_from


def _save_final(trainer: Any, config: TrainConfig, tokenizer: Any, out: Path) -> None:
    """The final model (or LoRA adapter; merged weights + the adapter with ``merge_lora``) in ``out/model``."""
    final_dir = out / "model"
    if config.lora and config.merge_lora:
        trainer.save_model(str(out / "adapter"))
        if trainer.is_world_process_zero():
            merged = trainer.model.merge_and_unload()
            merged.save_pretrained(str(final_dir), safe_serialization=True)
            tokenizer.save_pretrained(str(final_dir))
    else:
        trainer.save_model(str(final_dir))
        if trainer.is_world_process_zero() and config.lora:
            tokenizer.save_pretrained(str(final_dir))


def _tokens_seen(trainer: Any, args: Any) -> int:
    """Real tokens of the batches trained on, summed over processes."""
    tokens = trainer.insta_tokens
    if args.world_size > 1:  # every process trained on its own batches
        import torch

        tokens = int(trainer.accelerator.reduce(torch.tensor(tokens, device=args.device), reduction="sum"))
    return tokens


# long: the named training steps in order, each a helper, so the sequence reads top to bottom
def train_model(mixture: Any, config: TrainConfig | None = None, callbacks: Sequence[Any] = (),
                **overrides: Any) -> TrainResult:
    """Fine-tune ``config.model`` on a mixture (a JSONL path, a :class:`~insta.mixture.Mixture` or records).

    Keyword overrides set :class:`TrainConfig` fields; ``callbacks`` are extra ``transformers.TrainerCallback``s.
    Returns where the model went and the run's metrics (also written to ``<output_dir>/train_result.json``).
    """
    from ..lm import require_transformers

    config = apply_overrides(config or TrainConfig(), overrides, "training")
    records, source = records_of(mixture)
    require_transformers()
    passthrough = trainer_passthrough(config)  # a missing integration or config file fails before any loading

    from ..util.fileio import check_output_dir
    from ..util.paths import atomic_write_json

    out = Path(config.output_dir)
    check_output_dir(out, "output directory")
    final_dir = out / "model"
    digest = mixture_digest(records)
    fp = {**config.fingerprint(), "mixture_sha": digest}
    _prepare_output(config, out, fp)
    done = finished_run(out, fp) if config.resume and not config.overwrite else None
    if done is not None:  # the same command again: nothing to train, nothing overwritten
        logger.info(f"{out} already holds this finished run: nothing to train (--overwrite trains it again)")
        return TrainResult(output_dir=str(out), model_dir=str(final_dir), metrics={**done, "already_trained": True})

    location, kind, tokenizer, model, load_s = _load_base(config)
    feats, stats = build_features(records, tokenizer, kind, config)
    model = _with_lora(model, config, kind)
    n_params = sum(p.numel() for p in model.parameters())
    n_trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)

    batching = choose_batching(config, kind, model, tokenizer, feats)
    collator = batching.pop("collator")
    args = _training_arguments(config, out / "checkpoints", passthrough)
    timer: dict[str, float] = {}
    trainer = _make_trainer(config, args, model, tokenizer, kind, feats, batching, collator, callbacks, timer)
    resume_from = _resume_point(trainer, config, out, {"fingerprint": fp, "config": asdict(config),
                                                       "mixture": source, "kind": kind, "location": location})
    t0, cpu0 = time.perf_counter(), time.process_time()
    train_out = trainer.train(resume_from_checkpoint=resume_from)
    train_s, train_cpu = time.perf_counter() - t0, time.process_time() - cpu0
    _save_final(trainer, config, tokenizer, out)

    history = [
        {"step": h["step"], "loss": h["loss"],
         **({"learning_rate": h["learning_rate"]} if "learning_rate" in h else {})}
        for h in trainer.state.log_history if "loss" in h
    ]
    tokens_seen = _tokens_seen(trainer, args)
    steps_s = timer.get("last_step_end", 0.0) - timer.get("first_step_start", 0.0)
    metrics = {
        "kind": kind, "model": config.model, "location": location, "lora": config.lora,
        "n_params": n_params, "n_trainable": n_trainable, **stats,
        "mixture": source, "mixture_sha": digest, "resumed_from": resume_from,
        "global_step": trainer.state.global_step, "epochs_done": trainer.state.epoch,
        "train_loss": train_out.training_loss,
        "first_loss": history[0]["loss"] if history else None,
        "last_loss": history[-1]["loss"] if history else None,
        "loss_history": history,
        "train_seconds": round(train_s, 3),
        "train_cpu_seconds": round(train_cpu, 3),  # all threads of this process; robust to other processes' load
        "load_seconds": round(load_s, 3),
        "tokens_seen": tokens_seen,
        "tokens_per_second": round(tokens_seen / train_s, 2) if train_s > 0 else None,
        "steps_this_run": int(timer.get("steps", 0)),
        "steps_seconds": round(steps_s, 3),  # first step's start to last step's end (no setup, no final save)
        "batching": batching,
        "device": "cpu" if args.use_cpu else "cuda",
        "world_size": args.world_size,
        "learning_rate": config.resolved_lr(),
    }
    if trainer.is_world_process_zero():
        atomic_write_json(final_dir / MODEL_MARKER, {
            "base_model": base_for_metadata(config.model), "kind": kind, "lora": config.lora,
            "merged": config.merge_lora, "mixture": source, "mixture_sha": digest,
            "trained_steps": trainer.state.global_step,
        })
        atomic_write_json(out / "train_result.json", {"metrics": metrics, "config": asdict(config)})
    return TrainResult(output_dir=str(out), model_dir=str(final_dir), metrics=metrics)

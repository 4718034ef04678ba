"""Fine-tune a causal or seq2seq LM on a mixture with the transformers ``Trainer``.

* Causal LMs: each example is ``prompt [+ " "] + target + EOS`` (see :func:`insta.lm.encode_causal`); the prompt
  tokens and the padding are masked out of the loss (label -100).
* Seq2seq LMs: encoder input = prompt, labels = target + EOS, padded by ``DataCollatorForSeq2Seq``.
* Batches (:mod:`insta.collate`): causal LMs train padding-free (a batch's examples end to end, positions
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

import hashlib
import json
import os
import re
import shutil
import sys
import time
import zipfile
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Sequence

from .errors import InstaError
from .options import apply_overrides
from .options import option as _f

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
    # batching (see insta.collate): none of these changes what is learned, except group_by_length (batch makeup)
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


# ---------------------------------------------------------------- features


def build_features(records: Sequence[dict[str, Any]], tokenizer, kind: str,
                   config: TrainConfig) -> tuple[list[dict], dict]:
    """Tokenised training features (``input_ids``, ``labels``) and statistics (tokens, truncations)."""
    from .lm import encode_causal, encode_seq2seq

    feats: list[dict] = []
    n_tokens = n_target = truncated = 0
    for r in records:
        prompt, target = r["input"], r["target"]
        if not target.strip():
            continue
        if kind == "causal":
            untrunc, k0 = encode_causal(tokenizer, prompt, target, add_eos=config.add_eos)
            ids, k = encode_causal(tokenizer, prompt, target, config.max_source_length, config.max_target_length,
                                   add_eos=config.add_eos)
            truncated += len(ids) < len(untrunc)
            labels = [-100] * k + ids[k:]
            feats.append({"input_ids": ids, "attention_mask": [1] * len(ids), "labels": labels})
            n_tokens += len(ids)
            n_target += len(ids) - k
        else:
            src, tgt = encode_seq2seq(tokenizer, prompt, target)
            src_t, tgt_t = encode_seq2seq(tokenizer, prompt, target, config.max_source_length, config.max_target_length)
            truncated += (len(src_t) < len(src)) or (len(tgt_t) < len(tgt))
            feats.append({"input_ids": src_t, "attention_mask": [1] * len(src_t), "labels": tgt_t})
            n_tokens += len(src_t) + len(tgt_t)
            n_target += len(tgt_t)
    if not feats:
        raise InstaError("the mixture has no example with a non-empty target")
    return feats, {"n_examples": len(feats), "tokens_per_epoch": n_tokens, "target_tokens_per_epoch": n_target,
                   "n_truncated": truncated}


class _ListDataset:
    def __init__(self, items: list[dict]):
        self.items = items

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, i: int) -> dict:
        return self.items[i]


def _trainer_class():
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


def _callbacks(config: TrainConfig, timer: dict[str, float]) -> list[Any]:
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


# ---------------------------------------------------------------- run directory and checkpoints


def _run_fingerprint(meta_path: Path) -> dict[str, Any]:
    """The fingerprint an earlier run left in ``train_config.json``; a corrupt file is a one-line error."""
    try:
        data = json.loads(meta_path.read_text(encoding="utf-8"))
    except (OSError, ValueError, RecursionError) as err:
        raise InstaError(f"{meta_path} is unreadable or corrupt ({type(err).__name__}): pass --overwrite to start "
                         "this run over, or use another --out") from None
    fp = data.get("fingerprint") if isinstance(data, dict) else None
    if not isinstance(fp, dict):
        raise InstaError(f"{meta_path} is not an insta training record (no fingerprint): pass --overwrite to start "
                         "this run over, or use another --out")
    return fp


def _refuse_foreign_outputs(out: Path, meta_path: Path) -> None:
    """Refuse to write over a model (or adapter) folder in ``out`` that no ``insta train`` run wrote."""
    if meta_path.is_file():  # an insta run directory (train_config.json is written before any model)
        return
    for folder in (out / "model", out / "adapter"):
        if folder.exists() and not folder.is_dir():
            raise InstaError(f"{folder} exists and is not a directory: use another --out, or --overwrite")
        if folder.is_dir() and any(folder.iterdir()) and not (folder / MODEL_MARKER).is_file():
            raise InstaError(f"{folder} holds files that insta train did not write (no {MODEL_MARKER}): use "
                             "another --out, or pass --overwrite to replace them")


_LM_HEADS = ("ForCausalLM", "LMHeadModel", "ForConditionalGeneration", "ForSeq2SeqLM")


def _refuse_sentence_encoder(location: str, name: str) -> None:
    """A sentence-transformers encoder directory (modules.json) whose architecture has no LM head is no
    language model: say so before transformers bolts a random head onto it."""
    p = Path(location)
    if not any((p / n).is_file() for n in ("modules.json", "config_sentence_transformers.json")):
        return
    try:
        archs = json.loads((p / "config.json").read_text(encoding="utf-8")).get("architectures") or []
    except (OSError, ValueError, AttributeError):
        archs = []
    if not any(isinstance(a, str) and a.endswith(_LM_HEADS) for a in archs):
        raise InstaError(f"{name!r} is a sentence-transformers encoder ({', '.join(map(str, archs)) or 'no LM head'}), "
                         "not a causal or seq2seq language model: train from a language model")


def find_resume_checkpoint(ckpt_dir: str | os.PathLike) -> tuple[str | None, list[tuple[str, str]]]:
    """The newest complete ``checkpoint-N`` folder under ``ckpt_dir`` (``None`` if there is none), and the
    newer folders that a kill left incomplete or corrupt, as ``(path, problem)`` pairs."""
    found = []
    for p in Path(ckpt_dir).iterdir():
        m = re.fullmatch(r"checkpoint-(\d+)", p.name)
        if m and p.is_dir():
            found.append((int(m.group(1)), p))
    broken: list[tuple[str, str]] = []
    for _, path in sorted(found, reverse=True):
        problem = checkpoint_problem(path)
        if problem is None:
            return str(path), broken
        broken.append((str(path), problem))
    return None, broken


def checkpoint_problem(path: str | os.PathLike) -> str | None:
    """Why a Trainer checkpoint folder cannot be resumed from (``None`` when it looks complete).

    The Trainer writes the weights, then optimizer and scheduler, then ``trainer_state.json``: all must be there
    and whole (safetensors headers and sizes agree, torch files are complete zip archives).
    """
    p = Path(path)
    try:
        state = json.loads((p / "trainer_state.json").read_text(encoding="utf-8"))
    except FileNotFoundError:
        return "no trainer_state.json"
    except (OSError, ValueError, RecursionError):
        return "trainer_state.json is corrupt"
    if not isinstance(state, dict) or not isinstance(state.get("global_step"), int):
        return "trainer_state.json has no global_step"
    weights = [p / n for n in ("model.safetensors", "adapter_model.safetensors") if (p / n).is_file()]
    index = p / "model.safetensors.index.json"
    if index.is_file():
        try:
            shards = set(json.loads(index.read_text(encoding="utf-8"))["weight_map"].values())
        except (OSError, ValueError, KeyError, TypeError, AttributeError):
            return f"{index.name} is corrupt"
        weights += [p / s for s in sorted(shards)]
    for w in weights:
        problem = safetensors_problem(w)
        if problem:
            return f"{w.name}: {problem}"
    has_other = any((p / n).is_file() for n in ("pytorch_model.bin", "adapter_model.bin")) or any(
        x.name.startswith("pytorch_model_fsdp") for x in p.iterdir())
    if not weights and not has_other:
        return "no model weights"
    for name in ("optimizer.pt", "scheduler.pt"):
        f = p / name
        if f.is_file():
            if not zipfile.is_zipfile(f):
                return f"{name} is truncated or corrupt"
        elif not (name == "optimizer.pt"
                  and any(x.name.startswith(("optimizer_", "global_step")) for x in p.iterdir())):
            return f"no {name}"
    return None


def safetensors_problem(path: str | os.PathLike) -> str | None:
    """Why a ``.safetensors`` file is not whole (``None`` when its header parses and the sizes agree)."""
    p = Path(path)
    try:
        size = p.stat().st_size
        with p.open("rb") as fh:
            head = fh.read(8)
            if len(head) < 8:
                return "empty or truncated"
            n = int.from_bytes(head, "little")
            if n > size - 8:
                return "truncated header"
            header = json.loads(fh.read(n))
    except FileNotFoundError:
        return "missing"
    except (OSError, ValueError):
        return "corrupt header"
    if not isinstance(header, dict):
        return "corrupt header"
    try:
        end = max((int(v["data_offsets"][1]) for k, v in header.items() if k != "__metadata__"), default=0)
    except (KeyError, TypeError, ValueError, IndexError):
        return "corrupt header"
    if 8 + n + end != size:
        return f"truncated ({size} of {8 + n + end} bytes)"
    return None


# ---------------------------------------------------------------- training


def _batching(config: TrainConfig, kind: str, model, tokenizer, feats: list[dict]) -> dict[str, Any]:
    """The collator and what it does: padding-free and target-only logits where the model was checked to
    support them (causal LMs), padded batches otherwise (with the reason in ``fallback``)."""
    from .collate import PackedCausalCollator, PaddedCausalCollator, Seq2SeqCollator, check_packing

    out: dict[str, Any] = {"padding_free": False, "target_logits_only": False,
                           "group_by_length": config.group_by_length}
    if kind == "seq2seq":
        out["collator"] = Seq2SeqCollator(tokenizer, model)
        return out
    if config.padding_free or config.target_logits_only:
        base = model.get_base_model() if hasattr(model, "get_base_model") else model  # under a LoRA wrapper
        check = check_packing(base, feats)
        out["padding_free"] = config.padding_free and check["padding_free"]
        out["target_logits_only"] = config.target_logits_only and check["target_logits"]
        if (config.padding_free and not out["padding_free"]) or (config.target_logits_only
                                                                 and not out["target_logits_only"]):
            out["fallback"] = check["why"]
            print(f"insta train: note: {check['why']}; using "
                  f"{'padded batches' if not out['padding_free'] else 'full logits'}", file=sys.stderr)
    if out["padding_free"]:
        if getattr(model.config, "use_cache", None):
            model.config.use_cache = False  # a cache object would hide the packed sequences from the mask builder
        out["collator"] = PackedCausalCollator(tokenizer.pad_token_id, config.packing_row_tokens)
        out["packing_row_tokens"] = config.packing_row_tokens
    else:
        out["collator"] = PaddedCausalCollator(tokenizer.pad_token_id)
    return out


def _records_of(mixture: Any) -> tuple[list[dict[str, Any]], str]:
    from .mixture import Mixture, normalize_record, read_mixture

    if isinstance(mixture, (str, os.PathLike)):
        return read_mixture(mixture), str(mixture)
    if isinstance(mixture, Mixture):
        return [normalize_record(r) for r in mixture.records], "<Mixture>"
    recs = list(mixture)
    if not recs:
        raise InstaError("the mixture is empty")
    return [normalize_record(r, f"record {i}") for i, r in enumerate(recs)], "<records>"


def _digest(records: list[dict[str, Any]]) -> str:
    h = hashlib.sha256()
    for r in records:
        h.update(r["input"].encode())
        h.update(b"\x00")
        h.update(r["target"].encode())
        h.update(b"\x01")
    return h.hexdigest()[:16]


def _base_for_metadata(name: str) -> str:
    from .lm import builtin_name

    if builtin_name(name):
        return name
    p = Path(name).expanduser()
    return str(p.resolve()) if p.exists() else name


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


def train_model(mixture: Any, config: TrainConfig | None = None, callbacks: Sequence[Any] = (),
                **overrides: Any) -> TrainResult:
    """Fine-tune ``config.model`` on a mixture (a JSONL path, a :class:`~insta.mixture.Mixture` or records).

    Keyword overrides set :class:`TrainConfig` fields; ``callbacks`` are extra ``transformers.TrainerCallback``s.
    Returns where the model went and the run's metrics (also written to ``<output_dir>/train_result.json``).
    """
    from .lm import require_transformers

    config = apply_overrides(config or TrainConfig(), overrides, "training")
    records, source = _records_of(mixture)
    require_transformers()
    passthrough = trainer_passthrough(config)  # a missing integration or config file fails before any loading

    import torch
    from transformers import AutoModelForCausalLM, AutoModelForSeq2SeqLM, TrainingArguments

    from .fileio import check_output_dir
    from .lm import load_tokenizer, model_kind, resolve_model
    from .paths import atomic_write_json

    out = Path(config.output_dir)
    check_output_dir(out, "output directory")
    ckpt_dir = out / "checkpoints"
    final_dir = out / "model"
    digest = _digest(records)
    fp = {**config.fingerprint(), "mixture_sha": digest}
    meta_path = out / "train_config.json"
    if config.overwrite:
        for p in (ckpt_dir, final_dir, out / "adapter"):
            if p.is_dir():
                shutil.rmtree(p)
            elif p.exists():
                p.unlink()
    else:
        if meta_path.is_file() and (ckpt_dir.is_dir() or final_dir.is_dir()):
            old = _run_fingerprint(meta_path)
            diff = [k for k in fp if old.get(k) != fp[k]]
            if diff:
                raise InstaError(f"{out} holds a different run (differs in {', '.join(diff)}): use another --out or "
                                 "--overwrite")
        _refuse_foreign_outputs(out, meta_path)

    location = resolve_model(config.model)
    from .lm import is_adapter_dir

    if is_adapter_dir(location):
        raise InstaError(f"{config.model!r} is a LoRA adapter: train from its base model or a merged model")
    _refuse_sentence_encoder(location, config.model)
    kind = model_kind(location)
    tokenizer = load_tokenizer(location)
    t_load = time.perf_counter()
    cls = AutoModelForSeq2SeqLM if kind == "seq2seq" else AutoModelForCausalLM
    from transformers.utils import logging as hf_logging

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
        print(f"insta train: warning: {len(unused)} weight(s) of {config.model!r} are not used by "
              f"{type(model).__name__} ({', '.join(unused[:3])}{', ...' if len(unused) > 3 else ''})", file=sys.stderr)
    if getattr(model.config, "pad_token_id", None) is None:
        model.config.pad_token_id = tokenizer.pad_token_id
    load_s = time.perf_counter() - t_load

    feats, stats = build_features(records, tokenizer, kind, config)

    if config.lora:
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
    n_params = sum(p.numel() for p in model.parameters())
    n_trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)

    batching = _batching(config, kind, model, tokenizer, feats)
    collator = batching.pop("collator")
    use_cpu = not torch.cuda.is_available()
    # transformers 5.x renamed gradient checkpointing to activation checkpointing (the old name warns)
    ckpt_field = ("activation_checkpointing" if "activation_checkpointing" in TrainingArguments.__dataclass_fields__
                  else "gradient_checkpointing")
    args = TrainingArguments(
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
    sampler = None
    if config.group_by_length:
        from .collate import LengthGroupedSampler

        lengths = [len(f["input_ids"]) + (len(f["labels"]) if kind == "seq2seq" else 0) for f in feats]
        sampler = LengthGroupedSampler(lengths, config.batch_size, seed=config.seed)
    timer: dict[str, float] = {}
    trainer = _trainer_class()(model=model, args=args, train_dataset=_ListDataset(feats), data_collator=collator,
                               processing_class=tokenizer, callbacks=_callbacks(config, timer) + list(callbacks),
                               target_logits=batching["target_logits_only"], sampler=sampler)
    if not config.progress:  # without bars the Trainer prints each log dict to stdout instead: no progress at all
        from transformers.trainer_callback import PrinterCallback

        trainer.remove_callback(PrinterCallback)

    resume_from, broken = None, []
    if config.resume and ckpt_dir.is_dir():
        resume_from, broken = find_resume_checkpoint(ckpt_dir)
    if trainer.is_world_process_zero():
        for path, problem in broken:  # a kill while saving: never resumable, and in the way of the rotation
            print(f"insta train: warning: checkpoint {path} is incomplete ({problem}); removed"
                  + (f", resuming from {Path(resume_from).name}" if resume_from else ", starting over"),
                  file=sys.stderr)
            shutil.rmtree(path, ignore_errors=True)
        out.mkdir(parents=True, exist_ok=True)
        atomic_write_json(meta_path, {"fingerprint": fp, "config": asdict(config), "mixture": source,
                                      "kind": kind, "location": location})
    t0, cpu0 = time.perf_counter(), time.process_time()
    train_out = trainer.train(resume_from_checkpoint=resume_from)
    train_s, train_cpu = time.perf_counter() - t0, time.process_time() - cpu0

    base_name = _base_for_metadata(config.model)
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

    history = [
        {"step": h["step"], "loss": h["loss"],
         **({"learning_rate": h["learning_rate"]} if "learning_rate" in h else {})}
        for h in trainer.state.log_history if "loss" in h
    ]
    tokens_seen = trainer.insta_tokens
    if args.world_size > 1:  # every process trained on its own batches
        tokens_seen = int(trainer.accelerator.reduce(torch.tensor(tokens_seen, device=args.device), reduction="sum"))
    steps_s = timer.get("last_step_end", 0.0) - timer.get("first_step_start", 0.0)
    metrics = {
        "kind": kind,
        "model": config.model,
        "location": location,
        "lora": config.lora,
        "n_params": n_params,
        "n_trainable": n_trainable,
        **stats,
        "mixture": source,
        "mixture_sha": digest,
        "resumed_from": resume_from,
        "global_step": trainer.state.global_step,
        "epochs_done": trainer.state.epoch,
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
        "device": "cpu" if use_cpu else "cuda",
        "world_size": args.world_size,
        "learning_rate": config.resolved_lr(),
    }
    if trainer.is_world_process_zero():
        atomic_write_json(final_dir / MODEL_MARKER, {
            "base_model": base_name, "kind": kind, "lora": config.lora, "merged": config.merge_lora,
            "mixture": source, "mixture_sha": digest, "trained_steps": trainer.state.global_step,
        })
        atomic_write_json(out / "train_result.json", {"metrics": metrics, "config": asdict(config)})
    return TrainResult(output_dir=str(out), model_dir=str(final_dir), metrics=metrics)


__all__ = ["SCHEDULERS", "TrainConfig", "TrainResult", "build_features", "checkpoint_problem",
           "find_resume_checkpoint", "safetensors_problem", "train_model", "trainer_passthrough"]

"""Train INSTA-aligned: fine-tune a sentence encoder on a meta-dataset's own instructions (METHOD.md §2).

The encoder learns the catalog's instruction style: two instructions of one task should embed close together,
instructions of unrelated tasks far apart. The result is a plain sentence-transformers model directory that
``insta select --encoder DIR`` (or :class:`insta.encoder.Encoder`) uses as is. :func:`align_encoder`:

1. **Split** (:func:`split_catalog`): evaluation targets, their families (for BIG-bench also the BBH parents)
   and whatever the caller names never feed alignment; of every other unit (a task family by default) a seeded
   share of instructions is held out for the identification test and another for the dev set. The split is
   written into the model's ``insta_alignment.json``.
2. **Pairs** (:func:`build_pairs`, :func:`build_dev_pairs`; the authors' recipe): same-unit pairs of training
   instructions (a random ``positive_fraction`` kept, label 1) and, per instruction, one other-unit instruction
   whose base-encoder cosine is below ``negative_threshold`` (label 0).
3. **Training** with sentence-transformers' ``SentenceTransformerTrainer``: ``objective="cosine"`` =
   ``CosineSimilarityLoss`` on those pairs (the paper); ``"mnrl"`` = ``MultipleNegativesRankingLoss`` on the
   positives in :class:`TaskAwareBatchSampler` batches (no two pairs of one unit in a batch: no false in-batch
   negatives). AdamW, linear warm-up over ``warmup_ratio`` of one epoch then linear decay, gradient clipping; after
   each epoch an ``EmbeddingSimilarityEvaluator`` gives the dev Pearson (cosine vs label) and the Trainer writes a
   checkpoint; the best epoch's weights (``load_best_model_at_end``) are the saved model.

Interrupt any time: rerunning with the same output directory and configuration resumes from the last epoch
checkpoint (weights, optimizer, schedule and random state: the same weights as an uninterrupted run); one that is
incomplete or does not load safely is discarded with a warning (:mod:`insta.align.outputs`). A finished directory is
returned as is; a changed configuration is an error unless ``overwrite=True``.
"""
from __future__ import annotations

import contextlib
import math
import os
import shutil
import sys
import time
from pathlib import Path
from typing import Any, Callable, Iterator, Mapping, Sequence

from ..catalogs.base import Catalog
from ..errors import InstaError
from ..util.helpers import content_hash, timestamp
from ..util.paths import atomic_write_json

from .data import (  # noqa: F401  (re-exported: the alignment's public names live here too)
    EVAL_POOLS, FORMAT_VERSION, METADATA_FILE, OBJECTIVES, UNITS, WORK_DIR, AlignConfig, AlignmentSplit, Pair,
    PairSet, TaskAwareBatchSampler, build_dev_pairs, build_pairs, catalog_units, default_exclusions, split_catalog,
    text_units, unit_of,
)
from .outputs import (  # noqa: F401  (CHECKPOINTS, read_alignment_metadata: re-exported)
    CHECKPOINTS, existing_run, read_alignment_metadata, read_json, resume_checkpoint, write_model, write_readme,
)

DEV_METRIC = "dev_pearson_cosine"  # what the dev EmbeddingSimilarityEvaluator (name "dev") reports


def _versions() -> dict[str, str]:
    out = {}
    for mod in ("torch", "transformers", "sentence_transformers"):
        try:
            out[mod] = __import__(mod).__version__
        except Exception:  # pragma: no cover
            pass
    from .. import __version__

    out["insta"] = __version__
    return out


# ---------------------------------------------------------------- the run


# long: the alignment pipeline in reading order (split, pairs, training, saving), each step a helper
def align_encoder(
    catalog: Catalog,
    config: AlignConfig | None = None,
    out_dir: str | os.PathLike = "aligned-encoder",
    *,
    overwrite: bool = False,
    pair_encoder=None,
    log: Callable[[str], None] | None = None,
) -> Path:
    """Train an aligned encoder on ``catalog`` and write it to ``out_dir`` (a sentence-transformers model dir).

    ``pair_encoder`` (optional) is the encoder used for the negative-pair threshold; by default the base
    encoder itself, through insta's embedding cache. Returns ``out_dir``. See the module docstring for the
    split, resume and overwrite rules.
    """
    config = config or AlignConfig()
    config.validate()
    log = log or (lambda msg: print(f"insta align: {msg}", file=sys.stderr))
    out = Path(out_dir).expanduser()
    t_start = time.perf_counter()

    from ..encoder import load_sentence_transformer, model_fingerprint, resolve_encoder

    base_path = resolve_encoder(config.base_encoder)
    split = split_catalog(catalog, config)
    identity = {
        "format": FORMAT_VERSION,
        "config": config.identity(),
        "catalog": catalog.name,
        "split": content_hash(split.to_dict()),
        "base": model_fingerprint(base_path),
    }
    fingerprint = content_hash(identity)
    work = out / WORK_DIR
    done, running = existing_run(out, fingerprint, config.identity(), overwrite)
    if done is not None and done.get("status") == "complete":
        log(f"{out} is already aligned with this configuration (best epoch {done['training']['best_epoch']}); "
            "nothing to do")
        return out
    running = _start(work, running, fingerprint, config)
    train_pairs, dev_pairs, pair_seconds = _pairs(work, fingerprint, split, config, base_path, pair_encoder, log)
    examples, keys = _examples(train_pairs, split, config, log)

    with _hf_progress_bars(config.progress):
        model = load_sentence_transformer(base_path, config.device or "cpu")
        saved_max_len = model.max_seq_length
        if config.max_seq_length and (saved_max_len is None or config.max_seq_length < saved_max_len):
            model.max_seq_length = config.max_seq_length
        training = _train(model, examples, keys, dev_pairs, config, work, running, log)
        model.max_seq_length = saved_max_len
        outputs = write_model(model, out, work)  # the best weights; the metadata last (it marks completion)
    dropped, train_seconds = training.pop("dropped"), training.pop("train_seconds")
    meta = {
        "insta_alignment_version": FORMAT_VERSION,
        "status": "complete",
        "fingerprint": fingerprint,
        "config": config.to_dict(),
        "config_identity": config.identity(),
        "base_encoder": {"name": config.base_encoder, "path": base_path, "fingerprint": identity["base"]},
        "catalog": {"name": catalog.name, "n_tasks": len(catalog), "pool": config.pool},
        "split": split.to_dict(),
        "pairs": {"train": train_pairs.stats, "dev": dev_pairs.stats,
                  "n_training_examples": len(examples), "dropped_by_sampler": dropped},
        "training": training,
        "timings": {"pairs_seconds": pair_seconds, "train_seconds": train_seconds,
                    "this_call_seconds": round(time.perf_counter() - t_start, 2)},
        "software": _versions(),
        "finished": timestamp(),
        "outputs": outputs,
    }
    write_readme(out, meta)
    atomic_write_json(out / METADATA_FILE, meta)
    if not config.keep_checkpoints:
        shutil.rmtree(work, ignore_errors=True)
    log(f"wrote {out} (best epoch {training['best_epoch']}, {train_seconds:.0f}s training)")
    return out


def _start(work: Path, running: dict | None, fingerprint: str, config: AlignConfig) -> dict:
    """Check the training dependencies, then create the work dir and the run record (written first, so that an
    interrupted run is always recognised as this one); returns the record."""
    try:
        import torch
        import accelerate  # noqa: F401  (the Trainer's)
        import datasets  # noqa: F401
        import sentence_transformers  # noqa: F401
    except ImportError:
        raise InstaError("alignment needs torch and sentence-transformers with its training extras: "
                         "pip install 'insta[encode]' 'sentence-transformers[train]'") from None
    if config.threads:
        torch.set_num_threads(config.threads)
    work.mkdir(parents=True, exist_ok=True)
    if running is None:
        running = {"fingerprint": fingerprint, "config_identity": config.identity(), "status": "running",
                   "started": timestamp()}
        atomic_write_json(work / "run.json", running)
    return running


def _examples(train_pairs: PairSet, split: AlignmentSplit, config: AlignConfig,
              log: Callable[[str], None]) -> tuple[list[Pair], list[set[str]] | None]:
    """The training examples of the objective (cosine: all pairs; mnrl: the positives) and, for mnrl, each pair's
    units (those of both texts: no two pairs sharing one may meet in a batch)."""
    if not train_pairs.positives:
        raise InstaError("no positive pair could be built (every task has a single training instruction)")
    if config.objective == "cosine":
        if not train_pairs.negatives:
            log("warning: no negative pair under the threshold; training on positives only")
        return train_pairs.pairs, None
    units = text_units(split.train)
    return train_pairs.positives, [units.get(p.a, {p.unit_a}) | units.get(p.b, {p.unit_b}) | {p.unit_a}
                                   for p in train_pairs.positives]


def _pairs(work: Path, fingerprint: str, split: AlignmentSplit, config: AlignConfig, base_path: str,
           pair_encoder, log: Callable[[str], None]) -> tuple[PairSet, PairSet, float]:
    """Training and dev pairs (built once, then read back from the work dir on resume) and the seconds spent."""
    pairs_path = work / "pairs.json"
    stored = read_json(pairs_path) if pairs_path.is_file() else None
    if isinstance(stored, dict) and stored.get("fingerprint") == fingerprint:
        def pairset(pos: str, neg: str, stats: str) -> PairSet:
            return PairSet([Pair.from_list(r) for r in stored[pos]], [Pair.from_list(r) for r in stored[neg]],
                           stored[stats])

        train = pairset("positives", "negatives", "stats")
        log(f"resuming: {len(train.pairs)} training pairs from {pairs_path}")
        return train, pairset("dev_positives", "dev_negatives", "dev_stats"), stored.get("seconds", 0.0)
    from ..encoder import Encoder

    t0 = time.perf_counter()
    log(f"building pairs over {len(split.train)} {config.unit} units "
        f"({split.to_dict()['n_train_instructions']} training instructions; "
        f"{len(split.excluded)} evaluation tasks excluded"
        f"{f', {split.n_outside_pool} tasks outside pool ' + config.pool if config.pool else ''})")
    penc = pair_encoder or Encoder(base_path, show_progress=config.progress)
    train = build_pairs(
        split.train, penc, positive_fraction=config.positive_fraction, negative_threshold=config.negative_threshold,
        max_negative_reuse=config.max_negative_reuse, max_positive_pairs_per_unit=config.max_positive_pairs_per_unit,
        seed=config.seed, progress=config.progress,
    )
    dev = build_dev_pairs(split, penc, negative_threshold=config.negative_threshold, seed=config.seed,
                          progress=config.progress)
    seconds = round(time.perf_counter() - t0, 2)
    atomic_write_json(pairs_path, {
        "fingerprint": fingerprint, "seconds": seconds, "stats": train.stats,
        "positives": [p.to_list() for p in train.positives], "negatives": [p.to_list() for p in train.negatives],
        "dev_stats": dev.stats, "dev_positives": [p.to_list() for p in dev.positives],
        "dev_negatives": [p.to_list() for p in dev.negatives],
    })
    return train, dev, seconds


# ---------------------------------------------------------------- training


def _train(model, examples: Sequence[Pair], keys: list[set[str]] | None, dev: PairSet, config: AlignConfig,
           work: Path, running: dict, log: Callable[[str], None]) -> dict[str, Any]:
    """Fit ``model`` in place with ``SentenceTransformerTrainer`` (resuming from the last usable checkpoint under
    ``work``); the best epoch's weights are loaded at the end. Returns the ``training`` record of the metadata."""
    from sentence_transformers import SentenceTransformerTrainingArguments

    data, loss, batch_sampler, steps, dropped = _objective(model, examples, keys, config)
    evaluator = _dev_evaluator(dev) if dev.positives and dev.negatives else None  # Pearson needs both labels
    if evaluator is not None:
        if "base_dev" not in running:
            running["base_dev"] = _dev_scores(evaluator(model))
            atomic_write_json(work / "run.json", running)
            log(f"base encoder dev pearson {running['base_dev']['pearson']:.4f}")
    best = evaluator is not None and config.select_best
    warmup = math.ceil(config.warmup_ratio * steps)
    use_cpu = (config.device or "cpu") == "cpu"
    args = SentenceTransformerTrainingArguments(
        output_dir=str(work / CHECKPOINTS), num_train_epochs=config.epochs,
        per_device_train_batch_size=config.batch_size, learning_rate=config.lr, weight_decay=config.weight_decay,
        warmup_steps=warmup, lr_scheduler_type="linear", max_grad_norm=config.max_grad_norm or 0.0,
        seed=config.seed, data_seed=config.seed, batch_sampler=batch_sampler,
        eval_strategy="epoch" if evaluator else "no", save_strategy="epoch", logging_strategy="epoch",
        save_total_limit=2,  # the last epoch and the best (or the one before): the fallback if one fails to load
        load_best_model_at_end=best, metric_for_best_model=f"eval_{DEV_METRIC}" if best else None,
        greater_is_better=True, report_to="none", disable_tqdm=not config.progress, use_cpu=use_cpu,
        dataloader_pin_memory=not use_cpu,
    )
    trainer = _trainer(model, args, data, loss, evaluator, _epoch_reporter(config.epochs, steps, best, log),
                       config.progress)
    resume = resume_checkpoint(work / CHECKPOINTS, steps, config.epochs, log)
    if resume:
        log(f"resuming after epoch {int(resume.rsplit('-', 1)[1]) // steps} of {config.epochs}")
    trainer.train(resume_from_checkpoint=resume)

    history = _history(trainer.state.log_history, steps)
    best_ckpt = trainer.state.best_model_checkpoint if best else None
    best_epoch = int(best_ckpt.rsplit("-", 1)[1]) // steps if best_ckpt else config.epochs
    return {
        "objective": config.objective, "learning_rate": config.lr, "steps_per_epoch": [steps] * config.epochs,
        "warmup_steps": warmup, "epochs": history, "base_dev": running.get("base_dev", {}),
        "best_epoch": best_epoch, "best_dev_pearson": history[best_epoch - 1].get("dev_pearson") if history else None,
        "train_seconds": round(sum(r.get("seconds", 0.0) for r in history), 2), "dropped": dropped,
    }


def _objective(model, examples: Sequence[Pair], keys: list[set[str]] | None, config: AlignConfig):
    """The training dataset, loss, batch sampler, steps per epoch and examples the sampler leaves out (all epochs):
    cosine = labelled pairs with the Trainer's seeded shuffling; mnrl = (anchor, positive) pairs in task-aware
    batches (``keys``: the units of each pair)."""
    import functools

    from datasets import Dataset
    from sentence_transformers.sentence_transformer.losses import CosineSimilarityLoss, MultipleNegativesRankingLoss

    if keys is None:
        data = Dataset.from_dict({"sentence1": [p.a for p in examples], "sentence2": [p.b for p in examples],
                                  "label": [p.label for p in examples]})
        return data, CosineSimilarityLoss(model), "batch_sampler", math.ceil(len(examples) / config.batch_size), 0
    data = Dataset.from_dict({"anchor": [p.a for p in examples], "positive": [p.b for p in examples]})
    sampler = TaskAwareBatchSampler(keys, config.batch_size, seed=config.seed, epochs=config.epochs)
    dropped = 0
    for epoch in range(config.epochs):
        sampler.batches(epoch)
        dropped += sampler.dropped
    if sampler.n_batches == 0:
        raise InstaError("no training batch could be formed (too few tasks for the task-aware sampler)")
    batch_sampler = functools.partial(TaskAwareBatchSampler.for_trainer, keys, epochs=config.epochs)
    return data, MultipleNegativesRankingLoss(model, scale=config.mnrl_scale), batch_sampler, sampler.n_batches, dropped


def _dev_evaluator(dev: PairSet):
    """sentence-transformers' ``EmbeddingSimilarityEvaluator`` on the dev pairs (Pearson and Spearman of cosine vs
    label), encoding each distinct text once: a dev instruction is paired with every training text of its unit."""
    from sentence_transformers.sentence_transformer.evaluation import EmbeddingSimilarityEvaluator

    class DevEvaluator(EmbeddingSimilarityEvaluator):
        def embed_inputs(self, model, sentences, **kwargs):
            distinct = list(dict.fromkeys(sentences))
            where = {t: i for i, t in enumerate(distinct)}
            return super().embed_inputs(model, distinct, **kwargs)[[where[t] for t in sentences]]

    return DevEvaluator([p.a for p in dev.pairs], [p.b for p in dev.pairs], [p.label for p in dev.pairs],
                        batch_size=64, name="dev", similarity_fn_names=["cosine"], write_csv=False)


def _trainer(model, args, data, loss, evaluator, reporter, progress: bool):
    """A ``SentenceTransformerTrainer`` without its model-card callback (insta writes its own card; the callback
    also samples with the global ``random``) and without log dicts on stdout (``reporter`` reports each epoch);
    the Trainer's progress bar only with ``progress``."""
    from sentence_transformers import SentenceTransformerTrainer
    from transformers.trainer_callback import PrinterCallback, ProgressCallback

    class Trainer(SentenceTransformerTrainer):
        def add_model_card_callback(self, default_args_dict: dict[str, Any]) -> None:
            pass

    class BarOnly(ProgressCallback):
        def on_log(self, args, state, control, logs=None, **kwargs):
            pass

    trainer = Trainer(model=model, args=args, train_dataset=data, loss=loss, evaluator=evaluator, callbacks=[reporter])
    trainer.remove_callback(PrinterCallback)
    trainer.remove_callback(ProgressCallback)
    if progress:
        trainer.add_callback(BarOnly())
    return trainer


def _dev_scores(metrics: Mapping[str, float]) -> dict[str, float]:
    """``{"pearson", "spearman"}`` from the dev evaluator's metrics (with or without the Trainer's ``eval_``)."""
    return {k: float(v) for k in ("pearson", "spearman") for name, v in metrics.items()
            if name.removeprefix("eval_") == f"dev_{k}_cosine"}


def _history(log_history: Sequence[Mapping[str, Any]], steps: int) -> list[dict[str, Any]]:
    """One record per finished epoch (train loss, dev Pearson/Spearman, seconds of training and of the dev
    evaluation) from the Trainer's log history, which checkpoints carry across a resume."""
    by_epoch: dict[int, dict[str, Any]] = {}
    for entry in log_history:
        if not isinstance(entry.get("epoch"), (int, float)) or round(entry["epoch"]) < 1:
            continue
        rec = by_epoch.setdefault(round(entry["epoch"]), {"epoch": round(entry["epoch"]), "steps": steps})
        if "loss" in entry:
            rec["train_loss"] = entry["loss"]
        if "epoch_seconds" in entry:
            rec["seconds"] = entry["epoch_seconds"]
        if "eval_runtime" in entry:
            rec["dev_seconds"] = entry["eval_runtime"]
        rec.update({f"dev_{k}": v for k, v in _dev_scores(entry).items()})
    return [by_epoch[e] for e in sorted(by_epoch)]


def _epoch_reporter(epochs: int, steps: int, best: bool, log: Callable[[str], None]):
    """A TrainerCallback that times each epoch into the log history (saved with the checkpoint) and reports the
    epoch once its checkpoint is written."""
    from transformers import TrainerCallback

    class EpochReport(TrainerCallback):
        def on_epoch_begin(self, args, state, control, **kwargs):
            self.t0 = time.perf_counter()

        def on_epoch_end(self, args, state, control, **kwargs):
            state.log_history.append({"epoch": round(state.epoch), "step": state.global_step,
                                      "epoch_seconds": round(time.perf_counter() - self.t0, 2)})

        def on_save(self, args, state, control, **kwargs):
            rec = _history(state.log_history, steps)[-1]
            is_best = best and state.best_global_step == state.global_step
            log(f"epoch {rec['epoch']}/{epochs}: loss {rec.get('train_loss', float('nan')):.4f}"
                + (f", dev pearson {rec['dev_pearson']:.4f}" if "dev_pearson" in rec else "")
                + f", {rec.get('seconds', 0.0):.1f}s" + (" (best)" if is_best else ""))

    return EpochReport()


@contextlib.contextmanager
def _hf_progress_bars(enabled: bool) -> Iterator[None]:
    """transformers' own bars (loading, writing weights) follow ``progress``; restored afterwards."""
    from transformers.utils import logging as hf_logging

    was = hf_logging.is_progress_bar_enabled()
    if not enabled:
        hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        if was:
            hf_logging.enable_progress_bar()

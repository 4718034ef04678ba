"""Transfer-aligned encoder: (target instruction, source instruction) pairs labelled by measured transfer, and the
fine-tuning of the instruction encoder on them (issue #20 item 3), so that instruction similarity follows what a
prior transfer matrix measured rather than the catalog's template style (INSTA-aligned, :mod:`.train`).

The rule (fixed before any leave-one-target-out result was computed; not tuned on held-out targets):

* **Pairs**: for every target of the matrix that is not held out and every source measured on it,
  :data:`PAIRS_PER_CELL` (1) pair (one instruction of the target, one of the source), drawn seeded from all
  combinations of the two tasks' cleaned instructions. The held-out targets' columns are dropped first
  (:meth:`~insta.matrix.prior.PriorMatrix.without`: their values are never read) and a pair holding one of their
  instruction texts is left out, so the encoder has seen nothing of a held-out target.
* **Label**: the source's per-target percentile of transfer among the sources measured on that target
  (:meth:`~insta.matrix.prior.PriorMatrix.percentiles`: 0 worst, 1 best, ties share their mean rank).
* **Loss and training** (:data:`TRANSFER_RECIPE`): ``CosineSimilarityLoss`` (align's ``cosine`` objective: the
  cosine of the pair is regressed onto its label) with sentence-transformers' trainer, base all-MiniLM-L6-v2,
  1 epoch, batch 16, lr 5e-5 (the top of the usual BERT fine-tuning range: the run is a few dozen steps; the
  paper's 1e-6 would not move the model), warm-up 10% of the epoch then linear decay, AdamW (weight decay 0.01),
  clipping 1.0, seed 42; the last epoch is kept (no dev set: every column is training data or held out).
  First fixed at 2 pairs per cell, 2 epochs and lr 2e-5 (commit bd46a51); cut to this before any held-out result
  was computed, because on this machine's shared CPU one such encoder took over 10 minutes (12 are needed for the
  leave-one-target-out benchmark, ``benchmarks/transfer_encoder_loo.py``).

:func:`align_to_transfer` writes a plain sentence-transformers directory (``insta select --encoder DIR``, or
``-o encoder=DIR`` of ``insta-mean`` / ``prior-transfer``), with the training record in ``insta_alignment.json``;
it reuses :mod:`.train`'s trainer setup, :mod:`.outputs`' saving, resume and overwrite rules, and insta's safe
model loading. ``insta align --transfer-matrix FILE`` is its CLI. Off by default everywhere: the methods use the
base encoder unless given this directory.
"""
from __future__ import annotations

import itertools
import math
import os
import shutil
import sys
import time
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping, Sequence

from ..catalogs.base import Catalog
from ..errors import InstaError
from ..util.helpers import content_hash, text_rng, timestamp
from ..util.paths import atomic_write_json
from .config import FORMAT_VERSION, METADATA_FILE, WORK_DIR, AlignConfig
from .data import Pair, PairSet

PAIRS_PER_CELL = 1
#: the training knobs of a transfer-aligned run (the other AlignConfig fields keep their defaults, unused here)
TRANSFER_RECIPE: dict[str, Any] = {"objective": "cosine", "epochs": 1, "batch_size": 16, "learning_rate": 5e-5,
                                   "select_best": False}
LABEL_RULE = "per-target percentile of measured transfer (0 worst, 1 best); CosineSimilarityLoss"


def transfer_config(**overrides: Any) -> AlignConfig:
    """The :class:`AlignConfig` of a transfer-aligned run: :data:`TRANSFER_RECIPE`, then ``overrides``."""
    config = AlignConfig(**{**TRANSFER_RECIPE, **overrides})
    if config.objective != "cosine":
        raise InstaError("a transfer-aligned encoder is trained with the cosine objective (labels are percentiles)")
    return config


def build_transfer_pairs(prior: Any, target_texts: Mapping[str, Sequence[str]],
                         source_texts: Mapping[str, Sequence[str]], *, held_out: Iterable[str] = (),
                         exclude_texts: Iterable[str] = (), pairs_per_cell: int = PAIRS_PER_CELL,
                         seed: int = 42) -> PairSet:
    """The labelled pairs of ``prior`` (a :class:`~insta.matrix.prior.PriorMatrix`) without the ``held_out``
    targets (see the module docstring). ``target_texts`` / ``source_texts``: each matrix target's and source's
    instructions (a source without texts gives no pairs); ``exclude_texts``: instructions that no pair may hold
    besides the held-out targets' own (e.g. those of a target whose rows the caller already removed). Returns the
    pairs as ``positives`` (all of them; a label is a percentile, not a class) with their statistics."""
    if isinstance(pairs_per_cell, bool) or not isinstance(pairs_per_cell, int) or pairs_per_cell < 1:
        raise InstaError(f"pairs_per_cell must be a positive integer (got {pairs_per_cell!r})")
    held = set(held_out)
    prior = prior.without(held, "held out of the transfer-aligned encoder")
    unseen = {t for h in held for t in target_texts.get(h, ())} | {t.strip() for t in exclude_texts}
    pct = prior.percentiles()
    pairs: list[Pair] = []
    skipped = 0
    for i, target in enumerate(prior.targets):
        mine = [t for t in target_texts.get(target, ()) if t not in unseen]
        for j, source in enumerate(prior.sources):
            if math.isnan(pct[i, j]):  # not measured on this target
                continue
            theirs = [t for t in source_texts.get(source, ()) if t not in unseen]
            combos = [(a, b) for a, b in itertools.product(mine, theirs) if a != b]
            if not combos:
                skipped += 1
                continue
            rng = text_rng(seed, "transfer-pairs", target, source)
            for a, b in rng.sample(combos, min(pairs_per_cell, len(combos))):
                pairs.append(Pair(a, b, float(pct[i, j]), target, source))
    if not pairs:
        raise InstaError("the transfer matrix gives no training pair (no target left with instructions and measured "
                         "sources)")
    stats = {"n_pairs": len(pairs), "n_targets": len(prior.targets), "n_sources": len(prior.sources),
             "pairs_per_cell": pairs_per_cell, "cells_without_texts": skipped, "held_out": sorted(held),
             "n_excluded_texts": len(unseen),
             "label": LABEL_RULE, "mean_label": round(sum(p.label for p in pairs) / len(pairs), 6)}
    return PairSet(pairs, [], stats)


def matrix_instructions(matrix: Any, pool: Catalog, *, metric: str | None = None, data_dir: str | None = None,
                        target_catalog: str | Catalog | None = None, catalogs: Any = None
                        ) -> tuple[Any, dict[str, list[str]], dict[str, list[str]]]:
    """The :class:`~insta.matrix.prior.PriorMatrix` of ``matrix`` (a file or a TransferMatrix) and the cleaned
    instructions of its targets and of its sources, found as ``prior-transfer`` finds them (targets by
    ``catalog:id``, sources as tasks or families of ``pool``; one error line for an id not found)."""
    from ..methods.prior_transfer import PriorTransferMethod
    from ..selection import clean_instructions

    method = PriorTransferMethod(prior_matrix=matrix, metric=metric, weights=[1, 0, 0], data_dir=data_dir,
                                 target_catalog=target_catalog, catalogs=catalogs)
    prior = method.prior
    targets = {t: clean_instructions(task.instructions) for t, task in method.pivot_tasks(pool).items()}
    sources: dict[str, list[str]] = {}
    for task, j in zip(pool, method.source_index(pool)):
        if j >= 0 and any(isinstance(s, str) and s.strip() for s in task.instructions):
            bucket = sources.setdefault(prior.sources[j], [])
            bucket += [t for t in clean_instructions(task.instructions) if t not in bucket]
    return prior, targets, sources


# long: the run in reading order (texts, pairs, identity, training, saving), each step one of align's helpers
def align_to_transfer(matrix: Any, pool: Catalog, out_dir: str | os.PathLike, *, held_out: Sequence[str] = (),
                      exclude_texts: Sequence[str] = (), config: AlignConfig | None = None,
                      pairs_per_cell: int = PAIRS_PER_CELL, metric: str | None = None, data_dir: str | None = None,
                      target_catalog: str | Catalog | None = None, catalogs: Any = None, overwrite: bool = False,
                      log: Callable[[str], None] | None = None) -> Path:
    """Fine-tune the base encoder of ``config`` (default :func:`transfer_config`) on the transfer pairs of
    ``matrix`` (its ``held_out`` targets left out, no pair holding one of ``exclude_texts``) and write it to
    ``out_dir``; returns ``out_dir``. A finished run with the same inputs is returned as is, an interrupted one
    resumes, another one needs ``overwrite``."""
    from ..encoder import load_sentence_transformer, model_fingerprint, resolve_encoder
    from .train import _hf_progress_bars, _start, _train, _versions
    from .outputs import existing_run, write_model

    config = config or transfer_config()
    config.validate()
    if config.objective != "cosine":
        raise InstaError("a transfer-aligned encoder is trained with the cosine objective (labels are percentiles)")
    log = log or (lambda msg: print(f"insta align: {msg}", file=sys.stderr))
    out = Path(out_dir).expanduser()
    t_start = time.perf_counter()
    prior, target_texts, source_texts = matrix_instructions(matrix, pool, metric=metric, data_dir=data_dir,
                                                             target_catalog=target_catalog, catalogs=catalogs)
    unknown = sorted(set(held_out) - set(prior.targets) - set(prior.dropped))
    if unknown:
        raise InstaError(f"held-out target(s) not in the transfer matrix: {', '.join(unknown)}")
    pairs = build_transfer_pairs(prior, target_texts, source_texts, held_out=held_out, exclude_texts=exclude_texts,
                                 pairs_per_cell=pairs_per_cell, seed=config.seed)
    base_path = resolve_encoder(config.base_encoder)
    identity = {"format": FORMAT_VERSION, "kind": "transfer", "config": config.identity(),
                "matrix": prior.without(held_out).fingerprint(), "held_out": sorted(held_out),
                "pairs": content_hash([p.to_list() for p in pairs.positives]), "base": model_fingerprint(base_path)}
    fingerprint = content_hash(identity)
    work = out / WORK_DIR
    done, running = existing_run(out, fingerprint, config.identity(), overwrite)
    if done is not None and done.get("status") == "complete":
        log(f"{out} is already transfer-aligned with these inputs; nothing to do")
        return out
    running = _start(work, running, fingerprint, config)
    log(f"{pairs.stats['n_pairs']} transfer pairs from {pairs.stats['n_targets']} targets x "
        f"{pairs.stats['n_sources']} sources (held out: {', '.join(sorted(held_out)) or 'none'})")
    with _hf_progress_bars(config.progress):
        model = load_sentence_transformer(base_path, config.device or "cpu")
        saved_max_len = model.max_seq_length
        if config.max_seq_length and (saved_max_len is None or config.max_seq_length < saved_max_len):
            model.max_seq_length = config.max_seq_length
        training = _train(model, pairs.positives, None, PairSet([], [], {}), config, work, running, log)
        model.max_seq_length = saved_max_len
        outputs = write_model(model, out, work)
    training.pop("dropped")
    train_seconds = training.pop("train_seconds")
    seen = {t: sorted({p.a for p in pairs.positives if p.unit_a == t}) for t in prior.targets}
    seen.update({s: sorted({p.b for p in pairs.positives if p.unit_b == s}) for s in prior.sources})
    meta = {
        "insta_alignment_version": FORMAT_VERSION, "kind": "transfer", "status": "complete",
        "fingerprint": fingerprint, "config": config.to_dict(), "config_identity": config.identity(),
        "base_encoder": {"name": config.base_encoder, "path": base_path, "fingerprint": identity["base"]},
        "catalog": {"name": pool.name, "n_tasks": len(pool), "pool": config.pool},
        "transfer_matrix": {"fingerprint": identity["matrix"], "metric": prior.metric, "held_out": sorted(held_out),
                            "label": LABEL_RULE},
        # the texts the encoder saw, per matrix task, in the split format that `insta eval-selection` reads
        "split": {"catalog": pool.name, "unit": "task", "excluded_tasks": {t: "held out" for t in held_out},
                  "train": {k: v for k, v in seen.items() if v}, "dev": {}, "heldout": {},
                  "unit_tasks": {k: [k] for k, v in seen.items() if v}, "n_heldout_instructions": 0,
                  "n_dev_instructions": 0},
        "pairs": {"train": pairs.stats, "n_training_examples": len(pairs.positives)},
        "training": training,
        "timings": {"train_seconds": train_seconds, "this_call_seconds": round(time.perf_counter() - t_start, 2)},
        "software": _versions(), "finished": timestamp(), "outputs": outputs,
    }
    (out / "README.md").write_text(
        "---\nlibrary_name: sentence-transformers\ntags: [sentence-transformers, insta, transfer-alignment]\n---\n"
        f"# Transfer-aligned encoder\n\nBase encoder `{config.base_encoder}` fine-tuned on {len(pairs.positives)} "
        f"(target instruction, source instruction) pairs of a transfer matrix ({prior.metric}), labelled by "
        f"{LABEL_RULE}; {config.epochs} epochs, lr {config.lr}, seed {config.seed}. Held out: "
        f"{', '.join(sorted(held_out)) or 'none'}. Details in `{METADATA_FILE}`.\n", encoding="utf-8")
    atomic_write_json(out / METADATA_FILE, meta)
    if not config.keep_checkpoints:
        shutil.rmtree(work, ignore_errors=True)
    log(f"wrote {out} ({train_seconds:.0f}s training)")
    return out

"""INSTA-aligned: a sentence encoder fine-tuned on a meta-dataset's own instructions (METHOD.md §2).

One stage per module: :mod:`.config` (:class:`AlignConfig`, the authors' recipe by default, and the names of the
files an alignment writes), :mod:`.data` (the leakage-free split and the training/dev pairs), :mod:`.batches`
(task-aware batches for in-batch negatives), :mod:`.train` (:func:`align_encoder`: split, pairs, training,
resume), :mod:`.outputs` (the output folder: checkpoints, metadata, model card), :mod:`.targets` (an encoder
aligned for a run's targets, trained when missing) and :mod:`.transfer_pairs` (an encoder aligned to measured
transfer instead: pairs labelled from a transfer matrix, :func:`align_to_transfer`).

The names below load their module on first use, so ``insta align --help`` imports no numpy.
"""
from __future__ import annotations

_LAZY = {
    **dict.fromkeys(("EVAL_POOLS", "FORMAT_VERSION", "METADATA_FILE", "OBJECTIVES", "UNITS", "WORK_DIR",
                     "AlignConfig"), "config"),
    **dict.fromkeys(("AlignmentSplit", "Pair", "PairSet", "build_dev_pairs", "build_pairs", "catalog_units",
                     "default_exclusions", "split_catalog", "text_units", "unit_of"), "data"),
    "TaskAwareBatchSampler": "batches",
    **dict.fromkeys(("CHECKPOINTS", "existing_run", "read_alignment_metadata", "read_json", "resume_checkpoint",
                     "write_model", "write_readme"), "outputs"),
    **dict.fromkeys(("DEV_METRIC", "align_encoder"), "train"),
    **dict.fromkeys(("align_for_targets", "ensure_aligned_encoder"), "targets"),
    **dict.fromkeys(("PAIRS_PER_CELL", "TRANSFER_RECIPE", "align_to_transfer", "build_transfer_pairs",
                     "matrix_instructions", "transfer_config"), "transfer_pairs"),
}


def __getattr__(name: str):
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(f"{__name__}.{_LAZY[name]}"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = sorted(_LAZY)

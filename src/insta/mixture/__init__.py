"""Training mixtures: up to N instances of each selected source task, rendered as the model will see them.

A mixture is a list of plain records (one JSON object per line in a ``.jsonl`` file, loadable with
``datasets.load_dataset("json", data_files=...)`` or :func:`load_mixture_dataset`)::

    {"id": "<task>::<instance id>[#r<repeat>]", "task": "...", "catalog": "...", "instance_id": "...",
     "instruction": "the instruction the model sees", "input": "<fully rendered prompt>", "target": "...",
     "references": [...], "options": [...] | null, "label": int | null, "provenance": {...}}

``input`` is :attr:`insta.records.Example.input` (the catalog already rendered the instruction with the
instance); ``target`` is the text to train on (the gold option, else the first reference).

Mixing (:class:`MixtureConfig`):

* ``proportional`` (default): every task contributes ``min(its instances, cap)`` instances, where cap is
  ``per_task`` or a per-task override: examples-proportional mixing with a per-task limit, as in T5/T0. With
  ``total`` set, those counts are scaled down proportionally (largest remainder) to add up to ``total``.
* ``equal``: every task contributes exactly ``cap`` instances (``total // n_tasks`` when ``total`` is set and
  smaller); a task with fewer instances is repeated (``provenance["repeat"]`` counts the copies).

Sampling is a seeded uniform sample (reservoir sampling over the task's examples, the random stream derived from
``seed`` and the task id, so adding a task does not change the others' samples).

Leakage (``exclude_target``): source instances that reproduce one of the target's evaluation instances are
dropped before sampling. An instance leaks when its normalised input equals a target input, or when it shares a
word n-gram (``dedup_ngram`` words, default 8) with a target instance, counting only n-grams that are specific to
one instance (n-grams found in more than ``max(2, 5%)`` of the target's instances are template boilerplate and
ignored). Short target instances (fewer than n words) leak when their whole normalised text appears inside a source
instance's input. The target task itself and its family never enter the mixture.
"""
from __future__ import annotations

from ..prompt_format import join_prompt_target
from .build import allocate_budget, MIXINGS, MixtureConfig, build_mixture
from .from_selection import mixture_from_selection, read_selection, target_id_of
from .leakage import LeakFilter
from .records import (
    EXPORT_FORMATS,
    Mixture,
    example_instruction,
    export_record,
    load_mixture_dataset,
    make_record,
    manifest_path,
    normalize_record,
    read_mixture,
)


__all__ = [
    "EXPORT_FORMATS",
    "LeakFilter",
    "MIXINGS",
    "Mixture",
    "MixtureConfig",
    "allocate_budget",
    "build_mixture",
    "export_record",
    "example_instruction",
    "join_prompt_target",
    "load_mixture_dataset",
    "make_record",
    "manifest_path",
    "mixture_from_selection",
    "normalize_record",
    "read_mixture",
    "read_selection",
    "target_id_of",
]

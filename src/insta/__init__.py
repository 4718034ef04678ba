"""insta: targeted instruction tuning with instruction-only task selection (INSTA, arXiv 2404.16418).

Step by step::

    from insta import load_catalog, load_method
    p3 = load_catalog("p3", data_dir="../shared/data")
    pool = p3.subset(p3.pool("t0_train"))
    result = load_method("insta-mean").select(["Is the review positive or negative?"], pool, k=5)
"""
from __future__ import annotations

__version__ = "0.1.0"

_LAZY = {
    "load_catalog": ("insta.catalogs", "load_catalog"),
    "Catalog": ("insta.catalogs.base", "Catalog"),
    "Task": ("insta.records", "Task"),
    "Example": ("insta.records", "Example"),
    "InstaError": ("insta.errors", "InstaError"),
    "Encoder": ("insta.encoder", "Encoder"),
    "Selector": ("insta.methods", "Selector"),
    "Selection": ("insta.selection", "Selection"),
    "SelectionMethod": ("insta.selection", "SelectionMethod"),
    "KRule": ("insta.selection", "KRule"),
    "load_method": ("insta.methods", "load_method"),
    "select": ("insta.methods", "select"),
    "AlignConfig": ("insta.align", "AlignConfig"),
    "align_encoder": ("insta.align", "align_encoder"),
    "evaluate_identification": ("insta.evaluators.identification", "evaluate_identification"),
    "build_mixture": ("insta.mixture", "build_mixture"),
    "mixture_from_selection": ("insta.mixture", "mixture_from_selection"),
    "TrainConfig": ("insta.train", "TrainConfig"),
    "train_model": ("insta.train", "train_model"),
    "evaluate_task": ("insta.evaluate", "evaluate_task"),
    "simple_evaluate": ("insta.evaluate", "simple_evaluate"),
    "load_experiment_config": ("insta.experiment", "load_config"),
    "run_experiment": ("insta.experiment", "run_experiment"),
}


def __getattr__(name: str):
    if name in _LAZY:
        import importlib

        module, attr = _LAZY[name]
        return getattr(importlib.import_module(module), attr)
    raise AttributeError(f"module 'insta' has no attribute {name!r}")


__all__ = list(_LAZY) + ["__version__"]

"""An aligned encoder for a run's targets: trained with every target's family kept out
(:func:`align_for_targets`), or only when it is missing and the config says how (:func:`ensure_aligned_encoder`:
the comparison grid, its P3 table and the transfer matrix's scoring all call this one)."""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

from ..catalogs.base import Catalog
from ..records import Task
from .config import AlignConfig
from .data import default_exclusions
from .train import align_encoder


def align_for_targets(source: Catalog, targets: Sequence[Task], out: str | os.PathLike,
                      options: Mapping[str, Any] | None = None, log: Callable[[str], None] = lambda m: None) -> Path:
    """Align an encoder on ``source`` with every target's family (and BIG-bench parent) kept out of alignment,
    on top of the alignment's own default exclusions; returns ``out``. Used by the experiment grid and the
    transfer scoring when their configured aligned encoder is missing."""

    opts = dict(options or {})
    covered = set(default_exclusions(source)) if opts.get("default_exclusions", True) else set()
    fams = {t.family for t in targets} | {str(t.meta["parent"]) for t in targets if (t.meta or {}).get("parent")}
    extra = sorted(f for f in fams if any(x.family == f and x.id not in covered for x in source))
    if extra:
        opts["exclude_families"] = sorted(set(opts.get("exclude_families", [])) | set(extra))
    opts.setdefault("progress", False)
    return align_encoder(source, AlignConfig(**opts), out, log=log)


def ensure_aligned_encoder(out: str | os.PathLike | None, source: Callable[[], Catalog], options: Any,
                           targets: Sequence[Task] = (), log: Callable[[str], None] = lambda m: None,
                           what: str = "insta-aligned") -> bool:
    """Train the aligned encoder ``out`` when it is missing and ``options`` (an :class:`AlignConfig` or its
    mapping) say how: on ``source()`` with every target's family kept out (:func:`align_for_targets`), or as
    ``insta align`` does when there are no targets. Returns whether the encoder is there afterwards."""
    from dataclasses import asdict, fields

    from ..encoder import is_encoder_dir

    if not out or is_encoder_dir(out):
        return bool(out)
    if options is None:
        return False
    if isinstance(options, AlignConfig):
        defaults = AlignConfig()
        shown = {f.name: getattr(options, f.name) for f in fields(options)
                 if f.name != "progress" and getattr(options, f.name) != getattr(defaults, f.name)}
        options = asdict(options)
    else:
        shown = dict(options)
    log(f"{what}: training the aligned encoder into {out} (align: {shown})")
    if targets:
        align_for_targets(source(), targets, out, options, log=lambda m: log(f"align: {m}"))
    else:
        align_encoder(source(), AlignConfig(**options), out, log=lambda m: log(f"align: {m}"))
    return is_encoder_dir(out)

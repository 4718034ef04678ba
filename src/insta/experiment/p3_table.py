"""The report's P3 selection table: the top k of the 35 T0 training datasets for each T0 held-out target under
INSTA and INSTA-aligned (selection only: P3 instances are not available offline), cached in
``<out>/p3_table.json``; its aligned encoder is trained first when the config says how and it is missing."""
from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable

from ..catalogs.base import Catalog
from ..encoder import is_encoder_dir
from ..util.helpers import content_hash
from ..methods import load_method
from ..util.paths import atomic_write_json

if TYPE_CHECKING:  # pragma: no cover
    from .config import ExperimentConfig


def _variants(encoder: str | None, aligned_encoder: str | None, encoders: dict[str, Any]
              ) -> tuple[list[tuple[str, Any, str, str]], str | None]:
    """(name, method, aggregation, encoder) of each column, and a note when INSTA-aligned is left out."""
    variants = [("insta-mean", load_method("insta-mean", encoder=encoders.get("default") or encoder),
                 "mean", encoder or "all-MiniLM-L6-v2")]
    if not aligned_encoder:
        return variants, ("no aligned P3 encoder configured (p3_table.aligned_encoder): train one with "
                          "`insta align --catalog p3 --pool t0_train` to fill the INSTA-aligned column")
    if not (is_encoder_dir(aligned_encoder) or "aligned" in encoders):
        return variants, (f"aligned encoder {aligned_encoder} not found (or not finished): INSTA-aligned column "
                          "left out")
    variants.append(("insta-aligned", load_method("insta-aligned", encoder=encoders.get("aligned")
                                                  or str(aligned_encoder)), "topk-vote", str(aligned_encoder)))
    return variants, None


def p3_selection_table(data_dir: str | None, k: int = 5, encoder: str | None = None,
                       aligned_encoder: str | None = None, log: Callable[[str], None] = lambda m: None,
                       catalog: Catalog | None = None, encoders: dict[str, Any] | None = None) -> dict[str, Any]:
    """Top-k of the P3 training pool (``t0_train``) for every T0 held-out target (``t0_eval``) under INSTA
    (``insta-mean``, default encoder) and INSTA-aligned (``insta-aligned``, top-k vote, ``aligned_encoder``)
    when one is given and present, both through :func:`insta.methods.load_method`.

    No training: P3 instances are not available offline. ANLI R1-R3 share one promptsource folder, so the 11 T0
    held-out targets are 9 rows here (``anli`` stands for R1, R2 and R3). Tasks in a tie group carry its number.
    """
    if catalog is None:
        from ..catalogs import load_catalog

        catalog = load_catalog("p3", data_dir)
    pool = catalog.subset(catalog.pool("t0_train"))
    targets = [catalog.get(t) for t in catalog.pool("t0_eval")]
    variants, aligned_note = _variants(encoder, aligned_encoder, encoders or {})
    rows = []
    for tgt in targets:
        row: dict[str, Any] = {"target": tgt.id, "n_instructions": len(tgt.instructions)}
        for name, method, _, _ in variants:
            sel = method.select(tgt, pool, k)
            row[name] = [{"task": s.task, "score": round(s.score, 4),
                          **({"tie_group": s.tie_group} if s.tie_group else {})} for s in sel.selected]
        rows.append(row)
    log(f"P3 table: {len(rows)} targets x {len(variants)} variant(s)")
    return {"k": k, "pool_size": len(pool), "variants": [{"name": n, "aggregation": a, "encoder": e}
                                                         for n, _, a, e in variants],
            "rows": rows, "note": aligned_note,
            "anli": "anli = ANLI R1, R2 and R3 (one promptsource folder, the same instructions)"}


def ensure_p3_aligned_encoder(cfg: ExperimentConfig, log: Callable[[str], None] = lambda m: None) -> Path | None:
    """Train the P3 table's aligned encoder when the config says how (``p3_table.align``) and it is missing.

    It is aligned on the P3 ``t0_train`` pool by default, with the T0 evaluation datasets left out as
    ``insta align`` always does, so a fresh checkout reproduces the report's INSTA-aligned column.
    """
    from ..align import ensure_aligned_encoder
    from ..catalogs import load_catalog
    from ..encoder import is_encoder_dir

    p3 = cfg.p3_table
    target, config = p3.aligned_encoder, p3.align
    if not target or config is None or is_encoder_dir(target):
        return None
    ensure_aligned_encoder(target, lambda: load_catalog("p3", cfg.data_dir), config, log=log, what="p3 table")
    return Path(target)


def cached_p3_table(cfg: ExperimentConfig, out: Path, log: Callable[[str], None] = lambda m: None) -> dict | None:
    """The P3 selection table of the report (``None`` when disabled), cached in ``<out>/p3_table.json``."""
    p3 = cfg.p3_table
    if not p3.enabled:
        return None
    ensure_p3_aligned_encoder(cfg, log=log)
    p3_path = Path(out) / "p3_table.json"
    aligned = p3.aligned_encoder
    key = content_hash({"k": p3.k, "enc": p3.encoder or cfg.encoder, "aligned": aligned,
                        "aligned_present": bool(aligned and is_encoder_dir(aligned))})
    table = json.loads(p3_path.read_text()) if p3_path.is_file() else None
    if not table or table.get("key") != key:
        table = p3_selection_table(cfg.data_dir, p3.k, p3.encoder or cfg.encoder, aligned, log=log)
        table["key"] = key
        atomic_write_json(p3_path, table)
    return table


__all__ = ["cached_p3_table", "ensure_p3_aligned_encoder", "p3_selection_table"]

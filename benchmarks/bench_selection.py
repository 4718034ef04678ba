"""Selection benchmark: cold encoding of whole catalogs, warm selection latency, with and without the cache.

Run:  INSTA_DATA_DIR=../shared/data .venv/bin/python benchmarks/bench_selection.py
Writes benchmarks/results/selection.json and selection.md (with this command and the machine).
"""
from __future__ import annotations

import json
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
COMMAND = "INSTA_DATA_DIR=../shared/data .venv/bin/python benchmarks/bench_selection.py"


def main() -> None:
    tmp_cache = tempfile.mkdtemp(prefix="insta-bench-")
    os.environ["INSTA_CACHE_DIR"] = tmp_cache  # a cold cache for this run only
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    from insta.catalogs import load_catalog
    from insta.encoder import Encoder
    from insta.methods import Selector

    results: dict = {"command": COMMAND, "machine": f"{platform.machine()}, {os.cpu_count()} cores", "catalogs": {}}
    t = time.perf_counter()
    _ = Encoder(cache=False).model  # model load, not counted in encoding rates
    results["encoder_load_s"] = round(time.perf_counter() - t, 2)

    targets = {"p3": ("t0_train", "super_glue/rte"), "bigbench": (None, "code_line_description")}
    for name, (pool_name, target_id) in targets.items():
        t = time.perf_counter()
        full = load_catalog(name)
        cold_load = time.perf_counter() - t
        t = time.perf_counter()
        load_catalog(name)
        warm_load = time.perf_counter() - t
        texts = [s for task in full for s in task.instructions]
        encoder = Encoder()
        t = time.perf_counter()
        encoder.encode(texts)
        cold_s = time.perf_counter() - t
        row = {
            "tasks": len(full), "instructions": len(texts),
            "catalog_load_cold_s": round(cold_load, 3), "catalog_load_warm_s": round(warm_load, 3),
            "cold_encode_s": round(cold_s, 2), "instructions_per_s": round(encoder.n_encoded / cold_s, 1),
        }
        target = full.get(target_id)
        pool = full.subset(full.pool(pool_name)) if pool_name else full.without(families=[target.family])
        # warm = model loaded and catalog embedded once; each call embeds only the target's instructions
        for label, cache in (("no_cache", False), ("cache", True)):
            sel = Selector(pool, Encoder(cache=cache))
            sel.select(target.instructions, 5, exclude=[target.id])  # warm-up: embeds the pool
            times = []
            for _ in range(10):
                t = time.perf_counter()
                sel.select(target.instructions, 5, exclude=[target.id])
                times.append((time.perf_counter() - t) * 1000)
            row[f"warm_select_ms_{label}"] = round(statistics.median(times), 2)
        # a fresh process-like selection (new Encoder and Selector) served entirely from the disk cache
        t = time.perf_counter()
        enc = Encoder()
        Selector(pool, enc).select(target.instructions, 5, exclude=[target.id])
        row["fresh_select_from_disk_cache_ms"] = round((time.perf_counter() - t) * 1000, 1)
        row["fresh_select_encoded_texts"] = enc.n_encoded
        row["target"] = target_id
        row["pool_tasks"] = len(pool)
        results["catalogs"][name] = row
        print(name, json.dumps(row), flush=True)

    out_dir = HERE / "results"
    out_dir.mkdir(exist_ok=True)
    (out_dir / "selection.json").write_text(json.dumps(results, indent=2) + "\n")
    lines = [
        "# Selection benchmark", "", f"Command: `{COMMAND}`", "",
        f"Machine: {results['machine']}; encoder all-MiniLM-L6-v2 "
        f"(model load {results['encoder_load_s']} s, not included below).", "",
        "| catalog | tasks | instructions | cold encode (s) | instructions/s | warm select, no cache (ms) "
        "| warm select, cache (ms) | fresh select from disk cache (ms, texts encoded) | catalog load cold / warm (s) |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for name, r in results["catalogs"].items():
        lines.append(
            f"| {name} | {r['tasks']} | {r['instructions']} | {r['cold_encode_s']} | {r['instructions_per_s']} | "
            f"{r['warm_select_ms_no_cache']} | {r['warm_select_ms_cache']} | {r['fresh_select_from_disk_cache_ms']} "
            f"({r['fresh_select_encoded_texts']}) | {r['catalog_load_cold_s']} / {r['catalog_load_warm_s']} |"
        )
    lines += ["", "Warm select: the pool is already embedded; one call embeds the target's instructions (no cache: "
              "through the model; cache: looked up) and ranks the pool. Fresh select: a new Encoder and Selector, "
              "everything read from the on-disk cache, nothing encoded."]
    (out_dir / "selection.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    sys.exit(main())

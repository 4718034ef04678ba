"""Selection accuracy (leave-one-instruction-out task identification), base vs INSTA-aligned encoders.

Run after ``bash benchmarks/run_alignment.sh`` (which trains the aligned encoders into runs/align/):

    INSTA_DATA_DIR=../shared/data .venv/bin/python benchmarks/bench_identification.py

Writes benchmarks/results/identification.json and identification.md. Each table is one
``insta eval-selection`` call; the equivalent command line is printed above it.
"""
from __future__ import annotations

import json
import os
import platform
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
RUNS = REPO / "runs" / "align"
BASE = "all-MiniLM-L6-v2"


def _rel(p: Path) -> str:
    return os.path.relpath(p, REPO)


def main() -> None:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    sys.path.insert(0, str(REPO / "src"))
    from insta.align import read_alignment_metadata
    from insta.catalogs import load_catalog
    from insta.evaluators.identification import evaluate_identification
    from insta.evaluators.identification_table import format_markdown

    data_dir = os.environ.get("INSTA_DATA_DIR") or str(REPO.parent / "shared" / "data")
    models = {name: RUNS / name for name in ("p3-cosine", "p3-cosine-lr2e-5", "p3-mnrl", "bigbench-mnrl",
                                              "bigbench-cosine")}
    models = {k: v for k, v in models.items() if read_alignment_metadata(v)}
    p3_models = [m for k, m in models.items() if k.startswith("p3")]
    bb_models = [m for k, m in models.items() if k.startswith("bigbench")]
    tables = [
        ("P3, all 211 tasks as candidates", "p3", None, [BASE, *p3_models]),
        ("P3, candidates = the 35 T0 training datasets", "p3", "t0_train", [BASE, *p3_models]),
        ("BIG-bench (family units), base vs P3-aligned: every BIG-bench instruction is unseen", "bigbench", None,
         [BASE, *p3_models]),
        ("BIG-bench (family units), base vs BIG-bench-aligned (and P3-aligned) on instructions no aligned encoder saw",
         "bigbench", None, [BASE, *bb_models, *p3_models]),
    ]
    out = {"machine": f"{platform.machine()}, {os.cpu_count()} cores", "data_dir": data_dir, "alignment": {},
           "tables": []}
    for name, path in models.items():
        meta = read_alignment_metadata(path)
        log = RUNS / f"{name}.time"
        timing = {}
        if log.is_file():
            for line in log.read_text().splitlines():
                line = line.strip()
                for key, label in (("Elapsed (wall clock) time", "wall"), ("User time", "user_s"),
                                   ("System time", "sys_s"), ("Maximum resident set size", "max_rss_kb")):
                    if line.startswith(key):
                        timing[label] = line.rsplit(": ", 1)[-1]
        tr = meta["training"]
        out["alignment"][name] = {
            "dir": _rel(path),
            "command": f"insta align --data-dir DATA --out {_rel(path)} " + _align_args(meta),
            "catalog": meta["catalog"], "objective": tr["objective"], "learning_rate": tr["learning_rate"],
            "epochs": [{k: e.get(k) for k in ("epoch", "train_loss", "dev_pearson", "seconds")} for e in tr["epochs"]],
            "base_dev_pearson": (tr.get("base_dev") or {}).get("pearson"),
            "best_epoch": tr["best_epoch"], "best_dev_pearson": tr["best_dev_pearson"],
            "pairs": meta["pairs"], "split": {k: v for k, v in meta["split"].items() if k.startswith("n_")},
            "n_excluded_tasks": len(meta["split"]["excluded_tasks"]),
            "timings": meta["timings"], "process": timing,
        }
    for title, catalog_name, pool, encoders in tables:
        catalog = load_catalog(catalog_name, data_dir)
        if pool:
            catalog = catalog.subset(catalog.pool(pool))
        t0 = time.perf_counter()
        result = evaluate_identification(catalog, [str(e) for e in encoders])
        cmd = (f"insta eval-selection -c {catalog_name} --data-dir DATA" + (f" --pool {pool}" if pool else "")
               + "".join(f" -e {e if isinstance(e, str) else _rel(e)}" for e in encoders))
        print(f"{title}: {result['n_queries']} queries, {time.perf_counter() - t0:.1f}s", file=sys.stderr)
        out["tables"].append({"title": title, "command": cmd, "result": result})
    (HERE / "results").mkdir(exist_ok=True)
    (HERE / "results" / "identification.json").write_text(json.dumps(out, indent=2, default=str) + "\n")
    md = ["# Selection accuracy: task identification, base vs INSTA-aligned encoder", "",
          "Leave one instruction out; score every task of the catalog against it the way `insta select` does "
          "(its own text removed); top-1 = its own task ranks first, top-5 = in the first five (%). Only "
          "instructions that no aligned encoder in the table saw during alignment are asked. Groups: heldout = "
          "task trained on, instruction held out; excluded = evaluation targets kept out of alignment (P3: T0 "
          "held-out datasets; BIG-bench: the 14 T0 tasks and the BBH parents); unseen = tasks outside the "
          "alignment data. Ties count against the query. Every query counts, the ambiguous ones too (their exact "
          "text is also another task's instruction, as for most P3 NLI templates: the right task can at best tie, "
          "a miss); the 'unambiguous' columns leave them out (the filtered view that earlier versions reported "
          "alone). "
          f"Machine: {out['machine']}. Regenerate: `bash benchmarks/run_alignment.sh DATA && "
          "INSTA_DATA_DIR=DATA .venv/bin/python benchmarks/bench_identification.py`.", "",
          "## Aligned encoders", "",
          "| run | catalog / pool | objective | lr | training pairs | dev Pearson base -> best (epoch) | "
          "training time | process wall / CPU |", "|---|---|---|---|---|---|---|---|"]
    for name, a in out["alignment"].items():
        pr = a["pairs"]["train"]
        if a["objective"] == "mnrl":
            examples = f"{a['pairs']['n_training_examples']} pos (in-batch neg.)"
        else:
            examples = f"{pr['n_positive']} pos + {pr['n_negative']} neg"
        proc = a["process"]
        cpu = ""
        if proc.get("user_s"):
            cpu = f"{float(proc['user_s']) + float(proc.get('sys_s', 0)):.0f} s CPU"
        md.append(
            f"| {name} | {a['catalog']['name']} / {a['catalog'].get('pool') or 'all'} | {a['objective']} | "
            f"{a['learning_rate']:g} | {examples} | "
            f"{_f(a['base_dev_pearson'])} -> {_f(a['best_dev_pearson'])} ({a['best_epoch']}) | "
            f"{a['timings']['train_seconds']:.0f} s (+{a['timings']['pairs_seconds']:.1f} s pairs) | "
            f"{proc.get('wall', '?')} / {cpu} |")
    md.append("")
    for name, a in out["alignment"].items():
        md.append(f"- `{name}`: `{a['command']}`")
    for t in out["tables"]:
        r = t["result"]
        md += ["", f"## {t['title']}", "", f"`{t['command']}`", "",
               f"{r['n_queries']} queries over {r['n_units']} {r['unit']} units, {r['n_ambiguous']} of them "
               f"ambiguous (shared with another task); not asked: {r['n_seen_dropped']} seen in alignment, "
               f"{r['n_single_instruction_units']} single-instruction units.", "", format_markdown(r)]
        if r["catalog"] == "bigbench":
            md += ["", "Macro (mean over families of each family's accuracy; the big families list_functions, "
                   "mult_data_wrangling and natural_instructions dominate the plain numbers):", "",
                   format_markdown(r, macro=True)]
    md.append(NOTES)
    (HERE / "results" / "identification.md").write_text("\n".join(md) + "\n")
    print("wrote benchmarks/results/identification.{json,md}", file=sys.stderr)


#: Written by hand for the recorded run (the tables above are regenerated; update this text if they change).
NOTES = """
## Findings (recorded run)

- **Ambiguous queries count.** 216 of the 1358 P3 queries are ambiguous: their text is word for word another
  dataset's template. Among the T0 evaluation targets it is 40 of 95 (every template of anli, super_glue/cb and
  super_glue/rte), and no encoder can identify those: base mean top-1 47.4 over all 95 (81.8 over the 55
  unambiguous ones, the figure earlier versions of this file reported alone), max 55.8 (96.4); under max and
  top-k vote top-5 is barely above top-1, because up to eight datasets share those templates and tie.
- **The authors' recipe (cosine, lr 1e-6) barely moves all-MiniLM-L6-v2**: dev Pearson 0.734 -> 0.763; P3
  held-out instructions mean top-1 63.0 -> 66.7 (unambiguous 65.4 -> 69.2), T0 targets 47.4 -> 47.4, the 165
  P3 datasets outside the pool 63.4 -> 63.1 mean, 68.3 -> 69.4 max; BIG-bench macro 76.2 -> 75.6.
- **MNRL with task-aware batches (lr 2e-5) helps on P3 where instructions can be told apart**: held-out
  instructions of the 35 training datasets mean top-1 63.0 -> 79.6 (unambiguous 65.4 -> 82.7; top-5 88.9 ->
  96.3), T0 targets 47.4 -> 52.6 over all queries and 81.8 -> 90.9 over the unambiguous ones (top-5 94.5 -> 100):
  the 40 ambiguous ones stay out of reach. The P3 datasets outside the pool 63.4 -> 64.9 mean, 68.3 -> 71.3 max.
  Transferred to BIG-bench it is a wash (micro mean top-1 79.0 -> 79.4, top-5 89.3 -> 91.4; macro 76.2 -> 77.5).
- **BIG-bench-aligned (MNRL)**: no BIG-bench instruction is ambiguous, so these match the earlier record: held-out
  BIG-bench instructions mean top-1 77.1 -> 91.4 (top-5 85.7 -> 98.3; max unchanged at 92.0), but on the excluded
  evaluation families (14 T0 tasks + BBH parents, only 39 queries / 15 families) it is worse: mean 84.6 -> 76.9,
  max 82.1 -> 74.4.
- **Same models, same scores otherwise**: the encoders were re-trained for this run and are the earlier ones
  (seeded): every mean and max figure over unambiguous queries equals the earlier record to the last digit. Top-k
  vote now gives equal cosines (the same text in two tasks) equal shares of their ranks' weights instead of
  letting catalog order decide, which moves top-k-vote top-5 / MRR by at most one query (P3, all 211 tasks,
  base top-5 93.0 -> 92.9 over the unambiguous queries).
- The cosine recipe at lr 2e-5 (best dev Pearson 0.892, but worse identification of tasks it did not train on)
  was not re-run here for time; its record is in this file's git history.
- Timing: this re-run shared the 2 cores with a model-training job (load average 5-10): p3-cosine 9:08 wall /
  248 s CPU, p3-mnrl 16:37 / 175 s CPU, bigbench-mnrl 16:08 / 525 s CPU. On idle cores the earlier record
  measured 2:41 (264 s CPU), 1:37 (156 s CPU) and 4:04 (407 s CPU).
"""


def _f(x) -> str:
    return "–" if x is None else f"{x:.3f}"


def _align_args(meta: dict) -> str:
    cfg = meta["config"]
    args = [f"-c {meta['catalog']['name']}"]
    if cfg.get("pool"):
        args.append(f"--pool {cfg['pool']}")
    if cfg["objective"] != "cosine":
        args.append(f"--objective {cfg['objective']}")
    if cfg.get("learning_rate") is not None:
        args.append(f"--lr {cfg['learning_rate']:g}")
    if cfg.get("max_positive_pairs_per_unit"):
        args.append(f"--max-pairs-per-task {cfg['max_positive_pairs_per_unit']}")
    return " ".join(args)


if __name__ == "__main__":
    main()

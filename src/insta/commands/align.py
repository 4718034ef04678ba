"""``insta align``: fine-tune the encoder on a catalog's instructions (INSTA-aligned), resumable."""
from __future__ import annotations

import argparse
import time

# flag -> AlignConfig field, for the options that map one to one (the value None means "not given")
_FIELDS = {
    "encoder": "base_encoder", "objective": "objective", "pool": "pool", "unit": "unit",
    "heldout_fraction": "heldout_fraction", "dev_fraction": "dev_fraction",
    "positive_fraction": "positive_fraction", "negative_threshold": "negative_threshold",
    "max_negative_reuse": "max_negative_reuse", "max_pairs_per_task": "max_positive_pairs_per_unit",
    "epochs": "epochs", "batch_size": "batch_size", "lr": "learning_rate", "warmup_ratio": "warmup_ratio",
    "weight_decay": "weight_decay", "max_seq_length": "max_seq_length", "mnrl_scale": "mnrl_scale",
    "seed": "seed", "threads": "threads", "device": "device",
}


def add_parser(sub) -> None:
    p = sub.add_parser(
        "align",
        help="fine-tune the sentence encoder on a catalog's instruction style (INSTA-aligned)",
        description=(
            "Train an aligned encoder from a catalog's instructions and write a sentence-transformers model "
            "directory that `insta select --encoder DIR` uses as is. Evaluation targets (pools t0_eval/eval/test, "
            "their families, and for BIG-bench the BBH parents) and a held-out share of instructions never feed "
            "alignment; the split is saved in DIR/insta_alignment.json. Rerun the same command to resume an "
            "interrupted run. Defaults follow the authors' recipe (cosine objective): 40% of same-task pairs as "
            "positives, one under-0.3 negative per instruction (each reused <= 4 times), batch 16, 5 epochs, "
            "lr 1e-6, warm-up 10% of an epoch, seed 42."
        ),
    )
    from ._common import add_catalog_args

    add_catalog_args(p)
    p.add_argument("--out", "-o", required=True, help="output model directory")
    p.add_argument("--config", help="YAML/JSON file of alignment options (AlignConfig fields); flags override it")
    p.add_argument("--encoder", "-e", default=None,
                   help="base encoder: name, hub id or directory (default all-MiniLM-L6-v2)")
    p.add_argument("--objective", choices=["cosine", "mnrl"], default=None,
                   help="cosine: the authors' CosineSimilarityLoss on labelled pairs (default); mnrl: "
                        "MultipleNegativesRankingLoss with a task-aware batch sampler")
    p.add_argument("--unit", choices=["family", "task"], default=None,
                   help="what one task is: a family (P3 dataset, BIG-bench parent + subtasks; default) or a task id")
    g = p.add_argument_group("leakage guard")
    g.add_argument("--exclude", action="append", default=[], help="task id to keep out of alignment (repeatable)")
    g.add_argument("--exclude-family", action="append", default=[], help="family to keep out (repeatable)")
    g.add_argument("--no-default-exclusions", action="store_true",
                   help="do NOT drop evaluation pools and BBH parents (leaks targets into the encoder)")
    g.add_argument("--heldout-fraction", type=float, default=None,
                   help="instructions held out for eval-selection (0.2)")
    g.add_argument("--dev-fraction", type=float, default=None, help="instructions held out for the dev Pearson (0.1)")
    g2 = p.add_argument_group("pairs")
    g2.add_argument("--positive-fraction", type=float, default=None, help="share of same-task pairs kept (0.4)")
    g2.add_argument("--negative-threshold", type=float, default=None,
                    help="negatives have base cosine below this (0.3)")
    g2.add_argument("--max-negative-reuse", type=int, default=None, help="times one text may serve as a negative (4)")
    g2.add_argument("--max-pairs-per-task", type=int, default=None,
                    help="cap on positive pairs per task before sampling (default none; use e.g. 100 for BIG-bench)")
    g3 = p.add_argument_group("training")
    g3.add_argument("--epochs", type=int, default=None, help="(5)")
    g3.add_argument("--batch-size", type=int, default=None, help="(16)")
    g3.add_argument("--lr", type=float, default=None, help="learning rate (1e-6 for cosine, 2e-5 for mnrl)")
    g3.add_argument("--warmup-ratio", type=float, default=None, help="warm-up steps as a share of one epoch (0.1)")
    g3.add_argument("--weight-decay", type=float, default=None, help="(0.01)")
    g3.add_argument("--max-seq-length", type=int, default=None, help="token limit while training (128)")
    g3.add_argument("--mnrl-scale", type=float, default=None, help="MNRL similarity scale (20)")
    g3.add_argument("--last-epoch", action="store_true", help="keep the last epoch instead of the best dev Pearson")
    g3.add_argument("--seed", type=int, default=None, help="(42)")
    g3.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")
    g3.add_argument("--device", default=None, help="torch device (default cpu)")
    p.add_argument("--overwrite", action="store_true", help="replace a finished or different run in --out")
    p.add_argument("--keep-checkpoints", action="store_true",
                   help="keep the Trainer's epoch checkpoints (DIR/.insta-align/) after finishing")
    p.add_argument("--no-progress", action="store_true", help="no progress bars (also --quiet)")
    from ._common import add_output_args

    add_output_args(p, json_help="write the run summary as JSON to this path")
    p.set_defaults(func=run)


def config_from_args(args: argparse.Namespace):
    """AlignConfig from --config (if any) with the given flags on top."""
    from ..align import AlignConfig
    from ..errors import InstaError

    data: dict = {}
    if args.config:
        from pathlib import Path

        from ..fileio import load_yaml

        path = Path(args.config)
        if not path.is_file():
            raise InstaError(f"config file {args.config!r} does not exist")
        loaded = load_yaml(path, "config file") or {}
        if not isinstance(loaded, dict):
            raise InstaError(f"config file {args.config} must hold a mapping of options")
        data.update(loaded)
    for flag, name in _FIELDS.items():
        value = getattr(args, flag, None)
        if value is not None:
            data[name] = value
    if args.exclude:
        data["exclude_tasks"] = list(data.get("exclude_tasks", [])) + args.exclude
    if args.exclude_family:
        data["exclude_families"] = list(data.get("exclude_families", [])) + args.exclude_family
    if args.no_default_exclusions:
        data["default_exclusions"] = False
    if args.last_epoch:
        data["select_best"] = False
    if args.keep_checkpoints:
        data["keep_checkpoints"] = True
    if args.no_progress:
        data["progress"] = False
    return AlignConfig.from_dict(data)


def run(args: argparse.Namespace) -> int:
    from ..align import align_encoder, read_alignment_metadata
    from ._common import open_catalog, write_json

    from ._common import check_output_files

    t0 = time.perf_counter()
    check_output_files(json_out=args.json_out)
    from ..fileio import check_output_dir

    check_output_dir(args.out, "--out")
    config = config_from_args(args)
    catalog = open_catalog(args)
    out = align_encoder(catalog, config, args.out, overwrite=args.overwrite)
    meta = read_alignment_metadata(out) or {}
    tr, sp = meta.get("training", {}), meta.get("split", {})
    summary = {
        "out": str(out),
        "catalog": args.catalog,
        "pool": config.pool,
        "objective": config.objective,
        "best_epoch": tr.get("best_epoch"),
        "best_dev_pearson": tr.get("best_dev_pearson"),
        "base_dev_pearson": (tr.get("base_dev") or {}).get("pearson"),
        "n_units": sp.get("n_units"),
        "n_excluded_tasks": len(sp.get("excluded_tasks", {})),
        "n_heldout_instructions": sp.get("n_heldout_instructions"),
        "pairs": meta.get("pairs", {}).get("train"),
        "timings": meta.get("timings"),
        "seconds": round(time.perf_counter() - t0, 2),
    }
    if args.json_out:
        write_json(args.json_out, summary)
    if args.json_out != "-" and not args.quiet:
        bp, dp = summary["base_dev_pearson"], summary["best_dev_pearson"]
        print(f"aligned encoder: {out}")
        print(f"  {summary['n_units']} training units, {summary['n_excluded_tasks']} evaluation tasks excluded, "
              f"{summary['n_heldout_instructions']} instructions held out for `insta eval-selection`")
        if dp is not None and bp is not None:
            print(f"  dev Pearson: base {bp:.4f} -> best epoch {summary['best_epoch']} {dp:.4f}")
        print(f"  use it: insta select --encoder {out} ...   evaluate it: insta eval-selection -c {args.catalog} "
              f"-e {config.base_encoder} -e {out}")
    return 0

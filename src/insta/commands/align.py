"""``insta align``: fine-tune the encoder on a catalog's instructions (INSTA-aligned), resumable."""
from __future__ import annotations

import argparse
import time

#: older flag names of AlignConfig fields (each still works)
ALIASES = {"base_encoder": ["--encoder", "-e"], "max_positive_pairs_per_unit": ["--max-pairs-per-task"],
           "learning_rate": ["--lr"]}


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
    from ..align.config import AlignConfig
    from ._common import add_catalog_args
    from ._config import add_config_file_flag, add_config_flags

    add_catalog_args(p)
    p.add_argument("--out", "-o", required=True, help="output model directory")
    add_config_file_flag(p, "alignment (AlignConfig)")
    groups = {"leakage guard": p.add_argument_group("leakage guard")}
    groups["leakage guard"].add_argument("--exclude", action="append", default=[],
                                         help="task id to keep out of alignment (repeatable; added to the config "
                                         "file's exclude_tasks)")
    groups["leakage guard"].add_argument("--exclude-family", action="append", default=[],
                                         help="family to keep out (repeatable; added to exclude_families)")
    add_config_flags(p, AlignConfig, skip=("pool", "exclude_tasks", "exclude_families"), aliases=ALIASES,
                     groups=groups)
    groups["training"].add_argument("--last-epoch", dest="select_best", action="store_false",
                                    default=argparse.SUPPRESS,
                                    help="keep the last epoch instead of the best dev Pearson (= --no-select-best)")
    p.add_argument("--overwrite", action="store_true", help="replace a finished or different run in --out")
    t = p.add_argument_group("transfer-aligned (instead of the catalog's instruction style)")
    t.add_argument("--transfer-matrix", metavar="FILE", default=None,
                   help="fine-tune on (target, source) instruction pairs of this transfer matrix (insta's long "
                   "JSON/CSV), labelled by each source's per-target percentile of transfer (cosine objective; "
                   "default one pair per measured cell, 1 epoch, lr 5e-5). --catalog names the catalog of "
                   "the matrix's sources; see insta.align.transfer_pairs")
    t.add_argument("--held-out-target", action="append", default=[], metavar="TARGET",
                   help="matrix target whose column (and instructions) never feed the encoder (repeatable)")
    from ._common import add_output_args

    add_output_args(p, json_help="write the run summary as JSON to this path")
    p.set_defaults(func=run)


def config_from_args(args: argparse.Namespace):
    """AlignConfig from --config (if any) with the given flags on top (with --transfer-matrix, the transfer
    recipe's values where neither gives one)."""
    from ..align.config import AlignConfig
    from ._config import build_config

    def merge(file_values: dict, flags: dict) -> None:
        if getattr(args, "transfer_matrix", None):
            from ..align.transfer_pairs import TRANSFER_RECIPE

            flags.update({k: v for k, v in TRANSFER_RECIPE.items() if k not in file_values and k not in flags})
        if args.exclude:
            flags["exclude_tasks"] = list(file_values.get("exclude_tasks", [])) + args.exclude
        if args.exclude_family:
            flags["exclude_families"] = list(file_values.get("exclude_families", [])) + args.exclude_family

    extra = {"pool": args.pool} if args.pool is not None else {}
    return build_config(AlignConfig, args, "alignment", extra=extra, merge=merge,
                        ignore=("learning_rate_effective",))


def run(args: argparse.Namespace) -> int:
    from ..align import align_encoder, read_alignment_metadata
    from ._common import open_catalog, write_json

    from ._common import check_output_files

    t0 = time.perf_counter()
    check_output_files(json_out=args.json_out)
    from ..util.fileio import check_output_dir

    check_output_dir(args.out, "--out")
    config = config_from_args(args)
    catalog = open_catalog(args)
    if args.transfer_matrix:
        return _run_transfer(args, config, catalog, t0)
    if args.held_out_target:
        from ..errors import InstaError

        raise InstaError("--held-out-target applies to --transfer-matrix runs")
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


def _run_transfer(args: argparse.Namespace, config, catalog, t0: float) -> int:
    """``--transfer-matrix``: :func:`insta.align.transfer_pairs.align_to_transfer` on the pool's sources."""
    from ..align import align_to_transfer, read_alignment_metadata
    from ._common import write_json

    if config.pool:
        catalog = catalog.subset(catalog.pool(config.pool))
    out = align_to_transfer(args.transfer_matrix, catalog, args.out, held_out=args.held_out_target, config=config,
                            data_dir=args.data_dir, overwrite=args.overwrite)
    meta = read_alignment_metadata(out) or {}
    summary = {"out": str(out), "catalog": args.catalog, "transfer_matrix": args.transfer_matrix,
               "held_out": args.held_out_target, "pairs": meta.get("pairs", {}).get("train"),
               "epochs": meta.get("training", {}).get("epochs"), "timings": meta.get("timings"),
               "seconds": round(time.perf_counter() - t0, 2)}
    if args.json_out:
        write_json(args.json_out, summary)
    if args.json_out != "-" and not args.quiet:
        print(f"transfer-aligned encoder: {out} ({(summary['pairs'] or {}).get('n_pairs')} pairs)")
        print(f"  use it: insta select --encoder {out} ...  or  -o encoder={out} with prior-transfer")
    return 0

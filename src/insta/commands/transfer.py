"""``insta transfer``: measure a source-to-target transfer matrix (one model per source and seed)."""
from __future__ import annotations

import argparse


def add_parser(sub) -> None:
    from ._run import add_run_parser

    p = add_run_parser(
        sub, "transfer",
        help="measure transfer: train one model per (source, seed), evaluate it on every target, write the matrix",
        description="Build a source-to-target transfer matrix from a config (configs/transfer-*.yaml): each "
        "(source, seed) model is trained on that source alone and evaluated zero-shot on every target; transfer "
        "= base model's gold-answer NLL per token minus the trained model's (and the accuracy deltas). Every "
        "cell is cached: an interrupted run resumes where it stopped. Writes matrix.csv, matrix.json, "
        "results.json, report.md and report.html (with the seeds' reliability and every selection method scored "
        "against the matrix). A mixtures config (configs/mixtures-*.yaml, with from_transfer) runs a matrix's "
        "mixtures experiment instead: each method's top-k mixture trained and evaluated, and the order the matrix "
        "predicts compared with the measured one (mixtures.md, mixtures.json).",
        config_help="transfer config (YAML)",
        plan_help="print the sources, the work, the cells done and an ETA; train nothing",
        report_only_help="rewrite the matrix and the report from the cells finished so far (no training; safe "
        "while a run is going on)",
        json_help="write the plan or the results as JSON here")
    p.add_argument("--no-report", action="store_true", help="write the matrix but not the report and scoring")
    p.add_argument("--overwrite", action="store_true", help="replace the matrix and report in --out even if "
                   "another configuration's run (or not insta transfer) wrote them")
    p.add_argument("--allow-partial-screen", action="store_true", help="targets from a screen (matrix v2): run "
                   "even though the screen still has pending candidates (the targets are not final)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from ..transfer.mixtures_config import is_mixtures_config

    if is_mixtures_config(args.config):  # matrix v2's mixtures experiment (configs/mixtures-*.yaml)
        from ._mixtures import run_command

        return run_command(args)
    from ..util.fileio import check_output_dir
    from ..util.helpers import Log
    from ..transfer import load_transfer_config, plan_transfer, run_transfer
    from ._common import check_output_files, write_json
    from ._run import command_line, run_overrides

    check_output_files(json_out=args.json_out if args.json_out != "-" else None)
    cfg = load_transfer_config(args.config, run_overrides(args))
    if not args.plan:
        from ..transfer.measure import check_out_folder

        check_output_dir(cfg.out, "output folder")
        check_out_folder(cfg, overwrite=args.overwrite)
        from ..transfer.measure import check_out_folder

        check_out_folder(cfg, overwrite=args.overwrite)
    log = Log(quiet=args.quiet)
    if args.plan:
        plan = plan_transfer(cfg, log=log)
        if args.json_out:
            write_json(args.json_out, plan)
        if args.json_out != "-" and not args.quiet:
            _print_plan(plan)
        return 0
    results = run_transfer(cfg, log=log, progress=not args.quiet, report=not args.no_report,
                           run_cells=not args.report_only, command=command_line("transfer"),
                           allow_partial_screen=args.allow_partial_screen)
    if args.json_out:
        write_json(args.json_out, results)
    return 0


def _print_plan(plan) -> None:
    from ..util.helpers import format_duration
    from ..util.textsafe import safe_text

    extra = plan["n_units"] - 1 - plan["n_sources"] * len(plan["seeds"])  # subset_seeds' models
    print(f"{plan['n_sources']} sources x {len(plan['seeds'])} seeds{f' + {extra} on a subset' if extra else ''} + "
          f"base = {plan['n_units']} models; "
          f"{plan['n_targets']} targets; {plan['cells']} cells ({plan['cells_done']} done)")
    print("sources: " + ", ".join(safe_text(s["id"], newlines=False) for s in plan["sources"]))
    print("targets: " + ", ".join(safe_text(t, newlines=False) for t in plan["targets"]))
    print(f"to run: {plan['units_to_train']} training(s); measured cost {plan['seconds_per_training']} s per "
          f"training, {plan['seconds_per_eval_example']} s per evaluated example; "
          f"ETA {format_duration(plan['eta_seconds'], 'short')}")
    for line in plan.get("plan_lines", []):
        print(safe_text(line, newlines=False))

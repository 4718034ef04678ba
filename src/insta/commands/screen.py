"""``insta screen``: which candidate targets can the model learn from their own data at a training budget."""
from __future__ import annotations

import argparse


def add_parser(sub) -> None:
    p = sub.add_parser(
        "screen",
        help="learnability screen: train an in-task oracle per candidate target and compare it with the base model",
        description="For each candidate target of a screen config (configs/screen-*.yaml), train the model on the "
        "target's own instances (disjoint from its evaluation examples) and compare it with the base model on the "
        "same held-out examples: accuracy, the gold-vs-best-distractor margin (the primary metric) and gold NLL. A "
        "target passes when the margin change has a paired CI above 0 and the base model is not constant. Every "
        "cell is cached: an interrupted screen resumes where it stopped. Writes screen.md and screen.json.",
    )
    p.add_argument("config", help="screen config (YAML)")
    p.add_argument("--out", help="output folder (default: the config's 'out', else experiments/<name>)")
    p.add_argument("--data-dir", help="upstream data folder (default: the config's data_dir, $INSTA_DATA_DIR)")
    p.add_argument("--plan", action="store_true", help="print the candidates, the work left and an ETA; train nothing")
    p.add_argument("--report-only", action="store_true", help="rewrite screen.md / screen.json from the cells "
                   "finished so far (no training; safe while a screen is running)")
    p.add_argument("--max-units", type=int, metavar="N", help="stop after N models (base or oracle) this run")
    p.add_argument("--executor", choices=["sequential", "ray"], help="where units run (default: the config's)")
    p.add_argument("--dry-run", action="store_true", help="dry-run backend (no model; fake numbers)")
    from ._common import add_output_args

    add_output_args(p, json_help="write the plan or the summary as JSON here")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from ..errors import InstaError
    from ..util.fileio import check_output_dir
    from ..util.helpers import Log, format_duration
    from ..util.textsafe import safe_text
    from ..transfer.screen import Screen
    from ..transfer.screen_config import load_screen_config
    from ..transfer.screen_verdicts import write_summary
    from ._common import check_output_files, write_json

    if args.max_units is not None and args.max_units < 1:
        raise InstaError(f"--max-units must be at least 1 (got {args.max_units})")
    check_output_files(json_out=args.json_out if args.json_out != "-" else None)
    overrides = {"out": args.out, "data_dir": args.data_dir, "executor": args.executor,
                 "backend": "dry-run" if args.dry_run else None}
    cfg = load_screen_config(args.config, overrides)
    log = Log(quiet=args.quiet)
    screen = Screen(cfg, log=log)
    screen.prepare()
    if args.plan:
        plan = screen.plan()
        if args.json_out:
            write_json(args.json_out, plan)
        if args.json_out != "-" and not args.quiet:
            print(f"{len(plan['candidates'])} candidates ({len(plan['left_out'])} tasks left out); "
                  f"{plan['n_units']} models, {plan['units_to_run']} to run; {plan['cells']} cells "
                  f"({plan['cells_done']} done)")
            print("candidates: " + ", ".join(safe_text(c["task"], newlines=False) for c in plan["candidates"]))
            print(f"measured cost {plan['seconds_per_instance']} s per training instance, "
                  f"{plan['seconds_per_eval_example']} s per evaluated example; "
                  f"ETA {format_duration(plan['eta_seconds'], 'short')}")
        return 0
    check_output_dir(cfg.out, "output folder")
    if args.report_only and not (screen.out / "cells").is_dir():
        raise InstaError(f"--report-only: {screen.out} holds no screen cells yet (run the screen first)")
    if not args.report_only:
        screen.run(progress=not args.quiet, max_units=args.max_units)
    summary = write_summary(screen)
    c = summary["counts"]
    log(f"screen: {c.get('pass', 0)} pass, {c.get('fail', 0)} fail, {c.get('pending', 0)} pending; "
        f"wrote {screen.out / 'screen.md'}")
    if args.json_out:
        write_json(args.json_out, summary)
    return 0

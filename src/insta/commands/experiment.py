"""``insta experiment``: run a grid of targets x selection methods (select -> mixture -> train -> evaluate)."""
from __future__ import annotations

import argparse


def add_parser(sub) -> None:
    from ._common import positive_int
    from ._run import add_run_parser

    p = add_run_parser(
        sub, "experiment",
        help="compare selection methods: select, train and evaluate a grid of targets x methods, then report",
        description="Run the comparison grid of an experiment config (configs/*.yaml). Finished cells are cached "
        "under the output folder: an interrupted run resumes where it stopped, a finished one does no work. "
        "Writes results.json, results.md, plots and report.html.",
        config_help="experiment config (YAML), e.g. configs/bigbench-smollm2.yaml",
        plan_help="validate, build the pool and the selections (training the aligned encoder if one is configured "
        "and missing), print the plan; train and evaluate no LM",
        report_only_help="rewrite the report from <out>/results.json (with the config's current report settings)",
        json_help="write the plan, or the summary (averages, paired comparisons), as JSON")
    p.add_argument("--targets", help="comma-separated targets replacing the config's (e.g. bbh:navigate)")
    p.add_argument("--methods", help="comma-separated method names or labels to keep (e.g. insta-mean,random)")
    p.add_argument("--n-eval", type=positive_int, help="evaluation examples per target (overrides eval.n)")
    p.add_argument("--n-total", type=positive_int, help="training instances per model (overrides mixture.n_total)")
    p.add_argument("--model", help="the language model replacing the config's (e.g. smollm2: the small built-in "
                   "one; a hub id or a local model folder)")
    p.add_argument("--encoder", help="sentence encoder of the INSTA methods replacing the config's (and the base "
                   "of an aligned encoder the run trains), e.g. all-MiniLM-L6-v2")
    p.add_argument("--k", type=positive_int, help="source tasks selected per target (overrides k)")
    p.add_argument("--available-only", action="store_true", help="keep only the targets whose instances are "
                   "present (the others are named in one line); pool tasks without instances are dropped anyway")
    p.add_argument("--partial-report", action="store_true", help="write a report from the cells finished so far "
                   "(no training or evaluation; safe while a run is going on)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from ..experiment import load_config, report_existing, run_experiment
    from ..util.fileio import check_output_dir
    from ..util.helpers import Log
    from ._common import emit_json
    from ._run import command_line, run_overrides

    overrides = {**run_overrides(args), "eval.n": args.n_eval, "mixture.n_total": args.n_total,
                 "model": args.model, "k": args.k, "encoder": args.encoder}
    if args.targets:
        overrides["targets"] = [t.strip() for t in args.targets.split(",") if t.strip()]
    methods = [m.strip() for m in args.methods.split(",") if m.strip()] if args.methods else None
    cfg = load_config(args.config, overrides, only_methods=methods)
    check_output_dir(cfg.out, "experiment output folder")
    log = Log(quiet=args.quiet)
    if args.report_only or args.partial_report:
        emit_json(args, report_existing(cfg, partial=args.partial_report and not args.report_only, log=log))
        return 0
    from ..experiment.gpu_cost import preflight

    talk = not args.quiet and args.json_out != "-"
    pre = preflight(cfg, plan=args.plan, available_only=args.available_only, log=log,
                    show=print if talk else (lambda _line: None))
    if pre.static is not None:  # --plan of a config whose data are not all here: the plan without selections
        emit_json(args, pre.static)
        return 0
    results = run_experiment(cfg, log=log, command=command_line("experiment"), plan_only=args.plan,
                             catalogs=pre.catalogs)
    if args.plan:
        emit_json(args, {**{k: results.get(k) for k in ("name", "pool", "plan", "missing_cells")}, "cost": pre.cost})
        if talk:
            _print_plan(results)
            for line in pre.lines:
                print(line)
        return 0
    emit_json(args, results.get("summary"))
    return 0


def _print_plan(results) -> None:
    from ..util.textsafe import safe_text

    pool = results.get("pool") or {}
    print(safe_text(f"pool: {pool.get('n')} units; removed: {pool.get('removed_by_reason')}", newlines=False))
    for c in results.get("plan") or []:
        sel = c["selected"]
        text = ", ".join(sel) if len(sel) <= 6 else f"all {len(sel)} pool units"
        print(safe_text(f"  {c['target']:<36} {c['label']:<16} {'done' if c['done'] else 'todo'}  {text}",
                        newlines=False))
    n_models = len({c["model_key"] for c in results.get("plan") or [] if not c["done"] and c["model_key"] != "base"})
    print(f"{len(results['missing_cells'])} grid cell(s) to compute ({n_models} model(s) to train), "
          f"{len(results['cells'])} done")

"""``insta experiment``: run a grid of targets x selection methods (select -> mixture -> train -> evaluate)."""
from __future__ import annotations

import argparse
import shlex
import sys


def add_parser(sub) -> None:
    from ._common import positive_int

    p = sub.add_parser(
        "experiment",
        help="compare selection methods: select, train and evaluate a grid of targets x methods, then report",
        description="Run the comparison grid of an experiment config (configs/*.yaml). Finished cells are cached "
        "under the output folder: an interrupted run resumes where it stopped, a finished one does no work. "
        "Writes results.json, results.md, plots and report.html.",
    )
    p.add_argument("config", help="experiment config (YAML), e.g. configs/bigbench-smollm2.yaml")
    p.add_argument("--out", help="output folder (default: the config's 'out', else experiments/<name>)")
    p.add_argument("--data-dir", help="upstream data folder (default: the config's data_dir, $INSTA_DATA_DIR, ./data)")
    p.add_argument("--plan", action="store_true", help="validate, build the pool and the selections (training the "
                   "aligned encoder if one is configured and missing), print the plan; train and evaluate no LM")
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
    p.add_argument("--report-only", action="store_true", help="rewrite the report from <out>/results.json (with "
                   "the config's current report settings)")
    p.add_argument("--partial-report", action="store_true", help="write a report from the cells finished so far "
                   "(no training or evaluation; safe while a run is going on)")
    p.add_argument("--keep-models", action="store_true", help="keep trained model folders (default: deleted once "
                   "evaluated)")
    p.add_argument("--dry-run", action="store_true", help="use the dry-run backend (no model; fake numbers) to test "
                   "a config end to end")
    p.add_argument("--executor", choices=["sequential", "ray"], help="where the models are trained and evaluated "
                   "(default: the config's, else sequential); ray joins $RAY_ADDRESS or starts a local instance")
    from ._common import add_output_args

    add_output_args(p, json_help="write the plan, or the summary (averages, paired comparisons), as JSON")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from pathlib import Path

    from ..errors import InstaError
    from ..experiment import cached_p3_table, load_config, run_experiment
    from ..helpers import Log
    from ._common import emit_json

    overrides = {"out": args.out, "data_dir": args.data_dir, "eval.n": args.n_eval, "mixture.n_total": args.n_total,
                 "executor": args.executor}
    if args.targets:
        overrides["targets"] = [t.strip() for t in args.targets.split(",") if t.strip()]
    if args.keep_models:
        overrides["keep_models"] = True
    if args.model:
        overrides["model"] = args.model
    if args.k:
        overrides["k"] = args.k
    if args.encoder:
        overrides["encoder"] = args.encoder
    if args.dry_run:
        overrides["backend"] = "dry-run"
    methods = [m.strip() for m in args.methods.split(",") if m.strip()] if args.methods else None
    cfg = load_config(args.config, overrides, only_methods=methods)
    from ..fileio import check_output_dir

    check_output_dir(cfg.out, "experiment output folder")
    log = Log(quiet=args.quiet)
    if args.report_only:
        from ..report import load_results, write_report

        path = Path(cfg.out) / "results.json"
        if not path.is_file():
            raise InstaError(f"no results at {path}: run the experiment first")
        results = load_results(path)
        results.pop("summary", None)
        results["config"] = {**(results.get("config") or {}), "report": cfg.raw.get("report") or {}}
        from ..report import summarize

        summary = summarize(results)
        write_report(results, cfg.out, log=log, summary=summary)
        emit_json(args, summary)
        return 0
    if args.partial_report:
        from ..report import write_report

        results = run_experiment(cfg, log=log, plan_only=True)
        if not results.get("cells"):
            raise InstaError(f"no finished cells under {cfg.out}: nothing to report yet")
        table = cached_p3_table(cfg, Path(cfg.out), log=log)
        if table is not None:
            results["p3_table"] = table
        results["partial"] = True
        from ..report import summarize

        summary = summarize(results)
        write_report(results, cfg.out, log=log, summary=summary)
        emit_json(args, summary)
        return 0
    from ..experiment.gpu_cost import preflight

    talk = not args.quiet and args.json_out != "-"
    pre = preflight(cfg, plan=args.plan, available_only=args.available_only, log=log,
                    show=print if talk else (lambda _line: None))
    if pre.static is not None:  # --plan of a config whose data are not all here: the plan without selections
        emit_json(args, pre.static)
        return 0
    command = None
    if sys.argv[1:2] == ["experiment"]:  # the real command line (not a library or test call of main())
        command = "insta experiment " + " ".join(shlex.quote(a) for a in sys.argv[2:])
    results = run_experiment(cfg, log=log, command=command, plan_only=args.plan, catalogs=pre.catalogs)
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
    from ..textsafe import safe_text

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

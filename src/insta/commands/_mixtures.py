"""``insta transfer MIXTURES_CONFIG``: matrix v2's mixtures experiment (issue #22 item 6), the one place where the
transfer matrix (which derives the design, :mod:`insta.transfer.mixtures_config`, and analyses it,
:mod:`insta.transfer.mixtures_analysis`) meets the comparison grid (which trains and evaluates the mixtures:
resumable cells under ``<out>/cells``). The two packages do not import each other; this module joins them."""
from __future__ import annotations

import argparse
from typing import Any, Callable

from ..errors import InstaError


def _grid(design: Any, backend: Any, log: Callable[[str], None]) -> Any:
    """The prepared comparison grid of the design; its pool must be exactly v2's sources."""
    from ..experiment import Experiment, config_from_dict

    gcfg = config_from_dict(design.grid, design.cfg.path)
    exp = Experiment(gcfg, backend=backend, log=log, catalogs=design.v2._catalogs)
    exp.prepare()
    got, want = set(exp.pool.catalog.ids), set(design.v2.sources)
    if got != want:
        raise InstaError(f"the mixtures' pool differs from v2's sources ({len(got ^ want)} differ, e.g. "
                         f"{sorted(got ^ want)[0]}): the pool rules removed or kept another unit")
    exp.plan()
    return exp


def _entries(exp: Any) -> list[dict[str, Any]]:
    return [{"target": e.target, "label": e.label, "model_key": e.model_key, "eval_key": e.eval_key,
             "sources": list(e.selection.task_ids) if e.selection is not None else []} for e in exp.entries]


def _cell_reader(exp: Any) -> Callable[[str], dict[str, Any] | None]:
    from ..engine.cells import read_cell

    return lambda key: read_cell(exp.cell_path(key))


def _plan(design: Any, exp: Any, analysis: dict[str, Any]) -> dict[str, Any]:
    """What would run and its cost, from v2's measured seconds (per training of one source, per example)."""
    train_s, eval_s = design.v2.measured_costs()
    todo = [e for e in exp.entries if not exp.cell_path(e.eval_key).is_file()]
    models = {e.model_key for e in exp.entries if e.model_key != "base"}
    to_train = {e.model_key for e in todo if e.model_key != "base"}
    n_eval = {t: len(ids) for t, ids in design.grid["eval_ids"].items()}
    eta = len(to_train) * design.cfg.k * train_s + sum(n_eval[e.target] for e in todo) * eval_s
    return {"targets": design.targets, "variant": design.variant, "slots": design.slots,
            "n_total": design.grid["mixture"]["n_total"], "models": len(models), "models_to_train": len(to_train),
            "cells": len({e.eval_key for e in exp.entries}), "cells_to_run": len({e.eval_key for e in todo}),
            "seconds_per_source_training": round(train_s, 1), "seconds_per_eval_example": round(eval_s, 3),
            "eta_seconds": round(eta), "predicted": analysis}


def _num(x: Any) -> str:
    return f"{x:+.3f}" if isinstance(x, (int, float)) else "-"


def _head(design: Any) -> list[str]:
    v = design.variant
    lines = [f"Matrix v2: `{design.cfg.from_transfer}` ({len(design.v2.sources)} sources); targets: the first "
             f"{len(design.targets)} of v2's frozen order: {', '.join(design.targets)}.",
             f"Each mixture: the method's top {design.cfg.k} v2 sources, {design.grid['mixture']['n_total']} training "
             f"instances (v2's per-source budget {design.v2.cfg.instances} x {design.cfg.k}), v2's training and "
             "evaluation options, evaluated on v2's evaluation examples of the target.",
             f"Methods: {', '.join(s['label'] for s in design.slots)}; the variant {v['label']} ({v['by']}).",
             *design.notes]
    if v.get("candidates"):
        lines.append("Variant rule (linear-gain NDCG of margin_z, the variant minus insta-mean [paired 95% CI]): "
                     + "; ".join(f"{c['label']} {_num(c['diff'])} [{_num(c['lo'])}, {_num(c['hi'])}]"
                                 f"{' passes' if c['passes'] else ''}" for c in v["candidates"]) + ".")
    return lines


def run_mixtures(cfg: Any, *, plan_only: bool = False, report_only: bool = False, backend: Any = None,
                 log: Callable[[str], None] = lambda m: None, catalogs: dict | None = None) -> dict[str, Any]:
    """Derive the design from v2, then plan it, run its missing cells, or only report from the finished ones;
    writes ``mixtures.json``/``mixtures.md`` (and the grid's ``results.json`` after a run) under ``cfg.out``."""
    from ..transfer.mixtures_analysis import analyse, write_report
    from ..transfer.mixtures_config import derive_design
    from ..util.paths import atomic_write_json, run_lock

    design = derive_design(cfg, log=log, backend=backend, catalogs=catalogs)
    exp = _grid(design, backend, log)

    def analysis() -> dict[str, Any]:
        return analyse(design.matrix, design.targets, design.slots, _entries(exp), _cell_reader(exp), design.oracle,
                       cfg.bootstrap, cfg.seed)

    if plan_only:
        return _plan(design, exp, analysis())
    exp.out.mkdir(parents=True, exist_ok=True)
    if not report_only:
        with run_lock(exp.out, "experiment"):  # a second run on this folder is refused, not interleaved
            atomic_write_json(exp.out / "results.json", exp.run())
    elif not (exp.out / "cells").is_dir():
        raise InstaError(f"--report-only: {exp.out} holds no mixture cells yet (run the experiment first)")
    result = {**analysis(), "variant": design.variant, "targets_order": design.targets,
              "config": {"path": cfg.path, "from_transfer": cfg.from_transfer, "k": cfg.k,
                         "n_total": design.grid["mixture"]["n_total"], "random_seed": cfg.random_seed}}
    write_report(result, exp.out, _head(design), f"Mixtures of matrix v2 ({cfg.name})")
    return result


def run_command(args: argparse.Namespace) -> int:
    """``insta transfer`` on a mixtures config (its flags: --plan, --report-only, --out, --data-dir, --executor,
    --keep-models, --dry-run, --json)."""
    from ..transfer.mixtures_config import load_mixtures_config
    from ..util.fileio import check_output_dir
    from ..util.helpers import Log, format_duration
    from ._common import check_output_files, write_json
    from ._run import run_overrides

    for flag in ("no_report", "overwrite", "allow_partial_screen"):
        if getattr(args, flag, False):
            raise InstaError(f"--{flag.replace('_', '-')} does not apply to a mixtures config")
    check_output_files(json_out=args.json_out if args.json_out != "-" else None)
    cfg = load_mixtures_config(args.config, run_overrides(args))
    if not args.plan:
        check_output_dir(cfg.out, "output folder")
    result = run_mixtures(cfg, plan_only=args.plan, report_only=args.report_only, log=Log(quiet=args.quiet))
    if args.json_out:
        write_json(args.json_out, result)
    if args.json_out == "-" or args.quiet:
        return 0
    if args.plan:
        print(f"{len(result['targets'])} targets x {len(result['slots'])} methods: {result['models']} mixture models "
              f"of {result['n_total']} instances ({result['models_to_train']} to train), {result['cells']} cells "
              f"({result['cells_to_run']} to run); ETA {format_duration(result['eta_seconds'], 'short')} at v2's "
              f"measured {result['seconds_per_source_training']} s per source training, "
              f"{result['seconds_per_eval_example']} s per example")
        print(f"variant: {result['variant']['label']} ({result['variant']['by']})")
        for t in result["predicted"]["targets"]:
            order = sorted(t["methods"], key=lambda r: -(r["predicted"]["margin_z"] or float("-inf")))
            print(f"{t['target']}: predicted order " + " > ".join(
                f"{r['label']} ({r['predicted']['margin_z']:+.3f})" if r["predicted"]["margin_z"] is not None
                else r["label"] for r in order))
        return 0
    tau = result["tau"]["margin_z"]
    print(f"mean Kendall tau (margin_z) over {tau['n']} target(s): {_num(tau['mean'])} [{_num(tau['lo'])}, "
          f"{_num(tau['hi'])}]{'' if result['complete'] else ' (partial)'}; wrote {cfg.out}/mixtures.md")
    return 0


__all__ = ["run_command", "run_mixtures"]

"""``insta evaluate``: zero-shot evaluation of a model on target tasks (rank classification or generation)."""
from __future__ import annotations

import argparse


def add_parser(sub) -> None:
    from ..eval_config import EvalConfig
    from ._common import add_catalog_args, add_output_args
    from ._config import add_config_file_flag, add_config_flags

    p = sub.add_parser(
        "evaluate",
        help="evaluate a model zero-shot on target tasks",
        description="Rank classification for tasks with answer options, named as lm-evaluation-harness names it "
        "(acc: summed log-likelihood; acc_norm: per character; acc_norm_token: per token; acc_calibrated; "
        "balanced accuracy bal_acc*, macro-F1, gold log-prob), greedy generation (ROUGE-L, exact match) "
        "otherwise; tasks with several templates (P3, e.g. super_glue/rte) are averaged over templates. "
        "Writes OUT/<task>/results.json and samples.jsonl.",
    )
    p.add_argument("--model", default="smollm2",
                   help="smollm2 (default), a model dir, a run's model dir, a LoRA adapter dir")
    add_catalog_args(p)
    p.add_argument("--task", "-t", action="append", required=True, help="target task id (repeatable)")
    p.add_argument("--out", "-o", default=None, help="results folder (default: print only)")
    add_config_file_flag(p, "evaluation (EvalConfig)")
    add_config_flags(p, EvalConfig)
    add_output_args(p, json_help="write the summary (per task: primary metric, all metrics, timings) as JSON")
    p.set_defaults(func=run)


def config_from_args(args: argparse.Namespace):
    """EvalConfig from its defaults, ``--config`` and the flags given."""
    from ..eval_config import EvalConfig
    from ._config import build_config

    return build_config(EvalConfig, args, "evaluation")


def run(args: argparse.Namespace) -> int:
    from ..evaluate import simple_evaluate
    from ..util.fileio import check_output_dir
    from ..util.textsafe import safe_text
    from ._common import emit_json, open_catalog

    if args.out:
        check_output_dir(args.out, "--out")
    config = config_from_args(args)
    out = simple_evaluate(args.model, args.task, catalog=open_catalog(args), out_dir=args.out, config=config)
    emit_json(args, out)
    if args.quiet or args.json_out == "-":
        return 0
    for tid, res in out["results"].items():
        m = res["metrics"]
        extra = ""
        if "acc" in m:
            extra = "  ".join(f"{k}={m[k]:.3f}" for k in ("acc", "acc_norm", "acc_norm_token", "acc_calibrated",
                                                           "bal_acc", "gold_nll_per_token") if k in m)
        elif "rouge_l" in m:
            extra = f"rouge_l={m['rouge_l']:.2f}  exact_match={m['exact_match']:.3f}"
        tmpl = f" over {m['n_templates']} templates" if "n_templates" in m else ""
        print(f"{safe_text(tid, newlines=False)}: {res['primary_metric']}={res['primary']:.4f} (n={res['n']}{tmpl}, "
              f"{res['timings']['examples_per_second']} ex/s)  {extra}")
    if args.out:
        print(f"results in {args.out}")
    return 0

"""``insta export-lm-eval``: write a target task as an lm-evaluation-harness task (YAML + JSONL)."""
from __future__ import annotations

import argparse


def add_parser(sub) -> None:
    from ._common import add_catalog_args, add_output_args

    p = sub.add_parser(
        "export-lm-eval",
        help="write a task as an lm-evaluation-harness task (YAML + JSONL) with insta's exact prompts",
        description="Write TASK as an lm-eval task: OUT/<name>.yaml (dataset_path: json, multiple_choice or "
        "generate_until) and OUT/<name>.jsonl with the prompts insta evaluates, so any model can be scored in the "
        "harness: lm-eval run --model hf --model_args pretrained=MODEL --tasks <name> --include_path OUT. Tasks "
        "with several templates (P3) become one task per template and a group averaging them.",
    )
    p.add_argument("task", help="task id of the catalog (e.g. code_line_description, super_glue/rte)")
    add_catalog_args(p)
    p.add_argument("--out", "-o", required=True, help="folder for the YAML and JSONL files")
    p.add_argument("--name", default=None, help="lm-eval task name (default insta_<task id>)")
    p.add_argument("--limit", type=int, default=None, help="first N examples")
    p.add_argument("--limit-per-template", type=int, default=None, help="first N examples of each template")
    p.add_argument("--mode", choices=["auto", "rank", "generate"], default="auto",
                   help="multiple_choice (rank) or generate_until (generate); auto: by whether examples have options")
    p.add_argument("--stop", action="append", default=None, help="stop string for generation (repeatable; default "
                   "newline)")
    p.add_argument("--overwrite", action="store_true", help="replace files in --out even if they were edited "
                   "after insta wrote them (or insta did not write them)")
    p.add_argument("--max-new-tokens", type=int, default=32, help="generation length (default 32)")
    add_output_args(p, json_help="write what was exported (files, task names, the lm-eval command) as JSON")
    from ._config import add_options_file_flag

    add_options_file_flag(p, "export")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from ..evaluate.lm_eval_export import export_lm_eval_task
    from ..util.textsafe import safe_text
    from ._common import emit_json, open_catalog

    for flag in ("limit", "limit_per_template", "max_new_tokens"):
        value = getattr(args, flag)
        if value is not None and value < 1:
            from ..errors import InstaError

            raise InstaError(f"--{flag.replace('_', '-')} must be at least 1 (got {value})")
    task = open_catalog(args).get(args.task)
    info = export_lm_eval_task(task, args.out, args.name, limit=args.limit, limit_per_template=args.limit_per_template,
                               mode=args.mode, stop=tuple(args.stop) if args.stop else ("\n",),
                               max_new_tokens=args.max_new_tokens, overwrite=args.overwrite)
    emit_json(args, info)
    if not args.quiet and args.json_out != "-":
        parts = f" ({len(info['tasks'])} template tasks and a group)" if len(info["tasks"]) > 1 else ""
        print(safe_text(f"wrote lm-eval task {info['name']}{parts}: {info['n']} examples, {info['output_type']}, "
                        f"in {args.out}", newlines=False))
        print(safe_text(f"run it: {info['command']}", newlines=False))
    return 0

"""``insta catalog list|show``: look at a catalog's tasks and instructions."""
from __future__ import annotations

import argparse


def add_parser(sub) -> None:
    p = sub.add_parser("catalog", help="list a catalog's tasks or show one task")
    csub = p.add_subparsers(dest="catalog_command", metavar="ACTION", required=True)
    from ._common import add_catalog_args, add_output_args, non_negative_int

    lp = csub.add_parser("list", help="one row per task: id, family, pools, #instructions")
    add_catalog_args(lp)
    add_output_args(lp, json_help="write the task summaries as JSON")
    lp.set_defaults(func=run_list)
    sp = csub.add_parser("show", help="a task's metadata, instructions and first examples")
    add_catalog_args(sp)
    sp.add_argument("task", help="task id (or alias)")
    sp.add_argument("--examples", type=non_negative_int, default=2, help="how many examples to print (default 2)")
    add_output_args(sp, json_help="write the task (metadata, instructions, the examples asked for) as JSON")
    sp.set_defaults(func=run_show)


def run_list(args: argparse.Namespace) -> int:
    from rich.console import Console
    from rich.table import Table

    from ..util.textsafe import safe_markup as esc
    from ._common import check_output_files, load_pool, write_json

    check_output_files(json_out=args.json_out)
    catalog = load_pool(args)
    if args.json_out:
        write_json(args.json_out, [t.summary() for t in catalog])
    if args.json_out == "-" or args.quiet:
        return 0
    table = Table(title=f"{esc(catalog.name, newlines=False)}: {len(catalog)} tasks, "
                        f"{catalog.n_instructions()} instructions")
    for col in ("task", "family", "category", "pools", "#instr", "examples"):
        table.add_column(col)
    for t in catalog:
        table.add_row(
            *(esc(x, newlines=False) for x in (t.id, t.family if t.family != t.id else "", t.category,
                                                ",".join(sorted(t.pools)))),
            str(len(t.instructions)), "yes" if t.has_examples else "",
        )
    Console().print(table)
    return 0


def run_show(args: argparse.Namespace) -> int:
    from rich.console import Console

    from ..util.textsafe import safe_markup as esc
    from ._common import emit_json, load_pool

    catalog = load_pool(args)
    task = catalog.get(args.task)
    examples = task.examples(args.examples) if args.examples and task.has_examples else []
    emit_json(args, {**task.summary(), "examples": [ex.to_dict() for ex in examples]})
    if args.json_out == "-" or args.quiet:
        return 0
    console = Console()
    console.print(f"[bold]{esc(task.id, newlines=False)}[/bold]  catalog={esc(catalog.name, newlines=False)} "
                  f"family={esc(task.family, newlines=False)} category={esc(task.category, newlines=False)} "
                  f"language={esc(task.language, newlines=False)} pools={esc(','.join(sorted(task.pools)) or '-')}")
    if task.keywords:
        console.print(f"keywords: {esc(', '.join(task.keywords), newlines=False)}")
    if task.meta.get("n_skipped_examples"):
        first = task.meta["skipped_examples"][0]
        console.print(f"skipped {task.meta['n_skipped_examples']} unusable example(s) of the task file "
                      f"(example {first['index']}: {esc(first['problem'], newlines=False)})")
    console.print(f"{len(task.instructions)} instruction(s):")
    for i, ins in enumerate(task.instructions, 1):
        console.print(f"  {i}. {esc(' '.join(ins.split()), newlines=False)}")
    if examples:
        for ex in examples:
            console.print(f"[dim]--- example {esc(ex.id, newlines=False)}[/dim]")
            console.print(esc(ex.input))
            options = f"  options: {esc(ex.options)}" if ex.options else ""
            console.print(f"[green]-> {esc(ex.target)}[/green]{options}")
    return 0

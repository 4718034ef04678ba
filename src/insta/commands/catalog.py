"""``insta catalog list|show``: look at a catalog's tasks and instructions."""
from __future__ import annotations

import argparse


def add_parser(sub) -> None:
    p = sub.add_parser("catalog", help="list a catalog's tasks or show one task")
    csub = p.add_subparsers(dest="catalog_command", metavar="ACTION", required=True)
    from ._common import add_catalog_args, non_negative_int

    lp = csub.add_parser("list", help="one row per task: id, family, pools, #instructions")
    add_catalog_args(lp)
    lp.add_argument("--json", dest="json_out", help="write the task summaries as JSON ('-' for stdout)")
    lp.set_defaults(func=run_list)
    sp = csub.add_parser("show", help="a task's metadata, instructions and first examples")
    add_catalog_args(sp)
    sp.add_argument("task", help="task id (or alias)")
    sp.add_argument("--examples", type=non_negative_int, default=2, help="how many examples to print (default 2)")
    sp.set_defaults(func=run_show)


def run_list(args: argparse.Namespace) -> int:
    from rich.console import Console
    from rich.markup import escape
    from rich.table import Table

    from ._common import check_output_files, load_pool, write_json

    check_output_files(json_out=args.json_out)
    catalog = load_pool(args)
    if args.json_out:
        write_json(args.json_out, [t.summary() for t in catalog])
        if args.json_out == "-":
            return 0
    table = Table(title=f"{catalog.name}: {len(catalog)} tasks, {catalog.n_instructions()} instructions")
    for col in ("task", "family", "category", "pools", "#instr", "examples"):
        table.add_column(col)
    for t in catalog:
        table.add_row(
            escape(t.id), escape(t.family if t.family != t.id else ""), escape(t.category), ",".join(sorted(t.pools)),
            str(len(t.instructions)), "yes" if t.has_examples else "",
        )
    Console().print(table)
    return 0


def run_show(args: argparse.Namespace) -> int:
    from rich.console import Console
    from rich.markup import escape

    from ._common import load_pool

    catalog = load_pool(args)
    task = catalog.get(args.task)
    console = Console()
    console.print(f"[bold]{escape(task.id)}[/bold]  catalog={catalog.name} family={escape(task.family)} "
                  f"category={escape(task.category)} language={task.language} pools={','.join(sorted(task.pools)) or '-'}")
    if task.keywords:
        console.print(f"keywords: {escape(', '.join(task.keywords))}")
    if task.meta.get("n_skipped_examples"):
        first = task.meta["skipped_examples"][0]
        console.print(f"skipped {task.meta['n_skipped_examples']} unusable example(s) of the task file "
                      f"(example {first['index']}: {escape(first['problem'])})")
    console.print(f"{len(task.instructions)} instruction(s):")
    for i, ins in enumerate(task.instructions, 1):
        console.print(f"  {i}. {escape(' '.join(ins.split()))}")
    if args.examples and task.has_examples:
        for ex in task.examples(args.examples):
            console.print(f"[dim]--- example {escape(ex.id)}[/dim]")
            console.print(escape(ex.input))
            console.print(f"[green]-> {escape(ex.target)}[/green]" + (f"  options: {escape(str(ex.options))}" if ex.options else ""))
    return 0

"""``insta eval-selection``: selection accuracy as leave-one-instruction-out task identification."""
from __future__ import annotations

import argparse


def add_parser(sub) -> None:
    p = sub.add_parser(
        "eval-selection",
        help="task identification accuracy of encoders (base vs aligned), per aggregation",
        description=(
            "For every instruction of a task with two or more instructions, score all tasks of the catalog "
            "against it (its own text removed) as `insta select` would, and check that its own task ranks first "
            "(top-1) or in the first five (top-5). With aligned encoders (from `insta align`) only instructions "
            "that alignment never saw are asked, grouped as heldout (task trained on, instruction held out), "
            "excluded (evaluation targets kept out of alignment) and unseen (tasks outside the alignment data)."
        ),
    )
    from ._common import add_catalog_args, positive_int

    add_catalog_args(p)
    p.add_argument("--encoder", "-e", action="append", default=[],
                   help="encoder name or model directory (repeatable; default all-MiniLM-L6-v2)")
    p.add_argument("--unit", choices=["family", "task"], default="family",
                   help="what counts as the right answer: the task family (default; BIG-bench subtasks share "
                        "their parent's description) or the exact task id")
    p.add_argument("--aggregation", "-a", action="append", choices=["mean", "max", "topk-vote"], default=[],
                   help="aggregation(s) to report (repeatable; default all three)")
    p.add_argument("--top", type=positive_int, action="append", default=[], help="k of top-k (repeatable; default 1 and 5)")
    p.add_argument("--vote-depth", type=positive_int, default=10, help="depth of topk-vote (10)")
    p.add_argument("--keep-ambiguous", action="store_true",
                   help="also ask instructions whose exact text belongs to another task too")
    p.add_argument("--details", action="store_true", help="include every query's ranks in the JSON")
    p.add_argument("--json", dest="json_out", help="write the result as JSON to this path ('-' for stdout)")
    p.add_argument("--markdown", help="write the table as Markdown to this path")
    p.add_argument("--quiet", "-q", action="store_true", help="no table")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from ..encoder import DEFAULT_ENCODER
    from ..identification import evaluate_identification, format_markdown
    from ..paths import atomic_write_text
    from ._common import check_output_files, load_pool, write_json

    check_output_files(json_out=args.json_out, markdown=args.markdown)
    catalog = load_pool(args)
    encoders = args.encoder or [DEFAULT_ENCODER]
    ks = sorted(set(args.top)) or [1, 5]
    aggs = list(dict.fromkeys(args.aggregation)) or ["mean", "max", "topk-vote"]
    result = evaluate_identification(
        catalog, encoders, unit=args.unit, aggregations=aggs, ks=ks, vote_depth=args.vote_depth,
        drop_ambiguous=not args.keep_ambiguous, details=args.details,
    )
    result.update({"data_dir": args.data_dir, "pool": args.pool, "catalog_arg": args.catalog})
    if args.json_out:
        write_json(args.json_out, result)
    if args.markdown:
        atomic_write_text(args.markdown, format_markdown(result, ks) + "\n")
    if not args.quiet and args.json_out != "-":
        print_table(result, ks)
    return 0


def print_table(result, ks) -> None:
    from rich.console import Console
    from rich.markup import escape
    from rich.table import Table

    labels = [e["label"] for e in result["encoders"]]
    title = (f"task identification on {result['catalog']}{' / ' + result['pool'] if result.get('pool') else ''}: "
             f"{result['n_queries']} held-out instructions over {result['n_units']} {result['unit']} units "
             f"(top-k accuracy, %)")
    table = Table(title=title)
    table.add_column("group (queries/units)")
    table.add_column("aggregation")
    for lab in labels:
        for k in ks:
            table.add_column(f"{escape(lab)}\ntop-{k}", justify="right")
    for g, data in result["groups"].items():
        for agg in result["aggregations"]:
            cells = []
            for lab in labels:
                s = data["by_encoder"][lab][agg]
                cells += ["–" if s.get(f"top{k}") is None else f"{100 * s[f'top{k}']:.1f}" for k in ks]
            table.add_row(f"{g} ({data['n_queries']}/{data['n_units']})", agg, *cells)
    console = Console()
    console.print(table)
    dropped = [f"{result[k]} {what}" for k, what in (
        ("n_seen_dropped", "seen in alignment"), ("n_ambiguous_dropped", "shared with another task"),
        ("n_single_instruction_units", "single-instruction tasks"),
    ) if result.get(k)]
    if dropped:
        console.print("not asked: " + ", ".join(dropped))

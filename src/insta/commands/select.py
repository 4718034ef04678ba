"""``insta select``: rank the source tasks of a catalog for a target, from instructions alone."""
from __future__ import annotations

import argparse
import time


def add_parser(sub) -> None:
    p = sub.add_parser(
        "select",
        help="rank source tasks for a target by instruction similarity (INSTA)",
        description="Score every source task of a catalog against the target's instruction(s) and print the top k.",
    )
    from ._common import add_catalog_args, add_output_args, positive_int

    add_catalog_args(p)
    tgt = p.add_argument_group("target (one of)")
    tgt.add_argument("--instruction", "-i", action="append", default=[], help="target instruction text (repeatable)")
    tgt.add_argument("--instructions-file", help="file with target instructions (one per line, or a JSON/YAML list)")
    tgt.add_argument("--task", "-t", help="a catalog task id as target (it and its family are excluded)")
    tgt.add_argument("--target-catalog", help="catalog holding --task if not the source catalog (e.g. bbh)")
    tgt.add_argument("--n-target-instructions", type=positive_int, default=None, help="use only the first N target instructions")
    p.add_argument("-k", type=positive_int, default=5, help="how many tasks to select (default 5)")
    p.add_argument("--aggregation", "-a", default="mean", choices=["mean", "max", "topk-vote"])
    p.add_argument("--encoder", "-e", default=None, help="sentence-transformers model dir or id (default all-MiniLM-L6-v2)")
    p.add_argument("--exclude", action="append", default=[], help="task id to leave out (repeatable)")
    p.add_argument("--exclude-family", action="append", default=[], help="task family to leave out (repeatable)")
    p.add_argument("--no-cache", action="store_true", help="do not read or write the embedding cache")
    add_output_args(p, json_help="write the selection as JSON to this path")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from ..encoder import Encoder
    from ..errors import InstaError
    from ..selection import Selector, target_from_task
    from ._common import check_exclusions, check_output_files, open_catalog, read_lines_file, write_json

    t0 = time.perf_counter()
    n_sources = sum(bool(x) for x in (args.instruction, args.instructions_file, args.task))
    if n_sources != 1:
        raise InstaError("give exactly one target: --instruction TEXT (repeatable), --instructions-file FILE or --task ID")
    check_output_files(json_out=args.json_out)
    full = open_catalog(args)
    check_exclusions(full, args.exclude, args.exclude_family)
    pool = full.subset(full.pool(args.pool)) if args.pool else full
    exclude, families, info = list(args.exclude), list(args.exclude_family), {}
    if args.task:
        tcat = open_catalog(args, args.target_catalog) if args.target_catalog else full
        instructions, info, ex_ids, ex_fams = target_from_task(tcat.get(args.task))
        exclude += ex_ids
        families += ex_fams
    elif args.instructions_file:
        instructions = read_lines_file(args.instructions_file)
        info = {"file": args.instructions_file}
    else:
        instructions = args.instruction
    if args.n_target_instructions is not None:
        instructions = instructions[: args.n_target_instructions]
    encoder = Encoder(args.encoder, cache=not args.no_cache, show_progress=not args.quiet)  # cold encoding: a bar
    selector = Selector(pool, encoder, aggregation=args.aggregation)
    result = selector.select(instructions, args.k, exclude=exclude, exclude_families=families, target=info)
    result.config.update(
        {"data_dir": args.data_dir, "pool": args.pool, "catalog": args.catalog, "seconds": round(time.perf_counter() - t0, 3),
         "n_encoded": encoder.n_encoded}
    )
    if args.json_out:
        write_json(args.json_out, result.to_dict())
    if not args.quiet and args.json_out != "-":
        print_selection(result)
    return 0


def print_selection(result) -> None:
    """A rich table: rank, task, score and the best-matching pair of instructions."""
    from rich.console import Console
    from rich.table import Table

    from ..textsafe import safe_markup as esc

    cfg = result.config
    title = esc(
        f"top {len(result.selected)} of {cfg['n_pool_tasks']} tasks in {cfg['catalog']}"
        f"{' / ' + cfg['pool'] if cfg.get('pool') else ''} ({cfg['aggregation']}, {cfg['encoder']['name']})",
        newlines=False,
    )
    table = Table(title=title, show_lines=True)
    table.add_column("#", justify="right")
    table.add_column("task", style="bold")
    table.add_column("score", justify="right")
    table.add_column("why: best-matching target instruction ~ source instruction (cosine)")
    for s in result.selected:
        why = f"{_short(s.best_target_instruction)}\n~ {_short(s.best_source_instruction)}  ({s.best_pair_cosine:.3f})"
        table.add_row(str(s.rank), esc(s.task, newlines=False), f"{s.score:.4f}", esc(why))
    console = Console()
    console.print(table)
    if result.excluded:
        console.print(f"excluded (target and relatives): {esc(', '.join(result.excluded[:10]), newlines=False)}"
                      f"{' ...' if len(result.excluded) > 10 else ''}")


def _short(text: str, n: int = 110) -> str:
    text = " ".join(text.split())
    return text if len(text) <= n else text[: n - 1] + "…"

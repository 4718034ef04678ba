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
    from ._common import add_catalog_args, add_output_args, finite_float, positive_int

    add_catalog_args(p)
    p.add_argument("--encoder", "-e", action="append", default=[],
                   help="encoder name or model directory (repeatable; default all-MiniLM-L6-v2)")
    p.add_argument("--unit", choices=["family", "task"], default="family",
                   help="what counts as the right answer: the task family (default; BIG-bench subtasks share "
                        "their parent's description) or the exact task id")
    p.add_argument("--aggregation", "-a", action="append", choices=["mean", "max", "topk-vote"], default=[],
                   help="aggregation(s) to report (repeatable; default all three)")
    p.add_argument("--top", type=positive_int, action="append", default=[],
                   help="k of top-k (repeatable; default 1 and 5)")
    p.add_argument("--vote-depth", type=positive_int, default=10, help="depth of topk-vote (10)")
    p.add_argument("--drop-ambiguous", action="store_true",
                   help="do not ask instructions whose exact text belongs to another task too (by default they are "
                        "asked and count as misses when tied; the unambiguous queries alone are a second column)")
    p.add_argument("--keep-ambiguous", action="store_true", help=argparse.SUPPRESS)  # the default now
    p.add_argument("--format-aware", action="store_true",
                   help="identification for format-aware INSTA: every instruction, the held-out one too, is "
                        "embedded with its task's output space")
    p.add_argument("--output-space-weight", type=finite_float, default=0.0, metavar="W",
                   help="identification for INSTA with output_space_weight W: add W x the cosine between the query "
                        "task's output space and each task's (0 = off)")
    p.add_argument("--method", "-m", action="append", default=[], metavar="NAME",
                   help="also ask an instructions-only selection method as a column, e.g. lexical (repeatable)")
    p.add_argument("--details", action="store_true", help="include every query's ranks in the JSON")
    p.add_argument("--markdown", help="write the table as Markdown to this path")
    add_output_args(p, json_help="write the result as JSON to this path")
    _add_transfer_args(p)
    from ._config import add_options_file_flag

    add_options_file_flag(p, "eval-selection")
    p.set_defaults(func=run)


def _add_transfer_args(p: argparse.ArgumentParser) -> None:
    """The ``--transfer`` group: scoring selection methods against a measured transfer matrix."""
    from ._common import finite_float

    t = p.add_argument_group("scoring against a measured transfer matrix (--transfer)")
    t.add_argument("--transfer", metavar="MATRIX", help="score selection methods against this transfer matrix "
                   "(matrix.json/matrix.csv of `insta transfer`, or a long-format CSV/JSON with target, source, "
                   "transfer): per target and averaged with bootstrap CIs over targets, TaskWeb's NDCG, linear-gain "
                   "NDCG on max(transfer, 0), precision@k, best-of-k regret and Regret@k, plus paired differences")
    t.add_argument("--metric", default=None, help="matrix metric that defines the gold order (default: "
                   "nll_per_token, or the matrix's only metric)")
    t.add_argument("--regret-k", type=int, default=5, help="k of precision@k, best-of-k regret and Regret@k (5)")
    t.add_argument("--reference", action="append", default=[], metavar="LABEL",
                   help="a method the tables compare every method with (repeatable; default: insta-mean, "
                        "popular-source-loo, roe, hybrid-0.5, those scored); the JSON keeps every pair")
    t.add_argument("--methods", metavar="FILE", help="YAML/JSON list of the methods to score (names or {method, "
                   "label, options}, e.g. `- {method: insta-mean, label: insta-max, options: {aggregation: max}}`); "
                   "default: every method of insta.methods with its defaults")
    t.add_argument("--aligned-encoder", help="an `insta align` encoder: adds INSTA-aligned with each aggregation")
    t.add_argument("--target-samples", type=int, default=32, help="unlabelled target inputs for RoE/DSIR (32)")
    t.add_argument("--library-size", type=int, default=50, help="instances per source for RoE/DSIR (50)")
    t.add_argument("--seed", type=int, default=0, help="draws the unlabelled target inputs (RoE/DSIR/hybrid), the "
                   "random permutations and the bootstrap; recorded in the JSON (0; `insta transfer`'s report uses "
                   "its config's seed)")
    t.add_argument("--reliability-min", type=finite_float, default=0.5, help="leave out targets whose split-half "
                   "reliability across seeds is below this (0.5)")
    t.add_argument("--include-unreliable", action="store_true", help="score unreliable targets too")


def run(args: argparse.Namespace) -> int:
    if args.transfer:
        return run_transfer_scoring(args)
    from ..encoder import DEFAULT_ENCODER
    from ..evaluators.identification import evaluate_identification
    from ..evaluators.identification_table import format_markdown
    from ..util.paths import atomic_write_text
    from ._common import check_output_files, load_pool, write_json

    check_output_files(json_out=args.json_out, markdown=args.markdown)
    catalog = load_pool(args)
    from ..methods import load_method

    methods = [load_method(name) for name in args.method]
    encoders = args.encoder or ([] if methods else [DEFAULT_ENCODER])
    ks = sorted(set(args.top)) or [1, 5]
    aggs = list(dict.fromkeys(args.aggregation)) or ["mean", "max", "topk-vote"]
    result = evaluate_identification(
        catalog, encoders, unit=args.unit, aggregations=aggs, ks=ks, vote_depth=args.vote_depth,
        drop_ambiguous=args.drop_ambiguous, details=args.details, format_aware=args.format_aware,
        output_space_weight=args.output_space_weight, methods=methods,
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
    from rich.table import Table

    from ..evaluators.identification_table import identification_table
    from ..util.textsafe import safe_markup as esc

    title = esc(f"task identification on {result['catalog']}{' / ' + result['pool'] if result.get('pool') else ''}: "
                f"{result['n_queries']} held-out instructions over {result['n_units']} {result['unit']} units "
                f"(top-k accuracy, %; ambiguous queries count, a tie is a miss)", newlines=False)
    table = Table(title=title)
    head, rows = identification_table(result, ks)
    for i, col in enumerate(head):
        table.add_column(esc(col, newlines=False), justify="right" if i >= 2 else "left")
    for row in rows:
        table.add_row(*(esc(c, newlines=False) for c in row))
    console = Console()
    console.print(table)
    if result.get("n_ambiguous"):
        console.print(f"{result['n_ambiguous']} queries are ambiguous (their text belongs to another task too): "
                      "counted in every column, left out of the 'unambiguous' ones")
    dropped = [f"{result[k]} {what}" for k, what in (
        ("n_seen_dropped", "seen in alignment"), ("n_ambiguous_dropped", "shared with another task"),
        ("n_single_instruction_units", "single-instruction tasks"),
    ) if result.get(k)]
    if dropped:
        console.print("not asked: " + ", ".join(dropped))


def run_transfer_scoring(args: argparse.Namespace) -> int:
    """``--transfer``: every selection method ranks the matrix's sources; every score against the gold order."""
    from ..catalogs import load_catalog
    from ..errors import InstaError
    from ..util.helpers import Log
    from ..util.paths import atomic_write_text
    from ..evaluators.methods_vs_matrix import (DEFAULT_METHODS, aligned_methods, evaluate_methods_on_matrix,
                                                read_method_specs, with_encoder)
    from ..matrix.scoring import REFERENCE_METHODS
    from ..matrix import PRIMARY, read_matrix
    from ._common import write_json

    from ._common import check_output_files

    check_output_files(json_out=args.json_out if args.json_out != "-" else None, markdown=args.markdown)
    for name in ("regret_k", "target_samples", "library_size"):
        if getattr(args, name) < 1:
            raise InstaError(f"--{name.replace('_', '-')} must be at least 1 (got {getattr(args, name)})")
    matrix = read_matrix(args.transfer, metric=args.metric)  # a --metric the matrix lacks is an error
    cache: dict = {}

    def catalogs(name: str):
        if name not in cache:
            cache[name] = load_catalog(name, args.data_dir)
        return cache[name]

    catalog_arg = args.catalog if args.catalog != "p3" or not matrix.meta.get("source_catalog") else None
    specs = read_method_specs(args.methods) if args.methods else DEFAULT_METHODS
    methods = with_encoder(specs, args.encoder[0] if args.encoder else None)
    if args.aligned_encoder:
        methods += aligned_methods(args.aligned_encoder)
    labels = [lab for lab, _, _ in methods] + ["random"]
    unknown = [r for r in args.reference if r not in labels]
    if unknown:
        raise InstaError(f"--reference {', '.join(unknown)}: not a method scored here (scored: {', '.join(labels)})")
    log = Log(quiet=args.quiet)
    result = evaluate_methods_on_matrix(
        matrix, catalogs, source_catalog=catalog_arg, unit=None if matrix.meta.get("unit") else args.unit,
        metric=args.metric or PRIMARY, methods=methods,
        k=args.regret_k, target_samples=args.target_samples, library_size=args.library_size,
        reliability_min=args.reliability_min, include_unreliable=args.include_unreliable, seed=args.seed,
        references=list(dict.fromkeys(args.reference)) or REFERENCE_METHODS, log=log)
    result["matrix"] = str(args.transfer)
    if args.json_out:
        write_json(args.json_out, result)
    if args.markdown:
        from ..report import render_markdown
        from ..evaluators.matrix_report import scoring_sections

        atomic_write_text(args.markdown, render_markdown(f"selection methods vs {args.transfer}",
                                                         scoring_sections(result)))
    if not args.quiet and args.json_out != "-":
        print_transfer_table(result)
    return 0


def print_transfer_table(result) -> None:
    from rich.console import Console
    from rich.table import Table

    from ..evaluators.matrix_report import scoring_table
    from ..util.textsafe import safe_markup

    def escape(text: str) -> str:  # labels and ids come from user files: no terminal control bytes
        return safe_markup(text, newlines=False)

    table = Table(title=f"selection methods vs measured transfer ({escape(result['metric'])}): mean over "
                        f"{len(result['targets_scored'])} targets, 95% bootstrap CI")
    head, rows = scoring_table(result)
    for i, col in enumerate(head):
        table.add_column(escape(col), justify="left" if i == 0 else "right")
    for row in rows:
        table.add_row(*(escape(c) for c in row))
    console = Console()
    console.print(table)
    if result.get("targets_left_out"):
        console.print("left out: " + escape("; ".join(f"{t} ({why})" for t, why in result["targets_left_out"].items())))
    for m, ts in (result.get("filled") or {}).items():
        console.print(escape(f"{m}: random's expectation on {len(ts)} target(s) it cannot score: {', '.join(ts)}"))

"""``insta select``: rank the source tasks of a catalog for a target with any selection method (INSTA by default)."""
from __future__ import annotations

import argparse
import time


def add_parser(sub) -> None:
    p = sub.add_parser(
        "select",
        help="rank source tasks for a target (INSTA by default; any selection method with --method)",
        description="Score every source task of a catalog against the target and print the top k, with the why "
                    "of each pick. Methods: insta-mean (default), insta-max, insta-topk-vote, insta-aligned, "
                    "insta-format, hybrid, lexical, roe, dsir, prior-transfer, popular-source, random, all.",
    )
    from ._common import add_catalog_args, add_output_args, finite_float, positive_int

    add_catalog_args(p)
    tgt = p.add_argument_group("target (one of)")
    tgt.add_argument("--instruction", "-i", action="append", default=[], help="target instruction text (repeatable)")
    tgt.add_argument("--instructions-file", help="file with target instructions (one per line, or a JSON/YAML list)")
    tgt.add_argument("--task", "-t", help="a catalog task id as target (it and its family are excluded)")
    tgt.add_argument("--target-catalog", help="catalog holding --task if not the source catalog (e.g. bbh)")
    tgt.add_argument("--n-target-instructions", type=positive_int, default=None,
                     help="use only the first N target instructions")
    m = p.add_argument_group("method")
    m.add_argument("--method", "-m", default=None,
                   help="selection method (default insta-mean; -a picks insta-max / insta-topk-vote)")
    m.add_argument("--aggregation", "-a", default=None, choices=["mean", "max", "topk-vote"],
                   help="INSTA aggregation (default: the method's)")
    m.add_argument("--encoder", "-e", default=None,
                   help="sentence-transformers model dir or id for INSTA / RoE / hybrid (default all-MiniLM-L6-v2; "
                        "'hashing' is a dependency-free bag-of-words stand-in)")
    m.add_argument("--option", "-o", action="append", default=[], metavar="KEY=VALUE",
                   help="a method option, e.g. -o weight=0.3 (hybrid), -o format_aware=true, -o library_size=50")
    m.add_argument("--prior-matrix", metavar="FILE", default=None,
                   help="a measured transfer matrix (insta's long CSV/JSON) for prior-transfer / popular-source; "
                        "alone it selects with prior-transfer")
    m.add_argument("--target-examples", metavar="FILE", help="unlabelled target inputs for roe / dsir / hybrid: "
                   "JSONL with 'input' (and 'options'), or one input per line (default with --task: its own examples)")
    m.add_argument("--n-target-examples", type=positive_int, default=32, help="how many target inputs to use (32)")
    p.add_argument("-k", default="5", help="how many tasks to select: a number (default 5), or a rule that reads k "
                   "off the scores: gap (largest score drop), elbow (knee of the score curve), threshold (z SD above "
                   "the mean)")
    p.add_argument("--k-min", type=positive_int, default=1, help="lower bound of a k rule (1)")
    p.add_argument("--k-max", type=positive_int, default=None,
                   help="upper bound of a k rule (20, or the pool if smaller)")
    p.add_argument("--z", type=finite_float, default=1.0,
                   help="threshold rule: standard deviations above the mean (1.0)")
    p.add_argument("--ties", choices=["first", "include"], default="first",
                   help="when k cuts a tie group: keep exactly k (first, default) or take the whole group (include)")
    p.add_argument("--exclude", action="append", default=[], help="task id to leave out (repeatable)")
    p.add_argument("--exclude-family", action="append", default=[], help="task family to leave out (repeatable)")
    p.add_argument("--no-cache", action="store_true", help="do not read or write the embedding cache")
    add_output_args(p, json_help="write the selection as JSON to this path")
    from ._config import add_options_file_flag

    add_options_file_flag(p, "selection")
    p.set_defaults(func=run)


# long: one command's flow (target, pool, method, k, output) in the order its flags are documented
def run(args: argparse.Namespace) -> int:
    from ..errors import InstaError
    from ..methods import METHODS, load_method, read_target_examples, unlabelled_samples
    from ..selection import KRule, parse_k, with_instructions
    from ._common import check_exclusions, check_output_files, open_catalog, read_lines_file, write_json

    t0 = time.perf_counter()
    n_sources = sum(bool(x) for x in (args.instruction, args.instructions_file, args.task))
    if n_sources != 1:
        raise InstaError("give exactly one target: --instruction TEXT (repeatable), --instructions-file FILE "
                         "or --task ID")
    check_output_files(json_out=args.json_out)
    full = open_catalog(args)
    check_exclusions(full, args.exclude, args.exclude_family)
    pool = full.subset(full.pool(args.pool)) if args.pool else full
    k = parse_k(args.k)
    if isinstance(k, KRule):
        k = KRule(k.rule, k_min=args.k_min, k_max=args.k_max, z=args.z)
    name, options = method_and_options(args)
    name = _with_prior_matrix(args, name, options)
    if args.task:
        target = (open_catalog(args, args.target_catalog) if args.target_catalog else full).get(args.task)
    elif args.instructions_file:
        target = read_lines_file(args.instructions_file)
    else:
        target = list(args.instruction)
    if args.n_target_instructions is not None:
        target = (with_instructions(target, args.n_target_instructions) if args.task else
                  target[: args.n_target_instructions])
    encoder = None
    takes_encoder = "encoder" in _accepted(METHODS[name]) if name in METHODS else False
    if takes_encoder and name != "insta-aligned" and "encoder" not in options:
        if args.encoder and args.encoder.startswith("hashing"):
            from ..methods import get_encoder

            encoder = get_encoder(args.encoder)  # the dependency-free test encoder ("hashing", "hashing-256")
        else:
            from ..encoder import Encoder

            # an object: --no-cache and n_encoded apply; cold encoding shows a bar
            encoder = Encoder(args.encoder, cache=not args.no_cache, show_progress=not args.quiet)
        options["encoder"] = encoder
    elif args.encoder:
        options.setdefault("encoder", args.encoder)  # insta-aligned (its directory's fingerprint is its identity)
    method = load_method(name, **options)
    samples = None
    if "target_samples" in method.consumes:
        if args.target_examples:
            samples = read_target_examples(args.target_examples, limit=args.n_target_examples)
        elif args.task:
            samples = unlabelled_samples(target, args.n_target_examples)
    result = method.select(target, pool, k, target_samples=samples, exclude=args.exclude,
                           exclude_families=args.exclude_family, ties=args.ties,
                           target_info={"file": args.instructions_file} if args.instructions_file else None)
    result.config.update({"data_dir": args.data_dir, "pool": args.pool, "catalog": args.catalog})
    if args.json_out:
        write_json(args.json_out, stable_selection(result.to_dict()))
    if not args.quiet and args.json_out != "-":
        print_selection(result)
    if not args.quiet:
        print_run_facts(time.perf_counter() - t0, encoder)
    return 0


def stable_selection(data: dict) -> dict:
    """The selection as ``--json`` writes it: without what differs between two runs of the same selection (the
    seconds taken; how many texts were encoded rather than read from the cache), so the same selection gives the
    same bytes. Those go to stderr (:func:`print_run_facts`)."""
    data = dict(data)
    data.pop("seconds", None)
    data["config"] = {k: v for k, v in (data.get("config") or {}).items() if k not in ("seconds", "n_encoded")}
    return data


def print_run_facts(seconds: float, encoder) -> None:
    """One stderr line: time taken and, for an encoder, the texts encoded (the rest came from the cache)."""
    import sys

    encoded = getattr(encoder, "n_encoded", None)
    extra = f", {encoded} text(s) encoded (the rest from the embedding cache)" if encoded is not None else ""
    print(f"insta select: {seconds:.2f} s{extra}", file=sys.stderr)


#: the methods that read a prior transfer matrix (--prior-matrix)
PRIOR_MATRIX_METHODS = ("prior-transfer", "popular-source")


def _with_prior_matrix(args: argparse.Namespace, name: str, options: dict) -> str:
    """``--prior-matrix`` as the ``prior_matrix`` option (prior-transfer when no --method is given), the data
    directory where the matrix's targets are looked up, and ``target_inputs`` when ``--target-examples`` gives
    the target's inputs; the method name to use."""
    from ..errors import InstaError

    if getattr(args, "prior_matrix", None):
        if not args.method:
            name = "prior-transfer"
        elif name not in PRIOR_MATRIX_METHODS:
            raise InstaError(f"--prior-matrix applies to {' / '.join(PRIOR_MATRIX_METHODS)}, not {name!r}")
        options.setdefault("prior_matrix", args.prior_matrix)
    if name in PRIOR_MATRIX_METHODS:
        options.setdefault("data_dir", args.data_dir)
    if name == "prior-transfer" and getattr(args, "target_examples", None):
        options.setdefault("target_inputs", True)  # inputs given: the pivots compare them too
    return name


def _accepted(cls) -> set[str]:
    """The keyword options a method class (and its bases) accepts."""
    import inspect

    return {p for c in cls.__mro__ if "__init__" in vars(c) for p in inspect.signature(c.__init__).parameters}


def method_and_options(args: argparse.Namespace) -> tuple[str, dict]:
    """The method name and its options from ``--method``, ``-a``, ``--encoder`` and ``-o KEY=VALUE``."""
    import yaml

    from ..errors import InstaError

    by_aggregation = {"mean": "insta-mean", "max": "insta-max", "topk-vote": "insta-topk-vote", None: "insta-mean"}
    name = args.method or by_aggregation[args.aggregation]
    options: dict = {}
    if args.method and args.aggregation:
        options["aggregation"] = args.aggregation
    for item in args.option:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise InstaError(f"--option takes KEY=VALUE (got {item!r})")
        try:
            options[key.strip().replace("-", "_")] = yaml.safe_load(value) if value.strip() else None
        except yaml.YAMLError:
            options[key.strip().replace("-", "_")] = value
    return name, options


def why_text(method: str, s, n_samples: int | None = None) -> str:
    """One cell of the 'why' column: the evidence of a pick as the method that made it renders it."""
    from ..methods import METHODS
    from ..selection import SelectionMethod

    return "\n".join(METHODS.get(method, SelectionMethod).why_lines(s.why, n_samples))


def print_selection(result) -> None:
    """A rich table: rank, task, score, tie group and the why of each pick; then ties, k and exclusions."""
    from rich.console import Console
    from rich.table import Table

    from ..util.textsafe import safe_markup as esc

    cfg = result.config
    detail = [cfg.get("aggregation"), (cfg.get("encoder") or {}).get("name") if isinstance(cfg.get("encoder"), dict)
              else None]
    title = esc(
        f"top {len(result.selected)} of {result.n_pool} tasks in {cfg.get('catalog')}"
        f"{' / ' + cfg['pool'] if cfg.get('pool') else ''} ({result.method}"
        f"{': ' + ', '.join(d for d in detail if d) if any(detail) else ''})",
        newlines=False,
    )
    table = Table(title=title, show_lines=True)
    table.add_column("#", justify="right")
    table.add_column("task", style="bold")
    table.add_column("score", justify="right")
    tied = any(s.tie_group for s in result.selected)
    if tied:
        table.add_column("tie", justify="right")
    head = ("why: best-matching target instruction ~ source instruction (cosine)" if result.method.startswith("insta")
            else "why")
    table.add_column(head)
    n_samples = result.target.get("n_samples")
    for s in result.selected:
        row = [str(s.rank), esc(s.task, newlines=False), f"{s.score:.4f}"]
        if tied:
            row.append(f"={s.tie_group}" if s.tie_group else "")
        table.add_row(*row, esc(why_text(result.method, s, n_samples)))
    console = Console()
    console.print(table)
    kc = result.k_choice
    if kc.get("rule") not in (None, "fixed", "all"):
        console.print(esc(f"k = {kc['k']} ({kc['rule']}): {kc.get('why', '')}", newlines=False))
    if kc.get("extended_for_tie"):
        e = kc["extended_for_tie"]
        console.print(f"k extended from {e['from']} to {e['to']} to keep a tie group whole (--ties include)")
    for g in result.ties:
        left = [t for t in g["tasks"] if t not in g["selected"]]
        console.print(esc(
            f"tie group ={g['group']} (score {g['score']:.4f}, the method cannot tell these apart): "
            f"{', '.join(g['tasks'][:8])}{' ...' if len(g['tasks']) > 8 else ''}"
            + (f"; not selected: {', '.join(left[:5])}{' ...' if len(left) > 5 else ''} (--ties include takes the "
               "whole group)" if left else ""), newlines=False))
    if result.excluded:
        console.print(f"excluded (target and relatives): {esc(', '.join(result.excluded[:10]), newlines=False)}"
                      f"{' ...' if len(result.excluded) > 10 else ''}")

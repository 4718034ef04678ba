"""``insta data fetch p3|bigbench|niv2``: obtain the upstream files for users who have none."""
from __future__ import annotations

import argparse


def add_parser(sub) -> None:
    p = sub.add_parser("data", help="obtain upstream meta-dataset files")
    dsub = p.add_subparsers(dest="data_command", metavar="ACTION", required=True)
    fp = dsub.add_parser("fetch", help="download a source into the data folder (p3, bigbench, niv2)")
    fp.add_argument("source", choices=["p3", "bigbench", "niv2"])
    fp.add_argument("--data-dir", default=None, help="where to put it (default: $INSTA_DATA_DIR, else ./data)")
    fp.add_argument("--instances", action="store_true", help="p3: also fetch P3's rendered instances from the hub "
                    "dataset (via the datasets library) into p3/<task>/<split>.jsonl; resumable")
    fp.add_argument("--tasks", help="p3 --instances: comma-separated task ids or T0 names (default: the 35 T0 "
                    "training and 11 held-out datasets)")
    fp.add_argument("--splits", default="train,validation", help="p3 --instances: hub splits (train, validation, "
                    "test; default train,validation)")
    fp.add_argument("--max-rows", type=int, default=None, help="p3 --instances: rows per config and split "
                    "(default 50000; 0 = all)")
    fp.add_argument("--source", dest="hub_source", default=None, help="p3 --instances: hub dataset id or a "
                    "local folder in its layout (default bigscience/P3)")
    from ._common import add_output_args

    add_output_args(fp, json_help="write where the source was put as JSON")
    fp.set_defaults(func=run_fetch)


def run_fetch(args: argparse.Namespace) -> int:
    from ..util.datadir import resolve_data_dir
    from ..fetch import fetch

    from ..errors import InstaError
    from ..util.fileio import check_output_dir

    root = resolve_data_dir(args.data_dir, must_exist=False)
    check_output_dir(root, "data directory")
    if args.source != "p3" and (args.instances or args.tasks or args.max_rows is not None or args.hub_source):
        raise InstaError("--instances, --tasks, --max-rows and --source are for p3 only")
    if not args.instances and (args.tasks or args.max_rows is not None or args.hub_source):
        raise InstaError("--tasks, --max-rows and --source go with --instances")
    if args.max_rows is not None and args.max_rows < 0:
        raise InstaError(f"--max-rows must be 0 (all rows) or positive (got {args.max_rows})")
    templates = root / "promptsource" / "templates"
    dest = templates if args.instances and templates.is_dir() else fetch(args.source, root)
    from ._common import emit_json

    out = {"source": args.source, "path": str(dest)}
    talk = not args.quiet and args.json_out != "-"
    if args.instances:
        from ..fetch.p3 import DEFAULT_MAX_ROWS, HUB_REPO, fetch_instances
        from ..util.helpers import Log

        log = Log(quiet=not talk)
        max_rows = DEFAULT_MAX_ROWS if args.max_rows is None else (args.max_rows or None)
        out["instances"] = fetch_instances(
            root, source=args.hub_source or HUB_REPO,
            tasks=[t.strip() for t in args.tasks.split(",") if t.strip()] if args.tasks else None,
            splits=[s.strip() for s in args.splits.split(",") if s.strip()], max_rows=max_rows, log=log,
            progress=talk)
    emit_json(args, out)
    if talk:
        print(f"{args.source}: ready in {dest}")
        if args.instances:
            w = out["instances"]["written"]
            print(f"p3 instances: {len(w)} file(s) written ({sum(x['rows'] for x in w):,} rows), "
                  f"{len(out['instances']['skipped'])} already complete, under {root / 'p3'}")
    return 0

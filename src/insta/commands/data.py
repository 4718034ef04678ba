"""``insta data fetch p3|bigbench|niv2``: obtain the upstream files for users who have none."""
from __future__ import annotations

import argparse


def add_parser(sub) -> None:
    p = sub.add_parser("data", help="obtain upstream meta-dataset files")
    dsub = p.add_subparsers(dest="data_command", metavar="ACTION", required=True)
    fp = dsub.add_parser("fetch", help="download a source into the data folder (p3, bigbench, niv2)")
    fp.add_argument("source", choices=["p3", "bigbench", "niv2"])
    fp.add_argument("--data-dir", default=None, help="where to put it (default: $INSTA_DATA_DIR, else ./data)")
    from ._common import add_output_args

    add_output_args(fp, json_help="write where the source was put as JSON")
    fp.set_defaults(func=run_fetch)


def run_fetch(args: argparse.Namespace) -> int:
    from ..util.datadir import resolve_data_dir
    from ..fetch import fetch

    from ..util.fileio import check_output_dir

    root = resolve_data_dir(args.data_dir, must_exist=False)
    check_output_dir(root, "data directory")
    dest = fetch(args.source, root)
    from ._common import emit_json

    emit_json(args, {"source": args.source, "path": str(dest)})
    if not args.quiet and args.json_out != "-":
        print(f"{args.source}: ready in {dest}")
    return 0

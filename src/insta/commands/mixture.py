"""``insta mixture``: build a training mixture (JSONL) from a selection or a list of task ids."""
from __future__ import annotations

import argparse


def add_parser(sub) -> None:
    from ..mixture.build import MixtureConfig
    from ._config import add_config_file_flag, add_config_flags

    p = sub.add_parser(
        "mixture",
        help="build a training mixture (JSONL) from selected source tasks",
        description="Sample up to N instances of each selected task, rendered as the model sees them, into a "
        "JSONL file with provenance (plus <name>.manifest.json saying how it was built).",
    )
    src = p.add_argument_group("source tasks (one of)")
    src.add_argument("--selection", "-s",
                     help="selection JSON from `insta select --json` (or a JSON list / text file of task ids)")
    src.add_argument("--tasks", "-t", nargs="+", help="task ids (with --catalog)")
    p.add_argument("--catalog", "-c", default=None, help="catalog of the tasks (default: the selection's)")
    p.add_argument("--data-dir", default=None,
                   help="upstream data folder (default: the selection's, $INSTA_DATA_DIR, ./data)")
    p.add_argument("--out", "-o", required=True, help="output JSONL path")
    p.add_argument("--format", choices=["insta", "alpaca", "messages", "trl"], default="insta",
                   help="record format (trl: prompt/completion, completion-only loss in TRL's SFTTrainer)")
    p.add_argument("--target-catalog", default=None, help="catalog holding the target if not the source one (e.g. bbh)")
    add_config_file_flag(p, "mixture (MixtureConfig)")
    p.add_argument("--cap", action="append", default=[], metavar="TASK=N",
                   help="per-task cap override (repeatable; added to the config file's caps)")
    add_config_flags(p, MixtureConfig, skip=("caps",), aliases={"per_task": ["-n"]})
    from ._common import add_output_args

    add_output_args(p, json_help="write the mixture's manifest (counts per task, leaks dropped, settings) as JSON")
    p.set_defaults(func=run)


def _caps(items: list[str]) -> dict[str, int]:
    from ..errors import InstaError

    caps = {}
    for item in items:
        task, sep, n = item.rpartition("=")
        if not sep or not task:
            raise InstaError(f"--cap expects TASK=N (got {item!r})")
        try:
            caps[task] = int(n)
        except ValueError:
            raise InstaError(f"--cap {item!r}: N must be an integer") from None
    return caps


def _merge_caps(caps: dict[str, int]):
    """``--cap`` flags on top of the config file's ``caps`` (one task's flag wins over its file entry)."""
    def merge(file_values: dict, flags: dict) -> None:
        if caps:
            flags["caps"] = {**file_values.get("caps", {}), **caps}
    return merge


def config_from_args(args: argparse.Namespace):
    """MixtureConfig from its defaults, ``--config`` and the flags given (``--cap`` added to the file's caps)."""
    from ..mixture import MixtureConfig
    from ._config import build_config

    return build_config(MixtureConfig, args, "mixture", merge=_merge_caps(_caps(args.cap)))


def run(args: argparse.Namespace) -> int:
    from ..errors import InstaError
    from ..mixture import mixture_from_selection
    from ..util.textsafe import safe_text

    if bool(args.selection) == bool(args.tasks):
        raise InstaError("give either --selection FILE or --tasks ID [ID ...] (with --catalog)")
    if args.tasks and not args.catalog:
        raise InstaError("--tasks needs --catalog")
    from ..util.fileio import check_output_file
    from ..mixture import manifest_path

    check_output_file(args.out, "--out")
    check_output_file(manifest_path(args.out), "--out's manifest")
    config = config_from_args(args)
    target_catalog = None
    if args.target_catalog:
        from ..catalogs import load_catalog

        target_catalog = load_catalog(args.target_catalog, args.data_dir)
    mix = mixture_from_selection(args.selection or args.tasks, config, catalog_name=args.catalog,
                                 data_dir=args.data_dir, target_catalog=target_catalog, progress=not args.quiet)
    path = mix.write(args.out, fmt=args.format)
    from ._common import emit_json

    emit_json(args, {"path": str(path), "n": len(mix), "format": args.format, "counts": mix.counts(),
                     "manifest": mix.manifest})
    if args.quiet or args.json_out == "-":
        return 0
    counts = mix.counts()
    info = mix.manifest
    leaked = sum(v.get("leaked_dropped", 0) for v in info["per_task"].values())
    lines = [f"wrote {len(mix)} records from {len(counts)} tasks to {path}"]
    for task, n in counts.items():
        avail = info["per_task"][task]["available"]
        lines.append(f"  {task}: {n} (of {avail})")
    if info.get("target"):
        family = info["excluded_target_family"]
        lines.append(f"target {info['target']}: {leaked} leaking instance(s) dropped"
                     + (f", excluded {', '.join(family)}" if family else ""))
    if info["skipped_empty"]:
        lines.append(f"skipped (no instances): {', '.join(info['skipped_empty'])}")
    for line in lines:
        print(safe_text(line, newlines=False))
    return 0

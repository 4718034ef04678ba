"""Compare every numeric leaf of two JSON files (e.g. an experiment's results.json before and after regenerating
its report): prints how many are identical, every one that changed or disappeared, and how many are new.

    python scripts/compare_numbers.py BEFORE.json AFTER.json [--ignore-under PATH_PREFIX ...]

Numbers compare exactly (``==`` on the parsed JSON values, so 0.1 written the same way is the same); booleans
and strings are not numbers. Exit status 1 when a number changed or disappeared.
"""
from __future__ import annotations

import argparse
import json
import sys
from typing import Any, Iterator


def numeric_leaves(node: Any, path: str = "") -> Iterator[tuple[str, float]]:
    """``(path, value)`` for every int/float leaf; list items are addressed by index, dict items by key."""
    if isinstance(node, bool) or node is None or isinstance(node, str):
        return
    if isinstance(node, (int, float)):
        yield path, node
    elif isinstance(node, dict):
        for k, v in node.items():
            yield from numeric_leaves(v, f"{path}/{k}")
    elif isinstance(node, list):
        for i, v in enumerate(node):
            yield from numeric_leaves(v, f"{path}[{i}]")


def compare(before: Any, after: Any, ignore: tuple[str, ...] = ()) -> dict[str, Any]:
    """Identical, changed, missing and new numeric leaves of two parsed JSON documents."""
    a = {p: v for p, v in numeric_leaves(before) if not p.startswith(ignore)}
    b = {p: v for p, v in numeric_leaves(after) if not p.startswith(ignore)}
    changed = {p: (a[p], b[p]) for p in a if p in b and (a[p] != b[p] or type(a[p]) is not type(b[p]))}
    return {"identical": sum(1 for p in a if p in b and p not in changed), "changed": changed,
            "missing": sorted(p for p in a if p not in b), "new": sorted(p for p in b if p not in a)}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("before")
    ap.add_argument("after")
    ap.add_argument("--ignore-under", action="append", default=[], help="leave out leaves under this path")
    ap.add_argument("--show-new", action="store_true", help="list the new leaves too")
    args = ap.parse_args(argv)
    with open(args.before, encoding="utf-8") as f:
        before = json.load(f)
    with open(args.after, encoding="utf-8") as f:
        after = json.load(f)
    r = compare(before, after, tuple(args.ignore_under))
    print(f"{r['identical']} numeric leaves identical, {len(r['changed'])} changed, {len(r['missing'])} missing, "
          f"{len(r['new'])} new")
    for p, (x, y) in r["changed"].items():
        print(f"changed {p}: {x!r} -> {y!r}")
    for p in r["missing"]:
        print(f"missing {p}")
    if args.show_new:
        for p in r["new"]:
            print(f"new {p}")
    return 1 if r["changed"] or r["missing"] else 0


if __name__ == "__main__":
    sys.exit(main())

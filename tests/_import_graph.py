"""The import graph of ``src/insta``, read with :mod:`ast` (no module is imported), and the figures that describe
the package's shape: used by ``tests/test_architecture.py``; ``python tests/_import_graph.py`` prints the figures.

Every ``import`` / ``from ... import`` counts, those inside functions included (they run too, only later); only
those under ``if TYPE_CHECKING:`` are left out (they never run: annotations only).
``from pkg import name`` is an edge to ``pkg.name`` when that is a module, else to ``pkg`` (its ``__init__``).
Two graphs are drawn: between modules, and between *units* (a top-level module, or a top-level package with
everything under it), where the cycles a reader trips over show up (``selection -> methods -> selection``).
"""
from __future__ import annotations

import ast
import sys
from pathlib import Path

SRC = Path(__file__).resolve().parent.parent / "src"
ROOT = "insta"


def module_files(src: Path = SRC) -> dict[str, Path]:
    """``insta.x.y`` -> its file (a package is its ``__init__.py``)."""
    out = {}
    for path in sorted((src / ROOT).rglob("*.py")):
        parts = list(path.relative_to(src).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        out[".".join(parts)] = path
    return out


def _resolve(current: str, is_pkg: bool, level: int, name: str | None) -> str:
    base = current.split(".") if is_pkg else current.split(".")[:-1]
    if level > 1:
        base = base[: len(base) - (level - 1)]
    return ".".join(base + ([name] if name else []))


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")


def imports_of(mod: str, path: Path, modules: set[str]) -> set[str]:
    """The insta modules that ``mod`` imports anywhere in its file."""
    tree = ast.parse(path.read_text(), str(path))
    is_pkg = path.name == "__init__.py"
    found: set[str] = set()
    type_only = {id(n) for block in ast.walk(tree) if isinstance(block, ast.If) and _is_type_checking(block.test)
                 for stmt in block.body for n in ast.walk(stmt)}
    for node in ast.walk(tree):
        if id(node) in type_only:
            continue
        if isinstance(node, ast.Import):
            targets = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            target = _resolve(mod, is_pkg, node.level, node.module) if node.level else (node.module or "")
            targets = [f"{target}.{a.name}" if f"{target}.{a.name}" in modules else target for a in node.names]
        else:
            continue
        for t in targets:
            while t and t not in modules:  # ``import insta.x.y.attr`` style: the longest module prefix
                t = t.rpartition(".")[0]
            if t and t != mod and (t == ROOT or t.startswith(ROOT + ".")):
                found.add(t)
    return found


def module_graph(src: Path = SRC) -> dict[str, set[str]]:
    files = module_files(src)
    names = set(files)
    return {m: imports_of(m, p, names) for m, p in files.items()}


def unit_of(mod: str) -> str:
    """The top-level unit a module belongs to: ``insta.selection.method`` -> ``selection``."""
    parts = mod.split(".")
    return parts[1] if len(parts) > 1 else ROOT


def unit_graph(graph: dict[str, set[str]]) -> dict[str, set[str]]:
    out: dict[str, set[str]] = {}
    for m, deps in graph.items():
        u = unit_of(m)
        out.setdefault(u, set())
        for d in deps:
            if unit_of(d) != u and u != ROOT and unit_of(d) != ROOT:
                out[u].add(unit_of(d))
    return out


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components with more than one node (Tarjan), each sorted; sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on: set[str] = set()
    out: list[list[str]] = []
    counter = [0]

    def visit(v: str) -> None:
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in graph.get(v, ()):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(sorted(comp))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return sorted(out)


def unit_edges(graph: dict[str, set[str]], a: str, b: str) -> list[tuple[str, str]]:
    """The module imports that make unit ``a`` depend on unit ``b``."""
    return sorted((m, d) for m, deps in graph.items() if unit_of(m) == a for d in deps if unit_of(d) == b)


LONG_NOTE = "# long:"  # a comment line right above a long function (or its decorators) says why it is long
LONG_MODULE_NOTE = "# long module:"  # a comment line among a long module's first 40 lines says why


def long_functions(src: Path = SRC, limit: int = 60, noted: bool | None = None) -> list[tuple[str, str, int]]:
    """(file, function, lines) of every function longer than ``limit`` lines (``noted``: only those with, or
    only those without, a :data:`LONG_NOTE` above them)."""
    out = []
    for path in sorted((src / ROOT).rglob("*.py")):
        lines = path.read_text().splitlines()
        for node in ast.walk(ast.parse("\n".join(lines))):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                n = node.end_lineno - node.lineno + 1
                first = min([node.lineno] + [d.lineno for d in node.decorator_list])
                has_note = first >= 2 and lines[first - 2].strip().startswith(LONG_NOTE)
                if n > limit and (noted is None or noted == has_note):
                    out.append((str(path.relative_to(src)), node.name, n))
    return out


def long_modules(src: Path = SRC, limit: int = 400, noted: bool | None = None) -> list[tuple[str, int]]:
    """(file, lines) of every module longer than ``limit`` lines (``noted`` as in :func:`long_functions`)."""
    out = []
    for path in sorted((src / ROOT).rglob("*.py")):
        lines = path.read_text().splitlines()
        has_note = any(line.strip().startswith(LONG_MODULE_NOTE) for line in lines[:40])
        if len(lines) > limit and (noted is None or noted == has_note):
            out.append((str(path.relative_to(src)), len(lines)))
    return out


def figures(src: Path = SRC) -> dict[str, object]:
    """The shape of the package in numbers (the closing note of a reshaping quotes them)."""
    files = module_files(src)
    graph = module_graph(src)
    units = unit_graph(graph)
    top = src / ROOT
    loose = sorted(p.stem for p in top.glob("*.py") if p.name != "__init__.py")
    lines = {m: len(p.read_text().splitlines()) for m, p in files.items()}
    return {
        "modules": len(files), "lines": sum(lines.values()), "packages": sorted(
            d.name for d in top.iterdir() if (d / "__init__.py").is_file()),
        "loose_top_level_modules": loose, "module_cycles": cycles(graph), "unit_cycles": cycles(units),
        "experiment->transfer": len(unit_edges(graph, "experiment", "transfer")),
        "transfer->experiment": len(unit_edges(graph, "transfer", "experiment")),
        "modules_over_400_lines": long_modules(src), "functions_over_60_lines": long_functions(src),
    }


if __name__ == "__main__":
    for key, value in figures(Path(sys.argv[1]) if len(sys.argv) > 1 else SRC).items():
        shown = value if not isinstance(value, list) or key in ("module_cycles", "unit_cycles") else (
            f"{len(value)}: {value}")
        print(f"{key}: {shown}")

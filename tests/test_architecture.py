"""The package keeps its shape: no import cycle between insta's modules or between its top-level units (imports
inside functions included), and the comparison grid (``experiment``) and the transfer matrix (``transfer``) stand
on the shared run engine without importing each other. The graph is read from the source with :mod:`ast`
(see ``tests/_import_graph.py``), so a violation fails here whether or not a test ever imports the module."""
from __future__ import annotations

import ast
from pathlib import Path

import _import_graph as ig

#: violations still in the code, named so that each one removed shows here; the list must match exactly
KNOWN_MODULE_CYCLES: list[list[str]] = []
KNOWN_UNIT_CYCLES: list[list[str]] = []
KNOWN_CROSS_IMPORTS: list[tuple[str, str]] = []


def test_the_graph_reader_sees_function_level_and_relative_imports(tmp_path: Path):
    pkg = tmp_path / "insta"
    (pkg / "a").mkdir(parents=True)
    (pkg / "__init__.py").write_text("")
    (pkg / "a" / "__init__.py").write_text("from .x import f\n")
    (pkg / "a" / "x.py").write_text("def f():\n    from ..b import g\n    return g\n")
    (pkg / "b.py").write_text("import insta.a.x\n\ndef g():\n    return insta.a.x\n")
    (pkg / "c.py").write_text("from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from .b import g\n")
    graph = ig.module_graph(tmp_path)
    assert graph["insta.a.x"] == {"insta.b"} and graph["insta.b"] == {"insta.a.x"}
    assert graph["insta.c"] == set()  # annotations only: never imported at run time
    assert ig.cycles(graph) == [["insta.a.x", "insta.b"]]
    assert ig.cycles(ig.unit_graph(graph)) == [["a", "b"]]


def test_no_import_cycle_between_modules():
    assert ig.cycles(ig.module_graph()) == KNOWN_MODULE_CYCLES


def test_no_import_cycle_between_top_level_units():
    units = ig.unit_graph(ig.module_graph())
    assert ig.cycles(units) == KNOWN_UNIT_CYCLES


def test_experiment_and_transfer_do_not_import_each_other():
    graph = ig.module_graph()
    cross = ig.unit_edges(graph, "experiment", "transfer") + ig.unit_edges(graph, "transfer", "experiment")
    assert cross == KNOWN_CROSS_IMPORTS


def test_long_modules_and_functions_say_why():
    """No module over 400 lines and no function over 60 without a note saying why (``# long module: ...`` among
    the module's first lines, ``# long: ...`` right above the function)."""
    assert ig.long_modules(noted=False) == []
    assert ig.long_functions(noted=False) == []


def test_every_insta_import_names_a_module_that_exists():
    """An import of an insta module that is not there (e.g. a relative import written before a module moved)
    fails only when that line runs; here it fails at once, function-level imports included."""
    files = ig.module_files()
    missing = []
    for mod, path in files.items():
        tree = ast.parse(path.read_text())
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and node.level:
                target = ig._resolve(mod, path.name == "__init__.py", node.level, node.module)
                if target not in files:
                    missing.append(f"{mod}: from {'.' * node.level}{node.module or ''} ({target})")
            elif isinstance(node, (ast.Import, ast.ImportFrom)) and not getattr(node, "level", 0):
                names = [a.name for a in node.names] if isinstance(node, ast.Import) else [node.module or ""]
                missing += [f"{mod}: {n}" for n in names if n.startswith("insta.") and n not in files]
    assert missing == []


def test_no_backslash_continuation_lines():
    """A backslash at the end of a code line stops simple line-based readers of the code; parentheses do not."""
    found = []
    for path in sorted((ig.SRC / "insta").rglob("*.py")):
        lines = path.read_text().splitlines()
        strings = {i for n in ast.walk(ast.parse("\n".join(lines))) if isinstance(n, ast.Constant)
                   and isinstance(n.value, str) for i in range(n.lineno, n.end_lineno)}
        found += [f"{path.name}:{i}" for i, line in enumerate(lines, 1)
                  if line.rstrip().endswith("\\") and i not in strings and not line.lstrip().startswith("#")]
    assert found == []

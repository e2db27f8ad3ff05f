"""The core package's modules import each other without circles (read statically; no framework).

Every `import` / `from ... import` statement inside `distill_engine` counts, wherever it stands:
at module level, inside functions (a function-level import closes a circle just the same, only
later) and under `if TYPE_CHECKING:` (a type-only import still ties the two modules together),
with relative imports resolved. `from package import name` is an edge to `package.name` when that is a module, else to
the package's `__init__`. Importing `a.b.c` also runs the packages `a` and `a.b`, but those implicit
edges are left out: a package's `__init__` re-exporting its own submodules is not a circle to break.
Names held as strings (the built-in plugins' module names in `plugins.py`) are not imports.
"""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = "distill_engine"


def modules(root: Path = ROOT, package: str = PACKAGE) -> dict[str, Path]:
    """Every module of the package by dotted name (a package under its own name)."""
    found = {}
    for path in sorted((root / package).rglob("*.py")):
        parts = list(path.relative_to(root).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        found[".".join(parts)] = path
    return found


def _import_nodes(tree: ast.AST):
    return (node for node in ast.walk(tree) if isinstance(node, (ast.Import, ast.ImportFrom)))


def imports_of(name: str, path: Path, known: dict[str, Path]) -> set[str]:
    """The package's modules that module `name` (at `path`) imports."""
    is_package = path.name == "__init__.py"
    targets: set[str] = set()
    for node in _import_nodes(ast.parse(path.read_text(encoding="utf-8"), str(path))):
        if isinstance(node, ast.Import):
            for alias in node.names:
                parts = alias.name.split(".")
                # `import a.b.c` binds `a` but runs a.b.c: the deepest known module is the edge
                while parts and ".".join(parts) not in known:
                    parts.pop()
                if parts:
                    targets.add(".".join(parts))
            continue
        if node.level:
            base = name.split(".") if is_package else name.split(".")[:-1]
            base = base[: len(base) - (node.level - 1)]
            source = ".".join(base + ([node.module] if node.module else []))
        else:
            source = node.module or ""
        for alias in node.names:
            full = f"{source}.{alias.name}"
            if full in known:
                targets.add(full)
            elif source in known:
                targets.add(source)
    targets.discard(name)
    return targets


def import_graph(root: Path = ROOT, package: str = PACKAGE) -> dict[str, set[str]]:
    known = modules(root, package)
    return {name: imports_of(name, path, known) for name, path in known.items()}


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import circle as [a, b, ..., a], or None (depth-first search, iterative)."""
    WHITE, GREY, BLACK = 0, 1, 2
    colour = dict.fromkeys(graph, WHITE)
    for start in sorted(graph):
        if colour[start] != WHITE:
            continue
        path = [start]
        colour[start] = GREY
        stack = [iter(sorted(graph[start]))]
        while stack:
            nxt = next(stack[-1], None)
            if nxt is None:
                stack.pop()
                colour[path.pop()] = BLACK
                continue
            if colour.get(nxt, BLACK) == GREY:
                return path[path.index(nxt):] + [nxt]
            if colour.get(nxt) == WHITE:
                colour[nxt] = GREY
                path.append(nxt)
                stack.append(iter(sorted(graph[nxt])))
    return None


def test_the_graph_is_read():
    graph = import_graph()
    assert "distill_engine.io" in graph["distill_engine.checkpoint"]
    assert "distill_engine.recipe.task_argument" in graph["distill_engine.predict"]
    assert "distill_engine.cli.run" in graph["distill_engine.cli.main"]


def _parses_arguments(tree: ast.AST) -> bool:
    for node in ast.walk(tree):
        if isinstance(node, ast.Import) and any(a.name == "argparse" for a in node.names):
            return True
        if isinstance(node, ast.ImportFrom) and node.module == "argparse":
            return True
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr in (
                "add_argument", "add_parser", "add_subparsers"):
            return True
    return False


def test_command_line_code_lives_in_the_cli_package():
    """Only `distill_engine.cli` builds argument parsers; the library it calls takes plain values."""
    outside = [name for name, path in modules().items()
               if not (name == "distill_engine.cli" or name.startswith("distill_engine.cli."))
               and _parses_arguments(ast.parse(path.read_text(encoding="utf-8")))]
    assert outside == []


def test_the_core_has_no_import_circle():
    cycle = find_cycle(import_graph())
    assert cycle is None, "import circle: " + " -> ".join(cycle)


def test_a_circle_is_found_and_shown(tmp_path):
    pkg = tmp_path / "pkg"
    (pkg / "sub").mkdir(parents=True)
    (pkg / "__init__.py").write_text("")
    (pkg / "sub" / "__init__.py").write_text("")
    (pkg / "a.py").write_text("from pkg.sub import b\n")
    (pkg / "sub" / "b.py").write_text("def f():\n    from .. import c\n")
    (pkg / "c.py").write_text("import pkg.a\n")
    (pkg / "d.py").write_text("from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from pkg.e import E\n")
    (pkg / "e.py").write_text("from . import d\n")
    graph = import_graph(tmp_path, "pkg")
    assert graph["pkg.c"] == {"pkg.a"} and graph["pkg.sub.b"] == {"pkg.c"} and graph["pkg.d"] == {"pkg.e"}
    assert find_cycle(graph) == ["pkg.a", "pkg.sub.b", "pkg.c", "pkg.a"]
    (pkg / "c.py").write_text("")
    assert find_cycle(import_graph(tmp_path, "pkg")) == ["pkg.d", "pkg.e", "pkg.d"]
    (pkg / "e.py").write_text("")
    assert find_cycle(import_graph(tmp_path, "pkg")) is None

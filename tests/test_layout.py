"""Package layout: no module-level import cycle inside ``umaf``, and nothing below the CLI imports it.

The import graph is read from the source with :mod:`ast` (nothing is imported). An edge ``a -> b`` means
that importing ``a`` runs ``b``: ``import b`` or ``from b import x`` at module level (class bodies and
top-level ``if``/``try`` blocks included; function bodies and ``if TYPE_CHECKING:`` blocks excluded).
``from pkg import sub`` adds ``pkg`` and, when ``sub`` is a module, ``pkg.sub``. The implicit import of a
module's parent package is not an edge (every submodule has it).
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

SRC = Path(__file__).resolve().parent.parent / "src"
#: The only modules that may import ``umaf.cli``.
CLI_MODULES = {"umaf.cli", "umaf.__main__"}


def module_files() -> dict[str, Path]:
    """``{dotted module name: file}`` of every module of the ``umaf`` package."""
    out = {}
    for path in sorted((SRC / "umaf").rglob("*.py")):
        parts = list(path.relative_to(SRC).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        out[".".join(parts)] = path
    return out


def _is_type_checking(node: ast.If) -> bool:
    test = node.test
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _module_level(body: list[ast.stmt]) -> Iterator[ast.Import | ast.ImportFrom]:
    """Import statements that run when the module is imported."""
    for node in body:
        if isinstance(node, ast.Import | ast.ImportFrom):
            yield node
        elif isinstance(node, ast.If) and not _is_type_checking(node):
            yield from _module_level(node.body + node.orelse)
        elif isinstance(node, ast.Try):
            handlers = [s for h in node.handlers for s in h.body]
            yield from _module_level(node.body + handlers + node.orelse + node.finalbody)
        elif isinstance(node, ast.ClassDef | ast.With):
            yield from _module_level(node.body)


def _targets(node: ast.Import | ast.ImportFrom, module: str, is_package: bool, known: set[str]) -> set[str]:
    """The ``umaf`` modules one import statement runs."""
    if isinstance(node, ast.Import):
        names = {alias.name for alias in node.names}
    else:
        base = node.module or ""
        if node.level:  # relative: resolve against this module's package
            package = module.split(".") if is_package else module.split(".")[:-1]
            package = package[: len(package) - node.level + 1]
            base = ".".join(package + ([base] if base else []))
        names = {base} | {f"{base}.{alias.name}" for alias in node.names}
    return {name for name in names if name in known}


def import_graph(everywhere: bool = False) -> dict[str, set[str]]:
    """``{module: umaf modules it imports}``; module level only unless ``everywhere``."""
    files = module_files()
    known = set(files)
    graph = {}
    for module, path in files.items():
        tree = ast.parse(path.read_text(encoding="utf-8"))
        is_package = path.name == "__init__.py"
        nodes = (
            (n for n in ast.walk(tree) if isinstance(n, ast.Import | ast.ImportFrom))
            if everywhere
            else _module_level(tree.body)
        )
        graph[module] = {t for n in nodes for t in _targets(n, module, is_package, known)} - {module}
    return graph


def find_cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components with more than one module (Tarjan), each sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    cycles: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for succ in sorted(graph.get(node, ())):
            if succ not in index:
                visit(succ)
                low[node] = min(low[node], low[succ])
            elif succ in on_stack:
                low[node] = min(low[node], index[succ])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                cycles.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return cycles


def test_the_graph_sees_known_imports() -> None:
    graph = import_graph()
    assert "umaf.capabilities" in graph and "umaf.config" in graph["umaf.capabilities.core"]
    assert "umaf.report.build" in graph["umaf.report"]


def test_cycle_finder_finds_a_cycle() -> None:
    assert find_cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


def test_no_module_level_import_cycle() -> None:
    assert find_cycles(import_graph()) == []


def test_only_the_cli_imports_the_cli() -> None:
    importers = sorted(m for m, deps in import_graph(everywhere=True).items() if "umaf.cli" in deps)
    assert set(importers) <= CLI_MODULES, f"modules below the CLI import umaf.cli: {importers}"

"""The library's import graph: no import circle inside ebmssl/, and ebmssl never imports the research
(experiments/) or developer benchmark (benchmarks/) folders, nor the command-line tools.

Every ``import`` counts, at module level or inside a function: a function-level import that closes a
circle still ties the two modules together (the circle between training/build.py and training/validate.py
was one). Importing ``a.b.c`` is an edge to ``a.b.c`` only (its parent packages are not counted: a
package's ``__init__`` importing its own modules is not a circle).
"""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "ebmssl"
OUTSIDE = ("experiments", "benchmarks", "tools", "tests")


def module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {module_name(path): path for path in PACKAGE.rglob("*.py")}


def imported(path: Path) -> set[str]:
    """Every module name ``path`` imports (absolute and relative), resolved to modules where they exist."""
    name = module_name(path)
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.rsplit(".", node.level - 1)[0] if node.level > 1 else package
                base = f"{anchor}.{base}" if base else anchor
            # `from pkg import module` needs the module (pkg itself is its parent: not counted)
            modules = {f"{base}.{alias.name}" for alias in node.names if f"{base}.{alias.name}" in MODULES}
            found.update(modules)
            if len(modules) < len(node.names):
                found.add(base)
    return found


GRAPH = {name: {m for m in imported(path) if m in MODULES and m != name} for name, path in MODULES.items()}


def circles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components with more than one module (Tarjan), each sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for nxt in sorted(graph[node]):
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in on_stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return found


def test_the_cycle_finder_finds_a_circle() -> None:
    assert circles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert circles({"a": {"b"}, "b": set()}) == []


def test_no_import_circle_inside_ebmssl() -> None:
    assert len(GRAPH) > 50  # the walk saw the package
    assert circles(GRAPH) == []


def test_ebmssl_never_imports_experiments_benchmarks_or_tools() -> None:
    offenders = {
        name: sorted(m for m in imported(path) if m.split(".")[0] in OUTSIDE)
        for name, path in MODULES.items()
    }
    assert {name: mods for name, mods in offenders.items() if mods} == {}

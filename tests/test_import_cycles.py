"""No import circles among the project's packages (issue #22 item 4).

Read from the source with `ast`, not by importing: every `import` counts wherever it
is, at module level, inside a function (a deferred import hides a circle from Python,
not from the design) and under `if TYPE_CHECKING:` (two modules that each need the
other to be understood are one module in two files). Each circle found is reported
with the import lines that close it.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]

#: Circles known and left for now, each with why; the test fails once one is gone, so
#: the entry goes with it. None is left.
KNOWN: frozenset[frozenset[str]] = frozenset()


def _packages(root: Path) -> list[str]:
    """The repository's top-level packages (a directory with an `__init__.py`)."""
    return sorted(path.parent.name for path in root.glob("*/__init__.py"))


def _modules(root: Path, packages: list[str]) -> dict[str, Path]:
    found = {}
    for package in packages:
        for path in (root / package).rglob("*.py"):
            parts = path.relative_to(root).with_suffix("").parts
            found[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return found


def _imported(module: str, path: Path, tree: ast.AST) -> Iterator[tuple[str, int]]:
    """(dotted name, line) of every import in `tree`; `from a import b` gives `a.b`
    (a submodule, or a name of `a`, which `_resolve` tells apart)."""
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            yield from ((alias.name, node.lineno) for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")
                anchor = anchor[:len(anchor) - node.level + 1]
                base = ".".join([*anchor, base] if base else anchor)
            yield from ((f"{base}.{alias.name}", node.lineno) for alias in node.names)


def _resolve(name: str, modules: dict[str, Path]) -> str | None:
    """The project module `name` runs: itself, or its longest prefix that is one."""
    while name and name not in modules:
        name = name.rpartition(".")[0]
    return name or None


def import_graph(root: Path) -> dict[str, dict[str, int]]:
    """module → {project module it imports: the first line that does}."""
    modules = _modules(root, _packages(root))
    graph: dict[str, dict[str, int]] = {module: {} for module in modules}
    for module, path in modules.items():
        for name, line in _imported(module, path, ast.parse(path.read_text(), str(path))):
            target = _resolve(name, modules)
            if target is not None and target != module:
                graph[module].setdefault(target, line)
    return graph


def cycles(graph: dict[str, dict[str, int]]) -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan), sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for target in graph[node]:
            if target not in index:
                visit(target)
                low[node] = min(low[node], low[target])
            elif target in on_stack:
                low[node] = min(low[node], index[target])
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
    return sorted(found)


def _described(component: list[str], graph: dict[str, dict[str, int]]) -> str:
    members = set(component)
    return "\n".join(f"  {module} imports {target} (line {line})"
                     for module in component for target, line in sorted(graph[module].items()) if target in members)


def test_no_import_cycles_among_the_projects_packages() -> None:
    graph = import_graph(REPO)
    assert {"proxy.admin.usage_api", "proxy.app", "proxy.cli", "proxy.workers", "adapters.anthropic"} <= set(graph)
    found = cycles(graph)
    new = [component for component in found if frozenset(component) not in KNOWN]
    assert not new, "import circles:\n" + "\n\n".join(_described(component, graph) for component in new)
    gone = KNOWN - {frozenset(component) for component in found}
    assert not gone, f"no longer circles, drop them from KNOWN: {sorted(sorted(entry) for entry in gone)}"


def test_a_circle_through_a_function_or_type_checking_import_is_found(tmp_path: Path) -> None:
    """The finder itself: circles closed by a deferred import, a type-only import and a
    relative import are found, an import of a third-party module or a package's own
    `__init__` name is not one."""
    files = {
        "pkg/__init__.py": "",
        "pkg/a.py": "import json\nfrom pkg.b import thing\n",
        "pkg/b.py": "def f():\n    from pkg import a\n",
        "pkg/c.py": "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from .d import D\n",
        "pkg/d.py": "from . import c\n",
        "pkg/e.py": "import pkg.a\n",
        "other/__init__.py": "",
        "other/x.py": "from pkg import e\n",
    }
    for name, text in files.items():
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text(text)
    graph = import_graph(tmp_path)
    assert graph["pkg.b"] == {"pkg.a": 2} and graph["pkg.c"] == {"pkg.d": 3}
    assert cycles(graph) == [["pkg.a", "pkg.b"], ["pkg.c", "pkg.d"]]

"""posemb's modules import one another in one direction: no circle, read from the code's own imports (`ast`), lazy
imports inside functions and `TYPE_CHECKING` imports included (a circle there is a circle in the design, even if
Python never trips on it).

An edge is what a module names: `from . import backend` is an edge to `posemb_cli.backend`; `from .models import load`
to `posemb_cli.models` (the package whose `__init__` gives `load`); `from .. import __version__` to the package
itself. A submodule's parent packages, which Python imports first, are not edges of their own: every submodule would
depend on its package's `__init__`, which imports its submodules."""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "posemb_cli"


def modules(root: Path) -> dict[str, Path]:
    """Dotted module name -> file, for every .py file under the package folder `root`."""
    found = {}
    for path in sorted(root.rglob("*.py")):
        parts = (root.name, *path.relative_to(root).with_suffix("").parts)
        found[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return found


def imports(root: Path) -> dict[str, set[str]]:
    """Module -> the package's modules it imports."""
    known = modules(root)
    graph: dict[str, set[str]] = {}
    for name, path in known.items():
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        edges: set[str] = set()
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Import):
                edges.update(alias.name for alias in node.names if alias.name in known)
            elif isinstance(node, ast.ImportFrom):
                if node.level:
                    base = package.split(".")[: len(package.split(".")) - node.level + 1]
                    source = ".".join(base + ([node.module] if node.module else []))
                else:
                    source = node.module or ""
                for alias in node.names:
                    target = f"{source}.{alias.name}"
                    edges.add(target if target in known else source)
        graph[name] = {edge for edge in edges if edge in known and edge != name}
    return graph


def circles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Every circle of the graph, as one path round it (a → b → … → a), one per strongly connected group."""
    order: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    found: list[list[str]] = []

    def visit(node: str) -> None:  # Tarjan's strongly connected components
        order[node] = low[node] = len(order)
        stack.append(node)
        for other in sorted(graph[node]):
            if other not in order:
                visit(other)
                low[node] = min(low[node], low[other])
            elif other in stack:
                low[node] = min(low[node], order[other])
        if low[node] == order[node]:
            group = []
            while True:
                member = stack.pop()
                group.append(member)
                if member == node:
                    break
            if len(group) > 1:
                found.append(_path_round(graph, set(group)))

    for node in sorted(graph):
        if node not in order:
            visit(node)
    return found


def _path_round(graph: dict[str, set[str]], group: set[str]) -> list[str]:
    """A shortest path from the group's first member back to itself, inside the group (breadth first)."""
    start = min(group)
    paths = {start: [start]}
    queue = [start]
    while queue:
        node = queue.pop(0)
        for other in sorted(graph[node] & group):
            if other == start:
                return [*paths[node], start]
            if other not in paths:
                paths[other] = [*paths[node], other]
                queue.append(other)
    raise AssertionError("a strongly connected group has a path round it")


def test_posemb_has_no_import_circle():
    found = circles(imports(PACKAGE))
    assert not found, "import circles: " + "; ".join(" -> ".join(circle) for circle in found)


def test_the_walk_sees_the_package_and_its_lazy_imports():
    graph = imports(PACKAGE)
    assert "posemb_cli.cli" in graph and "posemb_cli.server.lifecycle" in graph
    assert "posemb_cli.core" in graph["posemb_cli"]  # __init__'s lazy `from .core import inspect_text`
    assert "posemb_cli.runner" in graph["posemb_cli.core"]
    assert not any(edge.startswith("posemb_cli.cli") for edge in graph["posemb_cli.server.lifecycle"])


def _package(root: Path, files: dict[str, str]) -> Path:
    for name, text in files.items():
        path = root / "pkg" / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
    return root / "pkg"


def test_a_circle_is_found_and_named(tmp_path):
    """The check can fail: a circle through a lazy import, a TYPE_CHECKING import and a package's `__init__`."""
    package = _package(
        tmp_path,
        {
            "__init__.py": "",
            "a.py": "from .b import thing\n",
            "b.py": "def thing():\n    from .sub import c\n",
            "sub/__init__.py": "",
            "sub/c.py": "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from .. import a\n",
            "d.py": "from . import a\n",  # into the circle, not part of it
        },
    )
    assert circles(imports(package)) == [["pkg.a", "pkg.b", "pkg.sub.c", "pkg.a"]]


def test_importing_a_submodule_is_not_a_circle_with_its_package(tmp_path):
    """`from . import options` inside a package whose `__init__` imports that module is one direction."""
    package = _package(
        tmp_path,
        {"__init__.py": "from .cmd import run\n", "cmd.py": "from . import options\n", "options.py": "X = 1\n"},
    )
    assert circles(imports(package)) == []
    assert imports(package)["pkg.cmd"] == {"pkg.options"}

"""The package's import graph has no circles, lazy imports inside functions included,
and no module imports from a floor above its own (ARCHITECTURE.md).

A circle hidden behind a function-level import still couples two modules both ways
(``remote/backend.py`` ↔ ``remote/ndif.py`` once did). Imports under ``TYPE_CHECKING``
are annotations only and do not count.
"""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "remote_steer"


def _modules() -> dict[str, Path]:
    out = {}
    for path in PACKAGE.rglob("*.py"):
        parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        out[name] = path
    return out


def _imports(path: Path, modules: dict[str, Path]) -> set[str]:
    found: set[str] = set()

    class Visitor(ast.NodeVisitor):
        def visit_If(self, node: ast.If) -> None:
            test = node.test
            if getattr(test, "id", None) == "TYPE_CHECKING" or getattr(test, "attr", None) == "TYPE_CHECKING":
                for child in node.orelse:
                    self.visit(child)
                return
            self.generic_visit(node)

        def visit_Import(self, node: ast.Import) -> None:
            found.update(alias.name for alias in node.names)

        def visit_ImportFrom(self, node: ast.ImportFrom) -> None:
            if node.level == 0 and node.module:
                for alias in node.names:
                    full = f"{node.module}.{alias.name}"
                    found.add(full if full in modules else node.module)

    Visitor().visit(ast.parse(path.read_text()))
    return {name for name in found if name in modules}


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    out: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in graph[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                out.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return out


def test_no_import_circles():
    modules = _modules()
    graph = {name: _imports(path, modules) - {name} for name, path in modules.items()}
    # a package's __init__ may import its submodules; a submodule importing its own
    # package's __init__ back is the only edge pair that is not a design circle
    for name in graph:
        graph[name] = {dep for dep in graph[name] if not (name.startswith(dep + ".") and dep in modules)}
    assert _cycles(graph) == []


def test_the_check_finds_a_circle():
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


# The floors of ARCHITECTURE.md, bottom to top. A module may import from its own floor
# and the floors below it, never from a floor above (TYPE_CHECKING imports excepted).
FLOORS: tuple[tuple[str, ...], ...] = (
    # ground: the run directory, error types, the display protocol
    ("remote_steer.rundir", "remote_steer.errors", "remote_steer.display"),
    ("remote_steer.data", "remote_steer.models", "remote_steer.vectors"),  # data and models
    ("remote_steer.analysis", "remote_steer.remote"),  # statistics; remote transport
    ("remote_steer.engines",),  # traced stages: extraction, sweep, generation
    ("remote_steer.run", "remote_steer.bench"),  # the run: spec, plan, stages, resume
    ("remote_steer.report",),  # tables, figures and the markdown from a run's results
    ("remote_steer.api", "remote_steer.chat", "remote_steer.export", "remote_steer"),  # Python API
    ("remote_steer.cli",),  # the command line
)


def floor_of(module: str) -> int:
    """The floor of the longest prefix of ``module`` named in FLOORS (the package itself,
    ``remote_steer``, names only its ``__init__``: a new top-level module needs a floor)."""
    best, floor = -1, -1
    for level, prefixes in enumerate(FLOORS):
        for prefix in prefixes:
            below = "." in prefix and module.startswith(prefix + ".")
            if (module == prefix or below) and len(prefix) > best:
                best, floor = len(prefix), level
    return floor


def upward_imports(graph: dict[str, set[str]]) -> list[str]:
    return sorted(
        f"{name} (floor {floor_of(name)}) imports {dep} (floor {floor_of(dep)})"
        for name, deps in graph.items()
        for dep in deps
        if floor_of(dep) > floor_of(name)
    )


def test_every_module_has_a_floor():
    assert [name for name in _modules() if floor_of(name) < 0] == []


def test_no_module_imports_from_a_floor_above_its_own():
    modules = _modules()
    graph = {name: _imports(path, modules) - {name} for name, path in modules.items()}
    assert upward_imports(graph) == []


def test_the_check_finds_an_upward_import():
    graph = {"remote_steer.engines.sweep_plain": {"remote_steer.run.runner"}, "remote_steer.cli": {"remote_steer.api"}}
    assert upward_imports(graph) == [
        "remote_steer.engines.sweep_plain (floor 3) imports remote_steer.run.runner (floor 4)"
    ]

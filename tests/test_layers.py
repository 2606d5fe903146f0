"""The layering rules of docs/ARCHITECTURE.md, checked on the source: which modules may import
what, and no import cycle between modules or between the layers.

Imports are read from the syntax tree (every `import`, also inside functions and under
TYPE_CHECKING), so a rule broken by a lazy import is caught too.
"""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("iris", "overlay", "simulations")

# Modules that must stay sans-IO: they take time and input from their driver.
SANS_IO_PREFIXES = ("overlay", "iris.core", "iris.relay.protocol", "iris.relay.session",
                    "iris.relay.commands")
IO_MODULES = {"trio", "socket", "time", "asyncio", "selectors", "threading", "select"}

# The layers, bottom to top; a layer may import only layers below it (and itself).
LAYERS = {
    "overlay": 0,
    "iris.errors": 0,
    "iris.core": 1,
    "simulations": 2,
    "iris.runtime": 2,
    "iris.relay": 3,
    "iris.handlers": 3,  # the handler protocols (they name the runtime's Tunnel)
    "iris": 4,  # the package's public face (iris/__init__.py) and iris.testing
    "iris.aio": 4,  # the same API for asyncio programs (the trio node as the loop's guest)
    "iris.sync": 4,  # the same API for blocking code (the trio node in a thread)
    "iris.metrics": 4,  # the Prometheus endpoint of a node and its relay
    "iris.chaos": 5,  # `iris chaos`: node processes, their workload agents, the report
    "iris.cli": 6,  # the CLI (iris.cli, and iris.__main__ for `python -m iris`) and the demo
}


def _modules() -> dict[str, Path]:
    found = {}
    for package in PACKAGES:
        for path in (ROOT / package).rglob("*.py"):
            parts = path.relative_to(ROOT).with_suffix("").parts
            if parts[-1] == "__init__":
                parts = parts[:-1]
            found[".".join(parts)] = path
    return found


MODULES = _modules()


def _resolve(name: str) -> str | None:
    """The project module an imported name lives in (the longest known prefix), or None."""
    parts = name.split(".")
    while parts:
        candidate = ".".join(parts)
        if candidate in MODULES:
            return candidate
        parts.pop()
    return None


def _imports(module: str) -> tuple[set[str], set[str]]:
    """(project modules imported, top-level names of every import) of one module."""
    tree = ast.parse(MODULES[module].read_text())
    project: set[str] = set()
    top: set[str] = set()
    for node in ast.walk(tree):
        names: list[str] = []
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            # `from p import x`: x is a module of p, or a name defined in p itself.
            names = [f"{node.module}.{alias.name}" for alias in node.names]
            top.add(node.module.split(".")[0])
        for name in names:
            top.add(name.split(".")[0])
            target = _resolve(name)
            if target is not None and target != module:
                project.add(target)
    return project, top


GRAPH = {module: _imports(module)[0] for module in MODULES}


def _layer(module: str) -> str:
    if module in ("iris.cli", "iris.demo", "iris.__main__"):
        return "iris.cli"
    if module in ("iris", "iris.testing"):
        return "iris"
    for layer in sorted(LAYERS, key=len, reverse=True):
        if layer != "iris" and (module == layer or module.startswith(layer + ".")):
            return layer
    raise AssertionError(f"{module} belongs to no layer: add it to LAYERS")


def test_every_module_belongs_to_a_layer():
    for module in MODULES:
        _layer(module)


def test_sans_io_modules_import_no_io():
    for module in MODULES:
        if module.startswith(SANS_IO_PREFIXES):
            io = _imports(module)[1] & IO_MODULES
            assert not io, f"{module} imports {sorted(io)}: it must stay sans-IO"


def test_imports_point_down_the_layers():
    for module, targets in GRAPH.items():
        here = _layer(module)
        for target in targets:
            there = _layer(target)
            assert there == here or LAYERS[there] < LAYERS[here], (
                f"{module} ({here}) imports {target} ({there}), a layer not below it")


def test_the_runtime_does_not_import_the_relay_and_the_core_knows_no_driver():
    for module, targets in GRAPH.items():
        if _layer(module) == "iris.runtime":
            assert not any(_layer(t) == "iris.relay" for t in targets), module
        if _layer(module) in ("overlay", "iris.core"):
            assert all(_layer(t) in ("overlay", "iris.core", "iris.errors") for t in targets), (
                module, targets)


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components with more than one member (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in graph.get(v, ()):
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
                found.append(sorted(component))

    for v in graph:
        if v not in index:
            visit(v)
    return found


def test_no_import_cycle_between_modules():
    assert _cycles(GRAPH) == []


def test_no_import_cycle_between_layers():
    layers: dict[str, set[str]] = {}
    for module, targets in GRAPH.items():
        layers.setdefault(_layer(module), set()).update(
            _layer(t) for t in targets if _layer(t) != _layer(module))
    assert _cycles(layers) == []


def test_the_cycle_finder_finds_a_cycle():
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]

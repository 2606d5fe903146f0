"""The simulator's modules import each other in one direction only (no cycle, not even one
hidden under TYPE_CHECKING or inside a function)."""

import ast
from pathlib import Path

import simulations

PACKAGE = Path(simulations.__file__).parent


def imports_of(path):
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module:
            if node.module == "simulations":
                found.update(f"simulations.{a.name}" for a in node.names)
            elif node.module.startswith("simulations."):
                found.add(node.module)
        elif isinstance(node, ast.Import):
            found.update(a.name for a in node.names if a.name.startswith("simulations."))
    return found


def test_no_import_cycle_among_simulation_modules():
    graph = {f"simulations.{p.stem}": imports_of(p) for p in PACKAGE.glob("*.py")}
    done, on_path = set(), []

    def visit(module):
        on_path.append(module)
        for dep in graph.get(module, ()):
            assert dep not in on_path, " -> ".join(on_path[on_path.index(dep):] + [dep])
            if dep not in done:
                visit(dep)
        on_path.pop()
        done.add(module)

    for module in graph:
        if module not in done:
            visit(module)

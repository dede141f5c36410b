"""The house rules, checked on the source: imports go one way and sit at the
top, functions stay short, parameters are declared once."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PKG = Path(__file__).resolve().parents[1] / "daskmeans"
#: Drawing code may run long: a figure is one long recipe.
LONG_OK = {"report/figures.py"}


def _modules():
    for path in sorted(PKG.rglob("*.py")):
        rel = path.relative_to(PKG.parent).with_suffix("")
        name = ".".join(rel.parts).removesuffix(".__init__")
        yield name, path, ast.parse(path.read_text())


def _targets(name, path, node):
    """Package modules an import statement names (absolute names)."""
    pkg = name if path.name == "__init__.py" else name.rsplit(".", 1)[0]
    if isinstance(node, ast.ImportFrom):
        if node.level:
            base = pkg.split(".")[: len(pkg.split(".")) - (node.level - 1)]
            if node.module:
                return [".".join(base + [node.module])]
            return [".".join(base + [a.name]) for a in node.names]
        return [node.module] if node.module and node.module.split(".")[0] == "daskmeans" else []
    return [a.name for a in node.names if a.name.split(".")[0] == "daskmeans"]


def test_no_function_over_80_lines():
    long = []
    for _, path, tree in _modules():
        if str(path.relative_to(PKG)) in LONG_OK:
            continue
        for node in ast.walk(tree):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and node.end_lineno - node.lineno >= 80:
                long.append(f"{path.relative_to(PKG)}:{node.lineno} {node.name} ({node.end_lineno - node.lineno + 1})")
    assert not long, long


def test_imports_inside_functions_state_their_reason():
    """A function may import only with a comment on the line saying why (an optional
    dependency, or a module that builds on this one)."""
    bad = []
    for _, path, tree in _modules():
        lines = path.read_text().splitlines()
        for fn in ast.walk(tree):
            if not isinstance(fn, (ast.FunctionDef, ast.AsyncFunctionDef)):
                continue
            for node in ast.walk(fn):
                if isinstance(node, (ast.Import, ast.ImportFrom)) and "#" not in lines[node.lineno - 1]:
                    bad.append(f"{path.relative_to(PKG)}:{node.lineno} {lines[node.lineno - 1].strip()}")
    assert not bad, bad


def test_no_import_cycle_between_modules():
    mods = {name: (path, tree) for name, path, tree in _modules()}

    def known(target):
        while target and target not in mods:
            target = target.rsplit(".", 1)[0] if "." in target else ""
        return target

    graph = {}
    for name, (path, tree) in mods.items():
        deps = set()
        for node in tree.body:  # top-level imports only: the dependency graph
            if isinstance(node, (ast.Import, ast.ImportFrom)):
                deps |= {known(t) for t in _targets(name, path, node)}
        # a package's __init__ re-exporting its own submodules is not a cycle
        graph[name] = {d for d in deps if d and d != name and not d.startswith(name + ".")}

    state = {}

    def visit(n, stack):
        state[n] = "open"
        for m in graph.get(n, ()):
            if state.get(m) == "open":
                pytest.fail("import cycle: " + " -> ".join(stack[stack.index(m):] + [m]))
            if m not in state:
                visit(m, stack + [m])
        state[n] = "done"

    for n in graph:
        if n not in state:
            visit(n, [n])

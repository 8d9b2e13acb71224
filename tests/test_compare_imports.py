"""The modules of ``derm_cloud.compare`` import each other one way (issue 9 item 8).

Lazy imports inside functions count: a circle closed by a function-level import still ties the modules
together (and breaks when import order changes). Only ``if TYPE_CHECKING:`` blocks are exempt.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

import derm_cloud.compare

PACKAGE = "derm_cloud.compare"
PACKAGE_DIR = Path(derm_cloud.compare.__file__).parent
MODULES = sorted(p.stem for p in PACKAGE_DIR.glob("*.py") if p.stem != "__init__")


def _is_type_checking(node: ast.If) -> bool:
    test = node.test
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _runtime_imports(module: str) -> set[str]:
    """The sibling modules ``module`` imports at run time (module level or inside functions)."""
    tree = ast.parse((PACKAGE_DIR / f"{module}.py").read_text(encoding="utf-8"))
    found: set[str] = set()

    def visit(node: ast.AST) -> None:
        if isinstance(node, ast.If) and _is_type_checking(node):
            for child in node.orelse:
                visit(child)
            return
        if isinstance(node, ast.ImportFrom) and node.module:
            if node.module == PACKAGE:
                found.update(a.name for a in node.names if a.name in MODULES)
            elif node.module.startswith(PACKAGE + "."):
                found.add(node.module.split(".")[2])
        elif isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.startswith(PACKAGE + "."):
                    found.add(alias.name.split(".")[2])
        for child in ast.iter_child_nodes(node):
            visit(child)

    visit(tree)
    found.discard(module)
    return found


def _find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    state: dict[str, int] = {}
    stack: list[str] = []

    def dfs(node: str) -> list[str] | None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                return [*stack[stack.index(nxt) :], nxt]
            if nxt not in state:
                cycle = dfs(nxt)
                if cycle:
                    return cycle
        stack.pop()
        state[node] = 2
        return None

    for module in graph:
        if module not in state:
            cycle = dfs(module)
            if cycle:
                return cycle
    return None


def test_compare_import_graph_has_no_cycle() -> None:
    graph = {m: _runtime_imports(m) for m in MODULES}
    assert graph["runner"] >= {"config", "analysis"}, "the graph parser lost the runner's imports"
    assert _find_cycle(graph) is None, f"import circle: {' -> '.join(_find_cycle(graph) or [])}"


def test_shared_module_is_a_leaf() -> None:
    assert _runtime_imports("shared") == set()


def test_cycle_finder_finds_a_cycle() -> None:
    assert _find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert _find_cycle({"a": {"b"}, "b": set()}) is None


@pytest.mark.parametrize("module", MODULES)
def test_each_module_imports_alone_in_a_fresh_interpreter(module: str) -> None:
    root = str(PACKAGE_DIR.parent.parent)
    code = f"import sys; sys.path.insert(0, {root!r}); import {PACKAGE}.{module}"
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]

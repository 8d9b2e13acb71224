"""The modules of ``derm_cloud.compare`` import each other one way (issue 9 item 8), stage by stage (issue 19).

Lazy imports inside functions count: a circle closed by a function-level import still ties the modules
together (and breaks when import order changes). Only ``if TYPE_CHECKING:`` blocks are exempt from the circle
check; the stage checks below count them too where they say so.

The three stages hand on typed values one way: the run stage (``run/``) hands `RunResults` to the analysis
(``analysis/``), which hands a `Summary` to the report (``report/``); ``pipeline`` chains them. So ``run``
imports neither of the others, ``analysis`` never imports ``report``, and ``analysis`` reads the run's rows only
through `RunResults`, never through the store or the executors.
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
#: Every module of the package by its dotted name below ``derm_cloud.compare`` (``run.store``, ``pipeline`` ...).
MODULES = sorted(
    ".".join(p.relative_to(PACKAGE_DIR).with_suffix("").parts)
    for p in PACKAGE_DIR.rglob("*.py")
    if p.name != "__init__.py"
)


def _is_type_checking(node: ast.If) -> bool:
    test = node.test
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _module_of(dotted: str) -> str | None:
    """The package module that an import of ``derm_cloud.compare.<dotted>`` loads (longest match)."""
    parts = dotted.split(".")
    while parts and ".".join(parts) not in MODULES:
        parts.pop()
    return ".".join(parts) or None


def _imports(module: str, *, type_checking: bool = False) -> set[str]:
    """The package modules ``module`` imports (module level or inside functions; with types when asked)."""
    tree = ast.parse((PACKAGE_DIR / (module.replace(".", "/") + ".py")).read_text(encoding="utf-8"))
    found: set[str] = set()

    def add(dotted: str) -> None:
        target = _module_of(dotted)
        if target is not None:
            found.add(target)

    def visit(node: ast.AST) -> None:
        if isinstance(node, ast.If) and _is_type_checking(node) and not type_checking:
            for child in node.orelse:
                visit(child)
            return
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith(PACKAGE):
            base = node.module[len(PACKAGE) + 1 :]
            for alias in node.names:
                add(f"{base}.{alias.name}" if base else alias.name)
        elif isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.startswith(PACKAGE + "."):
                    add(alias.name[len(PACKAGE) + 1 :])
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


def _stage(module: str) -> str:
    return module.split(".")[0]


def test_compare_import_graph_has_no_cycle_even_through_type_imports() -> None:
    graph = {m: _imports(m, type_checking=True) for m in MODULES}
    assert graph["pipeline"] >= {"run.execute", "analysis.analyse", "report.write"}, "the parser lost imports"
    assert _find_cycle(graph) is None, f"import circle: {' -> '.join(_find_cycle(graph) or [])}"


def test_stages_import_one_way_run_then_analysis_then_report() -> None:
    backwards = []
    for module in MODULES:
        for target in _imports(module, type_checking=True):
            if (_stage(module), _stage(target)) in {("run", "analysis"), ("run", "report"), ("analysis", "report")}:
                backwards.append(f"{module} -> {target}")
    assert backwards == [], "a stage imports a later stage: " + ", ".join(backwards)


def test_analysis_reads_the_run_only_through_run_results() -> None:
    # At run time the analysis may use the run stage's plain values (config, constants); the store, the
    # executors and the backends are for the run stage alone (their types may be named for the type checker).
    forbidden = {"run.store", "run.store_repair", "run.execute", "run.local_executor", "run.ray_executor"}
    forbidden |= {"run.backends", "run.emulation", "run.results", "run.prices", "run.facts"}
    found = [f"{m} -> {t}" for m in MODULES if _stage(m) == "analysis" for t in _imports(m) & forbidden]
    assert found == []


def test_analysis_modules_open_no_file_and_no_database() -> None:
    calls = ("open(", "read_text(", "read_bytes(", "write_text(", "sqlite3", "RunStore(", ".results(")
    found = [
        f"{m}: {c}"
        for m in MODULES
        if _stage(m) == "analysis"
        for c in calls
        if c in (PACKAGE_DIR / (m.replace(".", "/") + ".py")).read_text(encoding="utf-8")
    ]
    assert found == []


def test_the_checks_see_a_backwards_import(tmp_path: Path) -> None:
    assert _find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert _find_cycle({"a": {"b"}, "b": set()}) is None
    assert _module_of("run.store.RunStore") == "run.store" and _module_of("os.path") is None
    assert "run.results" in _imports("analysis.quality", type_checking=True)
    assert "run.results" not in _imports("analysis.quality")


@pytest.mark.parametrize("module", MODULES)
def test_each_module_imports_alone_in_a_fresh_interpreter(module: str) -> None:
    root = str(PACKAGE_DIR.parent.parent)
    code = f"import sys; sys.path.insert(0, {root!r}); import {PACKAGE}.{module}"
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]

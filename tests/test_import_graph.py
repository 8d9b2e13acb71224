"""The import graph of ``derm_cloud/``: no circles, no import from a lower layer up to a higher one, small modules.

Every ``import`` statement counts, wherever it stands: at module level, inside a function (a lazy import
still ties the two modules together, and a circle closed inside a function breaks as soon as the import
order changes) and under ``if TYPE_CHECKING:``. Type-checking imports count because a name imported for the
type checker is still knowledge of the other module: the annotation says this module's objects are that
module's types, mypy and the API docs resolve it, and ``typing.get_type_hints`` imports it at run time.
Exempting them would make ``if TYPE_CHECKING:`` the usual way to hide a circle.

Not counted: modules found by name at run time through ``importlib`` (the registry's backend strings, the
discovery of ``derm_cloud.commands``, the lazy names of ``derm_cloud`` and ``derm_cloud.compare``, whose
targets are also imported under ``TYPE_CHECKING`` and so are counted there). Importing ``a.b.c`` runs the
``__init__`` of ``a.b`` first, so that is an edge too (except from a module inside ``a.b``, whose ``__init__`` is
already running): a package's ``__init__`` that hands on names of its modules ties whoever imports any of them
to all of them.

The layers, from the top (a module may import its own layer and the layers below it, never one above):
see ``LAYERS``; ``docs/design.md`` draws the same list.
"""

from __future__ import annotations

import ast
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGE_DIR = ROOT / "derm_cloud"
MAX_LINES = 400

#: The layers from the top. A prefix names a module and everything under it; the longest prefix wins, so
#: ``derm_cloud.router.config`` sits with the applications although the rest of the router is a service.
LAYERS: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("command line", ("derm_cloud.cli",)),
    ("commands", ("derm_cloud.commands",)),
    # What a user runs: each builds on backends, models and data; the demo shows comparator figures and
    # referral decisions, the comparator builds validation sets, so these may import each other (one way).
    # router.config builds a router from the comparator's config file, so it stands here with the comparator.
    (
        "applications",
        (
            "derm_cloud.demo",
            "derm_cloud.batch",
            "derm_cloud.compare",
            "derm_cloud.governance",
            "derm_cloud.deploy",
            "derm_cloud.probe",
            "derm_cloud.router.config",
        ),
    ),
    # derm_cloud/__init__.py alone (the longest-prefix rule keeps the other modules on their own layers).
    ("public names", ("derm_cloud",)),
    # Classifiers over classifiers, model servers and the emulators that host models through them.
    (
        "services",
        (
            "derm_cloud.router",
            "derm_cloud.serving",
            "derm_cloud.serving_asgi",
            "derm_cloud.serving_decode",
            "derm_cloud.serving_http",
            "derm_cloud.serving_errors",
            "derm_cloud.serving_formats",
            "derm_cloud.serving_limits",
            "derm_cloud.serving_loop",
            "derm_cloud.testing",
        ),
    ),
    # One backend per provider, the model toolbox (specs, cache, preprocessing, conversion), dataset loaders.
    (
        "providers",
        (
            "derm_cloud.backends",
            "derm_cloud.embedders",
            "derm_cloud.models",
            "derm_cloud.preprocess",
            "derm_cloud.data",
            "derm_cloud.registry",
        ),
    ),
    # The two interfaces: Classifier, and Embedder beside it (embedders' backends and registry are providers).
    ("base", ("derm_cloud.base", "derm_cloud.embedders.base")),
    # What the Classifier base class stands on: image input, payloads, retries, telemetry, option parsing.
    (
        "core",
        (
            "derm_cloud.images",
            "derm_cloud.image_bytes",
            "derm_cloud.image_convert",
            "derm_cloud.image_limits",
            "derm_cloud.image_metadata",
            "derm_cloud.jpeg_damage",
            "derm_cloud.lifecycle",
            "derm_cloud.payload",
            "derm_cloud.retry",
            "derm_cloud.call_threads",
            "derm_cloud.observability",
            "derm_cloud.options",
            "derm_cloud.progress",
        ),
    ),
    # Redaction stands with the errors: every error text is redacted where it is made (errors.py imports it).
    ("vocabulary", ("derm_cloud.types", "derm_cloud.taxonomy", "derm_cloud.errors", "derm_cloud.redaction")),
)


@dataclass(frozen=True)
class Edge:
    """``source`` imports ``target`` at ``line`` of ``path`` (``how``: module level, in a function, for types)."""

    source: str
    target: str
    path: str
    line: int
    how: str

    def __str__(self) -> str:
        return f"{self.source} -> {self.target} ({self.path}:{self.line}, {self.how})"


def module_names(package_dir: Path) -> dict[str, Path]:
    """Dotted module name -> file, for every ``.py`` under ``package_dir`` (a package is its ``__init__``)."""
    out = {}
    for path in sorted(package_dir.rglob("*.py")):
        parts = list(path.relative_to(package_dir.parent).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        out[".".join(parts)] = path
    return out


def _is_type_checking(node: ast.If) -> bool:
    test = node.test
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _nearest_module(name: str, modules: dict[str, Path]) -> str | None:
    """``name`` itself when it is a module, else its longest prefix that is one (``None`` outside the tree)."""
    parts = name.split(".")
    while parts and ".".join(parts) not in modules:
        parts.pop()
    return ".".join(parts) or None


def imports_of(name: str, path: Path, modules: dict[str, Path], root: Path) -> list[Edge]:
    """Every import of a module of the tree that ``name`` (the module in ``path``) makes, wherever it stands."""
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    is_package = path.name == "__init__.py"
    top = next(iter(modules)).split(".")[0]
    edges: list[Edge] = []

    def targets(node: ast.Import | ast.ImportFrom) -> list[str]:
        if isinstance(node, ast.Import):
            return [t for a in node.names if (t := _nearest_module(a.name, modules))]
        if node.level:  # relative: resolve against this module's package
            package = name.split(".") if is_package else name.split(".")[:-1]
            base = ".".join(package[: len(package) - (node.level - 1)] + ([node.module] if node.module else []))
        else:
            base = node.module or ""
        if base.split(".")[0] != top:
            return []
        found = []
        for alias in node.names:
            target = f"{base}.{alias.name}" if f"{base}.{alias.name}" in modules else _nearest_module(base, modules)
            if target:
                found.append(target)
        return found

    def with_packages(found: list[str]) -> dict[str, str]:
        # Importing a.b.c first runs the __init__ of a.b (and of a): an edge too, unless this module is inside
        # that package already (then its __init__ is running or has run).
        out: dict[str, str] = {}
        for target in found:
            out.setdefault(target, "")
            parts = target.split(".")
            for i in range(len(parts) - 1, 0, -1):
                package = ".".join(parts[:i])
                if package in modules and not (name == package or name.startswith(package + ".")):
                    out.setdefault(package, f", runs the __init__ of {package} on the way to {target}")
        return out

    def visit(node: ast.AST, how: str) -> None:
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            for target, via in with_packages(targets(node)).items():  # one edge per statement and module
                if target != name:
                    edges.append(Edge(name, target, str(path.relative_to(root)), node.lineno, how + via))
        for child in ast.iter_child_nodes(node):
            if isinstance(node, ast.If) and _is_type_checking(node) and child in node.body:
                visit(child, "for type checking")
            elif isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda)) and how == "module level":
                visit(child, "inside a function")
            else:
                visit(child, how)

    visit(tree, "module level")
    return edges


def import_graph(package_dir: Path) -> tuple[dict[str, Path], list[Edge]]:
    modules = module_names(package_dir)
    edges = [e for name, path in modules.items() for e in imports_of(name, path, modules, package_dir.parent)]
    return modules, edges


def circles(modules: dict[str, Path], edges: list[Edge]) -> list[list[Edge]]:
    """The edges of each strongly connected group of two modules or more (Tarjan), each group sorted."""
    graph: dict[str, set[str]] = {m: set() for m in modules}
    for e in edges:
        graph[e.source].add(e.target)
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    groups: list[set[str]] = []

    def connect(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph[v]):
            if w not in index:
                connect(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            group = set()
            while True:
                w = stack.pop()
                on_stack.discard(w)
                group.add(w)
                if w == v:
                    break
            if len(group) > 1:
                groups.append(group)

    for v in sorted(graph):
        if v not in index:
            connect(v)
    return [sorted((e for e in edges if e.source in g and e.target in g), key=str) for g in groups]


def layer_of(module: str, layers: tuple[tuple[str, tuple[str, ...]], ...] = LAYERS) -> int | None:
    """Index of the layer whose longest prefix names ``module`` (0 = top); ``None`` when no layer does."""
    best: tuple[int, int] | None = None
    for i, (_, prefixes) in enumerate(layers):
        for prefix in prefixes:
            covers = module == prefix or (module.startswith(prefix + ".") and "." in prefix)
            if covers and (best is None or len(prefix) > best[1]):
                best = (i, len(prefix))
    return None if best is None else best[0]


def upward(edges: list[Edge], layers: tuple[tuple[str, tuple[str, ...]], ...] = LAYERS) -> list[str]:
    out = []
    for e in edges:
        source, target = layer_of(e.source, layers), layer_of(e.target, layers)
        if source is not None and target is not None and target < source:
            out.append(f"{e}: layer '{layers[source][0]}' imports layer '{layers[target][0]}' above it")
    return sorted(out)


MODULES, EDGES = import_graph(PACKAGE_DIR)


def test_every_module_has_a_layer() -> None:
    missing = sorted(m for m in MODULES if layer_of(m) is None)
    assert not missing, f"modules on no layer (add them to LAYERS here and to docs/design.md): {missing}"


def test_no_import_circles() -> None:
    found = circles(MODULES, EDGES)
    report = "\n\n".join(
        f"circle of {len({e.source for e in c})} modules:\n  " + "\n  ".join(map(str, c)) for c in found
    )
    assert not found, f"{len(found)} import circle(s); break each by moving what both sides need below them:\n{report}"


def test_no_import_runs_up_a_layer() -> None:
    found = upward(EDGES)
    assert not found, f"{len(found)} import(s) run from a lower layer up to a higher one:\n" + "\n".join(found)


def test_no_module_over_400_lines() -> None:
    sizes = {p.relative_to(ROOT).as_posix(): len(p.read_text(encoding="utf-8").splitlines()) for p in MODULES.values()}
    big = sorted((n, f) for f, n in sizes.items() if n > MAX_LINES)
    assert not big, f"modules over {MAX_LINES} lines (split them by concern): " + ", ".join(
        f"{f} ({n})" for n, f in reversed(big)
    )


def test_the_graph_sees_every_kind_of_import(tmp_path: Path) -> None:
    """The checks above are only as good as the parser: a small package with each kind of import proves it."""
    pkg = tmp_path / "demo_pkg"
    (pkg / "sub").mkdir(parents=True)
    files = {
        "__init__.py": "from demo_pkg.low import VALUE\n",
        "low.py": "VALUE = 1\n\ndef later():\n    from demo_pkg import high  # lazy, and upward\n    return high\n",
        "high.py": "import demo_pkg.low\nfrom typing import TYPE_CHECKING\n"
        "if TYPE_CHECKING:\n    from .sub import leaf\n",
        "sub/__init__.py": "",
        "sub/leaf.py": "from .. import high\nimport os\n",
    }
    for name, text in files.items():
        (pkg / name).write_text(text, encoding="utf-8")
    modules, edges = import_graph(pkg)
    seen = {(e.source, e.target, e.how) for e in edges}
    assert seen == {
        ("demo_pkg", "demo_pkg.low", "module level"),
        ("demo_pkg.low", "demo_pkg.high", "inside a function"),
        ("demo_pkg.high", "demo_pkg.low", "module level"),
        ("demo_pkg.high", "demo_pkg.sub.leaf", "for type checking"),
        (
            "demo_pkg.high",
            "demo_pkg.sub",
            "for type checking, runs the __init__ of demo_pkg.sub on the way to demo_pkg.sub.leaf",
        ),
        ("demo_pkg.sub.leaf", "demo_pkg.high", "module level"),
    }
    groups = [{e.source for e in c} for c in circles(modules, edges)]
    assert groups == [{"demo_pkg.low", "demo_pkg.high", "demo_pkg.sub.leaf"}]
    layers = (("top", ("demo_pkg.high", "demo_pkg.sub")), ("bottom", ("demo_pkg.low",)))
    assert [u.split(" (")[0] for u in upward(edges, layers)] == ["demo_pkg.low -> demo_pkg.high"]


def test_a_package_init_ties_whoever_imports_one_of_its_modules(tmp_path: Path) -> None:
    """``tool`` never names ``leaf``; importing ``sub.other`` runs ``sub/__init__.py``, which imports ``leaf``."""
    pkg = tmp_path / "demo_pkg"
    (pkg / "sub").mkdir(parents=True)
    files = {
        "__init__.py": "",
        "tool.py": "def later():\n    from demo_pkg.sub.other import OTHER\n    return OTHER\n",
        "sub/__init__.py": "from demo_pkg.sub.leaf import LEAF\n",
        "sub/leaf.py": "from demo_pkg import tool\nLEAF = 1\n",
        "sub/other.py": "OTHER = 2\n",
    }
    for name, text in files.items():
        (pkg / name).write_text(text, encoding="utf-8")
    modules, edges = import_graph(pkg)
    assert [sorted({e.source for e in c}) for c in circles(modules, edges)] == [
        ["demo_pkg.sub", "demo_pkg.sub.leaf", "demo_pkg.tool"]
    ]


@pytest.mark.parametrize(
    ("module", "layer"),
    [
        ("derm_cloud", "public names"),
        ("derm_cloud.router.core", "services"),
        ("derm_cloud.router.config", "applications"),
        ("derm_cloud.serving_http", "services"),
        ("derm_cloud.errors", "vocabulary"),
    ],
)
def test_layers_use_the_longest_prefix(module: str, layer: str) -> None:
    index = layer_of(module)
    assert index is not None and LAYERS[index][0] == layer

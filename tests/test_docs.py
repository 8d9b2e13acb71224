"""The documentation: the MkDocs site builds with --strict, the README's links resolve, and nothing in the
repository points at files outside it."""

from __future__ import annotations

import ast
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]


def test_mkdocs_build_strict_passes(tmp_path: Path) -> None:
    site = tmp_path / "site"
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "mkdocs",
            "build",
            "--strict",
            "--config-file",
            str(ROOT / "mkdocs.yml"),
            "-d",
            str(site),
        ],
        capture_output=True,
        text=True,
        cwd=ROOT,
        env={**_env(), "NO_MKDOCS_2_WARNING": "1"},
        timeout=900,
    )
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-5000:]
    assert "WARNING" not in proc.stderr
    # The API reference was generated from the docstrings, not left empty.
    core = (site / "api" / "core" / "index.html").read_text()
    assert "derm_cloud.base.Classifier" in core
    assert "predict_batch" in core
    assert (site / "images" / "report.png").is_file()


def _env() -> dict[str, str]:
    import os

    return dict(os.environ)


def test_report_picture_is_small() -> None:
    picture = ROOT / "docs" / "images" / "report.png"
    assert picture.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert picture.stat().st_size < 300 * 1024


def test_readme_text_and_picture_come_from_the_same_run() -> None:
    # The picture once showed p50 876-1,124 ms (a loaded run) above text from another run showing 157 ms.
    # scripts/screenshot_report.py stamps the run id into the PNG; the README's console excerpt names its run.
    from PIL import Image

    with Image.open(ROOT / "docs" / "images" / "report.png") as picture:
        run_id = picture.text.get("derm-cloud run")  # type: ignore[attr-defined]
    assert run_id, "take the picture with scripts/screenshot_report.py, which records the run it shows"
    readme = (ROOT / "README.md").read_text()
    assert re.search(rf"^run {re.escape(run_id)}$", readme, re.MULTILINE), f"the README's excerpt is not run {run_id}"


def test_readme_links_point_at_files_in_the_repository() -> None:
    readme = (ROOT / "README.md").read_text()
    targets = re.findall(r"\]\(([^)#\s]+)(?:#[^)]*)?\)", readme)
    local = [t for t in targets if not re.match(r"[a-z]+://", t)]
    assert local, "the README links into docs/"
    missing = [t for t in local if not (ROOT / t).exists()]
    assert missing == []
    assert len(readme.splitlines()) < 200, "the README is a front page; details belong in docs/"


# A reference-note name without its docs/reference/ folder (a Markdown link, which mkdocs checks, is fine), or a
# path into ../shared other than the test data.
_OUTSIDE = re.compile(r"(?<![\w/\[(])(?:cloud-apis|local-models|dermatology)\.md|DESIGN\.md|shared/(?!data\b)\w")


def test_nothing_refers_to_files_outside_the_repository() -> None:
    offenders = []
    for folder in ("derm_cloud", "tests", "examples", "benchmarks", "infra", "scripts", "adapters", "docs"):
        for path in (ROOT / folder).rglob("*"):
            if path.suffix not in {".py", ".md", ".json", ".toml", ".sh", ".tf", ".txt", ".yml", ".yaml", ""}:
                continue
            if not path.is_file() or path == Path(__file__) or "__pycache__" in path.parts:
                continue
            for number, line in enumerate(path.read_text(errors="replace").splitlines(), 1):
                if _OUTSIDE.search(line):
                    offenders.append(f"{path.relative_to(ROOT)}:{number}: {line.strip()[:120]}")
    for name in ("README.md", "mkdocs.yml", "pyproject.toml"):
        text = (ROOT / name).read_text()
        offenders += [f"{name}: {m.group(0)}" for m in _OUTSIDE.finditer(text)]
    assert offenders == []


def test_reference_notes_cited_by_the_code_ship_in_docs() -> None:
    for name in ("cloud-apis.md", "local-models.md", "dermatology.md"):
        assert (ROOT / "docs" / "reference" / name).is_file()
    assert "## 11. Prices and cost formulas" in (ROOT / "docs" / "reference" / "cloud-apis.md").read_text()


# --- reST markup: docstrings are Google style with Markdown inside; a leftover fails the strict build ------------


def _markup_hook() -> Any:
    import importlib.util

    spec = importlib.util.spec_from_file_location("rest_markup_check", ROOT / "docs" / "rest_markup_check.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_markup_check_finds_each_kind_of_rest_leftover_and_nothing_in_markdown() -> None:
    find = _markup_hook().find_rest_markup
    planted = {
        "reST role": "<p>Returns a :class:<code>Prediction</code> per image.</p>",
        "py-domain role": "<p>See :py:func:<code>derm_cloud.create</code>.</p>",
        "literal marker": "<p>Use it like this::</p>\n<pre><code>clf.predict(x)</code></pre>",
        "double backticks": "<p>set ``retry`` to</p>",
        "directive": "<p>.. note:: read this</p>",
        "hyperlink": "<p>see <code>ISIC &lt;https://isic.org&gt;</code>_ for</p>",
    }
    for name, html in planted.items():
        found = find(html)
        assert len(found) == 1, (name, found)
    assert "Prediction" in find(planted["reST role"])[0]  # the message shows what to fix
    clean = (
        '<p>Returns a <a class="autorefs" href="#derm_cloud.types.Prediction"><code>Prediction</code></a>.</p>'
        "<p>Args: <code>image</code>: a path, e.g. <code>a:b</code>; ratio 3:1; see https://example.org/x.</p>"
        "<p>Markup shown on purpose stays legal: <code>:class:`X`</code> and <code>``x``</code>.</p>"
        "<pre><code>text::\n.. note::\n:func:`f`</code></pre>"
    )
    assert find(clean) == []


def _planted_site(folder: Path, docstring: str) -> subprocess.CompletedProcess[str]:
    """A one-page site rendering one module's docstring with this repository's hook, built with --strict."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "docs").mkdir(exist_ok=True)
    (folder / "docs" / "index.md").write_text("# Planted\n\n::: planted\n")
    (folder / "planted.py").write_text(f'"""Planted module."""\n\n\ndef classify() -> None:\n    """{docstring}"""\n')
    (folder / "mkdocs.yml").write_text(
        "site_name: planted\nstrict: true\ndocs_dir: docs\ntheme:\n  name: material\n"
        f"hooks:\n  - {ROOT / 'docs' / 'rest_markup_check.py'}\n"
        "plugins:\n  - mkdocstrings:\n      default_handler: python\n      handlers:\n        python:\n"
        "          paths: [.]\n          options:\n            docstring_style: google\n"
    )
    return subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "-f", str(folder / "mkdocs.yml"), "-d", "site"],
        capture_output=True,
        text=True,
        cwd=folder,
        env={**_env(), "NO_MKDOCS_2_WARNING": "1"},
        timeout=300,
    )


def test_strict_build_fails_on_a_planted_rest_role_and_passes_on_markdown(tmp_path: Path) -> None:
    planted = _planted_site(tmp_path / "rest", "Return a :class:`Prediction` per image.")
    assert planted.returncode != 0, planted.stderr[-3000:]
    assert "index.md: reST markup renders as text" in planted.stderr
    assert ":class:`Prediction`" in planted.stderr
    fixed = _planted_site(tmp_path / "markdown", "Return a `Prediction` per image.")
    assert fixed.returncode == 0, fixed.stderr[-3000:]
    assert "WARNING" not in fixed.stderr
    # The project's own build runs the same hook (test_mkdocs_build_strict_passes builds it).
    assert "- docs/rest_markup_check.py" in (ROOT / "mkdocs.yml").read_text()


_REST_IN_SOURCE = {
    "reST role": re.compile(r":(?:py:)?(?:class|func|meth|attr|data|mod|exc|obj|const|ref):`"),
    "double backticks": re.compile(r"``"),
    "literal-block marker": re.compile(r"(?<!:)::\s*$", re.MULTILINE),
}


def _docstrings(tree: ast.Module) -> Iterator[ast.Constant]:
    for node in ast.walk(tree):
        body = getattr(node, "body", None)
        if not isinstance(body, list):
            continue
        for i, stmt in enumerate(body):
            if not (isinstance(stmt, ast.Expr) and isinstance(stmt.value, ast.Constant)):
                continue
            if not isinstance(stmt.value.value, str):
                continue
            documents = isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef))
            if (i == 0 and documents) or (i > 0 and isinstance(body[i - 1], (ast.Assign, ast.AnnAssign))):
                yield stmt.value


def test_no_docstring_in_the_package_holds_rest_markup() -> None:
    # Also the docstrings the API reference does not render (private modules, helpers): one style everywhere.
    offenders = []
    for path in sorted((ROOT / "derm_cloud").rglob("*.py")):
        for node in _docstrings(ast.parse(path.read_text())):
            prose = re.sub(r"^\s*```.*?^\s*```", "", str(node.value), flags=re.MULTILINE | re.DOTALL)
            for kind, pattern in _REST_IN_SOURCE.items():
                if pattern.search(prose):
                    offenders.append(f"{path.relative_to(ROOT)}:{node.lineno}: {kind}")
    assert offenders == []

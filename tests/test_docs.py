"""The documentation: the MkDocs site builds with --strict, the README's links resolve, and nothing in the
repository points at files outside it."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

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

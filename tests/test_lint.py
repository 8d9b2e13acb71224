"""Static checks as part of the suite, so CI enforces them: ruff (lint + format) and mypy --strict."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _tool(name: str) -> str:
    # The tools come with the `dev` extra; look beside the interpreter first (the venv), then on PATH.
    candidate = Path(sys.executable).with_name(name)
    found = str(candidate) if candidate.exists() else shutil.which(name)
    assert found, f"{name} is not installed: pip install 'derm-cloud[dev]'"
    return found


def test_ruff_lint_and_format() -> None:
    lint = subprocess.run(
        [_tool("ruff"), "check", "--output-format", "concise", "."], cwd=ROOT, capture_output=True, text=True
    )
    assert lint.returncode == 0, lint.stdout[-4000:]
    fmt = subprocess.run([_tool("ruff"), "format", "--check", "."], cwd=ROOT, capture_output=True, text=True)
    assert fmt.returncode == 0, fmt.stdout[-4000:]


def test_mypy_strict_on_the_package() -> None:
    out = subprocess.run([_tool("mypy"), "--no-incremental", "derm_cloud"], cwd=ROOT, capture_output=True, text=True)
    assert out.returncode == 0, out.stdout[-4000:]

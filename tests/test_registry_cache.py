"""The backend registry scans installed entry points once per process, and can be told to rescan."""

from __future__ import annotations

import importlib.metadata
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

import derm_cloud.registry as registry


def test_entry_points_are_scanned_once_until_refreshed(monkeypatch: pytest.MonkeyPatch, tiny_model_dir: Path) -> None:
    scans: list[str] = []
    real = importlib.metadata.entry_points

    def counting(**kwargs: Any) -> Any:
        scans.append(kwargs.get("group", ""))
        return real(**kwargs)

    monkeypatch.setattr(importlib.metadata, "entry_points", counting)
    registry.refresh_backends()
    for _ in range(3):
        registry.create("local-onnx", model_dir=tiny_model_dir).close()
        registry.available_backends()
    assert scans == [registry.ENTRY_POINT_GROUP]
    registry.refresh_backends()
    registry.available_backends()
    assert len(scans) == 2


def test_register_backend_is_seen_without_a_refresh() -> None:
    registry.available_backends()  # the scan is cached now
    registry.register_backend("cached-probe", "derm_cloud.backends.local_onnx:LocalOnnxClassifier")
    try:
        assert "cached-probe" in [e.name for e in registry.available_backends()]
        assert registry.get_backend_class("cached-probe").__name__ == "LocalOnnxClassifier"
    finally:
        registry._EXTRA.pop("cached-probe")
    assert "cached-probe" not in [e.name for e in registry.available_backends()]


def test_available_backends_imports_no_backend() -> None:
    code = (
        "import sys, derm_cloud\nderm_cloud.available_backends()\n"
        "print(','.join(m for m in sys.modules if m.startswith('derm_cloud.backends.')))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=Path.cwd())
    assert out.stdout.strip() == ""

"""Helpers shared by test modules (importable as `tests_helpers` because pytest puts tests/ on sys.path).

Images come from ../shared/data (HAM10000, Tschandl et al. 2018, CC BY-NC 4.0) and are never copied here.
"""

from __future__ import annotations

import csv
import os
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DATA_DIR = Path(os.environ.get("DERM_CLOUD_DATA", ROOT.parent / "shared" / "data")).resolve()
DEV_CSV = DATA_DIR / "ham10000" / "dev.csv"


def dev_rows(limit: int | None = None) -> list[dict[str, str]]:
    """Rows of dev.csv (HAM10000, Tschandl et al. 2018, CC BY-NC 4.0), in file order."""
    with DEV_CSV.open(newline="") as fh:
        rows = list(csv.DictReader(fh))
    return rows[:limit] if limit else rows


def dev_image(row: dict[str, str]) -> Path:
    return DEV_CSV.parent / row["file"]


def dev_subset(n: int) -> tuple[list[dict[str, str]], Path]:
    """The first ``n`` rows of dev.csv and the manifest path."""
    return dev_rows(n), DEV_CSV

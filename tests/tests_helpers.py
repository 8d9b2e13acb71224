"""Small helpers shared by test modules (importable because pytest puts tests/ on sys.path)."""

from __future__ import annotations

import csv
from pathlib import Path

from conftest import DEV_CSV


def dev_subset(n: int) -> tuple[list[dict[str, str]], Path]:
    """The first ``n`` rows of dev.csv and the manifest path (images stay in ../shared/data)."""
    with DEV_CSV.open(newline="") as fh:
        rows = list(csv.DictReader(fh))[:n]
    return rows, DEV_CSV

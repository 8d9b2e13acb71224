"""A built validation set: the chosen images, the rest, how every stratum was covered, and its files."""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from derm_cloud.errors import ConfigError
from derm_cloud.governance._records import Table, pandas
from derm_cloud.governance.validation_set.stratify import CellCoverage
from derm_cloud.taxonomy import CLASS_CODES

__all__ = ["ValidationSet"]


@dataclass
class ValidationSet:
    """The chosen images, the rest of the data, and how the strata were covered.

    Attributes:
        selected: image ids of the validation set, in source order.
        rest: image ids of the remaining data (no lesion in common with `selected`).
        excluded: other images of chosen lesions left out by `images_per_lesion` (in neither split).
        seed, size_requested, strata, allocation: the parameters, for the report.
        cells: coverage of every cell, classes first.
        skin_tone_source: `"fitzpatrick"` (metadata), `"ita"` (estimated from images) or `"none"`.
        source: the dataset's name; `source_rows` how many rows it had.
        notes: facts worth reporting (duplicates dropped, size not reached exactly ...).
    """

    selected: tuple[str, ...]
    rest: tuple[str, ...]
    excluded: tuple[str, ...]
    seed: int
    size_requested: int
    strata: tuple[str, ...]
    allocation: str
    cells: tuple[CellCoverage, ...]
    skin_tone_source: str
    source: str
    source_rows: int
    notes: list[str] = field(default_factory=list)
    table: Table | None = field(default=None, repr=False)
    groups: Any = field(default=None, repr=False)  # DataFrame of the per-image strata values

    @property
    def unfilled(self) -> list[CellCoverage]:
        """Cells short of their target, with the reason."""
        return [c for c in self.cells if not c.filled]

    def class_counts(self) -> dict[str, int]:
        """Images per class in the validation set (canonical order, zeros kept)."""
        frame = self._frame()
        counts = frame[frame["image_id"].isin(set(self.selected))]["label"].value_counts()
        return {c: int(counts.get(c, 0)) for c in CLASS_CODES}

    def shared_lesions(self) -> set[str]:
        """Lesion ids present in both the validation set and the rest (always empty; kept as a checkable fact)."""
        frame = self._frame()
        lesions = frame.set_index("image_id")["lesion_id"]
        chosen = {lesions[i] for i in self.selected if lesions.get(i) is not None}
        rest = {lesions[i] for i in self.rest if lesions.get(i) is not None}
        return chosen & rest

    def write_manifest(self, path: str | os.PathLike[str], *, rest_path: str | os.PathLike[str] | None = None) -> Path:
        """Write the validation set as a CSV manifest that `derm_cloud.data.load_dataset` reads.

        Columns follow the HAM10000 layout (`image_id, lesion_id, dx, dx_type, age, sex, localization`) plus
        `fitzpatrick`/`skin_tone` when known and `file`: the image path relative to the manifest's folder
        (images are referenced, never copied). Images stored inside parquet files have no path: their `file`
        is empty and they are found by `image_id` in the parquet source.
        """
        out = Path(path)
        self._write(out, self.selected)
        if rest_path is not None:
            self._write(Path(rest_path), self.rest)
        return out

    def report(self) -> dict[str, Any]:
        """A JSON-compatible account: parameters, class counts, every cell, the unfilled ones and notes."""
        return {
            "source": self.source,
            "source_rows": self.source_rows,
            "seed": self.seed,
            "size_requested": self.size_requested,
            "size": len(self.selected),
            "rest": len(self.rest),
            "excluded": len(self.excluded),
            "strata": list(self.strata),
            "allocation": self.allocation,
            "skin_tone_source": self.skin_tone_source,
            "class_counts": self.class_counts(),
            "shared_lesions": sorted(self.shared_lesions()),
            "cells": [asdict(c) | {"filled": c.filled} for c in self.cells],
            "unfilled": [asdict(c) for c in self.unfilled],
            "notes": list(self.notes),
            "selected": list(self.selected),
        }

    def to_markdown(self) -> str:
        """The report as Markdown: class counts, group coverage and the cells that could not be filled."""
        counts = self.class_counts()
        lines = [
            f"# Validation set from {self.source}",
            "",
            f"{len(self.selected)} images (requested {self.size_requested}), seed {self.seed}, "
            f"{self.allocation} class allocation, stratified by {', '.join(self.strata)}. "
            f"Split by lesion: {len(self.shared_lesions())} lesions shared with the remaining "
            f"{len(self.rest)} images.",
            "",
            "| class | images |",
            "|---|---:|",
            *[f"| {c} | {n} |" for c, n in counts.items()],
            "",
            "## Coverage",
            "",
            "Classes are counted in images, groups in lesions.",
            "",
            "| stratum | group | available | chosen | target |",
            "|---|---|---:|---:|---:|",
        ]
        lines += [
            f"| {c.stratum} | {c.value} | {c.available} | {c.chosen} | {c.target} |"
            for c in self.cells
            if " x " not in c.stratum
        ]
        lines += ["", f"## Unfilled cells ({len(self.unfilled)})", ""]
        if self.unfilled:
            lines += ["| stratum | group | available | chosen | target | reason |", "|---|---|---:|---:|---:|---|"]
            lines += [
                f"| {c.stratum} | {c.value} | {c.available} | {c.chosen} | {c.target} | {c.reason} |"
                for c in self.unfilled
            ]
        else:
            lines.append("Every cell reached its target.")
        if self.skin_tone_source == "ita":
            from derm_cloud.governance.skin_tone import ITA_CAVEAT

            lines += ["", f"Skin tone: {ITA_CAVEAT}"]
        if self.notes:
            lines += ["", "## Notes", "", *[f"- {n}" for n in self.notes]]
        return "\n".join(lines) + "\n"

    def write_report(self, stem: str | os.PathLike[str]) -> tuple[Path, Path]:
        """Write `<stem>.json` and `<stem>.md`; returns both paths."""
        stem = os.fspath(stem)
        json_path, md_path = Path(stem + ".json"), Path(stem + ".md")
        json_path.write_text(json.dumps(self.report(), indent=2, default=str) + "\n")
        md_path.write_text(self.to_markdown())
        return json_path, md_path

    # --- internals -----------------------------------------------------------------------------------------------

    def _frame(self) -> Any:
        if self.table is None:
            raise ConfigError("this ValidationSet was built without its source table; rebuild it")
        return self.table.frame

    def _write(self, out: Path, image_ids: Sequence[str]) -> None:
        frame = self._frame().drop_duplicates("image_id").set_index("image_id", drop=False)
        groups = self.groups.set_index("image_id") if self.groups is not None else None
        out.parent.mkdir(parents=True, exist_ok=True)
        rows = []
        for image_id in image_ids:
            r = frame.loc[image_id]
            row: dict[str, Any] = {
                "image_id": image_id,
                "lesion_id": r["lesion_id"] or "",
                "dx": r["label"] or "",
                "dx_type": r["dx_type"] or "",
                "age": "" if r["age"] is None or r["age"] != r["age"] else f"{float(r['age']):g}",
                "sex": r["sex"] or "unknown",
                "localization": r["site"] or "unknown",
            }
            if frame["fitzpatrick"].notna().any():
                row["fitzpatrick"] = (
                    "" if r["fitzpatrick"] is None or r["fitzpatrick"] != r["fitzpatrick"] else int(r["fitzpatrick"])
                )
            if groups is not None and self.skin_tone_source == "ita":
                row["skin_tone"] = groups.loc[image_id, "skin_tone"]
            row["file"] = _relative_file(r["ref"], out.parent)
            for key, value in (r["extra"] or {}).items():
                row.setdefault(str(key), value)
            rows.append(row)
        pandas().DataFrame(rows).to_csv(out, index=False)


def _relative_file(ref: Any, folder: Path) -> str:
    path = getattr(ref, "source", ref)
    if path is None or not isinstance(path, (str, os.PathLike)):
        return ""  # no file (metadata only, or an image inside a parquet file)
    if "://" in str(path):
        return str(path)
    target, base = os.path.abspath(path), os.path.abspath(folder)
    try:
        # Relative when the manifest and the images share a tree (the manifest moves with them), else absolute.
        if os.path.dirname(os.path.commonpath([target, base])) != os.path.commonpath([target, base]):
            return os.path.relpath(target, base)
    except ValueError:  # another drive on Windows
        pass
    return target

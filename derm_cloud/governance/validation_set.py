"""A small, diverse, reproducible validation set: the same images for every model under test.

:func:`build_validation_set` picks whole lesions (never some images of a lesion for the set and the others
for the rest), seeded, so that:

* every class is present, in a balanced mix by default (or the data's own mix, ``allocation="proportional"``);
* every group of every stratum (sex, age band, site, skin tone) is represented by at least ``min_per_group``
  lesions, and every class within every group by at least ``min_per_cell`` (as far as the data allows);
* the cells it could not fill are listed with the reason: too few lesions in the data, or the requested size
  is too small to cover them.

Skin tone comes from the Fitzpatrick type when the metadata has one, otherwise from the ITA estimate of the
images (:func:`~derm_cloud.governance.skin_tone.estimate_ita`), which is an estimate of image colour and is
labelled as such.

Example:
    >>> vs = build_validation_set("../shared/data/ham10000/dev.csv", size=200, seed=0)  # doctest: +SKIP
    >>> vs.write_manifest("validation.csv"); print(vs.to_markdown())  # doctest: +SKIP
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

from derm_cloud.errors import ConfigError
from derm_cloud.governance._records import Table, age_band, load_table, read_image
from derm_cloud.governance._stratify import UNKNOWN, CellCoverage, lesion_units, select_units
from derm_cloud.taxonomy import CLASS_CODES

__all__ = ["STRATA", "CellCoverage", "ValidationSet", "build_validation_set", "skin_tone_groups"]

#: The strata a validation set can balance over.
STRATA: tuple[str, ...] = ("label", "sex", "age_band", "site", "skin_tone")


@dataclass
class ValidationSet:
    """The chosen images, the rest of the data, and how the strata were covered.

    Attributes:
        selected: image ids of the validation set, in source order.
        rest: image ids of the remaining data (no lesion in common with ``selected``).
        excluded: other images of chosen lesions left out by ``images_per_lesion`` (in neither split).
        seed, size_requested, strata, allocation: the parameters, for the report.
        cells: coverage of every cell, classes first.
        skin_tone_source: ``"fitzpatrick"`` (metadata), ``"ita"`` (estimated from images) or ``"none"``.
        source: the dataset's name; ``source_rows`` how many rows it had.
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
        """Write the validation set as a CSV manifest that :func:`derm_cloud.data.load_dataset` reads.

        Columns follow the HAM10000 layout (``image_id, lesion_id, dx, dx_type, age, sex, localization``) plus
        ``fitzpatrick``/``skin_tone`` when known and ``file``: the image path relative to the manifest's folder
        (images are referenced, never copied). Images stored inside parquet files have no path: their ``file``
        is empty and they are found by ``image_id`` in the parquet source.
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
        """Write ``<stem>.json`` and ``<stem>.md``; returns both paths."""
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
        from derm_cloud.governance._records import pandas

        pandas().DataFrame(rows).to_csv(out, index=False)


def skin_tone_groups(table: Table, *, source: str = "auto") -> tuple[list[str], str]:
    """Skin-tone group per row: the Fitzpatrick type when recorded, else the ITA band of the image.

    Args:
        table: the rows.
        source: ``"auto"`` (Fitzpatrick if any row has one, else ITA), ``"fitzpatrick"``, ``"ita"`` or ``"none"``.

    Returns:
        The group per row (``"FST III"``, ``"light"``, ``"unknown"``...) and the source used.
    """
    from derm_cloud.governance.skin_tone import estimate_ita, fitzpatrick_label

    frame = table.frame
    has_fitz = bool(frame["fitzpatrick"].notna().any())
    if source == "auto":
        source = "fitzpatrick" if has_fitz else ("ita" if table.images_available() else "none")
    if source == "fitzpatrick":
        return [fitzpatrick_label(None if v is None or v != v else int(v)) for v in frame["fitzpatrick"]], source
    if source == "none":
        return [UNKNOWN] * len(frame), source
    if source != "ita":
        raise ConfigError(f"skin_tone source must be auto, fitzpatrick, ita or none, got {source!r}")
    out: list[str] = []
    for ref in frame["ref"]:
        if ref is None:
            out.append(UNKNOWN)
            continue
        estimate = estimate_ita(read_image(ref))
        out.append(estimate.category or UNKNOWN)
    return out, source


def build_validation_set(
    dataset: Any,
    size: int | None = 200,
    seed: int = 0,
    strata: Sequence[str] = STRATA,
    *,
    holdout_fraction: float | None = None,
    allocation: Literal["balanced", "proportional"] = "balanced",
    min_per_group: int = 2,
    min_per_cell: int = 1,
    images_per_lesion: int | None = None,
    skin_tone: str = "auto",
    skin_tones: Mapping[str, str] | None = None,
) -> ValidationSet:
    """Pick a seeded, lesion-level, stratified validation set.

    Args:
        dataset: a :class:`~derm_cloud.data.Dataset`, a manifest path (CSV, parquet, HAM10000 layout) or a
            ``DataFrame``; rows need labels.
        size: images wanted (the result is exactly this many unless the lesions left are all larger than the
            remaining room; ``notes`` then says so). Ignored when ``holdout_fraction`` is given.
        seed: the same seed and data always give the same set.
        strata: any of ``label``, ``sex``, ``age_band``, ``site``, ``skin_tone``.
        holdout_fraction: the share of images to hold out instead of an absolute ``size``.
        allocation: ``balanced`` (equal images per class, capped by what exists, the surplus spread over the
            others) or ``proportional`` (the data's own class mix).
        min_per_group: lesions wanted in every group of every non-label stratum.
        min_per_cell: lesions wanted for every class within every group (``0`` to skip those cells).
        images_per_lesion: keep at most this many images of a chosen lesion (the others go to ``excluded``,
            in neither split); ``None`` keeps them all.
        skin_tone: where the skin-tone stratum comes from: ``auto``, ``fitzpatrick``, ``ita`` or ``none``.
        skin_tones: precomputed ``{image_id: group}`` (overrides ``skin_tone``), for example a cached ITA run.

    Raises:
        ConfigError: a bad parameter, an unknown stratum, or unlabelled data.

    Example:
        >>> vs = build_validation_set("dev.csv", size=200, seed=0)  # doctest: +SKIP
        >>> sorted(vs.class_counts()) == sorted(CLASS_CODES), vs.shared_lesions()  # doctest: +SKIP
        (True, set())
    """
    unknown = sorted(set(strata) - set(STRATA))
    if unknown or "label" not in strata:
        raise ConfigError(f"strata must include 'label' and come from {', '.join(STRATA)}; got {list(strata)}")
    if allocation not in ("balanced", "proportional"):
        raise ConfigError(f"allocation must be 'balanced' or 'proportional', got {allocation!r}")
    if images_per_lesion is not None and images_per_lesion < 1:
        raise ConfigError(f"images_per_lesion must be >= 1 or None, got {images_per_lesion}")
    table = load_table(dataset)
    frame = table.frame
    notes: list[str] = []
    dupes = int(frame["image_id"].duplicated().sum())
    if dupes:
        notes.append(f"{dupes} rows repeat an image id already seen; kept the first of each")
        frame = frame.drop_duplicates("image_id").reset_index(drop=True)
        table = Table(table.name, table.source, frame, table.info, table.dataset)
    if frame["label"].isna().any():
        raise ConfigError(
            f"{table.name}: {int(frame['label'].isna().sum())} rows have no label; a validation set needs labels"
        )
    n_images = len(frame)
    if holdout_fraction is not None:
        if not 0 < holdout_fraction < 1:
            raise ConfigError(f"holdout_fraction must be between 0 and 1, got {holdout_fraction}")
        size = max(1, round(n_images * holdout_fraction))
    if size is None or size < 1:
        raise ConfigError(f"size must be a positive number of images, got {size}")
    if size >= n_images:
        raise ConfigError(f"size {size} is not smaller than the {n_images} images of {table.name}; ask for fewer")

    groups = _group_frame(frame, strata, skin_tone, skin_tones, table)
    tone_source = groups.attrs.get("skin_tone_source", "none")
    units = lesion_units(groups, images_per_lesion, seed)
    chosen_units, cells = select_units(units, strata, size, allocation, min_per_group, min_per_cell, seed)

    chosen_images: set[str] = set()
    excluded: set[str] = set()
    for u in chosen_units:
        chosen_images.update(units["keep"][u])
        excluded.update(units["drop"][u])
    order = list(frame["image_id"])
    selected = tuple(i for i in order if i in chosen_images)
    rest = tuple(i for i in order if i not in chosen_images and i not in excluded)
    if len(selected) != size:
        notes.append(
            f"{len(selected)} images chosen for {size} requested: every lesion left has more images than the "
            "room remaining (use images_per_lesion=1 for an exact size)"
        )
    return ValidationSet(
        selected=selected,
        rest=rest,
        excluded=tuple(i for i in order if i in excluded),
        seed=seed,
        size_requested=size,
        strata=tuple(strata),
        allocation=allocation,
        cells=tuple(cells),
        skin_tone_source=tone_source,
        source=table.name,
        source_rows=int(table.info.get("rows", len(frame))),
        notes=notes,
        table=table,
        groups=groups,
    )


# --- selection ---------------------------------------------------------------------------------------------------


def _group_frame(
    frame: Any, strata: Sequence[str], skin_tone: str, skin_tones: Mapping[str, str] | None, table: Table
) -> Any:
    groups = frame[["image_id", "lesion_id", "label"]].copy()
    groups["sex"] = [s if s in ("female", "male") else UNKNOWN for s in frame["sex"]]
    groups["age_band"] = [age_band(a) for a in frame["age"]]
    groups["site"] = [s if isinstance(s, str) and s else UNKNOWN for s in frame["site"]]
    if "skin_tone" in strata:
        if skin_tones is not None:
            groups["skin_tone"] = [skin_tones.get(i) or UNKNOWN for i in frame["image_id"]]
            groups.attrs["skin_tone_source"] = "given"
        else:
            values, source = skin_tone_groups(table, source=skin_tone)
            groups["skin_tone"] = values
            groups.attrs["skin_tone_source"] = source
    return groups


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

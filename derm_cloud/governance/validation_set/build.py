"""`build_validation_set`: a seeded, lesion-level, stratified pick, and the strata it balances over."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, Literal

from derm_cloud.data.fields import fitzpatrick_label
from derm_cloud.errors import ConfigError
from derm_cloud.governance._records import Table, age_band, load_table, read_image
from derm_cloud.governance.validation_set.result import ValidationSet
from derm_cloud.governance.validation_set.stratify import UNKNOWN, lesion_units, select_units

__all__ = ["STRATA", "build_validation_set", "skin_tone_groups"]

#: The strata a validation set can balance over.
STRATA: tuple[str, ...] = ("label", "sex", "age_band", "site", "skin_tone")


def skin_tone_groups(table: Table, *, source: str = "auto") -> tuple[list[str], str]:
    """Skin-tone group per row: the Fitzpatrick type when recorded, else the ITA band of the image.

    Args:
        table: the rows.
        source: `"auto"` (Fitzpatrick if any row has one, else ITA), `"fitzpatrick"`, `"ita"` or `"none"`.

    Returns:
        The group per row (`"FST III"`, `"light"`, `"unknown"`...) and the source used.
    """
    from derm_cloud.governance.skin_tone import estimate_ita

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
        dataset: a `Dataset`, a manifest path (CSV, parquet, HAM10000 layout) or a
            `DataFrame`; rows need labels.
        size: images wanted (the result is exactly this many unless the lesions left are all larger than the
            remaining room; `notes` then says so). Ignored when `holdout_fraction` is given.
        seed: the same seed and data always give the same set.
        strata: any of `label`, `sex`, `age_band`, `site`, `skin_tone`.
        holdout_fraction: the share of images to hold out instead of an absolute `size`.
        allocation: `balanced` (equal images per class, capped by what exists, the surplus spread over the
            others) or `proportional` (the data's own class mix).
        min_per_group: lesions wanted in every group of every non-label stratum.
        min_per_cell: lesions wanted for every class within every group (`0` to skip those cells).
        images_per_lesion: keep at most this many images of a chosen lesion (the others go to `excluded`,
            in neither split); `None` keeps them all.
        skin_tone: where the skin-tone stratum comes from: `auto`, `fitzpatrick`, `ita` or `none`.
        skin_tones: precomputed `{image_id: group}` (overrides `skin_tone`), for example a cached ITA run.

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

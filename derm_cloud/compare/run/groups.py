"""The groups each image falls in for the fairness analysis: skin tone, sex, age band and body site.

Sex, age band and site come from the sample's metadata. Skin tone is a Fitzpatrick type recorded in the
metadata where present; otherwise the Individual Typology Angle (ITA) estimated from the image's pixels,
labelled "ITA estimate (not Fitzpatrick)". Estimating it reads every image, which is why the run stage does it
(`group_columns`) and hands the columns to the analysis (`derm_cloud.compare.analysis.fairness`), which only
selects the images it scores (`GroupColumns.subset`). HAM10000 records no skin type and holds few dark-skin
images, so on it the skin-tone groups can only describe estimated colour; a real skin-type analysis needs a
dataset labelled for it (DDI, Fitzpatrick17k).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING

from derm_cloud.errors import ConfigError, InvalidImageError

if TYPE_CHECKING:
    from derm_cloud.data.dataset import Sample

__all__ = [
    "AGE_BANDS",
    "FITZPATRICK_TYPES",
    "ITA_CATEGORIES",
    "ITA_LABEL",
    "GroupColumns",
    "age_band",
    "group_columns",
    "skin_tone_description",
]

AGE_BANDS: tuple[str, ...] = ("<30", "30-44", "45-59", "60-74", "75+")
ITA_LABEL = "ITA estimate (not Fitzpatrick)"
#: ITA categories from light to dark, the order the report lists them in.
ITA_CATEGORIES = ("very light", "light", "intermediate", "tan", "brown", "dark")
#: Fitzpatrick skin types I to VI as the report names them (``FST III``).
FITZPATRICK_TYPES = ("I", "II", "III", "IV", "V", "VI")
_SKIN_TONE_MODES = ("auto", "fitzpatrick", "ita", None)


def age_band(age: float | None) -> str | None:
    """The age band of an age in years (`"<30"`, `"30-44"`, `"45-59"`, `"60-74"`, `"75+"`), or `None`.

    Example:
        >>> age_band(29.9), age_band(45), age_band(75.0), age_band(None)
        ('<30', '45-59', '75+', None)
    """
    if age is None or (isinstance(age, float) and math.isnan(age)):
        return None
    for upper, band in zip((30, 45, 60, 75), AGE_BANDS, strict=False):
        if age < upper:
            return band
    return AGE_BANDS[-1]


class GroupColumns(dict[str, list[str | None]]):
    """Attribute -> group per sample, plus `descriptions` (attribute -> how the groups were made).

    Args:
        columns: attribute -> one group per sample (`None` = unknown).
        descriptions: attribute -> how its groups were made.
        skin_tone: the mode the skin-tone column was made in (`auto`, `fitzpatrick`, `ita`), which
            `subset` needs to describe a part of it.
    """

    def __init__(
        self,
        columns: Mapping[str, list[str | None]],
        descriptions: Mapping[str, str],
        skin_tone: str | None = None,
    ) -> None:
        super().__init__(columns)
        self.descriptions: dict[str, str] = dict(descriptions)
        self.skin_tone = skin_tone

    def subset(self, indices: Sequence[int]) -> GroupColumns:
        """The columns of the samples at `indices` (in that order), the skin-tone description counted anew."""
        columns = {attr: [values[i] for i in indices] for attr, values in self.items()}
        descriptions = dict(self.descriptions)
        if "skin_tone" in columns and self.skin_tone is not None:
            descriptions["skin_tone"] = skin_tone_description(columns["skin_tone"], self.skin_tone)
        return GroupColumns(columns, descriptions, self.skin_tone)


def _category(result: object) -> str | None:
    if result is None or isinstance(result, str):
        return result
    value = getattr(result, "category", None)
    return str(value) if value is not None else None


def group_columns(
    samples: Sequence[Sample],
    *,
    skin_tone: str | None = "auto",
    skin_tone_fn: Callable[[bytes], object] | None = None,
) -> GroupColumns:
    """Group columns `skin_tone`, `sex`, `age_band` and `site` from sample metadata (and pixels).

    Args:
        samples: the dataset's samples (a `derm_cloud.data.Dataset` works).
        skin_tone: `"auto"` (Fitzpatrick type where recorded, ITA estimate otherwise), `"fitzpatrick"`
            (recorded types only), `"ita"` (ITA estimate for every image) or `None` (no skin-tone column).
        skin_tone_fn: called with an image's bytes, returns an ITA category (`"light"`...) or an object with
            `.category` (default `derm_cloud.governance.skin_tone.estimate_ita`); `None` = unknown.

    Returns:
        A `GroupColumns`; unknown values are `None`. Skin-tone groups are `"FST III"` for recorded
        types and `"ITA light"` for estimates.

    Example:
        >>> from pathlib import Path
        >>> from derm_cloud.data import Sample
        >>> from derm_cloud.types import PatientMetadata
        >>> s = Sample("a", Path("a.jpg"), "nv", PatientMetadata(age=50, sex="male", fitzpatrick=2))
        >>> dict(group_columns([s]))
        {'skin_tone': ['FST II'], 'sex': ['male'], 'age_band': ['45-59'], 'site': [None]}
    """
    if skin_tone not in _SKIN_TONE_MODES:
        raise ConfigError(f"skin_tone must be 'auto', 'fitzpatrick', 'ita' or None, got {skin_tone!r}")
    columns: dict[str, list[str | None]] = {}
    descriptions: dict[str, str] = {}
    if skin_tone is not None:
        columns["skin_tone"] = _skin_tones(samples, skin_tone, skin_tone_fn)
        descriptions["skin_tone"] = skin_tone_description(columns["skin_tone"], skin_tone)
    columns["sex"] = [s.metadata.sex if s.metadata.sex in ("female", "male") else None for s in samples]
    descriptions["sex"] = "sex from metadata"
    columns["age_band"] = [age_band(s.metadata.age) for s in samples]
    descriptions["age_band"] = "age from metadata, bands " + ", ".join(AGE_BANDS)
    columns["site"] = [s.metadata.site for s in samples]
    descriptions["site"] = "anatomical site from metadata"
    return GroupColumns(columns, descriptions, skin_tone)


def _skin_tones(samples: Sequence[Sample], mode: str, estimate: Callable[[bytes], object] | None) -> list[str | None]:
    """`FST II` where the type is recorded (unless `mode` is `ita`), else `ITA light` from the pixels."""
    tones: list[str | None] = []
    for sample in samples:
        fst = sample.metadata.fitzpatrick
        if fst is not None and mode != "ita":
            tones.append(f"FST {FITZPATRICK_TYPES[fst - 1]}")
            continue
        if mode == "fitzpatrick":
            tones.append(None)
            continue
        if estimate is None:
            from derm_cloud.governance.skin_tone import estimate_ita

            estimate = estimate_ita
        try:
            category = _category(estimate(sample.read_bytes()))
        except InvalidImageError:
            category = None
        tones.append(f"ITA {category}" if category else None)
    return tones


def skin_tone_description(tones: Sequence[str | None], mode: str) -> str:
    """How the skin-tone groups of these images were made (counts of recorded types and of ITA estimates)."""
    n_fst = sum(1 for t in tones if t is not None and t.startswith("FST "))
    estimated = mode != "fitzpatrick"  # in fitzpatrick mode an image without a recorded type is simply unknown
    n_ita = sum(1 for t in tones if t is not None and t.startswith("ITA ")) if estimated else 0
    n_failed = sum(1 for t in tones if t is None) if estimated else 0
    parts = [f"Fitzpatrick type from metadata for {n_fst} images"] if n_fst else []
    if n_ita or n_failed:
        from derm_cloud.governance.skin_tone import ITA_CAVEAT

        parts.append(f"{ITA_LABEL} for {n_ita} images ({n_failed} without a usable estimate)")
        parts.append(ITA_CAVEAT)
    return "; ".join(parts) if parts else "no skin type recorded"

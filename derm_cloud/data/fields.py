"""Turning manifest cells (CSV or parquet) into canonical labels and `PatientMetadata`.

Every layout names its columns differently (`dx` / `label`, `localization` / `site` /
`anatom_site_general`, `fitzpatrick` / `fitzpatrick_scale` ...); the aliases live here, once.
"""

from __future__ import annotations

import math
import numbers
import re
from collections.abc import Mapping, Sequence
from functools import lru_cache
from typing import Any

from derm_cloud.errors import ConfigError, UnmappableLabelsError
from derm_cloud.taxonomy import CLASS_CODES, LabelMap, normalise_label
from derm_cloud.types import PatientMetadata

__all__ = [
    "COLUMN_ALIASES",
    "canonical_label",
    "find_column",
    "fitzpatrick_from_metadata",
    "fitzpatrick_label",
    "metadata_from_row",
]

#: Accepted column names per field, first match wins (matched case-insensitively).
COLUMN_ALIASES: dict[str, tuple[str, ...]] = {
    "path": ("file", "path", "filepath", "file_path", "image_path", "filename", "file_name", "image"),
    "image_id": ("image_id", "isic_id", "id"),
    "label": ("label", "dx", "diagnosis", "class"),
    "age": ("age", "age_approx"),
    "sex": ("sex", "gender"),
    "site": ("site", "localization", "anatom_site_general", "anatom_site_general_challenge"),
    "fitzpatrick": (
        "fitzpatrick",
        "fitzpatrick_scale",
        "fitzpatrick_skin_type",
        "fitzpatrick_type",
        "fst",
        "skin_type",
    ),
    "lesion_id": ("lesion_id",),
    "dx_type": ("dx_type", "diagnosis_confirm_type"),
    "split": ("split",),
}

_MISSING = {"", "nan", "none", "null", "na", "n/a"}
_SEX = {"m": "male", "f": "female", "male": "male", "female": "female", "unknown": "unknown"}


def find_column(columns: Sequence[str], field: str) -> str | None:
    """The first column among `columns` that is an alias of `field` (case-insensitive), else `None`.

    Example:
        >>> find_column(["image_id", "DX", "localization"], "label")
        'DX'
    """
    by_lower = {c.strip().lower(): c for c in columns}
    for alias in COLUMN_ALIASES[field]:
        if alias in by_lower:
            return by_lower[alias]
    return None


def _is_missing(value: Any) -> bool:
    if value is None:
        return True
    if isinstance(value, float) and math.isnan(value):
        return True
    return isinstance(value, str) and value.strip().lower() in _MISSING


@lru_cache(maxsize=256)
def _code_for(normalised: str) -> str | None:
    # LabelMap is the one source of truth for synonyms (HAM codes, ISIC headers, full names, marmal88 dx
    # strings). It maps whole label sets, so probe: `label` + the six other codes maps cleanly only when `label`
    # is the seventh class.
    for code in CLASS_CODES:
        others = [c for c in CLASS_CODES if c != code]
        try:
            LabelMap.for_labels([normalised, *others])
        except UnmappableLabelsError:
            continue
        return code
    return None


def canonical_label(value: Any, overrides: Mapping[str, str] | None = None) -> str | None:
    """Map a dataset label to its canonical code; empty or missing values give `None` (unlabelled).

    Args:
        value: `"mel"`, `"MEL"`, `"Melanoma"`, `"melanocytic_Nevi"` (marmal88) ...
        overrides: extra `{dataset label: code}` entries for labels under other names.

    Raises:
        ConfigError: the label maps to no class; the message says how to add an override.

    Example:
        >>> canonical_label("benign_keratosis-like_lesions"), canonical_label(""), canonical_label("AKIEC")
        ('bkl', None, 'akiec')
    """
    if _is_missing(value):
        return None
    text = str(value)
    if overrides:
        for key, code in overrides.items():
            if normalise_label(key) == normalise_label(text):
                if code not in CLASS_CODES:
                    raise ConfigError(
                        f"label_map[{key!r}] = {code!r} is not a class code; use {', '.join(CLASS_CODES)}"
                    )
                return code
    found = _code_for(normalise_label(text))
    if found is None:
        raise ConfigError(
            f"label {text!r} is not one of the 7 HAM10000 classes under any known name; pass "
            f"label_map={{{text!r}: '<code>'}} with a code from {', '.join(CLASS_CODES)}, or drop those rows"
        )
    return found


def metadata_from_row(row: Mapping[str, Any], columns: Mapping[str, str | None]) -> PatientMetadata:
    """Build `PatientMetadata` from one manifest row.

    Args:
        row: column name -> cell value.
        columns: field (`"age"`, `"sex"`, `"site"`, `"fitzpatrick"`) -> column name or `None`.

    Raises:
        ConfigError: a value is present but invalid (age 200, sex "x", Fitzpatrick 9).
    """

    def cell(field: str) -> Any:
        col = columns.get(field)
        value = row.get(col) if col else None
        return None if _is_missing(value) else value

    sex_raw = cell("sex")
    sex = "unknown"
    if sex_raw is not None:
        sex = _SEX.get(str(sex_raw).strip().lower(), "")
        if not sex:
            raise ConfigError(f"sex must be male, female or unknown (or M/F), got {sex_raw!r}")
    site = cell("site")
    site_text = str(site).strip() if site is not None else None
    if site_text is not None and site_text.lower() == "unknown":
        site_text = None  # HAM10000 writes "unknown"; models encode "not known" from None
    return PatientMetadata(
        age=cell("age"),
        sex=sex,
        site=site_text,
        fitzpatrick=fitzpatrick_from_metadata(cell("fitzpatrick")),
    )


# --- Fitzpatrick skin types ----------------------------------------------------------------------------------------

_ROMAN = {"I": 1, "II": 2, "III": 3, "IV": 4, "V": 5, "VI": 6}
_UNKNOWN = {"", "-1", "0", "na", "n/a", "nan", "none", "null", "unknown", "not recorded", "?"}


def fitzpatrick_from_metadata(value: object) -> int | None:
    """Read a Fitzpatrick skin type from metadata, in the ISIC archive or Fitzpatrick17k convention.

    Accepts `1`..`6` (int, float or text), Roman numerals `"I"`..`"VI"` (ISIC
    `fitzpatrick_skin_type`), and prefixed forms such as `"type III"`, `"FST IV"` or `"fitzpatrick 2"`.
    Unknown values (`None`, NaN, `-1` as in Fitzpatrick17k, `0`, `""`, `"unknown"`) give `None`.

    Raises:
        ConfigError: the value is present but is not a skin type (for example `7` or `"olive"`).

    Example:
        >>> fitzpatrick_from_metadata("IV"), fitzpatrick_from_metadata(-1), fitzpatrick_from_metadata(3.0)
        (4, None, 3)
    """
    if value is None or isinstance(value, bool):
        return None
    if isinstance(value, numbers.Integral):  # int and numpy's integers, without importing numpy
        number = int(value)
        if number in (-1, 0):
            return None
        if 1 <= number <= 6:
            return number
        raise ConfigError(f"Fitzpatrick skin type must be 1-6 (or -1 for unknown), got {number}")
    if isinstance(value, numbers.Real):
        as_float = float(value)
        if math.isnan(as_float):
            return None
        if as_float.is_integer():
            return fitzpatrick_from_metadata(int(as_float))
        raise ConfigError(f"Fitzpatrick skin type must be a whole number 1-6, got {value}")
    text = str(value).strip()
    if text.lower() in _UNKNOWN:
        return None
    core = re.sub(r"^(fitzpatrick|fst|skin\s*type|type)[\s_:-]*", "", text, flags=re.IGNORECASE).strip()
    if core.upper() in _ROMAN:
        return _ROMAN[core.upper()]
    try:
        return fitzpatrick_from_metadata(float(core))
    except ValueError:
        pass
    raise ConfigError(
        f"cannot read a Fitzpatrick skin type from {value!r}; use 1-6, I-VI, or -1/'unknown' when not recorded"
    )


def fitzpatrick_label(skin_type: int | None) -> str:
    """`3` -> `"FST III"`; `None` -> `"unknown"` (group names in reports)."""
    if skin_type is None:
        return "unknown"
    roman = {v: k for k, v in _ROMAN.items()}
    return f"FST {roman[skin_type]}"

"""sklesion's metadata encoding ("sklesion-v1"): age, sex and site as the model's 10-float input.

Every local runtime needs it (a model spec names the encoding and `derm_cloud.preprocess` applies it), so
it stands apart from `derm_cloud.models.sklesion`, whose fetch-and-convert pipeline imports the
preprocessing in turn. The values come from the wheel's `model_props.pkl` (read once, never unpickled at run
time).

Example:
    >>> v = encode_metadata(35, "female", "upper extremity")
    >>> v[:8].tolist(), round(float(v[8]), 4), float(v[9])
    ([1.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 0.0], 0.3889, 0.0)
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Final

import numpy as np
from numpy.typing import NDArray

from derm_cloud.errors import ConfigError

__all__ = [
    "AGE_MAX",
    "AGE_MEAN",
    "LOCATION_GROUPS",
    "METADATA_LENGTH",
    "SITE_TO_GROUP",
    "encode_metadata",
    "site_group",
]

METADATA_LENGTH: Final = 10

# model_props["age_max"] and model_props["age_mean"], bit-exact from the wheel's model_props.pkl (float64
# bytes 0x4049f36e3170b500). Note: docs/reference/local-models.md section 1.2 quotes 51.863 (the mean age of all of
# HAM10000) and hence 0.5763 for a missing age; the author's pipeline uses this value, giving 0.57669.
AGE_MAX: Final = 90.0
AGE_MEAN: Final = 51.90180032733224

# One-hot layouts, in the author's order (model_props["oh_map"]).
_SEXES: Final[tuple[str, ...]] = ("female", "male", "unknown")
LOCATION_GROUPS: Final[tuple[str, ...]] = ("arm", "head-or-neck", "leg-or-genital", "trunk", "unknown")

# HAM10000 ``localization`` -> sklesion location group. sklesion takes the five groups directly and ships no
# mapping, so this one is ours (the grouping suggested in docs/reference/local-models.md section 1.2). "acral" is not an
# anatomical region of one group (palms and soles span arm and leg), so it goes to "unknown".
SITE_TO_GROUP: Final[Mapping[str, str]] = {
    "upper extremity": "arm",
    "hand": "arm",
    "face": "head-or-neck",
    "scalp": "head-or-neck",
    "ear": "head-or-neck",
    "neck": "head-or-neck",
    "lower extremity": "leg-or-genital",
    "foot": "leg-or-genital",
    "genital": "leg-or-genital",
    "back": "trunk",
    "chest": "trunk",
    "abdomen": "trunk",
    "trunk": "trunk",
    "acral": "unknown",
    "unknown": "unknown",
}


def site_group(site: str | None) -> str:
    """Map an anatomical site to one of sklesion's five location groups.

    Accepts HAM10000 `localization` values (see `SITE_TO_GROUP`) and the five group names themselves,
    case- and whitespace-insensitively (underscores count as spaces). `None`, empty strings and any other
    string map to `"unknown"`: an unrecognised site is treated as missing rather than rejected, because the
    model has an explicit "unknown" input for exactly that case.

    Args:
        site: site name or `None`.

    Returns:
        One of `LOCATION_GROUPS`.
    """
    if site is None:
        return "unknown"
    key = " ".join(site.replace("_", " ").strip().lower().split())
    if key in LOCATION_GROUPS:
        return key
    if key.replace(" ", "-") in LOCATION_GROUPS:  # "head or neck" -> "head-or-neck"
        return key.replace(" ", "-")
    return SITE_TO_GROUP.get(key, "unknown")


def encode_metadata(age: float | None, sex: str | None, site: str | None) -> NDArray[np.float32]:
    """Encode patient metadata as sklesion's 10-float input ("sklesion-v1").

    Layout: `[female, male, unknown sex, arm, head-or-neck, leg-or-genital, trunk, unknown site,
    age / 90, age_missing]`. A missing age (`None` or NaN) becomes `AGE_MEAN / 90` with
    `age_missing = 1`, as in the author's pipeline. Sex other than female/male (case-insensitive) is
    "unknown"; sites are mapped by `site_group`.

    Args:
        age: age in years, or `None`/NaN when unknown.
        sex: `"female"`, `"male"`, anything else (or `None`) for unknown.
        site: HAM10000 localization, a sklesion location group, or `None`.

    Returns:
        float32 array of shape (10,).

    Raises:
        ConfigError: age is not a number, negative or infinite.

    Example:
        >>> v = encode_metadata(35, "female", "upper extremity")
        >>> v[:8].tolist(), round(float(v[8]), 4), float(v[9])
        ([1.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 0.0], 0.3889, 0.0)
    """
    vec = np.zeros(METADATA_LENGTH, dtype=np.float32)
    sex_key = sex.strip().lower() if isinstance(sex, str) else "unknown"
    vec[_SEXES.index(sex_key) if sex_key in ("female", "male") else 2] = 1.0
    vec[3 + LOCATION_GROUPS.index(site_group(site))] = 1.0
    try:
        years = None if age is None else float(age)
    except (TypeError, ValueError):
        raise ConfigError(f"age must be a number of years or None, got {age!r}") from None
    if years is None or math.isnan(years):
        vec[8] = AGE_MEAN / AGE_MAX
        vec[9] = 1.0
    else:
        if years < 0 or math.isinf(years):
            raise ConfigError(f"age must be a finite, non-negative number of years, got {age!r}")
        # Not clipped: the author divides by age_max without clipping, so ages > 90 give values > 1.
        vec[8] = years / AGE_MAX
    return vec

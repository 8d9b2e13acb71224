"""Skin-tone estimation (ITA) and Fitzpatrick metadata parsing."""

from __future__ import annotations

import math
from collections import Counter

import numpy as np
import pytest
from tests_helpers import DATA_DIR, dev_image, dev_rows

from derm_cloud.data.fields import fitzpatrick_from_metadata, fitzpatrick_label
from derm_cloud.errors import ConfigError
from derm_cloud.governance.skin_tone import (
    ITA_BANDS,
    ITA_CATEGORIES,
    ITA_CAVEAT,
    estimate_ita,
    ita_category,
    lab_to_srgb,
    srgb_to_lab,
)

FITZ17K = DATA_DIR / "fitzpatrick17k" / "fitzpatrick17k.csv"


def skin_lab(ita: float, b: float = 16.0, a: float = 12.0) -> tuple[float, float, float]:
    """A CIELAB skin colour whose ITA is ``ita`` degrees: L = 50 + b * tan(ITA)."""
    return (50.0 + b * math.tan(math.radians(ita)), a, b)


def patch(lab: tuple[float, float, float], size: tuple[int, int] = (96, 128)) -> np.ndarray:
    return np.broadcast_to(lab_to_srgb(np.array(lab)), (*size, 3)).copy()


def test_srgb_to_lab_matches_reference_values() -> None:
    # Reference CIELAB (D65) values of sRGB primaries, as published by colour-science / Bruce Lindbloom.
    white, red, black = srgb_to_lab(np.array([[255, 255, 255], [255, 0, 0], [0, 0, 0]], dtype=np.uint8))
    assert white == pytest.approx([100.0, 0.0, 0.0], abs=0.01)
    assert red == pytest.approx([53.24, 80.09, 67.20], abs=0.02)
    assert black == pytest.approx([0.0, 0.0, 0.0], abs=1e-9)


def test_lab_round_trip_within_quantisation() -> None:
    rng = np.random.default_rng(1)
    labs = np.column_stack([rng.uniform(30, 85, 50), rng.uniform(0, 20, 50), rng.uniform(5, 25, 50)])
    back = srgb_to_lab(lab_to_srgb(labs))
    assert np.abs(back - labs).max() < 1.0  # uint8 rounding only


@pytest.mark.parametrize(
    ("ita", "expected"),
    [(80.0, "very light"), (55.01, "very light"), (55.0, "light"), (41.0, "intermediate"), (28.0, "tan"),
     (10.0, "brown"), (-29.9, "brown"), (-30.0, "dark"), (-75.0, "dark"), (None, None)],
)  # fmt: skip
def test_ita_category_bands(ita: float | None, expected: str | None) -> None:
    assert ita_category(ita) == expected


@pytest.mark.parametrize("category", ITA_CATEGORIES)
def test_patch_of_known_colour_gets_its_category(category: str) -> None:
    low, high = next((lo, hi) for name, lo, hi in ITA_BANDS if name == category)
    centre = (max(low, -70.0) + min(high, 75.0)) / 2
    est = estimate_ita(patch(skin_lab(centre)))
    assert est.category == category
    assert est.ita == pytest.approx(centre, abs=1.5)
    assert est.pixels_used > 1000 and est.reason is None


def synthetic_dermoscopy(skin_ita: float) -> np.ndarray:
    """Skin of a known ITA with what dermoscopy adds: a dark central lesion, hair, dark vignetted corners."""
    h, w = 180, 240
    img = patch(skin_lab(skin_ita), (h, w))
    yy, xx = np.mgrid[0:h, 0:w]
    lesion = ((yy - h / 2) / (0.38 * h)) ** 2 + ((xx - w / 2) / (0.38 * w)) ** 2 <= 1  # a large lesion
    img[lesion] = lab_to_srgb(np.array([30.0, 18.0, 20.0]))
    for x0 in (40, 90, 170):  # three diagonal hairs, 2 px wide
        for t in range(h):
            x = x0 + t // 2
            if x + 1 < w:
                img[t, x : x + 2] = (25, 20, 18)
    r = np.sqrt(((yy - h / 2) / (h / 2)) ** 2 + ((xx - w / 2) / (w / 2)) ** 2)
    img[r > 1.05] = (12, 10, 10)  # the dark ring of a round dermoscope field
    return img


def test_lesion_hair_and_vignetting_are_excluded() -> None:
    skin_ita = 48.0  # "light"
    img = synthetic_dermoscopy(skin_ita)
    est = estimate_ita(img)
    assert est.category == "light"
    assert est.ita == pytest.approx(skin_ita, abs=2.0)
    assert "lesion dropped" in est.method and "border" in est.method
    # Without the exclusions the same image reads several degrees darker: the steps matter.
    lab = srgb_to_lab(img).reshape(-1, 3)
    naive = math.degrees(math.atan((np.median(lab[:, 0]) - 50) / np.median(lab[:, 2])))
    assert naive < skin_ita - 5


def test_blue_cast_is_not_estimated() -> None:
    est = estimate_ita(patch((70.0, 2.0, -6.0)))
    assert est.ita is None and est.category is None
    assert "blue/grey cast" in (est.reason or "")


def test_too_little_visible_skin_is_not_estimated() -> None:
    img = np.full((120, 160, 3), 6, dtype=np.uint8)  # a closed-down dermoscope field: almost all black
    img[50:62, 90:104] = lab_to_srgb(np.array(skin_lab(50)))
    est = estimate_ita(img)
    assert est.ita is None and est.category is None
    assert "look like skin" in (est.reason or "")


def test_real_dev_images_give_estimates_with_caveats() -> None:
    estimates = [estimate_ita(dev_image(r)) for r in dev_rows(12)]
    assert any(e.ita is not None for e in estimates)
    for e in estimates:
        assert e.caveat == ITA_CAVEAT and "not the patient's skin type" in e.caveat
        assert (e.ita is None) == (e.category is None) == (e.reason is not None)
        if e.ita is not None:
            assert e.category == ita_category(e.ita) and -90 <= e.ita <= 90


def test_bad_border_fraction_is_rejected() -> None:
    with pytest.raises(ConfigError, match="border_fraction"):
        estimate_ita(patch(skin_lab(40)), border_fraction=0.6)


@pytest.mark.parametrize(
    ("value", "expected"),
    [("I", 1), ("vi", 6), ("IV", 4), (" III ", 3), ("type II", 2), ("FST V", 5), ("Fitzpatrick 3", 3),
     (1, 1), (6, 6), (3.0, 3), ("4", 4), ("4.0", 4), (np.int64(2), 2),
     (-1, None), ("-1", None), (0, None), (None, None), (float("nan"), None), ("", None), ("unknown", None)],
)  # fmt: skip
def test_fitzpatrick_conventions(value: object, expected: int | None) -> None:
    assert fitzpatrick_from_metadata(value) == expected


@pytest.mark.parametrize("value", [7, "VII", "olive", 2.5, "type 9"])
def test_fitzpatrick_rejects_non_types(value: object) -> None:
    with pytest.raises(ConfigError, match="Fitzpatrick"):
        fitzpatrick_from_metadata(value)


@pytest.mark.project_data
def test_fitzpatrick17k_metadata_counts_match_pandas() -> None:
    import pandas as pd

    frame = pd.read_csv(FITZ17K)
    parsed = Counter(fitzpatrick_from_metadata(v) for v in frame["fitzpatrick_scale"])
    expected = frame["fitzpatrick_scale"].value_counts()
    assert parsed[None] == int(expected.get(-1, 0)) > 0
    for skin_type in range(1, 7):
        assert parsed[skin_type] == int(expected[skin_type])
    # The same column in the ISIC archive's Roman-numeral convention parses to the same types.
    roman = {1: "I", 2: "II", 3: "III", 4: "IV", 5: "V", 6: "VI", -1: ""}
    assert Counter(fitzpatrick_from_metadata(roman[v]) for v in frame["fitzpatrick_scale"]) == parsed
    assert fitzpatrick_label(5) == "FST V" and fitzpatrick_label(None) == "unknown"


def test_importing_governance_loads_no_heavy_dependency() -> None:
    import subprocess
    import sys

    code = (
        "import sys, derm_cloud.governance; "
        "print(sorted(m for m in ('pandas', 'matplotlib', 'imagehash', 'scipy', 'onnxruntime', 'sklearn') "
        "if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"

"""Subgroup report against fairlearn's MetricFrame and scikit-learn on the same data, and group columns built
from sample metadata (real dev.csv rows: HAM10000, Tschandl et al. 2018, CC BY-NC 4.0)."""

from __future__ import annotations

import math
import warnings
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
from fairlearn.metrics import MetricFrame
from sklearn import metrics as skm
from tests_helpers import DEV_CSV, dev_image, dev_rows

from derm_cloud.compare.analysis.fairness import group_report
from derm_cloud.compare.run.groups import ITA_LABEL, age_band, group_columns
from derm_cloud.data import Sample, load_dataset
from derm_cloud.errors import ConfigError, InvalidImageError
from derm_cloud.taxonomy import CLASS_CODES, MALIGNANT_CODES
from derm_cloud.types import PatientMetadata

CODES = np.array(CLASS_CODES)
MAL = sorted(MALIGNANT_CODES)


def _balanced(yt: np.ndarray, yp: np.ndarray) -> float:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # "y_pred contains classes not in y_true"
        return float(skm.balanced_accuracy_score(yt, yp))


ORACLE = {
    "accuracy": skm.accuracy_score,
    "balanced_accuracy": _balanced,
    "melanoma_sensitivity": lambda yt, yp: skm.recall_score(yt == "mel", yp == "mel", zero_division=np.nan),
    "malignant_sensitivity": lambda yt, yp: skm.recall_score(np.isin(yt, MAL), np.isin(yp, MAL), zero_division=np.nan),
}


def _data(n: int, seed: int) -> tuple[np.ndarray, np.ndarray, dict[str, list[str | None]]]:
    rng = np.random.default_rng(seed)
    y = rng.choice(CODES, size=n, p=[0.08, 0.13, 0.28, 0.03, 0.23, 0.21, 0.04])
    p = rng.dirichlet(np.ones(7) * 0.7, size=n)
    sex = rng.choice(["female", "male"], size=n)
    # Make the model worse for one group so the gap is real.
    boost = np.where(sex == "male", 1.5, 0.4)
    p[np.arange(n), [CLASS_CODES.index(c) for c in y]] += rng.uniform(0, 1, size=n) * boost
    p /= p.sum(axis=1, keepdims=True)
    site: list[str | None] = list(rng.choice(["back", "trunk", "face", "scalp"], size=n, p=[0.45, 0.4, 0.1, 0.05]))
    for i in rng.choice(n, size=15, replace=False):
        site[i] = None
    return y, p, {"sex": list(sex), "site": site}


def test_group_figures_equal_fairlearn_metricframe() -> None:
    y, p, groups = _data(900, 0)
    pred = CODES[p.argmax(axis=1)]
    r = group_report(list(y), p, groups, min_group_size=60, n_boot=0)
    for attr, values in groups.items():
        names = np.array(["unknown" if v is None else v for v in values])
        frame = MetricFrame(metrics=ORACLE, y_true=y, y_pred=pred, sensitive_features=names)
        section = r["attributes"][attr]
        assert set(section["groups"]) == set(frame.by_group.index)
        for group, row in frame.by_group.iterrows():
            entry = section["groups"][group]
            assert entry["n"] == int(np.sum(names == group))
            assert entry["n_melanoma"] == int(np.sum((names == group) & (y == "mel")))
            for metric, expected in row.items():
                got = entry["metrics"][metric]["value"]
                assert (got is None) == bool(np.isnan(expected)), (attr, group, metric)
                if got is not None:
                    assert got == pytest.approx(expected, abs=1e-12), (attr, group, metric)
        # The gap is MetricFrame's between-groups difference over the comparable groups only: those whose
        # denominator (images; melanomas or malignant lesions for the sensitivities) reaches min_group_size.
        denominators = {
            "accuracy": lambda m: m.sum(),
            "balanced_accuracy": lambda m: m.sum(),
            "melanoma_sensitivity": lambda m: np.sum(m & (y == "mel")),
            "malignant_sensitivity": lambda m: np.sum(m & np.isin(y, MAL)),
        }
        for metric, denominator in denominators.items():
            comparable = [g for g in set(names) if g != "unknown" and denominator(names == g) >= 60]
            gap = section["gaps"][metric]
            assert sorted(gap["groups_compared"]) == sorted(comparable), (attr, metric)
            if len(comparable) < 2:
                assert gap["gap"] is None
                continue
            keep = np.isin(names, comparable)
            sub = MetricFrame(metrics=ORACLE[metric], y_true=y[keep], y_pred=pred[keep], sensitive_features=names[keep])
            assert gap["gap"] == pytest.approx(sub.difference(method="between_groups"), abs=1e-12), (attr, metric)
    site = r["attributes"]["site"]
    assert site["groups"]["scalp"]["small_group"] and "scalp" not in site["gaps"]["accuracy"]["groups_compared"]
    assert any("site=scalp" in w for w in site["warnings"]) and any("unknown site" in w for w in site["warnings"])
    # At 100, back and trunk have enough images but not enough melanomas: no melanoma gap, and a warning says why.
    sites = np.array(["unknown" if v is None else v for v in groups["site"]])
    for g in ("back", "trunk"):
        assert np.sum(sites == g) >= 100 > np.sum((sites == g) & (y == "mel"))
    strict = group_report(list(y), p, {"site": groups["site"]}, min_group_size=100, n_boot=0)["attributes"]["site"]
    assert strict["gaps"]["accuracy"]["gap"] is not None and strict["gaps"]["melanoma_sensitivity"]["gap"] is None
    assert any(
        "melanoma_sensitivity left out of the gap for groups with < 100 melanomas" in w for w in strict["warnings"]
    )
    sex_gap = r["attributes"]["sex"]["gaps"]["accuracy"]
    assert sex_gap["max_group"] == "male" and sex_gap["min_group"] == "female" and sex_gap["gap"] > 0.1


def test_group_cis_are_seeded_and_bracket_the_value() -> None:
    y, p, groups = _data(400, 1)
    a = group_report(list(y), p, {"sex": groups["sex"]}, n_boot=200, seed=3)
    b = group_report(list(y), p, {"sex": groups["sex"]}, n_boot=200, seed=3)
    assert a == b
    for entry in a["attributes"]["sex"]["groups"].values():
        for metric in entry["metrics"].values():
            low, high = metric["ci"]
            assert low <= metric["value"] <= high
    one = group_report(["mel", "nv"], np.eye(7)[[4, 5]], {"sex": ["male", "female"]}, min_group_size=30, n_boot=0)
    assert one["attributes"]["sex"]["gaps"]["accuracy"]["gap"] is None  # both groups too small
    with pytest.raises(ConfigError, match="has 1 values for 2 images"):
        group_report(["mel", "nv"], np.eye(7)[[4, 5]], {"sex": ["male"]})


@pytest.mark.parametrize(
    ("age", "band"),
    [
        (0, "<30"),
        (29.99, "<30"),
        (30, "30-44"),
        (44.9, "30-44"),
        (45, "45-59"),
        (59.5, "45-59"),
        (60, "60-74"),
        (74.99, "60-74"),
        (75, "75+"),
        (90, "75+"),
        (None, None),
        (math.nan, None),
    ],
)
def test_age_band_boundaries(age: float | None, band: str | None) -> None:
    assert age_band(age) == band


def test_group_columns_prefer_recorded_fitzpatrick_and_label_ita_estimates() -> None:
    rows = dev_rows(4)
    samples = [
        Sample(r["image_id"], dev_image(r), r["dx"], PatientMetadata(age=40, sex="male", fitzpatrick=fst))
        for r, fst in zip(rows, (2, None, 5, None), strict=True)
    ]
    calls: list[int] = []

    class Estimate:
        def __init__(self, category: str | None) -> None:
            self.category = category
            self.ita = 42.0

    def fake_ita(data: bytes) -> object:
        calls.append(len(data))
        return Estimate("light") if len(calls) == 1 else "tan"

    cols = group_columns(samples, skin_tone_fn=fake_ita)
    assert cols["skin_tone"] == ["FST II", "ITA light", "FST V", "ITA tan"]
    assert calls == [dev_image(rows[1]).stat().st_size, dev_image(rows[3]).stat().st_size]
    assert ITA_LABEL in cols.descriptions["skin_tone"] and "2 images" in cols.descriptions["skin_tone"]
    assert cols["age_band"] == ["30-44"] * 4
    only_fst = group_columns(samples, skin_tone="fitzpatrick", skin_tone_fn=fake_ita)
    assert only_fst["skin_tone"] == ["FST II", None, "FST V", None] and len(calls) == 2

    def broken(data: bytes) -> object:
        raise InvalidImageError("unreadable")

    assert group_columns(samples, skin_tone="ita", skin_tone_fn=broken)["skin_tone"] == [None] * 4
    assert "skin_tone" not in group_columns(samples, skin_tone=None)
    with pytest.raises(ConfigError, match="skin_tone must be"):
        group_columns(samples, skin_tone="monk")
    # The descriptions travel with the columns into the report.
    y = [s.label for s in samples]
    report = group_report(y, np.eye(7)[[CLASS_CODES.index(c) for c in y]], cols, min_group_size=1, n_boot=0)
    assert ITA_LABEL in report["attributes"]["skin_tone"]["description"]
    assert list(report["attributes"]["skin_tone"]["groups"]) == ["FST II", "FST V", "ITA light", "ITA tan"]


def test_group_columns_from_dev_metadata_match_the_csv() -> None:
    ds = load_dataset(DEV_CSV)
    cols = group_columns(ds, skin_tone=None)
    rows = dev_rows()
    assert Counter(cols["sex"]) == Counter(r["sex"] if r["sex"] != "unknown" else None for r in rows)
    assert cols["age_band"] == [age_band(float(r["age"])) if r["age"] else None for r in rows]
    assert cols["site"] == [None if r["localization"] == "unknown" else r["localization"] for r in rows]


def test_default_skin_tone_uses_the_ita_estimator_on_real_images() -> None:
    rows = dev_rows(3)
    samples = [Sample(r["image_id"], dev_image(r), r["dx"]) for r in rows]
    cols = group_columns(samples)  # no Fitzpatrick in HAM10000: every group is an ITA estimate
    assert all(v is None or v.startswith("ITA ") for v in cols["skin_tone"])
    assert ITA_LABEL in cols.descriptions["skin_tone"]
    assert isinstance(samples[0].source, Path)

"""Warn when a model is evaluated on the images it was (probably) trained on.

Most public skin-lesion models are trained on HAM10000 or a copy of it (ISIC 2018 Task 3 training set, the
`marmal88/skin_cancer` parquet, ISIC 2019 training which includes it). Evaluating such a model on HAM10000
images measures memory as much as skill: unless its training split is known to exclude the evaluation
lesions, the figures are optimistic.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from derm_cloud.data.dataset import Dataset

__all__ = ["HAM10000_ID_RANGE", "ISIC2018_TEST_ID_RANGE", "dataset_overlap_warning", "is_ham10000_id"]

#: ISIC ids of the 10,015 HAM10000 images (ISIC 2018 Task 3 training set), inclusive.
HAM10000_ID_RANGE = (24306, 34320)
#: ISIC ids of the ISIC 2018 Task 3 held-out test images, inclusive (not in HAM10000).
ISIC2018_TEST_ID_RANGE = (34524, 36064)

_ISIC_ID = re.compile(r"^ISIC_(\d{7})$", re.IGNORECASE)
# Training-data descriptions that include the HAM10000 images.
_HAM_TRAINING = re.compile(r"ham[\s_-]*10000|isic[\s_-]*(challenge[\s_-]*)?20(18|19)|marmal88", re.IGNORECASE)
_HAM_DATASET = re.compile(r"ham[\s_-]*10000|marmal88", re.IGNORECASE)


def is_ham10000_id(image_id: str) -> bool:
    """True for ISIC ids in the HAM10000 range `ISIC_0024306` ... `ISIC_0034320`.

    Example:
        >>> is_ham10000_id("ISIC_0024306"), is_ham10000_id("ISIC_0034524")
        (True, False)
    """
    m = _ISIC_ID.match(image_id.strip())
    return m is not None and HAM10000_ID_RANGE[0] <= int(m.group(1)) <= HAM10000_ID_RANGE[1]


def _text(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, Mapping):
        return " ".join(_text(v) for v in value.values())
    if isinstance(value, (list, tuple, set)):
        return " ".join(_text(v) for v in value)
    return str(value)


def dataset_overlap_warning(model_facts: Mapping[str, Any], dataset: Dataset) -> str | None:
    """A warning when the model's declared training data overlaps the evaluation dataset, else `None`.

    The model side is `model_facts["training_data"]` (text, list or dict) mentioning HAM10000, ISIC 2018,
    ISIC 2019 or marmal88. The dataset side is its name or layout (HAM10000, marmal88 parquet) or image ids in
    the HAM10000 range. A model that declares no training data at all, evaluated on HAM10000 images, gets a
    warning too: the overlap cannot be ruled out.

    Example:
        >>> from pathlib import Path
        >>> from derm_cloud.data.dataset import Sample
        >>> ds = Dataset("dev", [Sample("ISIC_0024306", Path("x.jpg"), "nv")])
        >>> dataset_overlap_warning({"training_data": "HAM10000"}, ds) is not None
        True
        >>> dataset_overlap_warning({"training_data": "none: random seeded weights"}, ds) is None
        True
    """
    n = len(dataset)
    ham_ids = sum(1 for s in dataset.samples if is_ham10000_id(s.image_id))
    named = bool(_HAM_DATASET.search(dataset.name)) or dataset.kind == "ham10000"
    if not ham_ids and not named:
        return None
    evidence = []
    if ham_ids:
        evidence.append(
            f"{ham_ids} of {n} evaluation images have HAM10000 ids "
            f"(ISIC_{HAM10000_ID_RANGE[0]:07d}-ISIC_{HAM10000_ID_RANGE[1]:07d})"
        )
    if named:
        evidence.append(f"the dataset {dataset.name!r} is HAM10000 or a copy of it")
    fix = (
        "Unless the model's training split is known to exclude these lesions, its quality figures here are "
        "optimistic. Evaluate on images it never saw: the ISIC 2018 Task 3 test set "
        f"(ISIC_{ISIC2018_TEST_ID_RANGE[0]:07d}-ISIC_{ISIC2018_TEST_ID_RANGE[1]:07d}) or a lesion-level held-out "
        "split of your own data."
    )
    declared = _text(model_facts.get("training_data")).strip()
    if not declared:
        return (
            "The model declares no training data, and " + "; ".join(evidence) + ". Most public lesion models are "
            "trained on HAM10000, so train/test overlap cannot be ruled out. " + fix
        )
    if not _HAM_TRAINING.search(declared):
        return None
    return (
        f"Possible train/test overlap: the model's training data ({declared!r}) includes HAM10000, and "
        + "; ".join(evidence)
        + ". "
        + fix
    )

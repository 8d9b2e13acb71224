"""Agreement between backends: do local, SageMaker and Vertex give the same answer on the same image?

The same model served by two clouds should agree on nearly every image (differences come from image
re-encoding, resizing and numeric precision); different models agree less. Reported here: pairwise percent
agreement and Cohen's kappa, Fleiss' kappa across all backends, and the images they disagree on.

Images where a backend has no label (``None``: the call failed, or the model's labels do not map) are left out
of the comparisons that involve that backend; the counts used are reported.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from itertools import combinations
from typing import Any

import numpy as np

from derm_cloud.errors import ConfigError
from derm_cloud.taxonomy import CLASS_CODES

__all__ = ["agreement_report", "cohen_kappa", "fleiss_kappa", "fleiss_kappa_from_labels"]


def cohen_kappa(a: Sequence[str], b: Sequence[str]) -> float | None:
    """Cohen's kappa of two raters; ``None`` when chance agreement is 1 (both always give the same one label).

    Equals ``sklearn.metrics.cohen_kappa_score`` wherever that is defined.

    Example:
        >>> round(cohen_kappa(["mel", "nv", "nv", "bcc"], ["mel", "nv", "bcc", "bcc"]), 3)
        0.636
    """
    if len(a) != len(b):
        raise ConfigError(f"raters have {len(a)} and {len(b)} labels")
    if not a:
        return None
    cats = sorted(set(a) | set(b))
    index = {c: i for i, c in enumerate(cats)}
    ia = np.array([index[x] for x in a])
    ib = np.array([index[x] for x in b])
    observed = float(np.mean(ia == ib))
    pa = np.bincount(ia, minlength=len(cats)) / len(ia)
    pb = np.bincount(ib, minlength=len(cats)) / len(ib)
    expected = float(np.dot(pa, pb))
    if np.isclose(expected, 1.0):
        return None
    return (observed - expected) / (1.0 - expected)


def fleiss_kappa(counts: np.ndarray) -> float | None:
    """Fleiss' kappa from a subjects x categories table of how many raters chose each category.

    Every row must sum to the same number of raters ``m >= 2``. ``None`` when chance agreement is 1.

    Example (Fleiss 1971 layout; Wikipedia's worked example gives 0.210):
        >>> table = np.array([[0, 0, 0, 0, 14], [0, 2, 6, 4, 2], [0, 0, 3, 5, 6], [0, 3, 9, 2, 0], [2, 2, 8, 1, 1],
        ...                   [7, 7, 0, 0, 0], [3, 2, 6, 3, 0], [2, 5, 3, 2, 2], [6, 5, 2, 1, 0], [0, 2, 2, 3, 7]])
        >>> round(fleiss_kappa(table), 3)
        0.21
    """
    table = np.asarray(counts, dtype=np.float64)
    if table.ndim != 2 or table.shape[0] == 0:
        raise ConfigError("fleiss_kappa needs a non-empty subjects x categories table")
    raters = table.sum(axis=1)
    if not np.allclose(raters, raters[0]) or raters[0] < 2:
        raise ConfigError("every subject needs the same number of ratings, at least 2")
    m = raters[0]
    p_j = table.sum(axis=0) / table.sum()
    p_i = (np.sum(table**2, axis=1) - m) / (m * (m - 1))
    p_bar, p_e = float(p_i.mean()), float(np.sum(p_j**2))
    if np.isclose(p_e, 1.0):
        return None
    return (p_bar - p_e) / (1.0 - p_e)


def fleiss_kappa_from_labels(labels_by_rater: Sequence[Sequence[str]]) -> float | None:
    """Fleiss' kappa from per-rater label lists (same length, no missing labels)."""
    columns = list(zip(*labels_by_rater, strict=True))
    cats = sorted({x for col in columns for x in col})
    index = {c: i for i, c in enumerate(cats)}
    table = np.zeros((len(columns), len(cats)))
    for row, col in enumerate(columns):
        for x in col:
            table[row, index[x]] += 1
    return fleiss_kappa(table)


def agreement_report(
    labels_by_backend: Mapping[str, Sequence[str | None]],
    image_ids: Sequence[str],
    y_true: Sequence[str | None] | None = None,
    *,
    max_disagreements: int | None = None,
) -> dict[str, Any]:
    """How much backends agree on the top label of each image.

    Args:
        labels_by_backend: backend name -> top label per image (``None`` when the backend gave none).
        image_ids: the images, in the same order.
        y_true: true labels when known (``None`` entries allowed).
        max_disagreements: cap the listed disagreements (all are counted).

    Returns:
        ``backends``, ``n_images``, ``pairwise`` (per pair: ``n``, ``percent_agreement``, ``cohen_kappa``),
        ``fleiss_kappa`` and ``percent_agreement_all`` over images every backend labelled, ``disagreements``
        (image id, each backend's label, truth), and with truth ``agree_but_wrong`` (all backends give the same
        wrong label: errors that a second provider would not catch).

    Raises:
        ConfigError: lengths differ, a label is not a class code, or fewer than two backends.

    Example:
        >>> r = agreement_report({"local": ["mel", "nv"], "cloud": ["mel", "bkl"]}, ["a", "b"], ["mel", "nv"])
        >>> r["pairwise"][0]["percent_agreement"], r["disagreements"][0]["image_id"]
        (0.5, 'b')
    """
    names = list(labels_by_backend)
    if len(names) < 2:
        raise ConfigError("agreement needs at least two backends")
    n = len(image_ids)
    for name in names:
        labels = labels_by_backend[name]
        if len(labels) != n:
            raise ConfigError(f"backend {name!r} has {len(labels)} labels for {n} images")
        bad = sorted({x for x in labels if x is not None and x not in CLASS_CODES})
        if bad:
            raise ConfigError(f"backend {name!r} has labels that are not class codes: {bad[:5]}")
    if y_true is not None and len(y_true) != n:
        raise ConfigError(f"y_true has {len(y_true)} labels for {n} images")

    pairwise = []
    for a, b in combinations(names, 2):
        pairs = [(x, y) for x, y in zip(labels_by_backend[a], labels_by_backend[b], strict=True) if x and y]
        la = [x for x, _ in pairs]
        lb = [y for _, y in pairs]
        kappa = cohen_kappa(la, lb)
        pairwise.append(
            {
                "a": a,
                "b": b,
                "n": len(pairs),
                "percent_agreement": float(np.mean([x == y for x, y in pairs])) if pairs else None,
                "cohen_kappa": kappa,
                "cohen_kappa_undefined_reason": None
                if kappa is not None
                else ("no images labelled by both" if not pairs else "both backends give one same label throughout"),
            }
        )

    complete = [i for i in range(n) if all(labels_by_backend[name][i] is not None for name in names)]
    columns = [[str(labels_by_backend[name][i]) for i in complete] for name in names]
    fleiss = fleiss_kappa_from_labels(columns) if complete else None
    unanimous = [len({labels_by_backend[name][i] for name in names}) == 1 for i in complete]

    disagreements = []
    agree_but_wrong = 0
    for i in range(n):
        given = {name: labels_by_backend[name][i] for name in names}
        truth = y_true[i] if y_true is not None else None
        distinct = {v for v in given.values() if v is not None}
        if len(distinct) > 1:
            disagreements.append({"image_id": image_ids[i], "labels": given, "truth": truth})
        elif len(distinct) == 1 and truth is not None and None not in given.values() and distinct != {truth}:
            agree_but_wrong += 1
    shown = disagreements if max_disagreements is None else disagreements[:max_disagreements]
    return {
        "backends": names,
        "n_images": n,
        "n_labelled_by_all": len(complete),
        "pairwise": pairwise,
        "fleiss_kappa": fleiss,
        "fleiss_method": "Fleiss (1971), derm-cloud implementation checked against the textbook example",
        "percent_agreement_all": float(np.mean(unanimous)) if complete else None,
        "n_disagreements": len(disagreements),
        "disagreements": shown,
        "agree_but_wrong": agree_but_wrong if y_true is not None else None,
    }

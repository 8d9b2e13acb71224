"""Agreement between backends: do local, SageMaker and Vertex give the same answer on the same image?

The same model served by two clouds should agree on nearly every image (differences come from image
re-encoding, resizing and numeric precision); different models agree less. Reported here: pairwise percent
agreement and Cohen's kappa, Fleiss' kappa across all backends, and the images they disagree on.

Images where a backend has no label (`None`: the call failed, or the model's labels do not map) are left out
of the comparisons that involve that backend; the counts used are reported.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from itertools import combinations
from typing import TYPE_CHECKING, Any

import numpy as np

from derm_cloud.errors import ConfigError
from derm_cloud.taxonomy import CLASS_CODES

if TYPE_CHECKING:
    from derm_cloud.compare.run.results import RunResults
    from derm_cloud.compare.run.store import ResultRow

__all__ = ["agreement_report", "agreement_section", "cohen_kappa", "fleiss_kappa", "fleiss_kappa_from_labels"]


def cohen_kappa(a: Sequence[str], b: Sequence[str]) -> float | None:
    """Cohen's kappa of two raters; `None` when chance agreement is 1 (both always give the same one label).

    Equals `sklearn.metrics.cohen_kappa_score` wherever that is defined.

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

    Every row must sum to the same number of raters `m >= 2`. `None` when chance agreement is 1.

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
        labels_by_backend: backend name -> top label per image (`None` when the backend gave none).
        image_ids: the images, in the same order.
        y_true: true labels when known (`None` entries allowed).
        max_disagreements: cap the listed disagreements (all are counted).

    Returns:
        `backends`, `n_images`, `pairwise` (per pair: `n`, `percent_agreement`, `cohen_kappa`),
        `fleiss_kappa` and `percent_agreement_all` over images every backend labelled, `disagreements`
        (image id, each backend's label, truth), and with truth `agree_but_wrong` (all backends give the same
        wrong label: errors that a second provider would not catch).

    Raises:
        ConfigError: lengths differ, a label is not a class code, or fewer than two backends.

    Example:
        >>> r = agreement_report({"local": ["mel", "nv"], "cloud": ["mel", "bkl"]}, ["a", "b"], ["mel", "nv"])
        >>> r["pairwise"][0]["percent_agreement"], r["disagreements"][0]["image_id"]
        (0.5, 'b')
    """
    names = list(labels_by_backend)
    _check(labels_by_backend, len(image_ids), y_true)
    n = len(image_ids)
    complete = [i for i in range(n) if all(labels_by_backend[name][i] is not None for name in names)]
    columns = [[str(labels_by_backend[name][i]) for i in complete] for name in names]
    fleiss = fleiss_kappa_from_labels(columns) if complete else None
    unanimous = [len({labels_by_backend[name][i] for name in names}) == 1 for i in complete]
    disagreements, agree_but_wrong = _disagreements(labels_by_backend, image_ids, y_true)
    shown = disagreements if max_disagreements is None else disagreements[:max_disagreements]
    return {
        "backends": names,
        "n_images": n,
        "n_labelled_by_all": len(complete),
        "pairwise": _pairwise(labels_by_backend),
        "fleiss_kappa": fleiss,
        "fleiss_method": "Fleiss (1971), derm-cloud implementation checked against the textbook example",
        "percent_agreement_all": float(np.mean(unanimous)) if complete else None,
        "n_disagreements": len(disagreements),
        "disagreements": shown,
        "agree_but_wrong": agree_but_wrong if y_true is not None else None,
    }


def _check(labels_by_backend: Mapping[str, Sequence[str | None]], n: int, y_true: Sequence[str | None] | None) -> None:
    if len(labels_by_backend) < 2:
        raise ConfigError("agreement needs at least two backends")
    for name, labels in labels_by_backend.items():
        if len(labels) != n:
            raise ConfigError(f"backend {name!r} has {len(labels)} labels for {n} images")
        bad = sorted({x for x in labels if x is not None and x not in CLASS_CODES})
        if bad:
            raise ConfigError(f"backend {name!r} has labels that are not class codes: {bad[:5]}")
    if y_true is not None and len(y_true) != n:
        raise ConfigError(f"y_true has {len(y_true)} labels for {n} images")


def _pairwise(labels_by_backend: Mapping[str, Sequence[str | None]]) -> list[dict[str, Any]]:
    """Percent agreement and Cohen's kappa of every pair, on the images both labelled."""
    pairwise = []
    for a, b in combinations(list(labels_by_backend), 2):
        pairs = [(x, y) for x, y in zip(labels_by_backend[a], labels_by_backend[b], strict=True) if x and y]
        kappa = cohen_kappa([x for x, _ in pairs], [y for _, y in pairs])
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
    return pairwise


def _disagreements(
    labels_by_backend: Mapping[str, Sequence[str | None]],
    image_ids: Sequence[str],
    y_true: Sequence[str | None] | None,
) -> tuple[list[dict[str, Any]], int]:
    """The images the backends label differently, and how many they all label alike but wrongly."""
    names = list(labels_by_backend)
    disagreements = []
    agree_but_wrong = 0
    for i in range(len(image_ids)):
        given = {name: labels_by_backend[name][i] for name in names}
        truth = y_true[i] if y_true is not None else None
        distinct = {v for v in given.values() if v is not None}
        if len(distinct) > 1:
            disagreements.append({"image_id": image_ids[i], "labels": given, "truth": truth})
        elif len(distinct) == 1 and truth is not None and None not in given.values() and distinct != {truth}:
            agree_but_wrong += 1
    return disagreements, agree_but_wrong


def agreement_section(results: RunResults) -> dict[str, Any]:
    """Agreement of the label-mapped backends' top labels over every image of the run (labelled or not)."""
    mapped = [n for n, f in results.backends.items() if f.get("labels_mapped", True)]
    if len(mapped) < 2:
        return {"available": False, "reason": "needs at least two backends whose labels map to the lesion classes"}
    samples = results.dataset.samples
    ids = [s.image_id for s in samples]

    def label(rows: Mapping[str, ResultRow], image_id: str) -> str | None:
        row = rows.get(image_id)
        return row.label if row is not None and row.ok and row.label in CLASS_CODES else None

    answers = {n: results.answers(n) for n in mapped}
    labels = {n: [label(answers[n], i) for i in ids] for n in mapped}
    truth = [s.label for s in samples] if any(s.label for s in samples) else None
    report = agreement_report(labels, ids, truth, max_disagreements=200)
    report["available"] = True
    return report

"""The report's quality section: every label-mapped backend scored on one common set of labelled images.

Scoring each backend on its own answers would reward a backend that fails on hard images and compare backends
on unlike sets, so `common_set` keeps the labelled images every label-mapped backend answered, and each
backend's own coverage (answered / attempted) is reported beside its figures. The figures themselves are
`derm_cloud.compare.analysis.quality_report.quality_report`.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from derm_cloud.compare.analysis.quality_report import quality_report
from derm_cloud.compare.analysis.texts import HOW_TO_LABEL
from derm_cloud.taxonomy import CLASS_CODES, MALIGNANT_CODES

if TYPE_CHECKING:
    from derm_cloud.compare.run.config import ComparisonConfig
    from derm_cloud.compare.run.results import RunResults
    from derm_cloud.compare.run.store import ResultRow
    from derm_cloud.data import Sample

__all__ = ["answered", "common_set", "error_text", "quality_section"]


def error_text(rows: Sequence[ResultRow]) -> str:
    """The failed rows' error classes with their counts, most frequent first (`ThrottledError x2, ...`)."""
    counts = Counter(r.error_type for r in rows if not r.ok)
    return ", ".join(f"{k} x{v}" for k, v in counts.most_common())


def answered(rows: Mapping[str, ResultRow], image_id: str) -> bool:
    """Whether the backend whose quality rows are `rows` (by image id) gave probabilities for the image."""
    row = rows.get(image_id)
    return row is not None and row.ok and bool(row.probs)


def common_set(
    labelled: Sequence[Sample],
    mapped: Sequence[str],
    by_backend: Mapping[str, Mapping[str, ResultRow]],
    warn: list[str],
) -> list[Sample]:
    """The labelled images every label-mapped backend answered: the one set all quality figures are computed on.

    A backend that answered nothing is left out of the intersection (it would empty it) and reported as
    skipped instead. When images are dropped, a warning in `warn` says how many and why, per backend.
    """
    scored = [n for n in mapped if any(answered(by_backend[n], s.image_id) for s in labelled)]
    common = [s for s in labelled if all(answered(by_backend[n], s.image_id) for n in scored)]
    dropped = len(labelled) - len(common)
    if scored and dropped:
        why = [reason for n in scored if (reason := _missed(n, labelled, by_backend[n]))]
        warn.append(
            f"quality and fairness are computed on the {len(common)} labelled images every backend answered: "
            f"{dropped} of {len(labelled)} dropped from the common set because {'; '.join(why)}; each backend's "
            "own coverage is shown beside its figures"
        )
    return common


def _missed(name: str, labelled: Sequence[Sample], rows: Mapping[str, ResultRow]) -> str | None:
    """`"<name> failed on N (<errors>)"` for a backend that missed labelled images, else `None`."""
    missed = [s.image_id for s in labelled if not answered(rows, s.image_id)]
    if not missed:
        return None
    tried = [rows[i] for i in missed if i in rows]
    reason = error_text(tried) or "no answer"
    if len(tried) < len(missed):
        reason += f"{', ' if tried else ''}{len(missed) - len(tried)} not attempted"
    return f"{name} failed on {len(missed)} ({reason})"


def quality_section(
    config: ComparisonConfig, results: RunResults, warn: list[str]
) -> tuple[dict[str, Any], list[Sample]]:
    """The quality section of the summary, and the common set it was computed on (fairness uses it too)."""
    ds = results.dataset
    labelled = [s for s in ds.samples if s.label is not None]
    out: dict[str, Any] = {"available": bool(labelled), "labelled_images": len(labelled), "backends": {}}
    if not labelled:
        out["how_to"] = HOW_TO_LABEL
        return out, []
    if len(labelled) < len(ds):
        warn.append(f"{len(ds) - len(labelled)} of {len(ds)} images have no label and are left out of quality")
    by_backend = {name: results.answers(name) for name in results.backends}
    mapped = [n for n, f in results.backends.items() if f.get("labels_mapped", True)]
    common = common_set(labelled, mapped, by_backend, warn)
    out["common_set"] = len(common)
    for name, facts in results.backends.items():
        out["backends"][name] = _backend(name, facts, by_backend[name], labelled, common, config, warn)
    return out, common


def _backend(
    name: str,
    facts: Mapping[str, Any],
    rows: Mapping[str, ResultRow],
    labelled: Sequence[Sample],
    common: Sequence[Sample],
    config: ComparisonConfig,
    warn: list[str],
) -> dict[str, Any]:
    """One backend's quality entry: its coverage, and its figures on the common set (or why it has none)."""
    entry: dict[str, Any] = {"attempted": len(rows), "errors": sum(1 for r in rows.values() if not r.ok)}
    if not facts.get("labels_mapped", True):
        entry["skipped"] = "labels do not map onto the seven lesion classes (latency/cost baseline only)"
        return entry
    own = sum(1 for s in labelled if answered(rows, s.image_id))
    tried = sum(1 for s in labelled if s.image_id in rows)
    entry["answered_own"] = own
    entry["coverage"] = own / tried if tried else None
    if entry["errors"]:
        warn.append(f"{name}: {entry['errors']} quality requests failed ({error_text(list(rows.values()))})")
    if not own:
        entry["skipped"] = "no successful answers"
        return entry
    if not common:
        entry["skipped"] = "no image was answered by every backend (no common set to compare on)"
        return entry
    report = _figures(rows, common, config)
    entry.update(report)
    warn.extend(f"{name}: {w}" for w in report.get("warnings", []))
    return entry


def _figures(rows: Mapping[str, ResultRow], common: Sequence[Sample], config: ComparisonConfig) -> dict[str, Any]:
    """`quality_report` on the common set, plus the share of true melanomas referred (top class malignant)."""
    y = [str(s.label) for s in common]
    probs = np.asarray([rows[s.image_id].probs for s in common], dtype=np.float64)
    report = quality_report(
        y,
        probs,
        prevalence=config.melanoma_prevalence,
        n_boot=config.scenario_defaults["bootstrap"],
        seed=config.seed,
        clusters=[s.lesion_id for s in common],
    )
    mel = [i for i, label in enumerate(y) if label == "mel"]
    referred = [CLASS_CODES[int(np.argmax(probs[i]))] in MALIGNANT_CODES for i in mel]
    report["melanoma_referral_sensitivity"] = float(np.mean(referred)) if mel else None
    report["melanoma_referral_definition"] = (
        "share of true melanomas whose top class is malignant (mel, bcc or akiec), i.e. referred"
    )
    report["answered"] = len(common)
    return report

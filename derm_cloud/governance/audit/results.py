"""What a dataset audit finds, as data: `DatasetAudit` for one dataset, `AuditComparison` for two.

Every section is a plain field, so the audit serialises to JSON unchanged (`DatasetAudit.to_dict`) and the
Markdown and HTML reports (`report`) only read it.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields
from typing import Any

from derm_cloud.governance._records import Table

__all__ = ["AuditComparison", "DatasetAudit"]


@dataclass
class DatasetAudit:
    """Everything `audit_dataset` found; every count is over unique image ids unless it says rows.

    Attributes:
        name, source: the dataset.
        rows: rows as stored; `unique_images` distinct image ids; `duplicate_rows` rows repeating an id.
        rows_per_image: `{rows: number of image ids stored that many times}`.
        lesions: distinct lesion ids (`None` without a lesion column).
        images_per_lesion: mean, median, max and `{images: lesions}` distribution.
        class_counts, class_share: images per class (canonical order) and their share of labelled images.
        class_lesions: lesions per class.
        dx_type: `{dx_type: images}`; `dx_type_by_class`: `{class: {dx_type: images}}`.
        completeness: share of images with each metadata field known (`unknown` counts as missing).
        age: known count, mean, median, min, max and `bands`.
        sex, site, fitzpatrick: group counts.
        splits: images per split when the data has splits; `split_leaks`: ids/lesions found in several splits.
        images_available: images readable here; `images_checked` how many the image sections used.
        duplicates: perceptual-hash duplicate groups (image ids) and how many cross lesions or labels.
        ita: skin-tone estimate counts per ITA band, undefined estimates, the values, and the caveat.
        findings: plain-language statements computed from the figures above.
    """

    name: str
    source: str
    rows: int
    unique_images: int
    duplicate_rows: int
    rows_per_image: dict[int, int]
    lesions: int | None
    images_per_lesion: dict[str, Any]
    class_counts: dict[str, int]
    class_share: dict[str, float]
    class_lesions: dict[str, int]
    unlabelled: int
    dx_type: dict[str, int]
    dx_type_by_class: dict[str, dict[str, int]]
    completeness: dict[str, float]
    age: dict[str, Any]
    sex: dict[str, int]
    site: dict[str, int]
    fitzpatrick: dict[str, int]
    splits: dict[str, int]
    split_leaks: dict[str, int]
    images_available: int
    images_checked: int
    duplicates: dict[str, Any]
    ita: dict[str, Any]
    findings: list[str] = field(default_factory=list)
    table: Table | None = field(default=None, repr=False, compare=False)

    def to_dict(self) -> dict[str, Any]:
        """JSON-compatible (dict keys as strings); the source rows are not included."""
        out = {f.name: getattr(self, f.name) for f in fields(self) if f.name != "table"}
        out["rows_per_image"] = {str(k): v for k, v in self.rows_per_image.items()}
        return out


@dataclass
class AuditComparison:
    """Two audits side by side.

    Attributes:
        left, right: the dataset names.
        class_share_diff: `{class: right share - left share}` in percentage points.
        total_variation: half the sum of absolute share differences (0 = same mix, 1 = disjoint).
        images_per_lesion: `{"left": mean, "right": mean}`.
        overlap: image ids and lesion ids in both.
        findings: plain-language differences, including why one has more rows than the other has images.
    """

    left: str
    right: str
    class_share_diff: dict[str, float]
    total_variation: float
    images_per_lesion: dict[str, float | None]
    overlap: dict[str, int]
    findings: list[str]

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

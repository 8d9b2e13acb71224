"""Dataset audit: what a dataset holds, how it was labelled, who is in it, and what is wrong with it.

`audit_dataset` counts, from the rows as stored: class balance, images per lesion, rows per image id
(repeated rows), metadata completeness, how diagnoses were confirmed (`dx_type`), age / sex / site coverage,
Fitzpatrick types when recorded; and from the images that exist locally: duplicate images by perceptual hash
and the skin-tone (ITA) distribution, with its caveats. `compare_audits` puts two datasets side by side
and explains, in words computed from the data, differences such as a export with more rows than images.
`write_audit_report` writes Markdown, HTML (plots embedded) and JSON.

Metadata-only audits work: `HAM10000_metadata.csv` has no file column, and the image sections then cover
only the images found beside it (and say how many).

One module per step: `dataset` (the counts), `images` (duplicates, ITA), `findings` (the
statements), `comparison` (two datasets), `results` (what they fill in) and `report`.

Example:
    >>> a = audit_dataset("../shared/data/ham10000/dev.csv")  # doctest: +SKIP
    >>> b = audit_dataset("../shared/data/ham10000/HAM10000_metadata.csv", images=False)  # doctest: +SKIP
    >>> write_audit_report([a, b], "audit/", comparison=compare_audits(a, b))  # doctest: +SKIP
"""

from __future__ import annotations

from derm_cloud.governance.audit.comparison import compare_audits
from derm_cloud.governance.audit.dataset import DEFAULT_HASH_DISTANCE, audit_dataset
from derm_cloud.governance.audit.report import write_audit_report
from derm_cloud.governance.audit.results import AuditComparison, DatasetAudit

__all__ = [
    "DEFAULT_HASH_DISTANCE",
    "AuditComparison",
    "DatasetAudit",
    "audit_dataset",
    "compare_audits",
    "write_audit_report",
]

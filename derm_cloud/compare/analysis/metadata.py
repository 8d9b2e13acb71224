"""The summary's metadata section: per backend, whether it could use patient metadata and whether it was sent any.

Backends answering in mixed modes get a warning at the top of the report. The modes themselves are chosen
before the run: `derm_cloud.compare.run.metadata_modes`.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

__all__ = ["metadata_summary"]


def metadata_summary(infos: Mapping[str, Mapping[str, Any]]) -> tuple[dict[str, Any], list[str]]:
    """The report's metadata facts (per backend: can use it, was sent it) and the warning mixed modes call for."""
    rows = {
        name: {
            "can_use": bool(f.get("uses_metadata")),
            "sent": bool(f.get("metadata_used")),
            "variant_of": f.get("variant_of"),
        }
        for name, f in infos.items()
    }
    base = {n: r for n, r in rows.items() if not r["variant_of"]}
    variants = [n for n, r in rows.items() if r["variant_of"]]
    base_sent = {r["sent"] for r in base.values()}
    warnings: list[str] = []
    if len(base_sent) > 1:
        sent = [n for n, r in base.items() if r["sent"]]
        blind = [n for n, r in base.items() if not r["sent"]]
        mode = "mixed"
        warnings.append(
            f"MIXED METADATA MODES: {', '.join(sent)} received patient metadata (age, sex, site) and "
            f"{', '.join(blind)} did not: differences between them include the effect of metadata, not only of "
            'the provider. [metadata] mode = "auto" (the default) runs every backend in one mode'
        )
    else:
        mode = "with metadata" if base_sent == {True} else "metadata-blind"
    if variants:
        mode += f", plus explicit variant rows in the other mode ({', '.join(variants)})"
    return {"mode": mode, "backends": rows, "variants": variants}, warnings

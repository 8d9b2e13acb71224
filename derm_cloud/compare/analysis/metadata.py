"""The summary's metadata section: per backend, whether it could use patient metadata and whether it was sent any.

The report states at its top which figure used what whenever the choice matters: backends that differ in
whether they can use metadata (the default then shows image-only rows for the cross-backend comparison plus
with-metadata rows for the capable backends), a capable backend that answered without metadata, or mixed
modes (a warning: differences then include the effect of metadata). The modes themselves are chosen before the
run: `derm_cloud.compare.run.metadata_modes`.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

__all__ = ["metadata_summary"]


def _names(names: list[str]) -> str:
    return ", ".join(names) if names else "none"


def metadata_summary(infos: Mapping[str, Mapping[str, Any]]) -> tuple[dict[str, Any], list[str]]:
    """The report's metadata facts and the notes for the report's top.

    Args:
        infos: backend name -> facts (`uses_metadata`, `metadata_used`, `variant_of`).

    Returns:
        `(section, top_notes)`: the section holds `mode` (in words), `note` (which figure used what, or
        `None` when every backend answered with metadata it can use), `backends` (per backend: `can_use`,
        `sent`, `variant_of`) and `variants`; `top_notes` go above the summary table.
    """
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
    notes: list[str] = []
    if len(base_sent) > 1:
        sent = [n for n, r in base.items() if r["sent"]]
        blind = [n for n, r in base.items() if not r["sent"]]
        mode = "mixed"
        notes.append(
            f"MIXED METADATA MODES: {', '.join(sent)} received patient metadata (age, sex, site) and "
            f"{', '.join(blind)} did not: differences between them include the effect of metadata, not only of "
            'the provider. [metadata] mode = "auto" (the default) compares every backend in one mode'
        )
    else:
        mode = "with metadata" if base_sent == {True} else "metadata-blind"
    if variants:
        mode += f", plus explicit variant rows in the other mode ({', '.join(variants)})"
    note = _which_figure_used_what(base, rows) if mode != "mixed" else None
    if note:
        notes.append(note)
    return {"mode": mode, "note": note, "backends": rows, "variants": variants}, notes


def _which_figure_used_what(base: Mapping[str, Mapping[str, Any]], rows: Mapping[str, Mapping[str, Any]]) -> str | None:
    """The top note: which rows are image-only and which used metadata, when a capable backend answered blind."""
    capable = [n for n, r in base.items() if r["can_use"]]
    unable = [n for n, r in base.items() if not r["can_use"]]
    blind_capable = [n for n in capable if not base[n]["sent"]]
    if not blind_capable:
        return None
    with_rows = [n for n, r in rows.items() if r["variant_of"] and r["sent"]]
    text = (
        f"PATIENT METADATA: {_names(capable)} can use patient metadata (age, sex, site)"
        + (f"; {_names(unable)} cannot" if unable else "")
        + f". Image-only (metadata-blind), the cross-backend comparison: {_names(list(base))}."
    )
    if with_rows:
        return (
            text + f" With metadata: {_names(with_rows)} (compare each only with its own image-only row). "
            '[metadata] mode = "blind" or variants = false runs the image-only rows only.'
        )
    return (
        text + f" {_names(blind_capable)} answered without the metadata it can use, by the config's choice: "
        'with metadata its figures may differ; [metadata] variants = "auto" (the default) or true adds a '
        "with-metadata row for each."
    )

"""Report pieces that show whether the comparison was fair: the first line, the top warnings, input parity.

Both page writers (`derm_cloud.compare.report.html`, `...report.markdown`) render these through the same
`table` callable.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from derm_cloud.compare.report.cells import Section, Table

__all__ = ["evidence_text", "metadata_cell", "metadata_label", "parity_section", "top_warnings"]


def evidence_text(summary: Mapping[str, Any]) -> str:
    """The summary's first line: how many images, lesions and labels the figures rest on."""
    evidence = summary.get("evidence") or {}
    text = str(evidence.get("text", ""))
    mode = (summary.get("metadata") or {}).get("mode")
    return f"{text} Patient metadata: {mode}." if mode else text


def top_warnings(summary: Mapping[str, Any]) -> list[str]:
    """Warnings shown above the summary table (mixed metadata modes, same-model mismatches)."""
    return [str(w) for w in summary.get("top_warnings") or []]


def metadata_label(row: Mapping[str, Any] | None) -> str:
    """The summary table's `metadata` cell of one backend."""
    if not row:
        return "n/a"
    if row["sent"]:
        return "used"
    return "blind (can use)" if row["can_use"] else "blind"


def metadata_cell(summary: Mapping[str, Any], name: str) -> str:
    """The summary table's `metadata` cell of one backend."""
    return metadata_label(((summary.get("metadata") or {}).get("backends") or {}).get(name))


def _gap(value: Any) -> str:
    return "n/a" if value is None else f"{float(value):.2e}"


def _export_row(pair: Mapping[str, Any]) -> list[Any]:
    agree, kappa = pair.get("top1_agreement"), pair.get("kappa")
    return [
        f"{pair['home']} vs {pair['cloud']}",
        pair["images"],
        _gap(pair.get("max_abs_gap")),
        _gap(pair.get("mean_abs_gap")),
        "n/a" if agree is None else f"{agree:.1%}",
        "n/a" if kappa is None else f"{kappa:.3f}",
        pair.get("melanoma_call_disagreements", "n/a"),
        "; ".join(pair.get("explanations") or []) or "-",
    ]


def parity_section(summary: Mapping[str, Any], table: Table) -> Section:
    """(title, intro, tables) of the input-parity section: metadata modes and the same-model check."""
    meta = summary.get("metadata") or {}
    meta_rows = [
        [name, "yes" if row["can_use"] else "no", "yes" if row["sent"] else "no", row.get("variant_of") or ""]
        for name, row in (meta.get("backends") or {}).items()
    ]
    same = summary.get("same_model") or {}
    tol = same.get("tolerance", 1e-4)
    pair_rows = _same_model_rows(same, tol)
    intro = (
        f"Metadata mode: {meta.get('mode', 'n/a')}. By default the backends are compared in one mode: with patient "
        "metadata (age, sex, site) when every backend can use it; otherwise image-only, plus a with-metadata row "
        "for each backend that can use it, so its own figure with metadata is measured too ([metadata] "
        "variants = false runs one mode only). "
        "Same-model check: backends serving the same model file (SHA-256 of spec.json and the model) in the same "
        f"metadata mode should give the same probabilities; a largest gap above {tol:g} is an input or "
        "preprocessing mismatch (or a provider path that loses precision, such as an LLM writing rounded "
        "probabilities), not a difference between the providers' models."
    )
    tables = [table(["backend", "can use metadata", "metadata sent", "variant of"], meta_rows)]
    if pair_rows:
        tables.append(table(_SAME_MODEL_HEADERS, pair_rows))
    else:
        tables.append(table(["same model"], [["no two backends serve the same model file in the same mode"]]))
    exports = (summary.get("export_parity") or {}).get("pairs") or []
    if exports:
        tables.append(table(_EXPORT_HEADERS, [_export_row(p) for p in exports]))
    return "Input parity: metadata and same-model check", intro, tables


_SAME_MODEL_HEADERS = [
    "same model",
    "model fingerprint",
    "metadata",
    "images",
    "largest |p gap|",
    "where",
    "re-encoded for one (above tol.)",
    "verdict",
]
_EXPORT_HEADERS = [
    "cloud vs home (export_of)",
    "images",
    "largest |p gap|",
    "mean |p gap|",
    "top-1 agree",
    "kappa",
    "melanoma calls differ",
    "what can explain a gap",
]


def _reencoded_cell(enc: Mapping[str, Any]) -> str:
    """How many shared images a provider limit re-encoded for one backend of the pair, and how many are above tol."""
    if not enc.get("images"):
        return "0"
    return f"{enc['images']} ({enc['above_tolerance']} above)"


def _verdict(pair: Mapping[str, Any], verdict: Mapping[bool | None, str]) -> str:
    """The pair's verdict, naming the re-encode when it explains every image above the tolerance."""
    enc = pair.get("reencoded") or {}
    if pair.get("mismatch") and enc.get("above_tolerance") and not enc.get("unexplained_above_tolerance"):
        return "MISMATCH: caused by the re-encode (a provider limit), see predictions.csv reencoded"
    return verdict[pair.get("mismatch")]


def _same_model_rows(same: Mapping[str, Any], tol: float) -> list[list[Any]]:
    verdict = {
        True: f"MISMATCH (> {tol:g}): input, preprocessing or output precision",
        False: "same answers",
        None: "n/a",
    }
    return [
        [
            f"{pair['backend']} vs {pair['reference']}",
            group["fingerprint"][:12],
            "yes" if group["metadata_used"] else "no",
            pair["images"],
            _gap(pair.get("max_abs_gap")),
            f"{pair.get('class', '')} on {pair.get('image_id', '')}" if pair.get("max_abs_gap") else "",
            _reencoded_cell(pair.get("reencoded") or {}),
            _verdict(pair, verdict),
        ]
        for group in same.get("groups", [])
        for pair in group["pairs"]
    ]

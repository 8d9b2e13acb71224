"""Several models' facts side by side, as wrapped text for a terminal or a Markdown table."""

from __future__ import annotations

import textwrap
from collections.abc import Sequence
from typing import Literal

from derm_cloud.models.facts.record import ModelFacts

__all__ = ["render_facts"]


_ROWS: tuple[tuple[str, str], ...] = (
    ("kind", "kind"),
    ("architecture", "architecture"),
    ("parameters", "parameters"),
    ("file_size_bytes", "file size"),
    ("opset", "ONNX opset"),
    ("inputs", "inputs"),
    ("labels", "labels"),
    ("maps_to_ham10000", "maps to HAM10000 classes"),
    ("preprocessing", "preprocessing"),
    ("licence", "licence"),
    ("training_data", "training data"),
    ("intended_use", "intended use"),
    ("known_limitations", "known limitations"),
    ("extra", "validation"),
    ("notes", "notes"),
    ("sources", "sources"),
)


def _cell(facts: ModelFacts, key: str) -> str:
    value = getattr(facts, key)
    if key == "parameters" and value is not None:
        return f"{value:,} ({value / 1e6:.1f}M)"
    if key == "file_size_bytes" and value is not None:
        return f"{value / 1e6:.1f} MB"
    if key == "inputs":
        return "; ".join(f"{n} [{', '.join(str(d) for d in s)}]" for n, s in value)
    if key == "labels":
        if not value:
            return ""
        if len(value) <= 8:
            return f"{len(value)}: " + ", ".join(value)
        return f"{len(value)}: " + ", ".join(value[:4]) + f", ... ({len(value) - 4} more)"
    if key == "maps_to_ham10000":
        return "" if value is None else ("yes" if value else "no (baseline only)")
    if key == "extra":
        parts = []
        for name in ("parity_max_abs_diff", "parity", "quantization"):
            if name in value:
                item = value[name]
                if isinstance(item, dict):
                    shown = ("method", "max_abs_diff", "top1_agreement", "max_abs_dp", "n_images", "source_model_id")
                    item = ", ".join(
                        f"{k}={item[k]:.3g}" if isinstance(item[k], float) else f"{k}={item[k]}"
                        for k in shown
                        if k in item
                    )
                parts.append(f"{name}: {item}")
        return "; ".join(parts)
    if key == "notes":
        return "; ".join(value)
    if key == "sources":
        urls = sorted({v.split(": ", 1)[-1] for v in value.values() if "http" in v})
        return ", ".join(urls)
    return "" if value is None else str(value)


def render_facts(facts: Sequence[ModelFacts], fmt: Literal["text", "markdown"] = "text", width: int = 40) -> str:
    """Several models side by side: one row per fact, one column per model.

    Args:
        facts: the models to show, in column order.
        fmt: `text` (wrapped columns for a terminal) or `markdown` (a GitHub table).
        width: column width of the text form.
    """
    header = ["fact", *(f.model for f in facts)]
    rows = []
    for key, title in _ROWS:
        cells = [_cell(f, key) for f in facts]
        if any(cells):
            rows.append([title, *cells])
    if fmt == "markdown":

        def esc(s: str) -> str:
            return s.replace("|", "\\|").replace("\n", " ")

        lines = ["| " + " | ".join(esc(h) for h in header) + " |", "|" + "---|" * len(header)]
        lines += ["| " + " | ".join(esc(c) for c in row) + " |" for row in rows]
        return "\n".join(lines)
    first = max(len(r[0]) for r in [header, *rows])
    out = []
    for row in [header, *rows]:
        wrapped = [[row[0]], *[textwrap.wrap(c, width) or [""] for c in row[1:]]]
        for i in range(max(len(w) for w in wrapped)):
            parts = [(wrapped[0][i] if i < len(wrapped[0]) else "").ljust(first)]
            parts += [(w[i] if i < len(w) else "").ljust(width) for w in wrapped[1:]]
            out.append("  ".join(parts).rstrip())
        if row is header:
            out.append("-" * min(200, first + (width + 2) * (len(header) - 1)))
    return "\n".join(out)

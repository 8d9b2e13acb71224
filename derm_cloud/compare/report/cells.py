"""How the report writes a number, an interval and a table, the same way in HTML and in Markdown."""

from __future__ import annotations

import html
from collections.abc import Callable, Sequence
from typing import Any

__all__ = ["Section", "Table", "fmt", "fmt_ci", "html_table", "md_table"]

#: Renders ``(headers, rows)`` as one table: `html_table` or `md_table`.
Table = Callable[[Sequence[str], Sequence[Sequence[Any]]], str]
#: One section of the report: ``(title, intro text, rendered tables)``.
Section = tuple[str, str, list[str]]


def fmt(value: Any, kind: str = "num") -> str:
    """A figure as the report prints it: `pct` 12.3%, `ms`, `usd` $0.0123, `int` 1,234, else 0.123."""
    if value is None or (isinstance(value, float) and value != value):
        return "n/a"
    v = float(value)
    if kind == "pct":
        return f"{100 * v:.1f}%"
    if kind == "ms":
        return f"{v:.1f}" if v < 100 else f"{v:.0f}"
    if kind == "usd":
        if v == 0:
            return "$0"
        return f"${v:,.4f}" if v < 1 else f"${v:,.2f}"
    if kind == "int":
        return f"{v:,.0f}"
    return f"{v:.3f}"


def fmt_ci(value: Any, ci: Sequence[Any] | None, kind: str = "num") -> str:
    """A figure with its interval in brackets, when it has one."""
    text = fmt(value, kind)
    if ci and ci[0] is not None and ci[1] is not None:
        text += f" [{fmt(ci[0], kind)}, {fmt(ci[1], kind)}]"
    return text


def html_table(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    head = "".join(f"<th>{html.escape(str(h))}</th>" for h in headers)
    body = "".join("<tr>" + "".join(f"<td>{html.escape(str(c))}</td>" for c in r) + "</tr>" for r in rows)
    return f"<table><tr>{head}</tr>{body}</table>"


def md_table(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    def cell(c: Any) -> str:
        return str(c).replace("|", "\\|").replace("\n", " ")

    lines = ["| " + " | ".join(cell(h) for h in headers) + " |", "|" + "---|" * len(headers)]
    lines += ["| " + " | ".join(cell(c) for c in r) + " |" for r in rows]
    return "\n".join(lines)

"""The JSON Schema of report.json, shipped in the package, and a check of a report against it.

`report.schema.json` (JSON Schema draft 2020-12, beside this module) describes what `derm-cloud compare`
writes as report.json (format `derm-cloud-comparison/1`): every top-level key, and strictly the sections whose
shape is settled (metadata, same-model pairs and their re-encodes, quality figures with their in-sample flags,
exports, figures). Within one format keys are only added, never removed or retyped; what each key means is in
the comparator guide (docs/comparator.md, "report.json and its schema").

Example:
    >>> from derm_cloud.compare.report.schema import load_schema
    >>> load_schema()["properties"]["format"]["const"]
    'derm-cloud-comparison/1'
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from functools import cache
from pathlib import Path
from typing import Any

from derm_cloud.errors import DermCloudError, MissingDependencyError

__all__ = ["SCHEMA_PATH", "ReportSchemaError", "load_schema", "validate_report"]

#: The schema file, shipped inside the package.
SCHEMA_PATH = Path(__file__).with_name("report.schema.json")


class ReportSchemaError(DermCloudError, ValueError):
    """A report.json does not match the schema of its format; the message names each place and the rule broken."""


@cache
def load_schema() -> dict[str, Any]:
    """The report.json schema as a dict (read once)."""
    return json.loads(SCHEMA_PATH.read_text(encoding="utf-8"))  # type: ignore[no-any-return]


def validate_report(report: Mapping[str, Any] | str | Path) -> None:
    """Check a report (its data, or the path of a report.json) against the shipped schema.

    Args:
        report: the report data, or the path of a report.json.

    Raises:
        ReportSchemaError: the report breaks the schema; every violation is listed with its JSON path.
        MissingDependencyError: the `jsonschema` package is not installed (`pip install 'derm-cloud[compare]'`).
    """
    try:
        import jsonschema
    except ImportError as exc:  # pragma: no cover - an install without the compare extra
        raise MissingDependencyError(
            "checking report.json needs the jsonschema package: pip install 'derm-cloud[compare]'"
        ) from exc
    data = json.loads(Path(report).read_text(encoding="utf-8")) if isinstance(report, (str, Path)) else report
    validator = jsonschema.Draft202012Validator(load_schema())
    errors = sorted(validator.iter_errors(data), key=lambda e: list(map(str, e.absolute_path)))
    if errors:
        lines = [f"{e.json_path}: {e.message}" for e in errors[:20]]
        more = f" (and {len(errors) - 20} more)" if len(errors) > 20 else ""
        raise ReportSchemaError(
            f"report.json breaks its schema ({SCHEMA_PATH.name}) in {len(errors)} place(s){more}: "
            + "; ".join(lines)
            + ". A report written by this version of derm-cloud always matches: regenerate it, or read it with the "
            "version that wrote it (run.versions)"
        )

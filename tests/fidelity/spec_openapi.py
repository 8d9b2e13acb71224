"""Validate JSON answers against a Swagger 2.0 or OpenAPI 3.0 document, strictly, with ``jsonschema``.

Azure publishes its data-plane contracts as Swagger 2.0 (Custom Vision) and OpenAPI 3.0 (Azure OpenAI). Their
schema objects are JSON Schema with a few extensions, so each document is rewritten once into JSON Schema 2020-12:

* ``$ref`` to ``#/definitions/X`` or ``#/components/schemas/X`` points into ``$defs``;
* ``x-nullable: true`` (Swagger, AutoRest) and ``nullable: true`` (OpenAPI 3.0) also admit ``null``;
* every object schema *where it is used* (a property, an item, a response, a ``oneOf`` branch) gets
  ``unevaluatedProperties: false`` unless it states ``additionalProperties``: the specs list every field their
  services answer, and a field they do not list (a renamed one, say) must fail. Placed at the use site rather than
  on each definition, because ``allOf`` composes definitions and 2020-12 only sees through ``allOf`` and ``$ref``
  from the outside;
* ``uuid`` and ``date-time`` formats are checked.

Enums are checked as written, including AutoRest's ``modelAsString`` ones: a value the spec does not list is
reported, and a test that accepts it names the evidence (see ``WIRE_DEVIATIONS`` in the tests).
"""

from __future__ import annotations

import datetime as dt
import json
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any

from jsonschema import Draft202012Validator, FormatChecker
from jsonschema.exceptions import ValidationError

_OPEN_KEYS = ("additionalProperties", "unevaluatedProperties")
_COMPOSED = ("allOf", "anyOf", "oneOf")


@dataclass(frozen=True)
class Problem:
    """One place an answer departs from the spec: the JSON path (``predictions[0].tagName``) and why."""

    where: str
    problem: str

    def __str__(self) -> str:
        return f"{self.where or '(root)'}: {self.problem}"


def _formats() -> FormatChecker:
    checker = FormatChecker(formats=())

    @checker.checks("uuid", raises=ValueError)
    def _uuid(value: object) -> bool:
        return not isinstance(value, str) or bool(uuid.UUID(value))

    @checker.checks("date-time", raises=ValueError)
    def _date_time(value: object) -> bool:
        if isinstance(value, str):  # RFC 3339 needs a date, a time and an offset or Z
            parsed = dt.datetime.fromisoformat(value.replace("Z", "+00:00"))
            if parsed.tzinfo is None or "T" not in value.upper():
                raise ValueError(f"{value!r} has no time zone")
        return True

    return checker


class ApiSpec:
    """A Swagger 2.0 / OpenAPI 3.0 document, ready to validate response bodies by operation and status.

    Args:
        path: the (vendored) JSON document.
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        self.document: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))
        self.openapi3 = "openapi" in self.document
        raw = self.document["components"]["schemas"] if self.openapi3 else self.document["definitions"]
        self.definitions: dict[str, Any] = raw

    @cached_property
    def _defs(self) -> dict[str, Any]:
        return {name: self._convert(schema, use_site=False) for name, schema in self.definitions.items()}

    # --- lookups -------------------------------------------------------------------------------------------

    def operation(self, path: str, method: str = "post") -> dict[str, Any]:
        """The operation object at ``paths[path][method]``."""
        found: dict[str, Any] = self.document["paths"][path][method.lower()]
        return found

    def response_schema(self, path: str, method: str, status: int) -> dict[str, Any]:
        """The schema of the response ``status`` (or ``default``) of an operation, as the spec writes it."""
        responses = self.operation(path, method)["responses"]
        response = responses.get(str(status)) or responses["default"]
        if self.openapi3:
            schema: dict[str, Any] = response["content"]["application/json"]["schema"]
            return schema
        schema = response["schema"]
        return schema

    # --- validation -----------------------------------------------------------------------------------------

    def check(self, instance: Any, schema: Mapping[str, Any]) -> list[Problem]:
        """Every way ``instance`` departs from ``schema`` (a schema object of this document, e.g. a response's)."""
        root = {"$defs": self._defs, **self._convert(dict(schema), use_site=True)}
        validator = Draft202012Validator(root, format_checker=_formats())
        errors = sorted(validator.iter_errors(instance), key=lambda e: [str(p) for p in e.path])
        return [problem for error in errors for problem in _problems(error)]

    def check_definition(self, instance: Any, name: str) -> list[Problem]:
        """Every way ``instance`` departs from the named definition (``ImagePrediction``, ``errorResponse``)."""
        return self.check(instance, {"$ref": self._ref_prefix + name})

    def check_response(self, instance: Any, path: str, method: str, status: int) -> list[Problem]:
        """Every way a response body departs from what the spec says ``status`` answers (or ``default``)."""
        return self.check(instance, self.response_schema(path, method, status))

    @property
    def _ref_prefix(self) -> str:
        return "#/components/schemas/" if self.openapi3 else "#/definitions/"

    # --- the rewrite into JSON Schema 2020-12 ------------------------------------------------------------------

    def _convert(self, node: Any, *, use_site: bool) -> Any:
        if not isinstance(node, dict):
            return node
        out: dict[str, Any] = {}
        for key, value in node.items():
            if key == "$ref":
                out[key] = "#/$defs/" + value.rsplit("/", 1)[-1]
            elif key in ("properties", "patternProperties", "$defs"):
                out[key] = {k: self._convert(v, use_site=True) for k, v in value.items()}
            elif key in ("items", "additionalProperties", "not") and isinstance(value, dict):
                out[key] = self._convert(value, use_site=True)
            elif key == "allOf":  # parts of one object: closed once, where the whole is used
                out[key] = [self._convert(v, use_site=False) for v in value]
            elif key in ("anyOf", "oneOf"):  # alternatives: each branch is a whole object
                out[key] = [self._convert(v, use_site=True) for v in value]
            elif key in ("nullable", "x-nullable", "discriminator", "example", "x-ms-enum", "readOnly"):
                continue  # handled below or annotation only (an OpenAPI discriminator object is not JSON Schema)
            else:
                out[key] = value
        if use_site and _object_like(out) and not any(k in out for k in _OPEN_KEYS):
            out["unevaluatedProperties"] = False
        if node.get("nullable") is True or node.get("x-nullable") is True:
            return {"anyOf": [out, {"type": "null"}]}
        return out


def _object_like(schema: Mapping[str, Any]) -> bool:
    return schema.get("type") == "object" or "properties" in schema or "$ref" in schema or "allOf" in schema


def _problems(error: ValidationError) -> list[Problem]:
    """The reasons behind one error, named at the field they concern.

    An ``anyOf``/``oneOf`` failure (every nullable field is one) keeps each branch's reasons in ``.context``: the
    branch that came closest (fewest reasons; the "or null" branch of a nullable field only when nothing else is
    left) is the one the answer was meant to be, so its reasons are reported.
    """
    if not error.context:
        if error.validator == "enum" and len(error.validator_value) > 8:  # a long enum would bury the message
            return [Problem(_json_path(error.absolute_path), f"{error.instance!r} is not one of the spec's values")]
        return [Problem(_json_path(error.absolute_path), error.message)]
    branches: dict[Any, list[ValidationError]] = {}
    for reason in error.context:
        branches.setdefault(reason.relative_schema_path[0], []).append(reason)
    real = [r for r in branches.values() if not all(e.validator == "type" and e.validator_value == "null" for e in r)]
    closest = min(real or list(branches.values()), key=len)
    return [problem for reason in closest for problem in _problems(reason)]


def _json_path(parts: Any) -> str:
    out = ""
    for part in parts:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out


def example_response(path: Path, status: int = 200) -> Any:
    """The response body of a published ``x-ms-examples`` file."""
    document = json.loads(path.read_text(encoding="utf-8"))
    return document["responses"][str(status)]["body"]

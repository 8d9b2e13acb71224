"""Check an HTTP answer against the botocore service model of the installed botocore (AWS's own API description).

botocore validates what a client *sends* (``botocore.validate``) but parses answers leniently: unknown members are
dropped, a wrong type passes through, a missing required member is simply absent. So this module walks the output
and error shapes itself:

* a success answer has the operation's status, every header member in its type, the payload or JSON body in the
  output shape (required members present, no member the shape lacks, types, enums, min/max);
* an error answer carries a code the operation models (or one of AWS's common errors), with that error shape's
  HTTP status, a body with only that shape's members plus the protocol's own keys, in their types;
* every answer has ``x-amzn-RequestId`` (botocore's ``ResponseMetadata.RequestId``) and the protocol's
  ``Content-Type``.

Every problem is a :class:`Violation` naming the field. Fields seen on the wire but absent from the model are
accepted only when listed in :data:`WIRE_EXTRAS` with the evidence.
"""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Mapping
from dataclasses import dataclass
from functools import cache
from typing import Any

# Errors every AWS API may answer although no operation lists them, with their documented HTTP statuses
# ("Common Errors" in each service's API reference, e.g. docs.aws.amazon.com/sagemaker/latest/APIReference/
# CommonErrors.html). AccessDeniedException is 400 on the older revision of that page and 403 on the newer one.
COMMON_ERRORS: dict[str, frozenset[int]] = {
    "AccessDeniedException": frozenset({400, 403}),
    "IncompleteSignature": frozenset({400}),
    "InternalFailure": frozenset({500}),
    "InvalidAction": frozenset({400}),
    "InvalidClientTokenId": frozenset({403}),
    "NotAuthorized": frozenset({400}),
    "OptInRequired": frozenset({403}),
    "RequestExpired": frozenset({400}),
    "ServiceUnavailable": frozenset({503}),
    "ThrottlingException": frozenset({400}),
    "ValidationError": frozenset({400}),
    # Not on that page but answered by every SigV4 service for an unknown key: 403 from REST-JSON services
    # (Lambda), 400 from JSON-protocol ones (Cognito); quoted in client issues, e.g. iann0036/iamlive#58.
    "UnrecognizedClientException": frozenset({400, 403}),
}

# Body fields real answers carry that the model does not declare: {(service, error or output shape): {field: why}}.
WIRE_EXTRAS: dict[tuple[str, str], dict[str, str]] = {
    ("sagemaker-runtime", "ModelError"): {
        "ErrorCode": "CLIENT_ERROR_FROM_MODEL / SERVER_ERROR_FROM_MODEL in real ModelError bodies (quoted in "
        "opensearch-project/ml-commons tests); botocore models it only on ModelStreamError",
    },
}

# What botocore's parsers read from an error body besides modelled members (parsers.BaseJSONParser._do_error_parse,
# RestJSONParser._inject_error_code).
_PROTOCOL_ERROR_KEYS = frozenset({"__type", "message", "Message", "code", "Code"})


@dataclass(frozen=True)
class Violation:
    """One way an answer departs from the model: where (``body.CustomLabels[0].Name``, ``header X``) and what."""

    where: str
    problem: str

    def __str__(self) -> str:
        return f"{self.where}: {self.problem}"


@cache
def service_model(service: str) -> Any:
    """The installed botocore's model of ``service`` (loaded once per test session)."""
    import botocore.session

    return botocore.session.get_session().get_service_model(service)


def check_answer(service: str, operation: str, status: int, headers: Mapping[str, str], body: bytes) -> list[Violation]:
    """Every way one HTTP answer to ``operation`` departs from the botocore model (empty: it conforms)."""
    model = service_model(service)
    op = model.operation_model(operation)
    lower = {k.lower(): v for k, v in headers.items()}
    out: list[Violation] = []
    if not lower.get("x-amzn-requestid"):
        out.append(Violation("header x-amzn-RequestId", "missing (botocore reads ResponseMetadata.RequestId here)"))
    protocol = model.metadata["protocol"]
    if protocol == "json":
        wanted = f"application/x-amz-json-{model.metadata.get('jsonVersion', '1.0')}"
        if lower.get("content-type") != wanted:
            out.append(Violation("header Content-Type", f"{lower.get('content-type')!r}, the protocol sends {wanted}"))
    if 200 <= status < 300:
        expected = op.http.get("responseCode", 200)
        if status != expected:
            out.append(Violation("status", f"{status}, {operation} answers {expected}"))
        out += _check_output(op.output_shape, lower, body, service)
    else:
        out += _check_error(model, op, status, lower, body, service)
    return out


def error_code(service: str, headers: Mapping[str, str], body: bytes) -> str | None:
    """The error code botocore would read (``x-amzn-ErrorType`` for REST-JSON, ``__type`` in the body)."""
    lower = {k.lower(): v for k, v in headers.items()}
    data = _json_or_none(body)
    raw = lower.get("x-amzn-errortype") if service_model(service).metadata["protocol"] == "rest-json" else None
    if raw is None and isinstance(data, dict):
        raw = data.get("__type") or data.get("code") or data.get("Code")
    if not isinstance(raw, str):
        return None
    return raw.split(":", 1)[0].rsplit("#", 1)[-1]


def _check_output(shape: Any, headers: Mapping[str, str], body: bytes, service: str) -> list[Violation]:
    out: list[Violation] = []
    payload = shape.serialization.get("payload")
    for name, member in shape.members.items():
        location = member.serialization.get("location")
        if location == "header":
            wire = member.serialization.get("name", name)
            value = headers.get(wire.lower())
            if value is None and name in shape.required_members:
                out.append(Violation(f"header {wire}", "required header member missing"))
            elif value is not None:
                out += _check_header(member, value, f"header {wire}")
    if payload is not None:
        member = shape.members[payload]
        if member.type_name == "blob":
            if not body and payload in shape.required_members:
                out.append(Violation(f"body ({payload})", "required payload is empty"))
            return out
        data = _json_or_none(body)
        return out + _check_value(member, data, "body", service)
    body_members = {n for n, m in shape.members.items() if "location" not in m.serialization}
    if not body_members:
        return out
    data = _json_or_none(body)
    if not isinstance(data, dict):
        return [*out, Violation("body", f"not a JSON object: {body[:80]!r}")]
    return out + _check_structure(shape, data, "body", service, skip_located=True)


def _check_error(
    model: Any, op: Any, status: int, headers: Mapping[str, str], body: bytes, service: str
) -> list[Violation]:
    code = error_code(service, headers, body)
    if code is None:
        return [Violation("error code", "no x-amzn-ErrorType header or __type/code in the body")]
    out: list[Violation] = []
    modelled = {shape.name: shape for shape in op.error_shapes}
    data = _json_or_none(body)
    if not isinstance(data, dict):
        return [Violation("body", f"error body is not a JSON object: {body[:80]!r}")]
    if code in modelled:
        shape = modelled[code]
        expected = shape.metadata.get("error", {}).get("httpStatusCode")
        if expected is None:  # Smithy's default for an undeclared status: server faults 500, client errors 400
            expected = 500 if shape._shape_model.get("fault") else 400  # botocore keeps "fault" off .metadata
        if status != expected:
            out.append(Violation(f"status of {code}", f"{status}, the model says {expected}"))
        extras = set(WIRE_EXTRAS.get((service, code), {}))
        for key in sorted(set(data) - set(shape.members) - _PROTOCOL_ERROR_KEYS - extras):
            out.append(Violation(f"body.{key}", f"not a member of {code}"))
        out += _check_structure(shape, {k: v for k, v in data.items() if k in shape.members}, "body", service)
        return out
    if code in COMMON_ERRORS:
        if status not in COMMON_ERRORS[code]:
            out.append(Violation(f"status of {code}", f"{status}, AWS documents {sorted(COMMON_ERRORS[code])}"))
        for key in sorted(set(data) - _PROTOCOL_ERROR_KEYS):
            out.append(Violation(f"body.{key}", f"not a field of the common error {code}"))
        return out
    known = sorted(modelled)
    return [Violation("error code", f"{code!r} is neither an error of {op.name} ({known}) nor a common AWS error")]


def _check_structure(
    shape: Any, data: Mapping[str, Any], where: str, service: str, *, skip_located: bool = False
) -> list[Violation]:
    out: list[Violation] = []
    wire_names = {m.serialization.get("name", n): n for n, m in shape.members.items()}
    extras = set(WIRE_EXTRAS.get((service, shape.name), {}))
    for key in data:
        if key not in wire_names and key not in extras:
            out.append(Violation(f"{where}.{key}", f"not a member of {shape.name}"))
    for wire, name in wire_names.items():
        member = shape.members[name]
        if skip_located and "location" in member.serialization:
            continue
        if data.get(wire) is None:
            if name in shape.required_members:
                out.append(Violation(f"{where}.{wire}", f"required member of {shape.name} missing"))
            continue
        out += _check_value(member, data[wire], f"{where}.{wire}", service)
    return out


def _check_value(shape: Any, value: Any, where: str, service: str) -> list[Violation]:
    kind = shape.type_name
    if kind == "structure":
        if not isinstance(value, dict):
            return [Violation(where, f"{_type(value)}, expected an object ({shape.name})")]
        return _check_structure(shape, value, where, service)
    if kind == "list":
        if not isinstance(value, list):
            return [Violation(where, f"{_type(value)}, expected a list ({shape.name})")]
        out = _bounds(shape, len(value), where, "items")
        for i, item in enumerate(value):
            out += _check_value(shape.member, item, f"{where}[{i}]", service)
        return out
    if kind == "map":
        if not isinstance(value, dict):
            return [Violation(where, f"{_type(value)}, expected a map ({shape.name})")]
        out = []
        for key, item in value.items():
            out += _check_value(shape.key, key, f"{where} key {key!r}", service)
            out += _check_value(shape.value, item, f"{where}[{key!r}]", service)
        return out
    if kind == "string":
        if not isinstance(value, str):
            return [Violation(where, f"{_type(value)}, expected a string ({shape.name})")]
        if shape.enum and value not in shape.enum:
            return [Violation(where, f"{value!r} is not one of {shape.name} {list(shape.enum)}")]
        return _bounds(shape, len(value), where, "characters")
    if kind in ("integer", "long"):
        if isinstance(value, bool) or not isinstance(value, int):
            return [Violation(where, f"{_type(value)}, expected an integer ({shape.name})")]
        return _bounds(shape, value, where, "")
    if kind in ("float", "double"):
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            return [Violation(where, f"{_type(value)}, expected a number ({shape.name})")]
        return _bounds(shape, value, where, "")
    if kind == "boolean":
        return [] if isinstance(value, bool) else [Violation(where, f"{_type(value)}, expected a boolean")]
    if kind == "timestamp":  # JSON bodies carry epoch seconds unless the shape says otherwise
        fmt = shape.serialization.get("timestampFormat", "unixTimestamp")
        ok = isinstance(value, (int, float)) and not isinstance(value, bool) if fmt == "unixTimestamp" else True
        return [] if ok else [Violation(where, f"{_type(value)}, expected epoch seconds ({shape.name})")]
    if kind == "blob":
        try:
            base64.b64decode(str(value), validate=True)
        except (binascii.Error, ValueError):
            return [Violation(where, "not base64 (a blob in a JSON body)")]
        return []
    return []


def _check_header(shape: Any, value: str, where: str) -> list[Violation]:
    if shape.type_name in ("integer", "long"):
        try:
            int(value)
        except ValueError:
            return [Violation(where, f"{value!r} is not an integer")]
        return []
    if shape.type_name == "string":
        return _bounds(shape, len(value), where, "characters")
    return []


def _bounds(shape: Any, size: float, where: str, unit: str) -> list[Violation]:
    low, high = shape.metadata.get("min"), shape.metadata.get("max")
    if low is not None and size < low:
        return [Violation(where, f"{size} {unit} is below the minimum {low} of {shape.name}".replace("  ", " "))]
    if high is not None and size > high:
        return [Violation(where, f"{size} {unit} is above the maximum {high} of {shape.name}".replace("  ", " "))]
    return []


def _json_or_none(body: bytes) -> Any:
    try:
        return json.loads(body) if body else None
    except ValueError:
        return None


def _type(value: Any) -> str:
    return "null" if value is None else type(value).__name__


def model_extract(service: str, operations: tuple[str, ...]) -> dict[str, Any]:
    """The part of botocore's ``service-2.json`` for ``service`` that ``operations`` use, without documentation.

    This is what ``tests/specs/aws/`` vendors: a drift test compares it with the installed botocore, so a botocore
    upgrade that changes a shape the emulators speak fails loudly instead of passing unnoticed.
    """
    import botocore.session

    loader = botocore.session.get_session().get_component("data_loader")
    raw = loader.load_service_model(service, "service-2")

    def strip(node: Any) -> Any:
        if isinstance(node, dict):
            return {k: strip(v) for k, v in sorted(node.items()) if k not in ("documentation", "documentationUrl")}
        if isinstance(node, list):
            return [strip(v) for v in node]
        return node

    wanted: set[str] = set()
    pending = [
        ref["shape"]
        for op in operations
        for ref in (
            raw["operations"][op].get("input"),
            raw["operations"][op].get("output"),
            *raw["operations"][op].get("errors", []),
        )
        if ref
    ]
    while pending:
        name = pending.pop()
        if name in wanted:
            continue
        wanted.add(name)
        shape = raw["shapes"][name]
        refs = [*shape.get("members", {}).values(), shape.get("member"), shape.get("key"), shape.get("value")]
        pending += [ref["shape"] for ref in refs if ref]
    keep = ("apiVersion", "jsonVersion", "protocol", "serviceId", "signingName", "targetPrefix", "uid")
    return {
        "metadata": {k: raw["metadata"][k] for k in keep if k in raw["metadata"]},
        "operations": {op: strip(raw["operations"][op]) for op in operations},
        "shapes": {name: strip(raw["shapes"][name]) for name in sorted(wanted)},
    }

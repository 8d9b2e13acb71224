"""Check Google answers with the SDKs' own types: the protobuf messages of the Google Cloud client libraries, the
pydantic models of ``google-genai``, and ``google.rpc.Status`` for errors.

* REST bodies are parsed with ``json_format.ParseDict(..., ignore_unknown_fields=False)`` into the message the
  RPC returns, so an unknown field or a wrongly typed value fails naming the field; the parsed message is written
  back with protobuf's JSON printer and every value the body carried must come back as it was sent (a Duration
  the printer writes differently, say, is a value no Google server would send; numbers in ``float`` fields are
  compared at float32 precision);
* gRPC answers are the real message types already; :func:`unknown_fields` proves nothing arrived that the client's
  descriptors do not know;
* REST errors are Google's JSON error envelope, ``{"error": {"code", "message", "status", "details"}}``: ``code``,
  ``message`` and ``details`` parse as ``google.rpc.Status``, ``status`` names the ``google.rpc.Code`` whose HTTP
  mapping (the one ``google.api_core.exceptions`` uses) is ``code``, and ``code`` is the HTTP status sent.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from google.protobuf import json_format
from google.protobuf.message import Message


@dataclass(frozen=True)
class Problem:
    where: str
    problem: str

    def __str__(self) -> str:
        return f"{self.where}: {self.problem}"


def check_json(message_type: Any, data: Any) -> list[Problem]:
    """Where a REST JSON body departs from ``message_type`` (a protobuf or proto-plus message class)."""
    pb_type = message_type.pb() if hasattr(message_type, "pb") else message_type
    try:
        message = json_format.ParseDict(data, pb_type(), ignore_unknown_fields=False)
    except json_format.ParseError as exc:
        return [Problem(pb_type.DESCRIPTOR.name, str(exc).split("\n")[0])]
    back = json_format.MessageToDict(message, always_print_fields_with_no_presence=True)
    return _compare(data, back, pb_type.DESCRIPTOR.name)


def _compare(sent: Any, back: Any, where: str) -> list[Problem]:
    if isinstance(sent, dict) and isinstance(back, dict):
        return [p for key, value in sent.items() for p in _compare(value, back.get(key), f"{where}.{key}")]
    if isinstance(sent, list) and isinstance(back, list) and len(sent) == len(back):
        return [p for i, (a, b) in enumerate(zip(sent, back)) for p in _compare(a, b, f"{where}[{i}]")]
    if sent == back or (sent is None and back in (None, [], {}, "", 0, False)):
        return []
    if _numbers(sent, back) and _float32(sent) == _float32(back):
        return []  # a ``float`` field prints float32's shortest form: the same value
    return [Problem(where, f"{sent!r} does not survive the proto type (comes back as {back!r})")]


def _numbers(*values: Any) -> bool:
    return all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in values)


def _float32(value: float) -> float:
    import struct

    return float(struct.unpack("f", struct.pack("f", value))[0])


def unknown_fields(message: Message, where: str = "") -> list[str]:
    """Paths of fields in a received protobuf message that its descriptor does not know."""
    from google.protobuf import unknown_fields as unknown

    name = where or message.DESCRIPTOR.name
    found = [f"{name} (field number {f.field_number})" for f in unknown.UnknownFieldSet(message)]
    for field, value in message.ListFields():
        if field.message_type is None:
            continue
        if field.message_type.GetOptions().map_entry:
            items = list(value.values()) if field.message_type.fields_by_name["value"].message_type else []
        else:
            items = list(value) if field.label == field.LABEL_REPEATED else [value]
        for i, item in enumerate(items):
            found += unknown_fields(item, f"{name}.{field.name}[{i}]")
    return found


def _http_for_code() -> dict[str, int]:
    import google.api_core.exceptions as gexc

    table = {code.name: int(cls.code) for code, cls in gexc._GRPC_CODE_TO_EXCEPTION.items() if cls.code is not None}
    # google/rpc/code.proto gives these two HTTP 500; api_core leaves them without one.
    return {**table, "UNKNOWN": 500, "DATA_LOSS": 500}


def check_error_envelope(status: int, body: Any) -> list[Problem]:
    """Where a REST error body departs from Google's JSON error envelope."""
    from google.rpc import code_pb2, error_details_pb2, status_pb2  # noqa: F401  (registers the detail types)

    if not isinstance(body, dict) or set(body) != {"error"} or not isinstance(body["error"], dict):
        return [Problem("(root)", f"not {{'error': {{...}}}}: {str(body)[:80]}")]
    error = body["error"]
    out = [Problem(f"error.{k}", "not a field of the error envelope") for k in error if k not in
           ("code", "message", "status", "details")]  # fmt: skip
    out += check_json(status_pb2.Status, {k: v for k, v in error.items() if k in ("code", "message", "details")})
    name = error.get("status")
    if name not in code_pb2.Code.DESCRIPTOR.values_by_name:
        return [*out, Problem("error.status", f"{name!r} is not a google.rpc.Code")]
    expected = _http_for_code().get(str(name))
    if error.get("code") != expected:
        out.append(Problem("error.code", f"{error.get('code')} with status {name}, which maps to HTTP {expected}"))
    if status != error.get("code"):
        out.append(Problem("error.code", f"{error.get('code')} in the body, HTTP {status} on the wire"))
    return out


def check_genai(model: Any, data: Mapping[str, Any]) -> list[Problem]:
    """Where a body departs from a ``google-genai`` pydantic model (its models forbid extra fields)."""
    import warnings

    import pydantic

    with warnings.catch_warnings(record=True) as caught:  # google-genai accepts an unknown enum value with a warning
        warnings.simplefilter("always")
        try:
            model.model_validate(data)
        except pydantic.ValidationError as exc:
            return [Problem(".".join(str(p) for p in e["loc"]), e["msg"]) for e in exc.errors()]
    return [Problem("enum", str(w.message)) for w in caught if "is not a valid" in str(w.message)]


# --- the vendored .proto text, for drift against the installed descriptors -----------------------------------

_FIELD = re.compile(
    r"^\s*(?P<label>repeated\s+|optional\s+)?(?P<type>map<[^>]+>|[\w.]+)\s+(?P<name>\w+)\s*=\s*(?P<number>\d+)"
)


def proto_fields(text: str, message: str) -> dict[str, tuple[bool, str, int]]:
    """``{field: (repeated, type, number)}`` of ``message`` in .proto source (nested messages are skipped)."""
    lines = [line.split("//", 1)[0] for line in text.splitlines()]
    start = next(i for i, line in enumerate(lines) if re.match(rf"^\s*message\s+{message}\s*{{", line))
    depth, fields = 0, {}
    for line in lines[start:]:
        if depth == 1 and not re.match(r"^\s*(message|enum|oneof)\b", line) and (m := _FIELD.match(line)):
            fields[m["name"]] = (bool(m["label"] and "repeated" in m["label"]), m["type"], int(m["number"]))
        if depth == 1 and re.match(r"^\s*oneof\b", line):
            depth -= 1  # a oneof's fields belong to the message: read them at its level
        depth += line.count("{") - line.count("}")
        if depth <= 0 and "}" in line:
            break
    return fields


_SCALARS = {
    "double": "TYPE_DOUBLE", "float": "TYPE_FLOAT", "int64": "TYPE_INT64", "uint64": "TYPE_UINT64",
    "int32": "TYPE_INT32", "bool": "TYPE_BOOL", "string": "TYPE_STRING", "bytes": "TYPE_BYTES",
    "uint32": "TYPE_UINT32", "sint32": "TYPE_SINT32", "sint64": "TYPE_SINT64",
}  # fmt: skip


def descriptor_fields(message_type: Any) -> dict[str, tuple[bool, str, int]]:
    """The same view of an installed message class, types written as the .proto would write them."""
    from google.protobuf.descriptor import FieldDescriptor

    descriptor = (message_type.pb() if hasattr(message_type, "pb") else message_type).DESCRIPTOR
    out = {}
    for f in descriptor.fields:
        scalar = {getattr(FieldDescriptor, v): k for k, v in _SCALARS.items()}.get(f.type)
        kind = scalar or (f.message_type or f.enum_type).full_name
        out[f.name] = (f.label == f.LABEL_REPEATED, kind, f.number)
    return out

"""Backend options typed by the backend's own signature.

Command-line options arrive as strings (`-o endpoint_id=1234567890`). Guessing their type from how they look
turns an id into a number and a typo into a crash deep inside a backend, so `options_from_strings` reads the
type each option is declared with in the backend's `__init__`: a `str` option stays a string whatever it
looks like, an `int` option must parse as one (or the error names the option), and only options typed as
containers (lists, mappings) or `Any` are read as JSON. `check_option_types` applies the same declared
types to options given as Python values (a config file), so `endpoint_id = 1234567890` in TOML is caught with a
message that names the option rather than an `AttributeError` from the SDK.

Example:
    >>> from derm_cloud.backends.local_onnx import LocalOnnxClassifier  # doctest: +SKIP
    >>> options_from_strings(LocalOnnxClassifier, {"intra_op_threads": "2"})  # doctest: +SKIP
    {'intra_op_threads': 2}
"""

from __future__ import annotations

import inspect
import json
import sys
import types
import typing
from collections.abc import Collection, Mapping
from typing import Any, Literal, Union

from derm_cloud.errors import ConfigError

__all__ = ["check_option_types", "options_from_strings"]

_UNKNOWN = object()  # an annotation we cannot resolve at run time (a name imported only for type checkers)
_SCALARS = (str, int, float, bool, type(None))
_TRUE = {"true", "1", "yes", "on"}
_FALSE = {"false", "0", "no", "off"}


def declared_types(cls: type) -> dict[str, Any]:
    """`{option name: resolved annotation}` of `cls.__init__` (`_UNKNOWN` where it does not resolve)."""
    init = cls.__init__  # type: ignore[misc]
    namespace = dict(vars(sys.modules[cls.__module__])) if cls.__module__ in sys.modules else {}
    out: dict[str, Any] = {}
    for name, param in inspect.signature(init).parameters.items():
        if name == "self" or param.kind in (param.VAR_POSITIONAL, param.VAR_KEYWORD):
            continue
        annotation = param.annotation
        if annotation is inspect.Parameter.empty:
            out[name] = Any
            continue
        if isinstance(annotation, str):
            try:
                annotation = eval(annotation, {**vars(typing), **namespace})  # the class's own annotation text
            except Exception:  # a name only imported under TYPE_CHECKING, or a newer syntax: leave it unknown
                annotation = _UNKNOWN
        out[name] = annotation
    return out


def _members(annotation: Any) -> tuple[Any, ...]:
    if typing.get_origin(annotation) in (Union, types.UnionType):
        return typing.get_args(annotation)
    return (annotation,)


def _is_container(annotation: Any) -> bool:
    origin = typing.get_origin(annotation) or annotation
    return isinstance(origin, type) and origin not in (str, bytes) and issubclass(origin, Collection)


def _convert(name: str, text: str, annotation: Any) -> Any:
    """`text` as the type `annotation` declares, or a ConfigError naming option `name`."""
    if annotation is _UNKNOWN or annotation is Any:
        try:
            return json.loads(text)
        except ValueError:
            return text
    members = _members(annotation)
    if str in members:
        # A string option stays a string, however numeric it looks; only a union that also declares a number or
        # a flag (``device: str | int``, ``token: str | bool``) reads such a value as that first.
        for member in (m for m in members if m in (bool, int, float)):
            try:
                return _convert(name, text, member)
            except ConfigError:
                continue
        return text
    if type(None) in members and text.lower() in ("none", "null"):
        return None
    expected: list[str] = []
    for member in members:
        if member is type(None):
            continue
        if typing.get_origin(member) is Literal:
            for choice in typing.get_args(member):
                if str(choice) == text:
                    return choice
            expected.append(" or ".join(repr(c) for c in typing.get_args(member)))
        elif member is bool:
            if text.lower() in _TRUE | _FALSE:
                return text.lower() in _TRUE
            expected.append("true or false")
        elif member in (int, float):
            try:
                return member(text)
            except ValueError:
                expected.append("an integer" if member is int else "a number")
        elif _is_container(member):
            try:
                return json.loads(text)
            except ValueError:
                expected.append("JSON (a list or an object)")
        else:
            expected.append(f"a {getattr(member, '__name__', member)} (not settable from the command line)")
    raise ConfigError(f"option {name}={text!r}: expected {', or '.join(expected) or 'nothing'}")


def options_from_strings(cls: type, raw: Mapping[str, str]) -> dict[str, Any]:
    """Command-line option strings typed by `cls.__init__`'s declared types.

    Args:
        cls: the backend class.
        raw: `{name: text}` as given on the command line.

    Returns:
        The options with their declared types; names the backend does not declare keep the JSON-or-string
        reading (the registry then reports them as unknown options).

    Raises:
        ConfigError: a value does not parse as its option's type; the message names the option.
    """
    declared = declared_types(cls)
    return {name: _convert(name, text, declared.get(name, _UNKNOWN)) for name, text in raw.items()}


def check_option_types(backend: str, cls: type, options: Mapping[str, Any]) -> None:
    """Refuse options whose Python value contradicts a plain declared type (str, int, float, bool, Literal).

    Raises:
        ConfigError: naming the option, the type it takes and what it got.
    """
    declared = declared_types(cls)
    for name, value in options.items():
        members = _members(declared.get(name, _UNKNOWN))
        plain = all(m in _SCALARS or typing.get_origin(m) is Literal for m in members)
        if not plain or (value is None and type(None) in members):
            continue
        ok = any(
            (m is float and isinstance(value, (int, float)) and not isinstance(value, bool))
            or (m is int and isinstance(value, int) and not isinstance(value, bool))
            or (m in (str, bool) and isinstance(value, m))
            or (typing.get_origin(m) is Literal and value in typing.get_args(m))
            for m in members
        )
        if not ok:
            wanted = " or ".join(getattr(m, "__name__", str(m)) for m in members)
            raise ConfigError(
                f"backend {backend!r}: option {name} takes {wanted}, got {type(value).__name__} {value!r}"
                + (" (quote it to make it a string)" if str in members else "")
            )

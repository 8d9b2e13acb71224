"""One-field changes to a captured answer, for tests that prove a validator notices them.

A path is a list of keys and list indexes into a parsed JSON document, e.g. ``["predictions", 0, "tagName"]``.
Each function returns a changed deep copy; the captured document is never touched.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from typing import Any

Path = Sequence[str | int]


def _parent(doc: Any, path: Path) -> tuple[Any, Any]:
    out = copy.deepcopy(doc)
    node = out
    for key in path[:-1]:
        node = node[key]
    return out, node


def rename(doc: Any, path: Path, new_name: str) -> Any:
    """``doc`` with the field at ``path`` renamed to ``new_name`` (its value unchanged)."""
    out, node = _parent(doc, path)
    node[new_name] = node.pop(path[-1])
    return out


def drop(doc: Any, path: Path) -> Any:
    """``doc`` without the field at ``path``."""
    out, node = _parent(doc, path)
    del node[path[-1]]
    return out


def retype(doc: Any, path: Path, value: Any) -> Any:
    """``doc`` with the field at ``path`` set to ``value`` (a value of another type, or out of range)."""
    out, node = _parent(doc, path)
    node[path[-1]] = value
    return out

"""A griffe extension for the API reference: read Google-style ``Example:`` sections as ``Examples:``.

griffe parses only the plural title as an examples section (doctest lines rendered as code); the singular one,
which derm-cloud's docstrings use, would be rendered as Markdown prose, where ``>>> r["a"]`` turns into a
quotation holding a broken reference link. Loaded by mkdocs.yml; not part of the package.
"""

from __future__ import annotations

import re
from typing import Any

import griffe

_SINGULAR = re.compile(r"^(\s*)Example:\s*$", re.MULTILINE)


class ExampleSections(griffe.Extension):
    """Rename ``Example:`` section titles to ``Examples:`` before docstrings are parsed."""

    def on_object(self, *, obj: griffe.Object, **kwargs: Any) -> None:
        if obj.docstring is not None:
            obj.docstring.value = _SINGULAR.sub(r"\1Examples:", obj.docstring.value)

"""A MkDocs hook: `mkdocs build --strict` fails when reST markup is left in a rendered page.

derm-cloud's docstrings are Google style with Markdown inside (`docstring_style: google` in mkdocs.yml). reST
markup in them is not an error to mkdocstrings: it renders as raw text. A role (:class:`Name`) prints ":class:"
before the name, a literal-block marker ("text::") prints a stray colon, unmatched double backticks print as
backticks. This hook looks at each page's HTML, outside code, and logs every leftover as a WARNING naming the page
and the markup; `--strict` (set in mkdocs.yml) turns any WARNING into a failed build. Loaded by mkdocs.yml
(`hooks:`); not part of the package.
"""

from __future__ import annotations

import html as html_lib
import logging
import re
from typing import Any

log = logging.getLogger("mkdocs.hooks.rest_markup_check")

# Code is where markup may be shown on purpose (a page explaining reST, a literal example): masked first.
_PRE = re.compile(r"<pre\b.*?</pre>", re.DOTALL)
_CODE = re.compile(r"<code\b[^>]*>.*?</code>", re.DOTALL)
_CLOSING = r"(?=\s*(?:</(?:p|li|dd|dt|td|th|div|span)>|<pre/>|$))"
LEFTOVERS = {
    # :class:`X`, :py:func:`X` ... : Markdown turned the backticks into code and left the role in front of it.
    "reST role": re.compile(r"(?<![\w:]):(?:[a-z]+:)?[a-z]+:(?=<code/>|`)"),
    # "text::" before a literal block: reST's marker, a stray "::" at the end of a paragraph in Markdown.
    "reST literal-block marker (::)": re.compile(r"(?<!:)::(?!:)" + _CLOSING, re.MULTILINE),
    # ``x`` that Markdown did not pair (a code span Markdown did pair is masked with the code above).
    "double backticks": re.compile(r"``[^`<]*``|``"),
    # .. note:: / .. code-block:: python
    "reST directive": re.compile(r"(?:^|>)\s*\.\. [a-z][\w-]*::", re.MULTILINE),
    # `text <https://...>`_ : a reST hyperlink, rendered as code followed by an underscore.
    "reST hyperlink (`text <url>`_)": re.compile(r"<code/>_(?!\w)"),
}


def _unmask(excerpt: str, codes: list[str]) -> str:
    shown = iter(codes)
    return re.sub(r"<code/>", lambda _: f"`{next(shown, '')}`", excerpt)


def find_rest_markup(page_html: str) -> list[str]:
    """Each reST leftover in a rendered page, as "kind: ...text around it...", in page order."""
    codes: list[str] = []

    def mask(match: re.Match[str]) -> str:
        codes.append(re.sub(r"<[^>]+>", "", match.group(0)))
        return "<code/>"

    text = _CODE.sub(mask, _PRE.sub("<pre/>", page_html))
    found = []
    for kind, pattern in LEFTOVERS.items():
        for match in pattern.finditer(text):
            start = max(0, match.start() - 70)
            around = text[start : match.end() + 50]
            # Code spans back in the excerpt (a placeholder cut by the window's start counts as before it).
            around = _unmask(around, codes[text.count("<code/>", 0, start + len("<code/>") - 1) :])
            around = re.sub(r"<[^>]*>|^[^<]*>|<[^>]*$", "", around)  # tags, and tags cut at either end
            found.append((match.start(), f"{kind}: ...{' '.join(html_lib.unescape(around).split())}..."))
    return [line for _, line in sorted(found)]


def on_page_content(html: str, page: Any, **kwargs: Any) -> str:
    """Log a WARNING for every reST leftover on the page (MkDocs event: after Markdown, before the theme)."""
    leftovers = find_rest_markup(html)
    for line in leftovers:
        log.warning(f"{page.file.src_uri}: reST markup renders as text, write Markdown instead: {line}")
    if leftovers:
        log.warning(
            f"{page.file.src_uri}: {len(leftovers)} reST leftover(s); in a docstring, use `code` and "
            "[`Name`][derm_cloud.module.Name] cross-references, and a fenced block instead of '::'"
        )
    return html

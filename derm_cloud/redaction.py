"""Redaction of credentials from any text that may be stored, shown or logged.

Used for stored error messages, report facts (a ``scoring_uri`` carrying ``?code=``), and ``repr`` of backends:
secrets inside URLs (userinfo, query, fragment) are removed wherever the URL sits in the text, then the key,
token and signature forms that SDKs and providers echo in their error texts.

Example:
    >>> redact("401 from https://x.example/score?code=abc; Incorrect API key provided: sk-abcdefgh123")
    '401 from https://x.example/score?code=<redacted> Incorrect API key provided: <redacted>'
"""

from __future__ import annotations

import re

__all__ = ["redact", "redact_url"]

# Credentials that SDK error messages sometimes echo (URLs with SAS signatures, keys, bearer tokens).
_SECRET_PATTERNS = (
    re.compile(r"(?i)(bearer|basic)\s+[A-Za-z0-9._~+/=-]{8,}"),
    re.compile(
        r"(?i)((?:api[-_]?key|access[-_]?key|token|sig|signature|secret|password|x-amz-security-token)[=:]\s*)[^\s&,;\"']+"
    ),
    re.compile(
        r"(?i)\b(prediction-key|ocp-apim-subscription-key|authorization|api-key|x-goog-api-key|accountkey|"
        r"sharedaccesskey|key)([\"']?\s*[:=]\s*[\"']?)[^\s,;&\"']+"
    ),
    # Provider texts that quote the key they refused ("Incorrect API key provided: sk-...").
    re.compile(r"(?i)(key provided:?\s*[\"']?)[^\s,;\"']+"),
    re.compile(r"\bAKIA[0-9A-Z]{16}\b"),
    re.compile(r"\bsk-(?:proj-)?[A-Za-z0-9_-]{8,}"),  # OpenAI-style keys
    re.compile(r"\bAIza[0-9A-Za-z_-]{30,}"),  # Google API keys
    re.compile(r"\beyJ[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]*"),  # JWTs (AAD / OAuth tokens)
)
_URL = re.compile(r"(?i)\b[a-z][a-z0-9+.-]*://[^\s\"'<>\\]+")
# Query parameters that never carry a credential; every other value in a URL's query or fragment is redacted
# (Azure Functions' ``code=``, SAS ``sig=``, ``key=``, ``access_token=`` and whatever a provider adds next).
_HARMLESS_QUERY = frozenset({"api-version", "api_version", "alt", "format", "timeout", "comp", "restype", "verbose"})


def _redact_pairs(text: str) -> str:
    pairs = []
    for pair in text.split("&"):
        name, sep, _value = pair.partition("=")
        pairs.append(pair if not sep or name.lower() in _HARMLESS_QUERY else f"{name}=<redacted>")
    return "&".join(pairs)


def redact_url(url: str) -> str:
    """``url`` with its userinfo and every non-harmless query or fragment value replaced by ``<redacted>``.

    Example:
        >>> redact_url("https://user:pw@x.example/score?code=abc&api-version=1")
        'https://<redacted>@x.example/score?code=<redacted>&api-version=1'
    """
    scheme, sep, rest = url.partition("://")
    if not sep:
        return url
    authority_end = len(rest)
    for mark in "/?#":
        i = rest.find(mark)
        if i != -1:
            authority_end = min(authority_end, i)
    authority, tail = rest[:authority_end], rest[authority_end:]
    if "@" in authority:
        authority = "<redacted>@" + authority.rpartition("@")[2]
    path, qmark, query = tail.partition("?")
    if not qmark:
        path, hmark, fragment = tail.partition("#")
        tail = path + (hmark + _redact_pairs(fragment) if hmark else "")
    else:
        query, hmark, fragment = query.partition("#")
        tail = f"{path}?{_redact_pairs(query)}" + (hmark + _redact_pairs(fragment) if hmark else "")
    return f"{scheme}://{authority}{tail}"


def redact(message: str, limit: int | None = 500) -> str:
    """Strip anything that looks like a credential from a message (or any text) and cap its length.

    Secrets inside URLs (userinfo, query, fragment) are removed wherever the URL sits in the text, then the key,
    token and signature forms that SDKs and providers echo. ``limit=None`` keeps the whole text.
    """
    out = _URL.sub(lambda m: redact_url(m.group(0)), message)
    for pattern in _SECRET_PATTERNS:
        if pattern.groups >= 2:
            out = pattern.sub(lambda m: m.group(1) + m.group(2) + "<redacted>", out)
        elif pattern.groups == 1:
            out = pattern.sub(lambda m: m.group(1) + "<redacted>", out)
        else:
            out = pattern.sub("<redacted>", out)
    return out if limit is None or len(out) <= limit else out[: limit - 3] + "..."

"""Redaction of credentials from any text that may be stored, shown or logged.

Every derm-cloud error redacts its own message when it is made (`derm_cloud.errors`), so stored error
messages, `str()`/`repr()` of errors, report facts (a `scoring_uri` carrying `?code=`), backend `repr`
and the command line's output hold no credential whatever code handles them later. What is removed:

- in URLs, wherever they sit in the text: the userinfo (`https://user:password@host`) and every query or
  fragment value except a few harmless ones (`api-version`, `format` ...); also in a URL's path and query
  printed without scheme and host (`with url: /score?sig=...&code=...`, as urllib3 and requests write it);
- key, token, password and signature forms: `Authorization: Bearer ...` (any scheme), `api-key: ...`,
  `Ocp-Apim-Subscription-Key`, `Prediction-Key`, `x-api-key`, `AccountKey=`, `sig=`, `token=`,
  `{'api_key': '...'}`;
- provider keys recognised by their shape: `sk-...` (OpenAI), `AIza...` (Google), `AKIA...` (AWS key
  ids), JWTs, and the key a provider quotes back (`Incorrect API key provided: ...`).

Exception chains keep the SDK's own exception as `__cause__` (for debugging), and an SDK's text is not
redacted; `format_exception` and `RedactingFormatter` format a traceback with the whole chain
redacted (the `derm-cloud` command prints tracebacks only that way).

Example:
    >>> redact("401 from https://x.example/score?code=abc; Incorrect API key provided: sk-abcdefgh123")
    '401 from https://x.example/score?code=<redacted> Incorrect API key provided: <redacted>'
"""

from __future__ import annotations

import logging
import re
import traceback

__all__ = ["RedactingFormatter", "format_exception", "redact", "redact_url"]

REDACTED = "<redacted>"

# Names whose value is a credential whatever it looks like: after ``:`` or ``=``, with or without spaces and
# quotes, and whatever their prefix (``x-api-key``, ``azure_openai_api_key``, ``x-amz-security-token``).
_STRONG_NAMES = (
    r"(?:proxy-)?authorization|api[-_]?key|subscription[-_]?key|prediction[-_]?key|functions[-_]?key|"
    r"account[-_]?key|shared[-_]?access[-_]?(?:key|signature)|sas[-_]?token|secret[-_]?(?:access[-_]?)?key|"
    r"security[-_]?token|session[-_]?token|(?:access|refresh|id|bearer|auth)[-_]?token|client[-_]?secret|"
    r"secret|password|passwd|pwd|sig|signature"
)
# Names that are also ordinary words ("the API key: invalid", "a token: ..."): their value is redacted only when
# it follows the separator directly (``key=abc``) or inside quotes (``'key': 'abc'``).
_WEAK_NAMES = r"key|token|access[-_]?key(?:[-_]?id)?"
_STRONG_PREFIX = r"(?<![\w-])[\w-]*?"  # any: ``MyPassword=``, ``x-api-key``
_WEAK_PREFIX = r"(?<![\w-])(?:[\w-]*[-_])?"  # a separated one only: ``cache_key=``, not ``monkey=``
_VALUE = r"[^\s,;&\"'()<>\[\]{}]+"
# An HTTP auth scheme before the credential (``Authorization: Key abc``, ``SharedAccessSignature sr=...``).
_SCHEME = (
    r"(?:(?:bearer|basic|key|token|amltoken|aadtoken|digest|negotiate|sharedaccesssignature|aws4-hmac-sha256)\s+)?"
)

_STRONG = re.compile(rf"(?i)({_STRONG_PREFIX}(?:{_STRONG_NAMES}))([\"']?\s*[:=]\s*[\"']?){_SCHEME}{_VALUE}")
_WEAK = re.compile(rf"(?i)({_WEAK_PREFIX}(?:{_WEAK_NAMES}))([\"']?\s*[:=]\s*[\"']|[\"']?[:=])({_VALUE})")
# Placeholders and environment variable names (``KEY=VALUE``, ``key=AZUREML_ENDPOINT_KEY``) are not secrets.
_PLACEHOLDER = re.compile(r"[A-Z][A-Z_]*")
_SHAPES = (
    re.compile(r"(?i)\b(?:bearer|basic)\s+[A-Za-z0-9._~+/=-]{8,}"),
    re.compile(r"\bAKIA[0-9A-Z]{16}\b"),
    re.compile(r"\bsk-(?:proj-)?[A-Za-z0-9_-]{8,}"),  # OpenAI-style keys
    re.compile(r"\bAIza[0-9A-Za-z_-]{30,}"),  # Google API keys
    re.compile(r"\beyJ[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]*"),  # JWTs (AAD / OAuth tokens)
)
# Provider texts that quote the key they refused ("Incorrect API key provided: sk-...").
_QUOTED_KEY = re.compile(r"(?i)(key provided:?\s*[\"']?)[^\s,;\"']+")
_URL = re.compile(r"(?i)\b[a-z][a-z0-9+.-]{0,30}://[^\s\"'<>\\]+")
# The query of a URL printed without scheme and host (urllib3: "Max retries exceeded with url: /p?sig=..."), or
# on its own as two or more ``name=value`` pairs joined by ``&`` (botocore's canonical request: "code=...&sig=...").
# Possessive quantifiers, and no ``=`` inside a bare pair's value, keep every pattern linear on any text: an
# error message can quote a whole response body.
_PAIR = r"[\w.~%+-]++=[^\s&\"'<>#;,()]*+"
_BARE_PAIR = r"[\w.~%+-]++=[^\s&\"'<>#;,()=]*+"
_BARE_QUERY = re.compile(rf"\?({_PAIR}(?:&{_PAIR})*+)|(?<![\w.~%+=&-])({_BARE_PAIR}(?:&{_BARE_PAIR})++)")
# ``user:password@host`` printed without a scheme.
_BARE_USERINFO = re.compile(
    r"(?<![\w/@.:%+-])[\w.%+-]{1,256}+:[^\s/@\"'<>()]{1,1024}+@(?=[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*(?::\d+)?\b)"
)
# Query parameters that never carry a credential; every other value in a URL's query or fragment is redacted
# (Azure Functions' ``code=``, SAS ``sig=``, ``key=``, ``access_token=`` and whatever a provider adds next).
_HARMLESS_QUERY = frozenset(
    {"api-version", "api_version", "alt", "format", "timeout", "comp", "restype", "verbose", "persistentid"}
)


def _redact_pairs(text: str) -> str:
    pairs = []
    for pair in text.split("&"):
        name, sep, value = pair.partition("=")
        keep = not sep or not value or value == REDACTED or name.lower() in _HARMLESS_QUERY
        pairs.append(pair if keep else f"{name}={REDACTED}")
    return "&".join(pairs)


def redact_url(url: str) -> str:
    """`url` with its userinfo and every non-harmless query or fragment value replaced by `<redacted>`.

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
        authority = f"{REDACTED}@" + authority.rpartition("@")[2]
    path, qmark, query = tail.partition("?")
    if not qmark:
        path, hmark, fragment = tail.partition("#")
        tail = path + (hmark + _redact_pairs(fragment) if hmark else "")
    else:
        query, hmark, fragment = query.partition("#")
        tail = f"{path}?{_redact_pairs(query)}" + (hmark + _redact_pairs(fragment) if hmark else "")
    return f"{scheme}://{authority}{tail}"


def _weak_value(match: re.Match[str]) -> str:
    value = match.group(3)
    if _PLACEHOLDER.fullmatch(value) or value == REDACTED:
        return match.group(0)
    return match.group(1) + match.group(2) + REDACTED


def redact(message: str, limit: int | None = 500) -> str:
    """Strip anything that looks like a credential from a message (or any text) and cap its length.

    Secrets inside URLs (userinfo, query, fragment) are removed wherever the URL sits in the text, then the key,
    token, password and signature forms that SDKs and providers echo. `limit=None` keeps the whole text.

    Example:
        >>> redact("url: /score?sig=abc&code=xyz; sent {'api-key': 'k1', 'Authorization': 'Key k2'}")
        "url: /score?sig=<redacted>&code=<redacted>; sent {'api-key': '<redacted>', 'Authorization': '<redacted>'}"
    """
    out = _URL.sub(lambda m: redact_url(m.group(0)), message)
    out = _BARE_QUERY.sub(lambda m: f"?{_redact_pairs(m[1])}" if m[1] is not None else _redact_pairs(m[2]), out)
    out = _BARE_USERINFO.sub(f"{REDACTED}@", out)
    for shape in _SHAPES:
        out = shape.sub(REDACTED, out)
    out = _QUOTED_KEY.sub(lambda m: m.group(1) + REDACTED, out)
    out = _STRONG.sub(lambda m: m.group(1) + m.group(2) + REDACTED, out)
    out = _WEAK.sub(_weak_value, out)
    return out if limit is None or len(out) <= limit else out[: limit - 3] + "..."


def format_exception(exc: BaseException) -> str:
    """The traceback of `exc` with its whole chain (`__cause__`, `__context__`), redacted.

    What to print or log instead of `traceback.format_exc()`: an SDK exception kept as the cause of a
    derm-cloud error may quote the endpoint URL with its key.

    Example:
        >>> try:
        ...     raise RuntimeError("boom") from ConnectionError("no route to https://x.example/?sig=abc")
        ... except RuntimeError as exc:
        ...     "sig=abc" in format_exception(exc)
        False
    """
    return redact("".join(traceback.format_exception(exc)), limit=None)


class RedactingFormatter(logging.Formatter):
    """A logging formatter that redacts the whole formatted record, traceback and exception chain included.

    Example:
        >>> handler = logging.StreamHandler()
        >>> handler.setFormatter(RedactingFormatter("%(levelname)s %(name)s: %(message)s"))
    """

    def format(self, record: logging.LogRecord) -> str:
        return redact(super().format(record), limit=None)

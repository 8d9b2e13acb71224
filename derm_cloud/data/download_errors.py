"""What a failed download attempt says: the failure in words and what to check (DNS, proxy, URL, a mirror).

Used by `derm_cloud.data.download` and `derm_cloud.data.fetch`; every name here is importable from
`derm_cloud.data.download` too.
"""

from __future__ import annotations

import urllib.parse
from typing import Any

from derm_cloud.errors import MissingDependencyError

__all__ = ["STALL_TIMEOUT_S", "describe_failure", "network_advice", "requests_module"]

#: Seconds without a byte from the host before an attempt fails (and is retried, resuming): a stalled host is
#: reported every ``interval`` seconds meanwhile, so the wait is never silent.
STALL_TIMEOUT_S = 30.0


def requests_module() -> Any:
    """The `requests` module, or a `MissingDependencyError` naming the extra that installs it."""
    try:
        import requests
    except ImportError as exc:  # pragma: no cover - requests ships with the data extra
        raise MissingDependencyError("downloading datasets needs requests: pip install 'derm-cloud[data]'") from exc
    return requests


def network_advice(url: str, *, stalled: bool = False) -> str:
    """What to check when `url`'s host cannot be reached (or stops sending), and the way around it (a mirror)."""
    host = (urllib.parse.urlsplit(url).hostname or url).strip("[]")
    mirror = (
        "or fetch from a copy with --mirror URL (or $DERM_CLOUD_DATA_MIRROR), which serves https://HOST/PATH as "
        "URL/HOST/PATH"
    )
    if stalled:
        return (
            f"{host} accepted the connection but stopped sending: rerun later (the download resumes), raise "
            f"--stall-timeout on a slow link, check any proxy ($HTTPS_PROXY / $HTTP_PROXY), {mirror}"
        )
    return (
        f"check the network connection, DNS (does {host} resolve?), any proxy ($HTTPS_PROXY / $HTTP_PROXY) and "
        f"that the URL is right; {mirror}"
    )


def describe_failure(
    exc: BaseException, url: str, stall_timeout: float = STALL_TIMEOUT_S, *, advice: bool = True
) -> str:
    """One line for a failed attempt: what happened, in words, and (for network failures) what to check."""
    requests = requests_module()
    import urllib3

    host = urllib.parse.urlsplit(url).netloc or url
    stalled = False
    if isinstance(exc, requests.exceptions.ConnectionError) and not isinstance(exc, requests.exceptions.ReadTimeout):
        text = f"cannot reach {host} ({_root_reason(exc)})"
    elif isinstance(exc, (requests.exceptions.ReadTimeout, urllib3.exceptions.ReadTimeoutError, TimeoutError)):
        text, stalled = f"{host} sent no data for {stall_timeout:g} s (stalled)", True
    elif isinstance(exc, requests.exceptions.Timeout):
        text = f"cannot reach {host} (no answer to the connection attempt)"
    else:
        return str(exc)
    return f"{text}; {network_advice(url, stalled=stalled)}" if advice else text


def _root_reason(exc: BaseException) -> str:
    """The innermost cause of a connection failure, without the pool's wrapping ("Connection refused")."""
    seen: BaseException | None = exc
    text = str(exc)
    while seen is not None:
        if isinstance(seen, OSError) and seen.strerror:
            return str(seen.strerror)
        text = str(seen) or text
        inner = seen.args[0] if seen.args and isinstance(seen.args[0], BaseException) else None
        seen = seen.__cause__ or seen.__context__ or inner
    for marker in ("Name or service not known", "Temporary failure in name resolution", "Connection refused",
                   "Network is unreachable", "timed out", "ProxyError", "SSL"):  # fmt: skip
        if marker in text:
            return marker
    return text.split(": ")[-1][:200]

"""How a routed request ends when no deployment answered, and small helpers the router shares.

The error raised names every deployment and why it was skipped, so an operator reading one log line knows
whether to look at a quota, an outage or the deadline; messages hold backend names, statuses and request ids,
never image bytes or patient fields.
"""

from __future__ import annotations

import time
from collections.abc import Sequence

from derm_cloud.base import Classifier
from derm_cloud.errors import (
    AuthenticationError,
    CircuitOpenError,
    DeadlineExceededError,
    InvalidImageError,
    NotFoundError,
    RemoteError,
)
from derm_cloud.images import ImageLimits
from derm_cloud.types import SkippedDeployment

__all__ = [
    "CONFIG_FAULTS",
    "default_name",
    "describe_error",
    "failure_reason",
    "give_up",
    "keeps_own_deadline",
    "strictest",
]

#: Errors that say a deployment is set up wrong (credentials, role, permission, endpoint or model name), not
#: that it is having a bad minute: falling back hides them, so the router reports them loudly.
CONFIG_FAULTS: tuple[type[RemoteError], ...] = (AuthenticationError, NotFoundError)


def give_up(
    router: str,
    deadline_s: float,
    skipped: Sequence[SkippedDeployment],
    failures: Sequence[BaseException],
    deadline_at: float,
) -> BaseException:
    """The typed error for a request no deployment answered.

    * every deployment cooling down: `CircuitOpenError`;
    * the deadline passed (or nothing failed outright): `DeadlineExceededError`;
    * otherwise the class of the last failure (`ThrottledError`, `ServiceError` ...), so callers that
      handle one backend's errors handle the router's the same way.
    """
    summary = "; ".join(f"{s.deployment}: {s.reason} ({s.detail})" for s in skipped) or "no deployment tried"
    if skipped and all(s.reason == "cooldown" for s in skipped):
        return CircuitOpenError(f"every deployment is cooling down: {summary}", backend=router)
    if time.monotonic() >= deadline_at or not failures:
        return DeadlineExceededError(
            f"no deployment answered within the {deadline_s:.2f} s deadline: {summary}", backend=router
        )
    last = failures[-1]
    if isinstance(last, RemoteError):
        return type(last)(
            f"every deployment failed: {summary}",
            backend=router,
            status=last.status,
            request_id=last.request_id,
            retry_after=last.retry_after,
        )
    return InvalidImageError(f"no deployment could take this image: {summary}")


def failure_reason(exc: BaseException) -> str:
    """How a failed call is listed in `Route.skipped`: a call that ran out of its share of the deadline is a
    `deadline` whichever clock noticed first (the router's wait loop, or the call's own watchdog, which under
    load can fire a moment earlier); anything else is an `error`."""
    return "deadline" if isinstance(exc, DeadlineExceededError) else "error"


def describe_error(exc: BaseException) -> str:
    """`"ThrottledError: <message>"`; backend messages carry names, statuses and ids, never image data."""
    return f"{type(exc).__name__}: {exc}"


def default_name(clf: Classifier) -> str:
    """A deployment's name when given a bare classifier: its backend's registry name."""
    return clf.backend_name or type(clf).__name__


def keeps_own_deadline(clf: Classifier) -> bool:
    """Whether a call to `clf` needs no watchdog thread to keep a deadline.

    True when its SDK enforces the timeout it is given as a deadline on the whole call (gRPC), or when the model
    runs in this process: there is no network to hang on, and a local call abandoned at its deadline would keep
    its CPU until it finished anyway. An HTTP SDK's timeout bounds each socket read only (boto3's is fixed when
    the client is built), so a remote HTTP call is watched from another thread.
    """
    if clf.sdk_deadline:
        return True
    try:
        info = clf.describe()
    except Exception:  # a backend that cannot describe itself is watched, to be safe
        return False
    return info.provider == "local" and info.endpoint is None


def strictest(limits: Sequence[ImageLimits]) -> ImageLimits:
    """Limits no deployment would refuse: every deployment gets the same prepared image."""
    return ImageLimits(
        max_bytes=min(lim.max_bytes for lim in limits),
        max_pixels=min(lim.max_pixels for lim in limits),
        min_side=max(lim.min_side for lim in limits),
        max_side=min(lim.max_side for lim in limits),
        jpeg_entropy_check=any(lim.jpeg_entropy_check for lim in limits),
    )

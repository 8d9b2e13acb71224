"""How a routed request ends when no deployment answered, and small helpers the router shares.

The error raised names every deployment and why it was skipped, so an operator reading one log line knows
whether to look at a quota, an outage or the deadline; messages hold backend names, statuses and request ids,
never image bytes or patient fields.
"""

from __future__ import annotations

import time
from collections.abc import Sequence

from derm_cloud.base import Classifier
from derm_cloud.errors import CircuitOpenError, DeadlineExceededError, InvalidImageError, RemoteError
from derm_cloud.images import ImageLimits
from derm_cloud.types import SkippedDeployment

__all__ = ["default_name", "describe_error", "give_up", "strictest"]


def give_up(
    router: str,
    deadline_s: float,
    skipped: Sequence[SkippedDeployment],
    failures: Sequence[BaseException],
    deadline_at: float,
) -> BaseException:
    """The typed error for a request no deployment answered.

    * every deployment cooling down: :class:`CircuitOpenError`;
    * the deadline passed (or nothing failed outright): :class:`DeadlineExceededError`;
    * otherwise the class of the last failure (``ThrottledError``, ``ServiceError`` ...), so callers that
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


def describe_error(exc: BaseException) -> str:
    """``"ThrottledError: <message>"``; backend messages carry names, statuses and ids, never image data."""
    return f"{type(exc).__name__}: {exc}"


def default_name(clf: Classifier) -> str:
    """A deployment's name when given a bare classifier: its backend's registry name."""
    return clf.backend_name or type(clf).__name__


def strictest(limits: Sequence[ImageLimits]) -> ImageLimits:
    """Limits no deployment would refuse: every deployment gets the same prepared image."""
    return ImageLimits(
        max_bytes=min(lim.max_bytes for lim in limits),
        max_pixels=min(lim.max_pixels for lim in limits),
        min_side=max(lim.min_side for lim in limits),
        max_side=min(lim.max_side for lim in limits),
    )

"""One timed request: the image's payload prepared once for every backend, then the backend call on the clock.

Every outcome, a failed request or an unreadable image included, becomes a result row for the run store:
`ok` with probabilities, label and the provider's request id, or the error's class and (redacted) message.
"""

from __future__ import annotations

import asyncio
import json
import threading
import time
from collections import OrderedDict
from concurrent.futures import Future
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from derm_cloud.base import Classifier
    from derm_cloud.compare.run.backends import BackendRuntime
    from derm_cloud.data import Sample
    from derm_cloud.payload import Payload

__all__ = ["PAYLOADS", "PREPARED_OUTSIDE_TIMER", "PayloadCache", "call", "outcome_error", "outcome_ok"]


def outcome_ok(pred: Any, latency_ms: float, t_start: float, t_end: float) -> dict[str, Any]:
    label = pred.label
    if label is None and pred.provider_scores:
        label = max(pred.provider_scores).label
    extra = json.loads(json.dumps(pred.extra, default=str))
    if len(json.dumps(extra)) > 4000:
        extra = {"truncated": True}
    return {
        "ok": True,
        "latency_ms": latency_ms,
        "t_start": t_start,
        "t_end": t_end,
        "probs": pred.vector() if pred.mapped else None,
        "label": label,
        "attempts": pred.attempts,
        "request_id": pred.request_id,
        "extra": extra,
    }


def outcome_error(exc: BaseException, latency_ms: float, t_start: float, t_end: float) -> dict[str, Any]:
    timeout = isinstance(exc, (asyncio.TimeoutError, TimeoutError)) and not hasattr(exc, "backend")
    return {
        "ok": False,
        "latency_ms": latency_ms,
        "t_start": t_start,
        "t_end": t_end,
        "error_type": "ClientTimeout" if timeout else type(exc).__name__,
        "error_message": "no answer within the client timeout" if timeout else str(exc),
        # An open circuit's rows keep the failure that opened it, so the report can say why (issue 11, fault 9).
        "extra": {"circuit_first_cause": cause} if (cause := getattr(exc, "first_cause", None)) else {},
    }


class PayloadCache:
    """One payload per image, shared by every backend of a run (see `derm_cloud.prepare_payload`).

    Bounded, most recently used kept: backends running side by side ask for the same images at about the same
    time. An image that fell out is prepared again, deterministically, into the same bytes. Concurrent requests
    for one image wait for a single preparation; a bad image's error is shared the same way.
    """

    def __init__(self, maxsize: int = 64) -> None:
        self.maxsize = maxsize
        self.prepared = 0  # how many preparations ran (tests check that it is one per image)
        self._items: OrderedDict[tuple[str, str], Future[Payload]] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, sample: Sample) -> Payload:
        """The payload of `sample`, prepared on first request."""
        key = (sample.image_id, str(sample.source))
        with self._lock:
            future = self._items.get(key)
            owner = future is None
            if future is None:
                future = self._items[key] = Future()
                self.prepared += 1
                while len(self._items) > self.maxsize:
                    self._items.popitem(last=False)
            else:
                self._items.move_to_end(key)
        if owner:
            from derm_cloud.images import prepare_payload

            try:
                future.set_result(prepare_payload(sample.read_bytes()))
            except Exception as exc:  # handed to every backend that asks for this image
                future.set_exception(exc)
        return future.result()

    def clear(self) -> None:
        """Forget every payload: a new run reads its images afresh (a file may have changed since)."""
        with self._lock:
            self._items.clear()


#: Shared by every backend of the runs in this process; cleared when a run starts.
PAYLOADS = PayloadCache()
#: The report's timer text reads this: every call gets its payload from PAYLOADS before the clock starts.
PREPARED_OUTSIDE_TIMER = True


async def call(rt: BackendRuntime, sample: Sample, clf: Classifier | None = None) -> dict[str, Any]:
    """One timed request; the image is prepared (once for all backends) before the timer starts.

    Errors, a bad image included, become outcomes.
    """
    clf = clf or rt.classifier
    metadata = sample.metadata if rt.recipe.use_metadata else None
    try:
        payload = await asyncio.to_thread(PAYLOADS.get, sample)
    except Exception as exc:  # a bad image is a result to count, like a failed request
        now = time.time()
        return outcome_error(exc, 0.0, now, now)
    t_start, start = time.time(), time.perf_counter()
    try:
        pred = await asyncio.wait_for(clf.apredict(payload, metadata), rt.timeout_s)
    except Exception as exc:  # every failure is a result to count, not a reason to stop the run
        return outcome_error(exc, (time.perf_counter() - start) * 1000, t_start, time.time())
    return outcome_ok(pred, (time.perf_counter() - start) * 1000, t_start, time.time())

"""The fault rules every cloud backend follows, whatever its SDK does (issue 11).

- Deadline: a call returns within the retry policy's deadline plus 5 %, even when the SDK has no per-call
  timeout (boto3 only has a read timeout of its own).
- Retry-After: a server's delay beyond ``max_delay`` is honoured while the deadline allows; otherwise the call
  fails at once with ``ThrottledError`` saying how long the service asked to wait.
- Truncated bodies: an answer cut off in transit is a retryable ``ServiceError`` for every backend.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from derm_cloud.errors import DeadlineExceededError, ServiceError, ThrottledError
from derm_cloud.images import load_image
from derm_cloud.retry import RetryPolicy
from derm_cloud.testing.conformance import Subject
from derm_cloud.testing.emulators.base import Fault
from derm_cloud.types import PatientMetadata


@pytest.fixture
def clean(remote: Subject) -> Iterator[Subject]:
    assert remote.emulator is not None
    remote.emulator.clear_faults()
    saved = remote.classifier.retry
    yield remote
    remote.classifier.retry = saved
    remote.emulator.clear_faults()


def test_slow_answer_stops_at_the_deadline(clean: Subject, dev_images: list[Path]) -> None:
    assert clean.emulator is not None
    image, meta = load_image(dev_images[0]), PatientMetadata()
    # Decoding and our own preparation (strip, re-encode; cached per image) are not the provider's call: the
    # deadline bounds the call, so time that part alone, from a warm start.
    clean.classifier._call(image, meta)
    clean.classifier.retry = RetryPolicy(deadline=2.0, max_attempts=3)
    clean.emulator.inject(Fault("slow", delay=8.0, times=3))
    start = time.monotonic()
    with pytest.raises(DeadlineExceededError):
        clean.classifier._call(image, meta)
    elapsed = time.monotonic() - start
    assert 1.9 <= elapsed <= 2.0 * 1.05, f"returned after {elapsed:.2f} s for a 2 s deadline"


def test_retry_after_beyond_max_delay_is_honoured_within_the_deadline(clean: Subject, dev_images: list[Path]) -> None:
    assert clean.emulator is not None
    clean.classifier.retry = RetryPolicy(deadline=10.0, max_delay=0.2, max_attempts=3)
    clean.emulator.inject(Fault("throttle", retry_after=1.0))
    start = time.monotonic()
    pred = clean.classifier.predict(dev_images[0])
    elapsed = time.monotonic() - start
    assert pred.attempts == 2 and elapsed >= 1.0, f"retried after {elapsed:.2f} s; the service asked for 1 s"


def test_retry_after_beyond_the_deadline_fails_at_once(clean: Subject, dev_images: list[Path]) -> None:
    assert clean.emulator is not None
    clean.classifier.retry = RetryPolicy(deadline=3.0, max_delay=0.2, max_attempts=3)
    clean.emulator.inject(Fault("throttle", retry_after=30.0))
    start = time.monotonic()
    with pytest.raises(ThrottledError, match=r"asked to wait 30(\.0)? s") as info:
        clean.classifier.predict(dev_images[0])
    assert time.monotonic() - start < 1.5
    assert info.value.retry_after == pytest.approx(30.0, abs=1.0)


def test_truncated_body_is_one_retryable_service_error(clean: Subject, dev_images: list[Path]) -> None:
    assert clean.emulator is not None
    clean.classifier.retry = RetryPolicy(deadline=20.0, max_attempts=1)
    clean.emulator.inject(Fault("truncated"))
    with pytest.raises(ServiceError, match="cut off") as info:
        clean.classifier.predict(dev_images[0])
    assert info.value.retryable
    clean.classifier.retry = RetryPolicy(deadline=20.0, max_attempts=2, base_delay=0.01)
    clean.emulator.inject(Fault("truncated"))
    assert clean.classifier.predict(dev_images[0]).attempts == 2

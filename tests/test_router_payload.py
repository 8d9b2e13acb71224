"""What a router costs per call, checked by what it does rather than by a timer (the timings are in
``benchmarks/router_overhead.py``): the payload is prepared the way the first deployment would prepare it, the
JPEG is decoded once, and a call runs on the caller's thread unless a fallback, a hedge or a deadline the SDK
cannot keep needs another thread.

Images: HAM10000 dev set (Tschandl et al. 2018, CC BY-NC 4.0), read from ../shared/data.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from tests_helpers import dev_image, dev_rows

import derm_cloud
import derm_cloud.images
import derm_cloud.payload
from derm_cloud import Deployment, HedgePolicy, Router, RouterPolicy
from derm_cloud.base import BackendInfo, RawResult
from derm_cloud.taxonomy import CLASS_CODES, LabelMap
from derm_cloud.testing.emulators.sagemaker import SageMakerRuntimeEmulator, sagemaker_backend_for


class FakeCloud(derm_cloud.Classifier):
    """A cloud deployment in this process: sends the payload's bytes nowhere, decodes nothing, can fail on demand.

    (The emulators decode images in this process too, which would muddle the counts below.)
    """

    backend_name = "fake-cloud"

    def __init__(self) -> None:
        super().__init__(label_map=LabelMap.canonical(), model_id="fake")
        self.failures = 0
        self.sent: list[int] = []

    def _predict_one(self, image: Any, metadata: Any, timeout: float | None) -> RawResult:
        if self.failures:
            self.failures -= 1
            raise derm_cloud.ServiceError("injected 500", backend=self.backend_name, status=500)
        self.sent.append(len(image.data))
        return RawResult(scores=[(c, 1 / 7) for c in CLASS_CODES])

    def describe(self) -> BackendInfo:
        return BackendInfo("fake-cloud", "aws", "fake", "fake", endpoint="https://127.0.0.1/", data_leaves_machine=True)


@pytest.fixture
def emulator(tiny_model_dir: Path) -> Iterator[SageMakerRuntimeEmulator]:
    with SageMakerRuntimeEmulator() as emu:
        emu.add_endpoint("primary", tiny_model_dir)
        yield emu


@pytest.fixture
def image() -> Path:
    return dev_image(dev_rows(1)[0])


@pytest.fixture
def counted(monkeypatch: pytest.MonkeyPatch) -> dict[str, int]:
    """Counts of JPEG entropy checks and full decodes made while the test runs."""
    counts = {"entropy_checks": 0, "decodes": 0}

    def counting(name: str, key: str, module: Any) -> None:
        real = getattr(module, name)

        def wrapper(*args: Any, **kwargs: Any) -> Any:
            counts[key] += 1
            return real(*args, **kwargs)

        monkeypatch.setattr(module, name, wrapper)

    counting("verify_jpeg_entropy", "entropy_checks", derm_cloud.images)
    counting("_decode_strict_rgb", "decodes", derm_cloud.payload)
    counting("_decode_rgb", "decodes", derm_cloud.payload)
    return counts


def _threads_of(monkeypatch: pytest.MonkeyPatch, clf: derm_cloud.Classifier) -> list[str]:
    """Record the name of the thread each call of ``clf``'s single-attempt primitive runs on."""
    seen: list[str] = []
    real = clf._predict_one

    def recording(*args: Any, **kwargs: Any) -> Any:
        seen.append(threading.current_thread().name)
        return real(*args, **kwargs)

    monkeypatch.setattr(clf, "_predict_one", recording)
    return seen


def test_a_local_first_deployment_gets_its_payload_prepared_as_it_would_prepare_it(
    tiny_model_dir: Path, image: Path, counted: dict[str, int]
) -> None:
    with derm_cloud.create("local-onnx", model_dir=str(tiny_model_dir)) as local:
        direct = local.predict(image)
        assert counted == {"entropy_checks": 0, "decodes": 1}  # the local path: one strict full decode
        with Router([Deployment("local", local)]) as router:
            routed = router.predict(image)
    # The router did what the backend alone does: no separate entropy check, one decode.
    assert counted == {"entropy_checks": 0, "decodes": 2}
    assert routed.vector() == direct.vector()


def test_a_cloud_first_router_checks_once_and_its_local_fallback_decodes_once(
    tiny_model_dir: Path, image: Path, counted: dict[str, int]
) -> None:
    cloud = FakeCloud()
    local = derm_cloud.create("local-onnx", model_dir=str(tiny_model_dir))
    with Router([Deployment("cloud", cloud), Deployment("local", local)]) as router:
        router.predict(image)
        assert counted == {"entropy_checks": 1, "decodes": 0}  # the cloud gets the checked bytes, undecoded
        cloud.failures = 1
        pred = router.predict(image)
    assert pred.route is not None and pred.route.deployment == "local" and len(cloud.sent) == 1
    assert counted == {"entropy_checks": 2, "decodes": 1}


def test_a_damaged_jpeg_is_refused_before_anything_is_sent_when_a_local_deployment_comes_first(
    emulator: SageMakerRuntimeEmulator, tiny_model_dir: Path, image: Path
) -> None:
    data = bytearray(image.read_bytes())
    start = len(data) // 2
    data[start : start + 512] = bytes(range(256)) * 2  # garbage in the entropy-coded data
    local = derm_cloud.create("local-onnx", model_dir=str(tiny_model_dir))
    primary = sagemaker_backend_for(emulator, "primary")
    with (
        Router([Deployment("local", local), Deployment("sagemaker", primary)]) as router,
        pytest.raises(derm_cloud.InvalidImageError),
    ):
        router.predict(bytes(data))
    assert emulator.requests_to("/invocations") == []


def test_the_last_in_process_deployment_runs_on_the_callers_thread(
    tiny_model_dir: Path, image: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    local = derm_cloud.create("local-onnx", model_dir=str(tiny_model_dir))
    threads = _threads_of(monkeypatch, local)
    with Router([Deployment("local", local)], policy=RouterPolicy(deadline_s=5.0)) as router:
        for _ in range(3):
            router.predict(image)
    assert threads == [threading.current_thread().name] * 3


def test_a_remote_call_is_watched_from_one_worker_thread_not_two(
    emulator: SageMakerRuntimeEmulator, image: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # boto3 cannot keep the deadline by itself: the router watches it from its own thread, and the retry loop
    # inside that thread must not hand the call to yet another worker.
    primary = sagemaker_backend_for(emulator, "primary")
    threads = _threads_of(monkeypatch, primary)
    with Router([Deployment("sagemaker", primary)], name="triage") as router:
        router.predict(image)
    (name,) = threads
    assert name.startswith("triage-call") and name != threading.current_thread().name


def test_a_fallback_still_gets_the_primary_its_own_thread(
    tiny_model_dir: Path, image: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # With something to fall back to, a slow primary must be cut at its share: that needs a thread.
    first, second, alone = (derm_cloud.create("local-onnx", model_dir=str(tiny_model_dir)) for _ in range(3))
    threads = _threads_of(monkeypatch, first)
    with Router([Deployment("a", first), Deployment("b", second)], name="r") as router:
        router.predict(image)
    hedged = _threads_of(monkeypatch, alone)
    with Router([Deployment("a", alone)], name="h", hedge=HedgePolicy()) as lone:
        lone.predict(image)  # hedging on but nothing to hedge to: no thread needed
    assert len(threads) == 1 and threads[0].startswith("r-call") and hedged == [threading.current_thread().name]

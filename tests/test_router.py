"""The Router against the SageMaker emulator with injected faults: fallback, deadline split, cooldown, hedging,
load balancing, no retry stacking, and construction from the comparator's config.

Timing assertions are upper bounds, never tighter than the deadline plus 5%; ``_bound`` adds a fixed margin for
thread scheduling on a loaded CI machine. Faults are far slower than the bounds, so a router that waited for
them would still fail these tests.

Images: HAM10000 dev set (Tschandl et al. 2018, CC BY-NC 4.0), read from ../shared/data.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from tests_helpers import dev_image, dev_rows

import derm_cloud
from derm_cloud import Deployment, HedgePolicy, Router, RouterPolicy
from derm_cloud.router.config import router_from_config
from derm_cloud.router.policy import Balancer, DeploymentState
from derm_cloud.testing.emulators.base import Fault
from derm_cloud.testing.emulators.sagemaker import SageMakerRuntimeEmulator, sagemaker_backend_for

META = {"age": 45, "sex": "male", "site": "back"}


def _bound(deadline_s: float) -> float:
    """An upper bound on a routed call: the deadline + 5%, plus 0.25 s for scheduling on a shared machine."""
    return deadline_s * 1.05 + 0.25


@pytest.fixture
def emulator(tiny_model_dir: Path) -> Iterator[SageMakerRuntimeEmulator]:
    with SageMakerRuntimeEmulator() as emu:
        emu.add_endpoint("primary", tiny_model_dir)
        emu.add_endpoint("second", tiny_model_dir)
        yield emu


@pytest.fixture
def image() -> Path:
    return dev_image(dev_rows(1)[0])


def _router(emulator: SageMakerRuntimeEmulator, model_dir: Path, **policy: Any) -> Router:
    primary = sagemaker_backend_for(emulator, "primary", read_timeout=10.0)  # its own RetryPolicy: 4 attempts
    local = derm_cloud.create("local-onnx", model_dir=str(model_dir))
    hedge = policy.pop("hedge", None)
    return Router(
        [Deployment("sagemaker", primary), Deployment("local", local)],
        name="triage",
        policy=RouterPolicy(**{"deadline_s": 2.0, **policy}),
        hedge=hedge,
    )


def test_primary_answers_like_the_library_and_the_route_says_so(
    emulator: SageMakerRuntimeEmulator, tiny_model_dir: Path, image: Path
) -> None:
    with _router(emulator, tiny_model_dir) as router:
        assert isinstance(router, derm_cloud.Classifier)
        pred = router.predict(image, META)
        with derm_cloud.create("local-onnx", model_dir=str(tiny_model_dir)) as local:
            want = local.predict(image, META)
        info = router.describe()
    assert pred.backend == "sagemaker" and pred.route is not None
    assert pred.route.router == "triage" and pred.route.deployment == "sagemaker" and pred.route.skipped == ()
    assert pred.attempts == 1 and not pred.route.hedged
    assert pred.vector() == pytest.approx(want.vector(), abs=1e-5)
    assert len(emulator.requests_to("/invocations")) == 1
    assert info.backend == "router" and info.data_leaves_machine and "sagemaker, local" in info.service
    again = derm_cloud.Prediction.from_dict(pred.to_dict())
    assert again.route == pred.route


def test_throttled_primary_falls_back_without_stacking_retries(
    emulator: SageMakerRuntimeEmulator, tiny_model_dir: Path, image: Path
) -> None:
    emulator.inject(Fault("throttle", times=100, retry_after=0.01))
    with _router(emulator, tiny_model_dir) as router:
        pred = router.predict(image, META)
    assert pred.backend == "local-onnx" and pred.route is not None and pred.route.deployment == "local"
    (skip,) = pred.route.skipped
    assert skip.deployment == "sagemaker" and skip.reason == "error" and "ThrottledError" in skip.detail
    # The backend's own policy would make 4 attempts (x botocore's, if on); inside the router there is one.
    assert len(emulator.requests_to("/invocations")) == 1
    assert pred.attempts == 2


def test_router_retries_a_deployment_within_its_share_honouring_retry_after(
    emulator: SageMakerRuntimeEmulator, tiny_model_dir: Path, image: Path
) -> None:
    emulator.inject(Fault("throttle", times=1, retry_after=0.2))
    with _router(emulator, tiny_model_dir, attempts_per_deployment=2) as router:
        start = time.monotonic()
        pred = router.predict(image, META)
        elapsed = time.monotonic() - start
    assert pred.route is not None and pred.route.deployment == "sagemaker" and pred.attempts == 2
    assert elapsed >= 0.2  # waited as the server asked
    assert len(emulator.requests_to("/invocations")) == 2


def test_slow_primary_is_cut_at_its_share_of_the_deadline(
    emulator: SageMakerRuntimeEmulator, tiny_model_dir: Path, image: Path
) -> None:
    emulator.inject(Fault("slow", times=1, delay=4.0))
    with _router(emulator, tiny_model_dir, deadline_s=1.5, share=0.5) as router:
        start = time.monotonic()
        pred = router.predict(image, META)
        elapsed = time.monotonic() - start
    assert pred.route is not None and pred.route.deployment == "local"
    (skip,) = pred.route.skipped
    assert skip.reason == "deadline" and "0.75 s" in skip.detail
    assert 0.75 <= elapsed < _bound(1.5)


def test_down_primary_falls_back(emulator: SageMakerRuntimeEmulator, tiny_model_dir: Path, image: Path) -> None:
    router = _router(emulator, tiny_model_dir)
    emulator.stop()  # connection refused from now on
    with router:
        start = time.monotonic()
        pred = router.predict(image, META)
        elapsed = time.monotonic() - start
    assert pred.route is not None and pred.route.deployment == "local"
    assert pred.route.skipped[0].reason == "error" and elapsed < _bound(2.0)


def test_every_deployment_slow_raises_a_typed_deadline_error_in_time(
    emulator: SageMakerRuntimeEmulator, tiny_model_dir: Path, image: Path
) -> None:
    emulator.inject(Fault("slow", times=2, delay=3.0))
    first = sagemaker_backend_for(emulator, "primary")
    second = sagemaker_backend_for(emulator, "second")
    with Router([first, Deployment("second", second)], policy=RouterPolicy(deadline_s=1.0)) as router:
        start = time.monotonic()
        with pytest.raises(derm_cloud.DeadlineExceededError, match="1.00 s deadline") as caught:
            router.predict(image, META)
        elapsed = time.monotonic() - start
    assert elapsed < _bound(1.0)
    assert "sagemaker: deadline" in str(caught.value) and "second: deadline" in str(caught.value)


def test_every_deployment_failing_raises_the_last_errors_class_naming_all(
    emulator: SageMakerRuntimeEmulator, tiny_model_dir: Path, image: Path
) -> None:
    emulator.inject(Fault("error", status=503, times=10))
    first = sagemaker_backend_for(emulator, "primary")
    second = sagemaker_backend_for(emulator, "second")
    router = Router([first, Deployment("second", second)], policy=RouterPolicy(deadline_s=2.0))
    with router, pytest.raises(derm_cloud.ServiceError, match="every deployment failed") as caught:
        router.predict(image, META)
    assert "sagemaker: error" in str(caught.value) and "second: error" in str(caught.value)


def test_cooldown_entry_and_exit(emulator: SageMakerRuntimeEmulator, tiny_model_dir: Path, image: Path) -> None:
    emulator.inject(Fault("error", status=500, times=2))
    with _router(emulator, tiny_model_dir, cooldown_failures=2, cooldown_s=0.5) as router:
        for _ in range(2):
            pred = router.predict(image, META)
            assert pred.route is not None and pred.route.skipped[0].reason == "error"
        # entry: two consecutive failures open the circuit; the primary is skipped without a call
        pred = router.predict(image, META)
        assert pred.route is not None and pred.route.deployment == "local"
        assert pred.route.skipped[0].reason == "cooldown"
        assert len(emulator.requests_to("/invocations")) == 2
        assert router.status()[0]["cooldown_s"] > 0
        # exit: after the cooldown one probe goes through, succeeds, and the primary serves again
        time.sleep(0.55)
        pred = router.predict(image, META)
        assert pred.route is not None and pred.route.deployment == "sagemaker" and pred.route.skipped == ()
        assert router.status()[0]["cooldown_s"] == 0
        assert len(emulator.requests_to("/invocations")) == 3
        calls = router.telemetry.metrics.snapshot()["calls"]
    assert calls["sagemaker"] == {"error": 2, "cooldown": 1, "ok": 1}


def test_all_in_cooldown_raises_circuit_open(tiny_model_dir: Path, image: Path, emulator: Any) -> None:
    emulator.inject(Fault("error", status=500, times=10))
    clf = sagemaker_backend_for(emulator, "primary")
    with Router([clf], policy=RouterPolicy(cooldown_failures=1, cooldown_s=30)) as router:
        with pytest.raises(derm_cloud.ServiceError):
            router.predict(image)
        with pytest.raises(derm_cloud.CircuitOpenError, match="every deployment is cooling down"):
            router.predict(image)
    assert len(emulator.requests_to("/invocations")) == 1


def test_hedging_wins_over_a_slow_primary(
    emulator: SageMakerRuntimeEmulator, tiny_model_dir: Path, image: Path
) -> None:
    emulator.inject(Fault("slow", times=1, delay=2.5))
    hedge = HedgePolicy(min_samples=50, initial_delay_s=0.1)
    with _router(emulator, tiny_model_dir, deadline_s=5.0, hedge=hedge) as router:
        start = time.monotonic()
        pred = router.predict(image, META)
        elapsed = time.monotonic() - start
    assert pred.route is not None and pred.route.hedged and pred.route.deployment == "local"
    assert [(s.deployment, s.reason) for s in pred.route.skipped] == [("sagemaker", "hedge_lost")]
    assert elapsed < 1.5  # did not wait for the 2.5 s primary (nor for its 3 s share)


def test_hedging_is_off_by_default(emulator: SageMakerRuntimeEmulator, tiny_model_dir: Path, image: Path) -> None:
    emulator.inject(Fault("slow", times=1, delay=0.5))
    with _router(emulator, tiny_model_dir, deadline_s=5.0) as router:
        pred = router.predict(image, META)
    assert pred.route is not None and pred.route.deployment == "sagemaker" and not pred.route.hedged
    assert router.hedge is None


def test_hedge_delay_is_the_primarys_observed_latency_percentile(tiny_model_dir: Path) -> None:
    clf = derm_cloud.create("local-onnx", model_dir=str(tiny_model_dir))
    st = DeploymentState(Deployment("a", clf), derm_cloud.CircuitBreaker())
    hedge = HedgePolicy(percentile=90, min_samples=10, initial_delay_s=0.7)
    for ms in range(1, 10):
        st.observe(ms / 1000)
    assert st.hedge_delay(hedge) == 0.7  # too few observations yet
    st.observe(0.010)
    assert st.hedge_delay(hedge) == pytest.approx(0.009)  # nearest-rank p90 of 1..10 ms
    clf.close()


def test_round_robin_spreads_calls_across_equivalent_deployments(
    emulator: SageMakerRuntimeEmulator, image: Path
) -> None:
    a = sagemaker_backend_for(emulator, "primary")
    b = sagemaker_backend_for(emulator, "second")
    with Router([Deployment("a", a, group="sm"), Deployment("b", b, group="sm")]) as router:
        answered = [router.predict(image).route.deployment for _ in range(4)]  # type: ignore[union-attr]
    assert sorted(answered) == ["a", "a", "b", "b"]
    assert (
        len(emulator.requests_to("/endpoints/primary/")) == 2 and len(emulator.requests_to("/endpoints/second/")) == 2
    )


def test_least_in_flight_prefers_the_idle_deployment(tiny_model_dir: Path) -> None:
    clf = derm_cloud.create("local-onnx", model_dir=str(tiny_model_dir))
    states = [DeploymentState(Deployment(n, clf, group="g"), derm_cloud.CircuitBreaker()) for n in ("a", "b", "c")]
    states[0].in_flight, states[1].in_flight, states[2].in_flight = 3, 0, 1
    balancer = Balancer(states, "least_in_flight")
    for _ in range(3):
        assert [s.name for s in balancer.order()] == ["b", "c", "a"]
    rr = Balancer(states, "round_robin")
    assert [rr.order()[0].name for _ in range(4)] == ["a", "b", "c", "a"]
    clf.close()


def test_batch_and_bad_input(emulator: SageMakerRuntimeEmulator, tiny_model_dir: Path) -> None:
    images = [dev_image(r) for r in dev_rows(3)]
    with _router(emulator, tiny_model_dir) as router:
        preds = router.predict_batch(images)
        with derm_cloud.create("local-onnx", model_dir=str(tiny_model_dir)) as local:
            want = local.predict_batch(images)
        with pytest.raises(derm_cloud.InvalidImageError, match="image 1 of 2"):
            router.predict_batch([images[0], b"<html>"])
    assert [p.vector() for p in preds] == [pytest.approx(w.vector(), abs=1e-5) for w in want]
    assert len(emulator.requests_to("/invocations")) == 3  # the bad batch sent nothing


def test_bad_configuration_is_a_typed_error(tiny_model_dir: Path) -> None:
    clf = derm_cloud.create("local-onnx", model_dir=str(tiny_model_dir))
    with pytest.raises(derm_cloud.ConfigError, match="unique"):
        Router([clf, clf])
    with pytest.raises(derm_cloud.ConfigError, match="at least one"):
        Router([])
    with pytest.raises(derm_cloud.ConfigError, match="share"):
        RouterPolicy(share=1.5)
    with pytest.raises(derm_cloud.ConfigError, match="classifier"):
        Deployment("x", "not a classifier")  # type: ignore[arg-type]
    clf.close()


def test_from_the_comparators_config(tiny_model_dir: Path, image: Path, tmp_path: Path) -> None:
    config = tmp_path / "compare.toml"
    config.write_text(
        f"""
[[backends]]
name = "sagemaker"
type = "sagemaker"
emulate = true
model_dir = "{tiny_model_dir}"

[[backends]]
name = "local"
type = "local-onnx"
options = {{ model_dir = "{tiny_model_dir}" }}
"""
    )
    router = router_from_config(config, policy=RouterPolicy(deadline_s=5.0))
    with router:
        pred = router.predict(image, META)
        assert [d.name for d in router.deployments] == ["sagemaker", "local"]
        assert router.deployments[0].classifier.describe().emulated
    assert pred.route is not None and pred.route.deployment == "sagemaker" and pred.backend == "sagemaker"
    with pytest.raises(derm_cloud.ConfigError, match="nope"):
        router_from_config(config, deployments=["nope"])
    bad = tmp_path / "bad.toml"
    bad.write_text('[[backends]]\nname = "x"\ntype = "local-onnx"\noptionz = {}\n')
    with pytest.raises(derm_cloud.ConfigError, match="bad.toml:4: backends\\[0\\].optionz"):
        router_from_config(bad)


def test_a_primary_cut_for_slowness_stays_a_failure_when_it_answers_late(
    emulator: SageMakerRuntimeEmulator, tiny_model_dir: Path, image: Path
) -> None:
    emulator.inject(Fault("slow", times=2, delay=1.2))
    with _router(emulator, tiny_model_dir, deadline_s=1.0, share=0.4, cooldown_failures=2, cooldown_s=30) as router:
        for _ in range(2):
            pred = router.predict(image, META)
            assert pred.route is not None and pred.route.skipped[0].reason == "deadline"
        time.sleep(1.5)  # both abandoned calls have answered by now, successfully
        pred = router.predict(image, META)
    assert pred.route is not None and pred.route.skipped[0].reason == "cooldown"
    assert len(emulator.requests_to("/invocations")) == 2


def test_a_call_cut_by_its_own_watchdog_is_listed_as_a_deadline_not_an_error() -> None:
    # Under load the call's own watchdog can fire a moment before the router's wait loop notices the share has
    # run out (seen in CI: "second: error (DeadlineExceededError ...)"); both are the same event for the caller.
    from derm_cloud.router.outcomes import failure_reason

    assert failure_reason(derm_cloud.DeadlineExceededError("no answer within 0.4 s", backend="x")) == "deadline"
    assert failure_reason(derm_cloud.ServiceError("boom", backend="x")) == "error"

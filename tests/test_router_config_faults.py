"""A misconfigured deployment is said loudly, though the fallback keeps answering: WARNING with its cause once per
cooldown, a metric of its own, ``Router.status()``, and ``Router.check()`` failing at start-up.

The cloud is the SageMaker emulator on 127.0.0.1, reached through boto3; nothing leaves the machine.
Images: HAM10000 dev set (Tschandl et al. 2018, CC BY-NC 4.0), read from ../shared/data.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from pathlib import Path

import pytest
from tests_helpers import dev_image, dev_rows

import derm_cloud
from derm_cloud import Deployment, Router, RouterPolicy, ShadowComparison
from derm_cloud.testing.emulators.base import Fault
from derm_cloud.testing.emulators.sagemaker import SageMakerRuntimeEmulator, sagemaker_backend_for


@pytest.fixture
def emulator(tiny_model_dir: Path) -> Iterator[SageMakerRuntimeEmulator]:
    with SageMakerRuntimeEmulator() as emu:
        emu.add_endpoint("derm-triage", tiny_model_dir)
        yield emu


@pytest.fixture
def image() -> Path:
    return dev_image(dev_rows(1)[0])


@pytest.fixture
def no_aws_credentials(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, emulator: SageMakerRuntimeEmulator
) -> SageMakerRuntimeEmulator:
    """A machine with no AWS credentials anywhere boto3 looks; SageMaker calls would go to the emulator."""
    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_PROFILE", "AWS_ROLE_ARN"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "no-credentials"))
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "no-config"))
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    monkeypatch.setenv("AWS_ENDPOINT_URL_SAGEMAKER_RUNTIME", emulator.url)
    return emulator


def _warnings(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == "derm_cloud.router" and r.levelno == logging.WARNING]


def test_the_quick_starts_router_without_credentials_warns_once_with_the_cause_and_fails_its_check(
    no_aws_credentials: SageMakerRuntimeEmulator, tiny_model_dir: Path, image: Path, caplog: pytest.LogCaptureFixture
) -> None:
    # docs/router.md's first example, on a machine with no AWS credentials.
    primary = derm_cloud.create("sagemaker", endpoint_name="derm-triage", region="eu-west-1")
    local = derm_cloud.create("local-onnx", model_dir=str(tiny_model_dir))
    caplog.set_level(logging.INFO, logger="derm_cloud.router")
    with Router(
        [Deployment("sagemaker", primary), Deployment("local", local)],
        name="triage",
        policy=RouterPolicy(deadline_s=5.0, share=0.6, cooldown_failures=100),
    ) as router:
        answers = [router.predict(image) for _ in range(3)]
        status = router.status()
        metrics = router.telemetry.metrics.snapshot()
        with pytest.raises(derm_cloud.DeploymentCheckError) as caught:
            router.check()
    assert all(a.route is not None and a.route.deployment == "local" for a in answers)  # falling back is right
    (warning,) = _warnings(caplog)  # ... and said once per cooldown, with the cause and the fix
    assert "'sagemaker' is misconfigured" in warning and "AuthenticationError" in warning
    assert "no usable AWS credentials" in warning and "check its credentials" in warning
    fault = status[0]["config_fault"]
    assert status[0]["deployment"] == "sagemaker" and fault["error"] == "AuthenticationError" and fault["count"] == 3
    assert status[1]["config_fault"] is None
    assert metrics["config_faults"] == {"sagemaker": {"AuthenticationError": 3}}
    assert isinstance(caught.value, derm_cloud.ConfigError) and set(caught.value.failures) == {"sagemaker"}
    assert "sagemaker: AuthenticationError" in str(caught.value) and "local" not in caught.value.failures
    assert no_aws_credentials.requests_to("/invocations") == []  # nothing was ever sent without credentials


def test_a_permission_fault_is_warned_once_per_cooldown_and_cleared_when_fixed(
    emulator: SageMakerRuntimeEmulator, tiny_model_dir: Path, image: Path, caplog: pytest.LogCaptureFixture
) -> None:
    emulator.inject(Fault("error", status=403, times=4))
    primary = sagemaker_backend_for(emulator, "derm-triage")
    local = derm_cloud.create("local-onnx", model_dir=str(tiny_model_dir))
    caplog.set_level(logging.INFO, logger="derm_cloud.router")
    policy = RouterPolicy(cooldown_failures=100, cooldown_s=30.0)
    with Router([Deployment("sagemaker", primary), Deployment("local", local)], policy=policy) as router:
        for _ in range(3):
            router.predict(image)
        assert len(_warnings(caplog)) == 1 and "AccessDeniedException" in _warnings(caplog)[0]
        router.config_faults.warn_every_s = 0.0  # as if the cooldown had passed: the next fault warns again
        router.predict(image)
        assert len(_warnings(caplog)) == 2
        pred = router.predict(image)  # the fault is gone: the primary answers and its fault is cleared
        assert pred.route is not None and pred.route.deployment == "sagemaker"
        assert router.status()[0]["config_fault"] is None
        assert router.check()[0].ok


def test_the_start_up_check_names_every_misconfigured_deployment_and_probes_the_shadow(
    emulator: SageMakerRuntimeEmulator, tiny_model_dir: Path
) -> None:
    good = sagemaker_backend_for(emulator, "derm-triage")
    # No endpoint of that name: a typo in the configuration.
    misspelt = sagemaker_backend_for(emulator, "derm-triage-eu", class_names=list(derm_cloud.CLASS_CODES))
    shadow = ShadowComparison(sagemaker_backend_for(emulator, "derm-triage"), name="candidate")
    local = derm_cloud.create("local-onnx", model_dir=str(tiny_model_dir))
    with Router(
        [Deployment("eu", misspelt), Deployment("us", good), Deployment("local", local)], shadow=shadow
    ) as router:
        with pytest.raises(derm_cloud.DeploymentCheckError, match="1 of 4 deployment") as caught:
            router.check()
        assert caught.value.failures.keys() == {"eu"} and "NotFoundError" in caught.value.failures["eu"]
        assert router.status()[0]["config_fault"]["error"] == "NotFoundError"
        emulator.inject(Fault("error", status=503, times=10))
        results = router.check()  # an outage is not a configuration fault ...
        assert [r.deployment for r in results] == ["eu", "us", "local", "shadow:candidate"]
        with pytest.raises(derm_cloud.DeploymentCheckError, match="failed the start-up check"):
            router.check(strict=True)  # ... unless asked to be strict
    probes = [r.body for r in emulator.requests_to("/invocations")]
    assert probes and all(len(body) < 2000 for body in probes)  # a tiny probe: cheap wherever it is billed


def test_a_healthy_router_passes_its_check(emulator: SageMakerRuntimeEmulator, tiny_model_dir: Path) -> None:
    primary = sagemaker_backend_for(emulator, "derm-triage")
    local = derm_cloud.create("local-onnx", model_dir=str(tiny_model_dir))
    with Router([Deployment("sagemaker", primary), Deployment("local", local)]) as router:
        results = router.check()
    assert [(r.deployment, r.ok, r.config_fault) for r in results] == [
        ("sagemaker", True, False),
        ("local", True, False),
    ]
    assert all(r.latency_ms > 0 for r in results)
    assert len(emulator.requests_to("/invocations")) == 1

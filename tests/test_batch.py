"""Cloud batch jobs (`derm_cloud.batch`) through the real SDKs against the three batch emulators.

Each provider: submit, wait, collect 20 synthetic images with a tiny model; a client that dies after submitting
re-attaches by the job record and collects without submitting again (the emulator counts submissions) or
reading an output twice; an unreadable image is reported with its cause; a job-failure fault raises
`BatchJobFailedError` carrying what the job wrote.
"""

from __future__ import annotations

import io
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

from derm_cloud.batch import (
    BATCH_KINDS,
    BatchImage,
    JobRecord,
    JobStatus,
    OutputBatch,
    check_images,
    run_batch,
    start_emulated,
)
from derm_cloud.errors import BatchJobFailedError, ConfigError, InvalidImageError
from derm_cloud.serving import ModelServer
from derm_cloud.testing.emulators.batch_runner import JobFault

N_IMAGES = 20


def _jpeg(seed: int) -> bytes:
    pixels = (np.random.default_rng(seed).random((48, 64, 3)) * 255).astype("uint8")
    out = io.BytesIO()
    Image.fromarray(pixels).save(out, "JPEG", quality=90)
    return out.getvalue()


@pytest.fixture(scope="module")
def images() -> list[BatchImage]:
    return [BatchImage(f"img{i:03d}", _jpeg(i)) for i in range(N_IMAGES)]


@pytest.fixture(scope="module")
def realtime(tiny_model_dir: Path, images: list[BatchImage]) -> dict[str, list[float]]:
    """The real-time path's answer for each image: the same model server answering `/invocations`."""
    server = ModelServer(tiny_model_dir)
    return {
        im.image_id: json.loads(server.sagemaker_invocations(im.data, "image/jpeg").body)["probabilities"]
        for im in images
    }


@pytest.fixture(scope="module", params=BATCH_KINDS)
def cloud(request: pytest.FixtureRequest, tiny_model_dir: Path) -> Iterator[tuple[str, Any, Any]]:
    emulator, provider = start_emulated(request.param, tiny_model_dir)
    try:
        yield request.param, emulator, provider
    finally:
        emulator.stop()


def test_submit_wait_collect_matches_the_realtime_path(
    cloud: tuple[str, Any, Any], images: list[BatchImage], realtime: dict[str, list[float]], tmp_path: Path
) -> None:
    kind, emulator, provider = cloud
    before = emulator.batch.submissions
    result = run_batch(provider, images, record_path=tmp_path / "job.json", job_name=f"{kind}-plain")
    assert emulator.batch.submissions == before + 1
    assert result.status.state == "succeeded" and not result.failures
    assert sorted(result.predictions) == sorted(realtime)
    gap = max(abs(a - b) for i in realtime for a, b in zip(result.predictions[i], realtime[i], strict=True))
    assert gap <= 1e-6
    text = (tmp_path / "job.json").read_text()
    record = json.loads(text)
    assert record["job_id"] and record["collected"]
    assert len(text) < 200 * N_IMAGES  # ids and object names only: no image bytes


def test_a_killed_client_reattaches_without_resubmitting(
    cloud: tuple[str, Any, Any], images: list[BatchImage], tmp_path: Path
) -> None:
    kind, emulator, provider = cloud
    emulator.inject_job_fault(JobFault("delay", delay=0.5))  # the job is still running when the client dies
    record_path = tmp_path / "job.json"

    class Killed(BaseException):
        pass

    def die(record: JobRecord) -> None:
        raise Killed

    before = emulator.batch.submissions
    with pytest.raises(Killed):
        run_batch(provider, images, record_path=record_path, job_name=f"{kind}-killed", on_record=die)
    job_id = JobRecord.load(record_path).job_id.rpartition("/")[2]  # Vertex ids are resource names
    assert emulator.batch.get(job_id).state in ("queued", "running")
    _, fresh = start_emulated_client(kind, emulator, provider)
    result = run_batch(fresh, [], record_path=record_path, job_name="ignored-on-reattach")
    assert len(result.predictions) == N_IMAGES and result.objects_read > 0
    again = run_batch(fresh, [], record_path=record_path, job_name="ignored-on-reattach")
    assert again.objects_read == 0 and not again.predictions  # nothing is read twice
    assert emulator.batch.submissions == before + 1


def start_emulated_client(kind: str, emulator: Any, provider: Any) -> tuple[Any, Any]:
    """A new provider object with new SDK clients for the same emulator (what a restarted process builds)."""
    cls = type(provider)
    if kind == "sagemaker":
        return emulator, cls(
            emulator.sagemaker_client(),
            emulator.s3_client(),
            model_name=provider.model_name,
            bucket=provider.bucket,
            labels=provider.labels,
        )
    if kind == "vertex":
        return emulator, cls(
            emulator.job_client(),
            emulator.storage_client(),
            project=provider.project,
            location=provider.location,
            model_id=provider.model_id,
            bucket=provider.bucket,
            labels=provider.labels,
        )
    return emulator, cls(
        emulator.ml_client(), emulator.container_client(), endpoint_name=provider.endpoint_name, labels=provider.labels
    )


def test_an_unreadable_image_is_reported_with_its_cause(
    cloud: tuple[str, Any, Any], images: list[BatchImage], tmp_path: Path
) -> None:
    kind, _, provider = cloud
    inputs = [*images[:3], BatchImage("broken", b"this is not an image")]
    result = run_batch(provider, inputs, record_path=tmp_path / "job.json", job_name=f"{kind}-broken")
    assert sorted(result.predictions) == sorted(i.image_id for i in images[:3])
    assert list(result.failures) == ["broken"]
    assert "not a readable image" in result.failures["broken"]


def test_a_job_failure_fault_raises_a_typed_error_with_the_partial_output(
    cloud: tuple[str, Any, Any], images: list[BatchImage], tmp_path: Path
) -> None:
    kind, emulator, provider = cloud
    emulator.inject_job_fault(JobFault("fail", after=12, message="node lost (injected)"))
    with pytest.raises(BatchJobFailedError, match="node lost") as caught:
        run_batch(provider, images, record_path=tmp_path / "job.json", job_name=f"{kind}-fails")
    partial = caught.value.partial
    # SageMaker writes each .out as it goes, Vertex a file pair every 10 instances; Azure's append_row
    # output is written at the end, so a failed Azure job leaves none.
    expected = {"sagemaker": 12, "vertex": 10, "azure-ml": 0}[kind]
    assert len(partial.predictions) == expected
    assert len(partial.failures) == N_IMAGES - expected
    assert all("node lost" in cause for cause in partial.failures.values())


def test_bad_inputs_get_typed_errors(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="at least one image"):
        check_images([])
    with pytest.raises(ConfigError, match="appears twice"):
        check_images([BatchImage("a", b"x"), BatchImage("a", b"y")])
    with pytest.raises(ConfigError, match="cannot name a cloud storage object"):
        check_images([BatchImage("../etc/passwd", b"x")])
    with pytest.raises(InvalidImageError, match="empty"):
        check_images([BatchImage("a", b"")])
    (tmp_path / "job.json").write_text("{not json")
    with pytest.raises(ConfigError, match="delete it to submit a new job"):
        JobRecord.load(tmp_path / "job.json")


class _ScriptedProvider:
    """A provider whose job answers only some images: what `run_batch` must make of a job's outputs."""

    name = "scripted"
    labels = ("a", "b")

    def __init__(self, state: str, answered: dict[str, list[float]]) -> None:
        self.state, self.answered, self.submitted = state, answered, 0

    def submit(self, images: list[BatchImage], job_name: str) -> JobRecord:
        self.submitted += 1
        return JobRecord("scripted", job_name, "mem://in", "mem://out", {i.image_id: i.image_id for i in images})

    def status(self, record: JobRecord) -> JobStatus:
        return JobStatus(self.state, self.state.upper(), "")  # type: ignore[arg-type]

    def read_outputs(self, record: JobRecord) -> OutputBatch:
        return OutputBatch(["out-1"], dict(self.answered))


def test_an_image_a_finished_job_wrote_nothing_for_is_reported(tmp_path: Path) -> None:
    provider = _ScriptedProvider("succeeded", {"x": [0.3, 0.7]})
    inputs = [BatchImage("x", b"1"), BatchImage("y", b"2")]
    result = run_batch(provider, inputs, record_path=tmp_path / "job.json", job_name="j")
    assert result.predictions == {"x": [0.3, 0.7]}
    assert list(result.failures) == ["y"] and "no output" in result.failures["y"]


def test_a_job_still_running_at_the_deadline_keeps_its_record_for_later(tmp_path: Path) -> None:
    provider = _ScriptedProvider("running", {})
    with pytest.raises(TimeoutError, match="call again with record"):
        run_batch(provider, [BatchImage("x", b"1")], record_path=tmp_path / "job.json", job_name="j", timeout_s=0.05)
    provider.state = "succeeded"
    provider.answered = {"x": [0.5, 0.5]}
    result = run_batch(provider, [], record_path=tmp_path / "job.json", job_name="j")
    assert result.predictions == {"x": [0.5, 0.5]} and provider.submitted == 1
    other = _ScriptedProvider("succeeded", {})
    other.name = "another-cloud"
    with pytest.raises(ConfigError, match="records a scripted job"):
        run_batch(other, [], record_path=tmp_path / "job.json", job_name="j")


def test_an_earlier_invoke_naming_a_deployment_does_not_reroute_a_batch_job(
    tiny_model_dir: Path, images: list[BatchImage], tmp_path: Path
) -> None:
    # azure-ai-ml keeps invoke headers in one class-level dict: an online invoke with deployment_name="green"
    # elsewhere in the process left "azureml-model-deployment: green" on every later batch invoke (seen in the
    # whole suite, never in this file alone).
    from azure.ai.ml.constants._endpoint import EndpointInvokeFields

    EndpointInvokeFields.DEFAULT_HEADER[EndpointInvokeFields.MODEL_DEPLOYMENT] = "green"
    emulator, provider = start_emulated("azure-ml", tiny_model_dir)
    try:
        result = run_batch(provider, images[:3], record_path=tmp_path / "job.json", job_name="after-green")
    finally:
        emulator.stop()
        EndpointInvokeFields.DEFAULT_HEADER.pop(EndpointInvokeFields.MODEL_DEPLOYMENT, None)
    assert result.status.state == "succeeded" and sorted(result.predictions) == sorted(i.image_id for i in images[:3])

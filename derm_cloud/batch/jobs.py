"""What every provider's batch job shares: the local job record, the collected result and submit-wait-collect.

A batch job outlives the process that submitted it. `JobRecord` is what this machine keeps of one job, as a
small JSON file: the provider's job id, where inputs and outputs live, which image id each input object holds,
which output objects were already read. It holds no image bytes and no secret (keys and tokens stay in the
SDK clients), so it can sit beside a report. A client that dies re-attaches by reading the record and asking
the provider for the job's state by id: nothing is submitted twice, and outputs already collected are not
read again.

Each provider (`SageMakerBatchTransform`, `VertexBatchPrediction`, `AzureMLBatchEndpoint`) implements
`BatchProvider`: `submit` (upload the inputs, start the job, return its record), `status` (the job's state by
id) and `read_outputs` (the output objects not yet read, parsed into predictions and per-image failures).
`run_batch` chains them and resumes from the record when there is one.

Example:
    >>> provider = SageMakerBatchTransform(sagemaker_client, s3_client, model_name="derm", bucket="b")  # doctest: +SKIP
    >>> result = run_batch(provider, images, record_path="report/jobs/sagemaker.json")  # doctest: +SKIP
    >>> result.predictions["ISIC_0024306"], result.failures  # doctest: +SKIP
"""

from __future__ import annotations

import json
import os
import re
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal, Protocol

from derm_cloud.errors import BatchJobFailedError, ConfigError, InvalidImageError

__all__ = [
    "BatchImage",
    "BatchProvider",
    "BatchResult",
    "JobRecord",
    "JobState",
    "JobStatus",
    "OutputBatch",
    "check_images",
    "run_batch",
]

#: Provider states mapped to four: still going, finished, failed as a whole, stopped by someone.
JobState = Literal["running", "succeeded", "failed", "stopped"]
TERMINAL: frozenset[str] = frozenset({"succeeded", "failed", "stopped"})
# Image ids become object names: keep them to characters every store accepts unquoted.
_SAFE_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,200}$")


@dataclass(frozen=True)
class BatchImage:
    """One input of a batch job: an id (used as the object name) and the metadata-free bytes to send."""

    image_id: str
    data: bytes
    mime: str = "image/jpeg"


def check_images(images: Sequence[BatchImage]) -> None:
    """Refuse inputs no provider would take, before anything is uploaded.

    Raises:
        ConfigError: no images, a duplicate id or an id that cannot name an object.
        InvalidImageError: an image with no bytes.
    """
    if not images:
        raise ConfigError("a batch job needs at least one image; pass a non-empty list of BatchImage")
    seen: set[str] = set()
    for image in images:
        if not _SAFE_ID.match(image.image_id):
            raise ConfigError(
                f"image id {image.image_id[:80]!r} cannot name a cloud storage object: use letters, digits, '.', "
                "'_' and '-' only (at most 201 characters, starting with a letter or digit)"
            )
        if image.image_id in seen:
            raise ConfigError(f"image id {image.image_id!r} appears twice; each image of a job needs its own id")
        seen.add(image.image_id)
        if not image.data:
            raise InvalidImageError(f"image {image.image_id!r} is empty (0 bytes); remove it or give its bytes")


@dataclass
class JobRecord:
    """What this machine keeps of one submitted job (a JSON file; no image bytes, no secrets).

    Attributes:
        provider: `sagemaker`, `vertex` or `azure-ml`.
        job_id: the provider's job name or resource name, the handle to re-attach by.
        input_uri: where the inputs were uploaded (`s3://`, `gs://` or a blob folder URL).
        output_uri: where the job writes its outputs.
        objects: input object name -> image id.
        collected: output object names already read (never read twice).
        submitted: epoch seconds when the upload of the inputs began; `finished` when the job was seen terminal.
        submissions: how many times this record submitted a job (1 unless the first submit never returned).
    """

    provider: str
    job_id: str
    input_uri: str
    output_uri: str
    objects: dict[str, str]
    collected: list[str] = field(default_factory=list)
    submitted: float = 0.0
    finished: float | None = None
    submissions: int = 1
    extra: dict[str, Any] = field(default_factory=dict)

    def save(self, path: str | os.PathLike[str]) -> None:
        """Write the record atomically (a kill mid-write leaves the previous record, never half of one)."""
        target = Path(path)
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = target.with_suffix(target.suffix + ".tmp")
        tmp.write_text(json.dumps(asdict(self), indent=1, sort_keys=True))
        os.replace(tmp, target)

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> JobRecord:
        """Read a record written by `save`.

        Raises:
            ConfigError: the file is not a job record (the message names it and how to start afresh).
        """
        try:
            raw = json.loads(Path(path).read_text())
            return cls(**raw)
        except (OSError, ValueError, TypeError) as exc:
            raise ConfigError(
                f"{path} is not a readable batch job record ({exc}); delete it to submit a new job"
            ) from None


@dataclass(frozen=True)
class JobStatus:
    """A job's state as the provider reports it, with the provider's own words."""

    state: JobState
    provider_state: str
    message: str = ""


@dataclass
class OutputBatch:
    """What `BatchProvider.read_outputs` found in output objects not read before."""

    objects: list[str] = field(default_factory=list)
    predictions: dict[str, list[float]] = field(default_factory=dict)
    failures: dict[str, str] = field(default_factory=dict)
    #: image id -> why its prediction breaks the model's schema (a provider or model mismatch, not the image).
    malformed: dict[str, str] = field(default_factory=dict)


@dataclass
class BatchResult:
    """A job's collected outcome.

    Attributes:
        job_id: the provider's job id.
        status: the job's final (or current) status.
        labels: the order of each probability list (empty when the numbers are embeddings).
        predictions: image id -> probabilities (or an embedding), for the images read in this call.
        failures: image id -> cause, for images the job failed or never handled, or whose prediction was
            malformed.
        turnaround_s: submit to terminal state, as this machine saw it (`None` while running).
        objects_read: output objects read in this call (0 when a re-attached client had read them all).
        malformed: image id -> why, for the failures whose prediction broke the model's schema.
    """

    job_id: str
    status: JobStatus
    labels: tuple[str, ...]
    predictions: dict[str, list[float]]
    failures: dict[str, str]
    turnaround_s: float | None
    objects_read: int
    malformed: dict[str, str] = field(default_factory=dict)


class BatchProvider(Protocol):
    """One provider's batch job API, through its real SDK (see the provider modules)."""

    name: str
    labels: tuple[str, ...]

    def submit(self, images: Sequence[BatchImage], job_name: str) -> JobRecord: ...

    def status(self, record: JobRecord) -> JobStatus: ...

    def read_outputs(self, record: JobRecord) -> OutputBatch: ...


def run_batch(
    provider: BatchProvider,
    images: Sequence[BatchImage],
    *,
    record_path: str | os.PathLike[str],
    job_name: str,
    poll_s: float = 0.2,
    timeout_s: float = 3600.0,
    on_record: Callable[[JobRecord], None] | None = None,
    on_outputs: Callable[[OutputBatch], None] | None = None,
) -> BatchResult:
    """Submit a job (or re-attach to the one `record_path` names), wait for it and collect its outputs.

    Args:
        provider: the cloud's batch API.
        images: the inputs; ignored when re-attaching (the record says which object holds which image).
        record_path: the job record; written right after the job is created, read to re-attach.
        job_name: the provider job name for a new job (unique per job: providers refuse a reused name).
        poll_s: seconds between status calls.
        timeout_s: give up waiting after this long (the job keeps running; call again to re-attach).
        on_record: called with the record once it is saved (a test kills the client here).
        on_outputs: called with what was read before the record marks those outputs read: a caller that keeps
            results durably (the probe's embedding cache) stores them here, so a client killed after reading
            reads them again instead of losing them.

    Raises:
        BatchJobFailedError: the job failed or was stopped as a whole; `.partial` holds what was collected.
        TimeoutError: the job is still running after `timeout_s` (re-attach later with the same record).
    """
    path = Path(record_path)
    if path.exists():
        record = JobRecord.load(path)
        if record.provider != provider.name:
            raise ConfigError(f"{path} records a {record.provider} job, not {provider.name}; use another record path")
    else:
        check_images(images)
        record = provider.submit(images, job_name)
        record.save(path)
    if on_record is not None:
        on_record(record)
    deadline = time.monotonic() + timeout_s
    status = provider.status(record)
    while status.state not in TERMINAL:
        if time.monotonic() > deadline:
            raise TimeoutError(
                f"{provider.name} job {record.job_id} still {status.provider_state} after {timeout_s:g} s; "
                f"it keeps running: call again with record {path} to re-attach"
            )
        time.sleep(poll_s)
        status = provider.status(record)
    if record.finished is None:
        record.finished = time.time()
        record.save(path)
    return _collect(provider, record, path, status, on_outputs)


def _collect(
    provider: BatchProvider,
    record: JobRecord,
    path: Path,
    status: JobStatus,
    on_outputs: Callable[[OutputBatch], None] | None = None,
) -> BatchResult:
    found = provider.read_outputs(record)
    if on_outputs is not None:
        on_outputs(found)
    record.collected.extend(o for o in found.objects if o not in record.collected)
    record.save(path)
    failures = dict(found.failures) | {i: f"malformed output: {why}" for i, why in found.malformed.items()}
    already = set(record.extra.get("collected_ids", []))
    # Images with neither an answer nor an error, unless an earlier call collected them: a job that failed or was
    # stopped as a whole never got to them; a job that succeeded without writing them lost them.
    for image_id in record.objects.values():
        if image_id in found.predictions or image_id in failures or image_id in already:
            continue
        if status.state == "succeeded":
            failures[image_id] = "no output: the job finished without writing an answer or an error for this image"
        else:
            failures[image_id] = f"not processed: job {status.provider_state}: {status.message}".strip(": ")
    record.extra["collected_ids"] = sorted(
        already | set(found.predictions) | set(found.failures) | set(found.malformed)
    )
    record.save(path)
    turnaround = (record.finished - record.submitted) if record.finished else None
    result = BatchResult(
        record.job_id,
        status,
        provider.labels,
        found.predictions,
        failures,
        turnaround,
        len(found.objects),
        dict(found.malformed),
    )
    job_level = [
        i for i in failures if i not in found.failures and i not in found.malformed and status.state != "succeeded"
    ]
    if job_level:
        raise BatchJobFailedError(
            f"{provider.name} batch job {record.job_id} {status.provider_state}: {status.message or 'no reason given'}"
            f"; {len(found.predictions)} prediction(s) collected, {len(job_level)} image(s) not processed",
            backend=provider.name,
            job_id=record.job_id,
            partial=result,
        )
    return result


def image_ids(record: JobRecord) -> Mapping[str, str]:
    """Input object name -> image id of a record (a read-only view for providers)."""
    return record.objects

"""Vertex AI `ModelService.ExportModel` then a Cloud Storage download: an AutoML Edge export, on this machine.

The GAPIC `aiplatform_v1.ModelServiceClient` is used rather than the high-level `aiplatform.Model` because it
takes an `api_endpoint` (with `http://` for a local emulator) and credentials per client, with no global
`aiplatform.init` state. The export is a long-running operation; when it is done its
`ExportModelOperationMetadata.output_info.artifact_output_uri` names the `gs://` folder holding the files
(for `tflite`: `model.tflite` + `dict.txt`), which `google-cloud-storage` downloads.
"""

from __future__ import annotations

import time
from pathlib import Path, PurePosixPath
from typing import Any

from derm_cloud.errors import (
    AuthenticationError,
    ConfigError,
    DeadlineExceededError,
    MissingDependencyError,
    NotFoundError,
    ServiceError,
)

__all__ = ["export_vertex_model"]

_BACKEND = "vertex-export"


def export_vertex_model(
    model: str,
    *,
    project: str,
    location: str,
    destination: str,
    out_dir: str | Path,
    export_format_id: str = "tflite",
    credentials: Any = None,
    api_endpoint: str | None = None,
    storage_client: Any = None,
    poll_seconds: float = 5.0,
    timeout: float = 1800.0,
) -> tuple[Path, str]:
    """Export a trained Vertex AI model to Cloud Storage, wait for it, and download the exported folder.

    Args:
        model: the model id (`1234...`) or its full name `projects/P/locations/L/models/ID`.
        project, location: where the model lives (`us-central1` ...).
        destination: `gs://BUCKET/PREFIX`; Vertex writes `<destination>/model-<id>/<format>/<timestamp>/`.
        out_dir: local folder the exported files are downloaded into (created if missing).
        export_format_id: one of the model's `supportedExportFormats` (`tflite` runs under `local-tflite`).
        credentials: Google credentials (default: Application Default Credentials; anonymous when
            `api_endpoint` is a loopback emulator).
        api_endpoint: Vertex host (default `{location}-aiplatform.googleapis.com`); a local emulator needs the
            `http://` scheme.
        storage_client: a `google.cloud.storage.Client` (default: one built with `credentials`; it honours
            `STORAGE_EMULATOR_HOST`, anonymously, as Google's client does).
        poll_seconds: wait between operation polls.
        timeout: give up waiting for the export after this many seconds.

    Returns:
        The local folder holding the exported files and the `gs://` URI they came from.

    Raises:
        NotFoundError: no such model in that project/location.
        AuthenticationError: no credentials, or they may not export the model.
        ConfigError: the destination is not `gs://` or the model does not offer `export_format_id`.
        ServiceError: the export operation failed; DeadlineExceededError: it did not finish within `timeout`.
    """
    if not destination.startswith("gs://") or len(destination) <= len("gs://"):
        raise ConfigError(f"destination must be a Cloud Storage folder gs://BUCKET/PREFIX, got {destination!r}")
    name = model if model.startswith("projects/") else f"projects/{project}/locations/{location}/models/{model}"
    client = _model_client(location, _credentials_for(credentials, api_endpoint), api_endpoint)
    try:
        from google.api_core import exceptions as gexc
        from google.auth import exceptions as auth_exceptions
        from google.cloud.aiplatform_v1 import ExportModelRequest
    except ImportError as exc:  # pragma: no cover - _model_client imported the same package
        raise MissingDependencyError(str(exc)) from exc
    operation: Any = None
    try:
        offered = [f.id for f in client.get_model(name=name).supported_export_formats]
        if export_format_id not in offered:
            raise ConfigError(
                f"model {name} cannot be exported as {export_format_id!r}; it offers {offered or 'no export'} "
                "(only AutoML Edge models export; pass one of those formats)"
            )
        output = ExportModelRequest.OutputConfig(
            export_format_id=export_format_id, artifact_destination={"output_uri_prefix": destination}
        )
        operation = client.export_model(name=name, output_config=output)
        deadline = time.monotonic() + timeout
        while not operation.done():
            if time.monotonic() > deadline:
                raise DeadlineExceededError(
                    f"the Vertex export of {name} did not finish within {timeout:g} s; its operation "
                    f"{operation.operation.name} keeps running: try again later with a longer timeout",
                    backend=_BACKEND,
                )
            time.sleep(poll_seconds)
    except gexc.GoogleAPICallError as exc:
        if operation is not None and isinstance(exc, gexc.NotFound):  # the model was there: its operation is not
            raise ServiceError(
                f"Vertex AI lost track of the export operation of {name} ({exc.message}); request the export again",
                backend=_BACKEND,
                status=404,
            ) from None
        raise _translate(exc, name, export_format_id) from None
    except auth_exceptions.GoogleAuthError as exc:  # e.g. a RefreshError from expired credentials
        raise AuthenticationError(_NO_CREDENTIALS + f" ({exc})", backend=_BACKEND) from None
    if operation.operation.HasField("error"):
        error = operation.operation.error
        raise ServiceError(
            f"Vertex could not export {name} as {export_format_id}: {error.message} (code {error.code})",
            backend=_BACKEND,
            retryable=False,
        )
    artifact_uri = str(operation.metadata.output_info.artifact_output_uri)
    if not artifact_uri.startswith("gs://"):
        raise ServiceError(
            f"Vertex finished the export without an output location ({artifact_uri!r})", backend=_BACKEND
        )
    storage = storage_client or _storage_client(project, credentials)
    return _download_folder(storage, artifact_uri, Path(out_dir)), artifact_uri


_NO_CREDENTIALS = (
    "no usable Google credentials for Vertex AI; run `gcloud auth application-default login` or set "
    "GOOGLE_APPLICATION_CREDENTIALS to a service-account key with roles/aiplatform.user and storage read access"
)


def _credentials_for(credentials: Any, api_endpoint: str | None) -> Any:
    """The credentials given; anonymous ones for a loopback emulator (it takes none, and ADC may not exist)."""
    from derm_cloud.backends._http import is_loopback

    if credentials is None and is_loopback(api_endpoint):
        from google.auth.credentials import AnonymousCredentials

        return AnonymousCredentials()  # type: ignore[no-untyped-call]
    return credentials


def _model_client(location: str, credentials: Any, api_endpoint: str | None) -> Any:
    try:
        from google.auth import exceptions as auth_exceptions
        from google.cloud import aiplatform_v1
    except ImportError as exc:
        raise MissingDependencyError(
            "exporting a Vertex AI model needs google-cloud-aiplatform and google-cloud-storage; run: "
            "pip install 'derm-cloud[vertex]'"
        ) from exc
    endpoint = api_endpoint or f"{location}-aiplatform.googleapis.com"
    try:
        return aiplatform_v1.ModelServiceClient(
            credentials=credentials, transport="rest", client_options={"api_endpoint": endpoint}
        )
    except auth_exceptions.DefaultCredentialsError as exc:
        raise AuthenticationError(_NO_CREDENTIALS, backend=_BACKEND) from exc


def _storage_client(project: str, credentials: Any) -> Any:
    try:
        from google.auth import exceptions as auth_exceptions
        from google.cloud import storage
    except ImportError as exc:
        raise MissingDependencyError(
            "downloading a Vertex export needs google-cloud-storage; run: pip install 'derm-cloud[vertex]'"
        ) from exc
    try:
        return storage.Client(project=project, credentials=credentials)
    except auth_exceptions.DefaultCredentialsError as exc:
        raise AuthenticationError(_NO_CREDENTIALS, backend=_BACKEND) from exc


def _download_folder(storage: Any, artifact_uri: str, out_dir: Path) -> Path:
    """Download every object under `artifact_uri` into `out_dir`, keeping the sub-folders."""
    from google.api_core import exceptions as gexc

    bucket, _, prefix = artifact_uri[len("gs://") :].partition("/")
    prefix = prefix.rstrip("/") + "/"
    out_dir.mkdir(parents=True, exist_ok=True)
    count = 0
    try:
        for blob in storage.list_blobs(bucket, prefix=prefix):
            relative = PurePosixPath(blob.name[len(prefix) :])
            if not relative.parts or blob.name.endswith("/") or ".." in relative.parts:
                continue  # folder placeholders; never write outside out_dir
            target = out_dir.joinpath(*relative.parts)
            target.parent.mkdir(parents=True, exist_ok=True)
            blob.download_to_filename(str(target))
            count += 1
    except gexc.Forbidden as exc:
        raise AuthenticationError(
            f"Cloud Storage refused reading {artifact_uri}: grant the caller storage.objects.list/get "
            f"(roles/storage.objectViewer) on bucket {bucket} ({exc.message})",
            backend=_BACKEND,
            status=403,
        ) from None
    except gexc.NotFound as exc:
        raise NotFoundError(f"Cloud Storage has no bucket {bucket!r} ({exc.message})", backend=_BACKEND) from None
    except gexc.GoogleAPICallError as exc:
        raise ServiceError(
            f"downloading {artifact_uri} failed ({exc.message}); the export is still there: run again to retry",
            backend=_BACKEND,
            status=exc.code,
        ) from None
    if count == 0:
        raise NotFoundError(f"the export finished but {artifact_uri} holds no files", backend=_BACKEND)
    return out_dir


def _translate(exc: Any, name: str, export_format_id: str) -> Exception:
    from google.api_core import exceptions as gexc

    message = getattr(exc, "message", None) or str(exc)
    if isinstance(exc, gexc.NotFound):
        return NotFoundError(
            f"Vertex AI has no model {name}; check the id, project and location (console > Vertex AI > Model "
            f"Registry) ({message})",
            backend=_BACKEND,
            status=404,
        )
    if isinstance(exc, gexc.Unauthorized | gexc.Forbidden):
        return AuthenticationError(
            f"Vertex AI refused the credentials for {name}: {message}. " + _NO_CREDENTIALS,
            backend=_BACKEND,
            status=exc.code,
        )
    if isinstance(exc, gexc.BadRequest):
        return ConfigError(f"Vertex AI will not export {name} as {export_format_id!r}: {message}")
    return ServiceError(f"Vertex AI export of {name} failed: {message}", backend=_BACKEND, status=exc.code)

"""The one error tree of derm-cloud.

Every error a user can see is a `DermCloudError`; each class also inherits the builtin a caller would
naturally catch (`ValueError`, `ImportError`, `TimeoutError` ...), so code that does not know about
derm-cloud still handles it sensibly:

```text
DermCloudError
+-- ConfigError (ValueError)                  bad option, config file or model spec
|   +-- ModelSpecError                        a model directory or spec file is wrong
|   +-- UnmappableLabelsError                 provider labels do not map to the HAM10000 taxonomy
|   +-- DeploymentCheckError                  Router.check(): a deployment cannot authenticate or is not found
|   +-- CapabilityError                       the backend cannot do what was asked (text from an image-only embedder)
+-- InvalidImageError (ValueError)            the input is not an image we can send anywhere
|   +-- PayloadTooLargeError                  too big for the provider, even after re-encoding
+-- MissingDependencyError (ImportError)      an optional extra is not installed
+-- BackendNotFoundError (LookupError)        no backend registered under that name
+-- ChecksumMismatchError (ValueError)        a downloaded or extracted file lacks its pinned SHA-256
+-- ConversionError (RuntimeError)            fetching or converting a model failed, or the result differs
+-- DownloadError (ConnectionError)           a dataset download failed (host, status); rerun to resume
+-- RunStoreDamagedError (RuntimeError)       the comparison's run store is damaged; ``--repair`` salvages it
+-- RemoteError                               a provider call failed (backend, status, request id)
    +-- AuthenticationError (PermissionError) 401/403: key, token or role is wrong
    +-- ThrottledError                        429: rate limit or quota; retryable
    +-- NotFoundError (LookupError)           404: endpoint, project or deployment does not exist
    +-- ModelNotReadyError                    cold start, serverless provisioning; retryable
    +-- DeadlineExceededError (TimeoutError)  the per-call deadline passed; retryable
    +-- ServiceError                          5xx or a model-side failure
    +-- InvalidResponseError (ValueError)     the provider answered something we cannot parse
    +-- CircuitOpenError                      too many recent failures: calls are short-circuited
    +-- BatchJobFailedError                   a batch job failed as a whole; its partial outputs are kept

DermCloudDeprecationWarning (FutureWarning)   a supported cloud service is being retired
```

Backends translate their SDK's exceptions in one place each, with `raise ... from exc`, so the SDK's
traceback is kept as the cause but callers only ever need to catch the classes above.

Every message is redacted when the error is made (`derm_cloud.redaction.redact`: URL userinfo and query
values, keys, tokens, signatures), so `str()`, `repr()`, `args` and whatever stores or prints them later
never hold a credential, even when a backend puts its endpoint URL or an SDK's text into the message. The SDK
exception kept as `__cause__` is not changed: print tracebacks with
`derm_cloud.redaction.format_exception` (the `derm-cloud` command does).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from derm_cloud.redaction import redact

if TYPE_CHECKING:
    from pathlib import Path

__all__ = [
    "AuthenticationError",
    "BackendNotFoundError",
    "BatchJobFailedError",
    "CapabilityError",
    "ChecksumMismatchError",
    "CircuitOpenError",
    "ConfigError",
    "ConversionError",
    "DeadlineExceededError",
    "DeploymentCheckError",
    "DermCloudDeprecationWarning",
    "DermCloudError",
    "DownloadError",
    "InvalidImageError",
    "InvalidResponseError",
    "MissingDependencyError",
    "ModelNotReadyError",
    "ModelSpecError",
    "NotFoundError",
    "PayloadTooLargeError",
    "PolicyMismatchError",
    "PriceSourceError",
    "RemoteError",
    "RunStoreDamagedError",
    "ServiceError",
    "ThrottledError",
    "UnmappableLabelsError",
]


class DermCloudError(Exception):
    """Base class of every error raised by derm-cloud; its message is redacted when it is made."""

    def __init__(self, *args: object) -> None:
        # Here, not in each backend: no message can be made without passing through this line.
        super().__init__(*(redact(a, limit=None) if isinstance(a, str) else a for a in args))

    def add_note(self, note: str, /) -> None:
        """Add a note (shown under the traceback), redacted like the message."""
        super().add_note(redact(note, limit=None))


class ConfigError(DermCloudError, ValueError):
    """A configuration value, option or file is invalid; the message names it and the fix."""


class ModelSpecError(ConfigError):
    """A model directory is incomplete or its spec file is invalid."""


class UnmappableLabelsError(ConfigError):
    """The model's labels cannot be mapped onto the seven HAM10000 classes.

    Attributes:
        labels: the provider labels that did not map.
    """

    def __init__(self, message: str, labels: list[str] | None = None) -> None:
        super().__init__(message)
        self.labels = list(labels or [])


class DeploymentCheckError(ConfigError):
    """`Router.check()` found deployments that cannot work as configured.

    Attributes:
        failures: deployment name -> `"ErrorType: message"` for each one that failed the check.
    """

    def __init__(self, message: str, failures: dict[str, str]) -> None:
        super().__init__(message)
        # The causes quote provider errors, which may carry an endpoint URL or a key: redacted like the message.
        self.failures = {name: redact(cause) for name, cause in failures.items()}


class CapabilityError(ConfigError):
    """The backend cannot do what was asked: an image-only embedder asked to embed text, for example.

    A choice of backend, not a failure of one: the message names the backends that can.
    """


class PolicyMismatchError(ConfigError):
    """A saved referral policy is applied to predictions of another model or metadata mode than it was fitted on.

    A threshold is a point on one model's score scale in one input mode; it does not transfer.

    Attributes:
        differences: what differs (`field`, the policy's value, the predictions' value), as dicts.
    """

    def __init__(self, message: str, differences: list[dict[str, str]] | None = None) -> None:
        super().__init__(message)
        self.differences = list(differences or [])


class InvalidImageError(DermCloudError, ValueError):
    """The input cannot be used as an image; raised before anything is sent to a provider."""


class PayloadTooLargeError(InvalidImageError):
    """The encoded image exceeds the provider's request limit even after re-encoding."""


class MissingDependencyError(DermCloudError, ImportError):
    """An optional dependency is missing; the message names the `pip install` that fixes it."""


class BackendNotFoundError(DermCloudError, LookupError):
    """No backend is registered under the requested name."""


class ChecksumMismatchError(DermCloudError, ValueError):
    """A downloaded or extracted file does not have its pinned SHA-256 digest.

    Attributes:
        path: the file that was checked.
        expected: the pinned digest.
        actual: the digest of the file on disk.
    """

    def __init__(self, path: Path, expected: str, actual: str) -> None:
        super().__init__(
            f"SHA-256 mismatch for {path}: expected {expected}, got {actual}. The file is corrupt or the "
            f"upstream artefact changed; it was not used."
        )
        self.path = path
        self.expected = expected
        self.actual = actual


class ConversionError(DermCloudError, RuntimeError):
    """Fetching or converting a model failed (download, export), or the result does not reproduce the original."""


class RunStoreDamagedError(DermCloudError, RuntimeError):
    """The run store (`runs.sqlite`) is damaged: a truncated file, a broken page or a row that does not decode.

    `derm-cloud compare --repair` (`derm_cloud.compare.run.store_repair.repair_store`) salvages every intact
    row into a fresh store, keeps the damaged file beside it and reports what it dropped.
    """


class RemoteError(DermCloudError):
    """A call to a provider failed.

    Attributes:
        backend: registry name of the backend that made the call.
        status: HTTP status (or the gRPC code name) when known.
        request_id: the provider's request id when it sent one, for support tickets.
        retryable: whether the shared retry policy may try again.
    """

    default_retryable = False

    def __init__(
        self,
        message: str,
        *,
        backend: str = "",
        status: int | str | None = None,
        request_id: str | None = None,
        retryable: bool | None = None,
        retry_after: float | None = None,
    ) -> None:
        super().__init__(message)
        self.backend = backend
        self.status = status
        self.request_id = request_id
        self.retryable = self.default_retryable if retryable is None else retryable
        self.retry_after = retry_after

    def __str__(self) -> str:
        parts = [super().__str__()]
        extra = []
        if self.backend:
            extra.append(f"backend={self.backend}")
        if self.status is not None:
            extra.append(f"status={self.status}")
        if self.request_id:
            extra.append(f"request_id={self.request_id}")
        if extra:
            parts.append(f"[{', '.join(extra)}]")
        return " ".join(parts)


class AuthenticationError(RemoteError, PermissionError):
    """The provider refused the credentials (HTTP 401/403)."""


class ThrottledError(RemoteError):
    """The provider is rate limiting (HTTP 429 or a quota error)."""

    default_retryable = True


class NotFoundError(RemoteError, LookupError):
    """The endpoint, project, iteration or deployment does not exist (HTTP 404)."""


class ModelNotReadyError(RemoteError):
    """The model is still loading (cold start, serverless provisioning, multi-model load)."""

    default_retryable = True


class DeadlineExceededError(RemoteError, TimeoutError):
    """The call (including retries) did not finish within its deadline."""

    default_retryable = True


class ServiceError(RemoteError):
    """The provider failed on its side (5xx) or the hosted model raised an error."""

    default_retryable = True


class InvalidResponseError(RemoteError, ValueError):
    """The provider answered with a body that does not match its documented contract."""


class CircuitOpenError(RemoteError):
    """Calls to this backend are short-circuited after repeated failures; try again later.

    Attributes:
        first_cause: `"ErrorType: message"` of the failure that started the streak which opened the circuit
            (redacted when set: the comparator stores it).
    """

    _first_cause: str | None = None

    @property
    def first_cause(self) -> str | None:
        return self._first_cause

    @first_cause.setter
    def first_cause(self, value: str | None) -> None:
        self._first_cause = None if value is None else redact(value, limit=None)


class BatchJobFailedError(RemoteError):
    """A cloud batch job ended failed (or stopped) as a whole, not only for some of its images.

    Attributes:
        job_id: the provider's job name or resource name.
        partial: the `derm_cloud.batch.BatchResult` collected before raising: outputs the job did write
            are never lost, and images it never handled are listed with the job's failure as their cause.
    """

    def __init__(self, message: str, *, job_id: str = "", partial: object = None, **kwargs: object) -> None:
        super().__init__(message, **kwargs)  # type: ignore[arg-type]
        self.job_id = job_id
        self.partial = partial


class DownloadError(DermCloudError, ConnectionError):
    """A dataset download failed (unreachable host, HTTP error, cut connection).

    What was downloaded is kept as a `.part` file: running the same command again resumes from it.
    """


class PriceSourceError(DermCloudError, ConnectionError):
    """A provider's public price API could not be read (offline, HTTP error, an answer not in its format).

    `derm-cloud prices refresh` writes nothing when it is raised: the catalogue in use stays as it was.
    """


class DermCloudDeprecationWarning(FutureWarning):
    """A service or API that derm-cloud supports is being retired.

    A `FutureWarning` rather than a `DeprecationWarning`, because Python hides the latter outside
    `__main__` and the people who must act are the application's users, not only its developers.
    """

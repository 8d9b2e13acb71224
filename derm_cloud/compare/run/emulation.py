"""`emulate = true` on a Ray worker: reach the emulator the driver started, through the real SDK.

In the driver's process the emulator is started and the backend wired to it by `derm_cloud.testing.launch`
(`start`, `build_local`: the emulator module's own `*_backend_for` helper). A Ray worker cannot reach the
emulator object, so `capture` takes a picklable view of it (URL, project and endpoint names, the emulator's
dummy keys) and `build_remote` builds the backend from that view through the backend's public constructor and
the real SDK client, pointed at the same 127.0.0.1 port. Emulator keys are fixed test values; they go to the
workers, never into the run store or the report.

Example:
    >>> emu = start("sagemaker", model_dir, options={}, transport=None)  # doctest: +SKIP
    >>> view = capture("sagemaker", emu)  # doctest: +SKIP
    >>> clf = build_remote(view, {"instance_type": "ml.m5.large"})  # doctest: +SKIP
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

from derm_cloud.compare.run.probe_emulation import EMBEDDING_BACKENDS
from derm_cloud.errors import ConfigError

if TYPE_CHECKING:
    from derm_cloud.base import Classifier

__all__ = ["build_remote", "capture"]

# What a backend in another process may need of an emulator: plain values only (a view must pickle).
_VIEW_FIELDS = (
    "region",
    "project",
    "location",
    "grpc_target",
    "prediction_key",
    "project_id",
    "published_name",
    "api_key",
    "key",
    "endpoint_name",
    "scoring_uri",
    "project_version_arn",
)


def _get(emu: Any, name: str) -> Any:
    try:
        return getattr(emu, name)
    except (AttributeError, RuntimeError):
        return None


def capture(kind: str, emulator: Any) -> dict[str, Any]:
    """A picklable view of a running emulator: what a backend in another process needs to reach it."""
    view: dict[str, Any] = {"kind": kind, "url": emulator.url, "transport": getattr(emulator, "derm_transport", "rest")}
    for name in _VIEW_FIELDS:
        value = _get(emulator, name)
        if value is None or isinstance(value, (str, int, float)):
            view[name] = value
    if kind == "vertex":
        endpoint_id = emulator.endpoint_id
        hosted = emulator.endpoints[endpoint_id]
        view.update(endpoint_id=endpoint_id, schema=hosted.schema, labels=list(hosted.server.labels))
    if kind == "azure-openai":
        view["deployment"] = sorted(emulator.deployments)[0]
    if kind == "vertex-gemini":
        view["model"] = sorted(emulator.models)[0]
    if kind in EMBEDDING_BACKENDS:
        view["embedder"] = emulator.derm_embedder
    return view


def build_remote(view: Mapping[str, Any], options: Mapping[str, Any]) -> Classifier:
    """Build the backend from a `capture` view (in a Ray worker), through its public constructor."""
    builder = _REMOTE.get(view["kind"])
    if builder is None:
        raise ConfigError(f"no remote wiring for emulated backend type {view['kind']!r}")
    return builder(view, dict(options))


def _boto_client(service: str, view: Mapping[str, Any]) -> Any:
    import boto3
    from botocore.config import Config

    # Dummy keys: the emulator checks no signature; one attempt, the shared retry policy retries.
    return boto3.session.Session().client(
        service,
        region_name=view["region"],
        endpoint_url=view["url"],
        aws_access_key_id="testing",
        aws_secret_access_key="testing",
        config=Config(retries={"total_max_attempts": 1}, connect_timeout=2.0, read_timeout=60.0),
    )


def _embedding_backend(view: Mapping[str, Any], opts: dict[str, Any]) -> Classifier:
    from derm_cloud.compare.run.probe_emulation import build_embedding_backend

    return build_embedding_backend(view, opts)


def _sagemaker(view: Mapping[str, Any], opts: dict[str, Any]) -> Classifier:
    from derm_cloud.backends.aws_sagemaker import AwsSagemakerClassifier

    client = _boto_client("sagemaker-runtime", view)
    name = opts.pop("endpoint_name", "derm-cloud")
    opts.setdefault("response_format", "adapter")
    return AwsSagemakerClassifier(name, client=client, region=view["region"], **opts)


def _vertex(view: Mapping[str, Any], opts: dict[str, Any]) -> Classifier:
    from derm_cloud.backends.gcp_vertex import GcpVertexClassifier

    transport = opts.pop("transport", None) or view["transport"]
    opts.setdefault("schema", view["schema"])
    opts.setdefault("labels", tuple(view["labels"]))
    if transport == "grpc":
        import grpc

        opts.setdefault("channel", grpc.insecure_channel(view["grpc_target"]))
    else:
        opts.setdefault("api_endpoint", view["url"])
        opts.setdefault("credentials", _anonymous())
    return GcpVertexClassifier(
        view["endpoint_id"], project=view["project"], location=view["location"], transport=transport, **opts
    )


def _custom_vision(view: Mapping[str, Any], opts: dict[str, Any]) -> Classifier:
    from derm_cloud.backends.azure_custom_vision import AzureCustomVisionClassifier

    opts.setdefault("prediction_key", view["prediction_key"])
    return AzureCustomVisionClassifier(
        endpoint=view["url"], project_id=view["project_id"], published_name=view["published_name"], **opts
    )


def _azure_openai(view: Mapping[str, Any], opts: dict[str, Any]) -> Classifier:
    from derm_cloud.backends.azure_openai import AzureOpenaiClassifier

    opts.setdefault("deployment", view["deployment"])
    opts.setdefault("api_key", view["api_key"])
    return AzureOpenaiClassifier(azure_endpoint=view["url"], **opts)


def _azure_ml(view: Mapping[str, Any], opts: dict[str, Any]) -> Classifier:
    from derm_cloud.backends.azure_ml import AzureMlClassifier

    opts.setdefault("key", view["key"])
    opts.setdefault("endpoint_name", view["endpoint_name"])
    opts.setdefault("region", view["location"])
    return AzureMlClassifier(view["scoring_uri"], **opts)


def _cloud_vision(view: Mapping[str, Any], opts: dict[str, Any]) -> Classifier:
    from derm_cloud.backends.gcp_vision import GcpVisionClassifier

    opts.setdefault("api_endpoint", view["url"])
    if view.get("api_key"):
        opts.setdefault("api_key", view["api_key"])
    elif "api_key" not in opts:
        opts.setdefault("credentials", _anonymous())
    return GcpVisionClassifier(transport="rest", **opts)


def _gemini(view: Mapping[str, Any], opts: dict[str, Any]) -> Classifier:
    from google.oauth2.credentials import Credentials

    from derm_cloud.backends.gcp_gemini import GcpGeminiClassifier

    opts.setdefault("model", view["model"])
    opts.setdefault("credentials", Credentials(token="emulator-token"))  # type: ignore[no-untyped-call]
    return GcpGeminiClassifier(project=view["project"], location=view["location"], api_endpoint=view["url"], **opts)


def _rekognition(view: Mapping[str, Any], opts: dict[str, Any]) -> Classifier:
    from derm_cloud.backends.aws_rekognition import AwsRekognitionClassifier

    client = _boto_client("rekognition", view)
    return AwsRekognitionClassifier(view["project_version_arn"], client=client, region=view["region"], **opts)


def _anonymous() -> Any:
    from google.auth.credentials import AnonymousCredentials

    return AnonymousCredentials()  # type: ignore[no-untyped-call]


_REMOTE: dict[str, Callable[[Mapping[str, Any], dict[str, Any]], Classifier]] = {
    "sagemaker": _sagemaker,
    "vertex": _vertex,
    "azure-custom-vision": _custom_vision,
    "azure-openai": _azure_openai,
    "azure-ml": _azure_ml,
    "google-vision": _cloud_vision,
    "vertex-gemini": _gemini,
    "rekognition-custom-labels": _rekognition,
    # Backends whose emulator is their embedder's (EMBEDDING_BACKENDS of probe_emulation).
    "probe": _embedding_backend,
    "zero-shot": _embedding_backend,
}

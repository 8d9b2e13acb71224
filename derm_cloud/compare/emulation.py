"""``emulate = true``: start the derm-cloud emulator of a backend's cloud, hosting a model, and wire the backend.

In this process the backend is built with the emulator's own ``*_backend_for`` helper (the supported wiring).
For Ray workers, which cannot reach the emulator object, :func:`capture` takes a picklable view of it (URL,
project and endpoint names, the emulator's dummy keys) and :func:`build_remote` builds the backend from that
view through the backend's public constructor and the real SDK client, pointed at the same 127.0.0.1 port.
Emulator keys are fixed test values; they go to the workers, never into the run store or the report.

Example:
    >>> emu = start("sagemaker", model_dir, options={}, delay=0.0)  # doctest: +SKIP
    >>> clf = build_local("sagemaker", emu, {"instance_type": "ml.m5.large"})  # doctest: +SKIP
"""

from __future__ import annotations

import importlib
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from derm_cloud.errors import ConfigError

if TYPE_CHECKING:
    from derm_cloud.base import Classifier

__all__ = ["EMULATED_TYPES", "build_local", "build_remote", "capture", "start"]

_MODULES = {
    "sagemaker": ("sagemaker", "SageMakerRuntimeEmulator", "sagemaker_backend_for"),
    "vertex": ("vertex", "VertexEmulator", "vertex_backend_for"),
    "azure-custom-vision": ("azure_custom_vision", "CustomVisionEmulator", "custom_vision_backend_for"),
    "azure-openai": ("azure_openai", "AzureOpenAIEmulator", "azure_openai_backend_for"),
    "azure-ml": ("azure_ml", "AzureMLEmulator", "azure_ml_backend_for"),
    "google-vision": ("cloud_vision", "CloudVisionEmulator", "cloud_vision_backend_for"),
    "vertex-gemini": ("gemini", "GeminiEmulator", "gemini_backend_for"),
    "rekognition-custom-labels": ("rekognition", "RekognitionEmulator", "rekognition_backend_for"),
}
#: backend types that ``emulate = true`` supports.
EMULATED_TYPES = frozenset(_MODULES)


def _module(kind: str) -> Any:
    name = f"derm_cloud.testing.emulators.{_MODULES[kind][0]}"
    try:
        return importlib.import_module(name)
    except ImportError as exc:
        raise ConfigError(f"emulate = true for {kind!r} needs {name}, which cannot be imported: {exc}") from exc


def start(kind: str, model_dir: Path | None, *, options: Mapping[str, Any], transport: str | None) -> Any:
    """Start the emulator for ``kind`` hosting ``model_dir`` (Cloud Vision hosts no model: generic labels)."""
    if kind not in _MODULES:
        raise ConfigError(
            f"no derm-cloud emulator for backend type {kind!r}; emulate = true works for {', '.join(sorted(_MODULES))}"
        )
    cls = getattr(_module(kind), _MODULES[kind][1])
    if kind == "sagemaker":
        emu = cls()
        emu.add_endpoint(
            options.get("endpoint_name", "derm-cloud"),
            model_dir,
            response_format=options.get("response_format", "adapter"),
            serverless=bool(options.get("serverless", False)),
        )
    elif kind == "vertex":
        emu = cls(model_dir, schema=options.get("schema", "automl"), grpc=(transport or "rest") == "grpc")
    elif kind == "google-vision":
        emu = cls()
    else:
        emu = cls(model_dir)
    emu.start()
    emu.derm_transport = transport or "rest"
    return emu


def build_local(kind: str, emulator: Any, options: Mapping[str, Any]) -> Classifier:
    """The backend wired to a live emulator in this process, with the emulator module's own helper."""
    helper = getattr(_module(kind), _MODULES[kind][2])
    opts = dict(options)
    if kind == "sagemaker":
        name = opts.pop("endpoint_name", "derm-cloud")
        opts.setdefault("response_format", "adapter")
        return helper(emulator, name, **opts)  # type: ignore[no-any-return]
    if kind == "vertex":
        transport = opts.pop("transport", None) or getattr(emulator, "derm_transport", "rest")
        return helper(emulator, transport=transport, **opts)  # type: ignore[no-any-return]
    return helper(emulator, **opts)  # type: ignore[no-any-return]


def _get(emu: Any, name: str) -> Any:
    try:
        return getattr(emu, name)
    except (AttributeError, RuntimeError):
        return None


def capture(kind: str, emulator: Any) -> dict[str, Any]:
    """A picklable view of a running emulator: what a backend in another process needs to reach it."""
    view: dict[str, Any] = {"kind": kind, "url": emulator.url, "transport": getattr(emulator, "derm_transport", "rest")}
    for name in (
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
    ):
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
    return view


def build_remote(view: Mapping[str, Any], options: Mapping[str, Any]) -> Classifier:
    """Build the backend from a :func:`capture` view (in a Ray worker), through its public constructor."""
    kind, opts = view["kind"], dict(options)
    if kind == "sagemaker":
        import boto3
        from botocore.config import Config

        from derm_cloud.backends.aws_sagemaker import AwsSagemakerClassifier

        # Dummy keys: the emulator checks no signature; one attempt, the shared retry policy retries.
        client = boto3.session.Session().client(
            "sagemaker-runtime",
            region_name=view["region"],
            endpoint_url=view["url"],
            aws_access_key_id="testing",
            aws_secret_access_key="testing",
            config=Config(retries={"total_max_attempts": 1}, connect_timeout=2.0, read_timeout=60.0),
        )
        name = opts.pop("endpoint_name", "derm-cloud")
        opts.setdefault("response_format", "adapter")
        return AwsSagemakerClassifier(name, client=client, region=view["region"], **opts)
    if kind == "vertex":
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
    if kind == "azure-custom-vision":
        from derm_cloud.backends.azure_custom_vision import AzureCustomVisionClassifier

        opts.setdefault("prediction_key", view["prediction_key"])
        return AzureCustomVisionClassifier(
            endpoint=view["url"], project_id=view["project_id"], published_name=view["published_name"], **opts
        )
    if kind == "azure-openai":
        from derm_cloud.backends.azure_openai import AzureOpenaiClassifier

        opts.setdefault("deployment", view["deployment"])
        opts.setdefault("api_key", view["api_key"])
        return AzureOpenaiClassifier(azure_endpoint=view["url"], **opts)
    if kind == "azure-ml":
        from derm_cloud.backends.azure_ml import AzureMlClassifier

        opts.setdefault("key", view["key"])
        opts.setdefault("endpoint_name", view["endpoint_name"])
        opts.setdefault("region", view["location"])
        return AzureMlClassifier(view["scoring_uri"], **opts)
    if kind == "google-vision":
        from derm_cloud.backends.gcp_vision import GcpVisionClassifier

        opts.setdefault("api_endpoint", view["url"])
        if view.get("api_key"):
            opts.setdefault("api_key", view["api_key"])
        elif "api_key" not in opts:
            opts.setdefault("credentials", _anonymous())
        return GcpVisionClassifier(transport="rest", **opts)
    if kind == "vertex-gemini":
        from google.oauth2.credentials import Credentials

        from derm_cloud.backends.gcp_gemini import GcpGeminiClassifier

        opts.setdefault("model", view["model"])
        opts.setdefault("credentials", Credentials(token="emulator-token"))  # type: ignore[no-untyped-call]
        return GcpGeminiClassifier(project=view["project"], location=view["location"], api_endpoint=view["url"], **opts)
    if kind == "rekognition-custom-labels":
        import boto3
        from botocore.config import Config

        from derm_cloud.backends.aws_rekognition import AwsRekognitionClassifier

        client = boto3.session.Session().client(
            "rekognition",
            region_name=view["region"],
            endpoint_url=view["url"],
            aws_access_key_id="testing",
            aws_secret_access_key="testing",
            config=Config(retries={"total_max_attempts": 1}, connect_timeout=2.0, read_timeout=60.0),
        )
        return AwsRekognitionClassifier(view["project_version_arn"], client=client, region=view["region"], **opts)
    raise ConfigError(f"no remote wiring for emulated backend type {kind!r}")


def _anonymous() -> Any:
    from google.auth.credentials import AnonymousCredentials

    return AnonymousCredentials()  # type: ignore[no-untyped-call]

"""SageMaker inference-toolkit handlers (``model_fn`` / ``input_fn`` / ``predict_fn`` / ``output_fn``).

For AWS framework containers (e.g. the PyTorch inference DLC) instead of the derm-cloud image: put this file in
``code/inference.py`` of ``model.tar.gz`` next to ``model.onnx`` and ``spec.json``, with
``code/requirements.txt`` holding ``derm-cloud[onnx]``. Each handler delegates to
``derm_cloud.serving.ModelServer``; errors keep their HTTP status (400 bad image, 413, 415, 406).

The toolkit passes an optional trailing ``context``; when present, patient metadata is read from the
``X-Amzn-SageMaker-Custom-Attributes`` request header.
"""

from __future__ import annotations

from typing import Any, NamedTuple, NoReturn

from derm_cloud.serving import ModelServer, SageMakerRequest, ServingError
from derm_cloud.serving_http import find_model_dir


class Prediction(NamedTuple):
    """What ``predict_fn`` hands to ``output_fn`` (which receives no model)."""

    server: ModelServer
    request: SageMakerRequest
    probabilities: list[list[float]]


def model_fn(model_dir: str, context: Any = None) -> ModelServer:
    """Load the model once per worker."""
    return ModelServer(find_model_dir(model_dir))


def input_fn(input_data: bytes | str, content_type: str, context: Any = None) -> tuple[bytes | str, str, str | None]:
    """Keep the raw body: decoding needs the model's limits, which ``predict_fn`` has."""
    return input_data, content_type, _custom_attributes(context)


def predict_fn(data: tuple[bytes | str, str, str | None], model: ModelServer, context: Any = None) -> Prediction:
    body, content_type, attributes = data
    try:
        # The decode budget covers the decoded images until the probabilities are out (503 if spent, 413 if never).
        with model.decode_scope():
            request = model.sagemaker_input(body, content_type, custom_attributes=attributes)
            return Prediction(model, request, model.predict(request.images, request.metadata))
    except ServingError as exc:
        _reraise(exc)


def output_fn(prediction: Prediction, accept: str, context: Any = None) -> bytes:
    """The body only: the toolkit then answers with ``Content-Type: <accept>`` (tuples break the HF toolkit)."""
    try:
        return prediction.server.sagemaker_output(prediction.request, prediction.probabilities, accept).body
    except ServingError as exc:
        _reraise(exc)


def _custom_attributes(context: Any) -> str | None:
    try:
        properties = context.request_processor[0].get_request_properties()
    except (AttributeError, IndexError, TypeError):
        return None
    for key, value in dict(properties).items():
        if str(key).lower() == "x-amzn-sagemaker-custom-attributes":
            return str(value)
    return None


def _reraise(exc: ServingError) -> NoReturn:
    """The toolkit's own error type carries the HTTP status; without the toolkit keep ours (it has ``status``)."""
    try:
        from sagemaker_inference.errors import GenericInferenceToolkitError  # type: ignore[import-not-found]
    except ImportError:
        raise exc from None
    raise GenericInferenceToolkitError(exc.status, str(exc)) from exc

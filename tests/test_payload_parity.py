"""The parity invariant: local-onnx and every emulated cloud hosting the same model agree within 1e-5.

Over every accepted input kind (CMYK, palette, RGBA, grayscale, BMP, TIFF, WebP, GIF, EXIF-rotated, MPO, 16-bit
PNG) and real images (HAM10000, Tschandl et al. 2018, CC BY-NC 4.0, read from the shared data folder). Before
payloads were shared, re-encoded formats and MPO differed by up to 0.0072 between local and cloud.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import derm_cloud
from derm_cloud.base import Classifier
from derm_cloud.testing.image_corpus import accepted_inputs

TOLERANCE = 1e-5


def _cloud_backends(model: Path, stack: ExitStack) -> dict[str, Classifier]:
    from derm_cloud.testing.emulators.azure_custom_vision import CustomVisionEmulator, custom_vision_backend_for
    from derm_cloud.testing.emulators.azure_ml import AzureMLEmulator, azure_ml_backend_for
    from derm_cloud.testing.emulators.azure_openai import AzureOpenAIEmulator, azure_openai_backend_for
    from derm_cloud.testing.emulators.gemini import GeminiEmulator, gemini_backend_for
    from derm_cloud.testing.emulators.rekognition import RekognitionEmulator, rekognition_backend_for
    from derm_cloud.testing.emulators.sagemaker import SageMakerRuntimeEmulator, sagemaker_backend_for
    from derm_cloud.testing.emulators.vertex import VertexEmulator, vertex_backend_for

    sagemaker = stack.enter_context(SageMakerRuntimeEmulator())
    sagemaker.add_endpoint("derm", model, response_format="adapter")
    vertex_rest = stack.enter_context(VertexEmulator(model, schema="custom"))
    vertex_grpc = stack.enter_context(VertexEmulator(model))
    custom_vision = stack.enter_context(CustomVisionEmulator(model))
    azure_ml = stack.enter_context(AzureMLEmulator(model))
    # Ten decimals: the emulated LLM writes its scores as text, and two decimals would be the gap measured.
    openai = stack.enter_context(AzureOpenAIEmulator(model, decimals=10))
    gemini = stack.enter_context(GeminiEmulator(model, decimals=10))
    rekognition = stack.enter_context(RekognitionEmulator(model))
    makers: dict[str, Callable[[], Classifier]] = {
        "sagemaker": lambda: sagemaker_backend_for(sagemaker, "derm"),
        "vertex-rest": lambda: vertex_backend_for(vertex_rest),
        "vertex-grpc": lambda: vertex_backend_for(vertex_grpc, transport="grpc"),
        "azure-custom-vision": lambda: custom_vision_backend_for(custom_vision),
        "azure-ml": lambda: azure_ml_backend_for(azure_ml),
        "azure-openai": lambda: azure_openai_backend_for(openai),
        "vertex-gemini": lambda: gemini_backend_for(gemini),
        "rekognition-custom-labels": lambda: rekognition_backend_for(rekognition),
    }
    return {name: stack.enter_context(make()) for name, make in makers.items()}


@pytest.fixture(scope="module")
def backends(tiny_meta_model_dir: Path) -> Iterator[dict[str, Classifier]]:
    with ExitStack() as stack:
        local = stack.enter_context(derm_cloud.create("local-onnx", model_dir=tiny_meta_model_dir))
        yield {"local-onnx": local, **_cloud_backends(tiny_meta_model_dir, stack)}


def _inputs(dev_images: list[Path]) -> dict[str, bytes]:
    corpus = accepted_inputs(dev_images[0].read_bytes())
    corpus.update({f"ham10000:{p.stem}": p.read_bytes() for p in dev_images[1:5]})
    return corpus


def _gaps(backends: dict[str, Classifier], image: Any) -> dict[str, float]:
    local = np.asarray(backends["local-onnx"].predict(image).vector())
    return {
        name: float(np.abs(np.asarray(clf.predict(image).vector()) - local).max())
        for name, clf in backends.items()
        if name != "local-onnx"
    }


def test_every_backend_agrees_with_local_on_every_accepted_input(
    backends: dict[str, Classifier], dev_images: list[Path]
) -> None:
    inputs = _inputs(dev_images)
    assert len(inputs) >= 20
    worst: dict[str, tuple[float, str]] = {}
    for name, data in inputs.items():
        payload = derm_cloud.prepare_payload(data)
        # The payload shared by every backend, and each backend preparing the raw bytes itself: both must agree.
        for how, image in (("payload", payload), ("bytes", data)):
            for backend, gap in _gaps(backends, image).items():
                if gap > worst.get(backend, (-1.0, ""))[0]:
                    worst[backend] = (gap, f"{name} ({how})")
    assert set(worst) == set(backends) - {"local-onnx"}
    over = {backend: found for backend, found in worst.items() if found[0] > TOLERANCE}
    assert not over, f"backends differ from local-onnx by more than {TOLERANCE}: {over}"


@pytest.mark.project_data
def test_the_model_is_sensitive_enough_for_the_parity_test_to_mean_something(
    backends: dict[str, Classifier], dev_images: list[Path]
) -> None:
    """A JPEG re-encode at q95 (what used to happen per backend) moves the tiny model past the tolerance.

    Measured 8.6e-5 on this image (sklesion moves up to 0.0072): the 1e-5 bound above can fail.
    """
    import io

    from PIL import Image

    original = dev_images[1].read_bytes()
    buf = io.BytesIO()
    Image.open(io.BytesIO(original)).save(buf, "JPEG", quality=95)
    local = backends["local-onnx"]
    gap = np.abs(np.asarray(local.predict(original).vector()) - np.asarray(local.predict(buf.getvalue()).vector()))
    assert gap.max() > 3 * TOLERANCE

"""Backends under conformance test: each entry builds a classifier (and its emulator, for cloud backends).

Add a backend here and it must pass every test in ``test_conformance.py``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from pathlib import Path

import pytest

from derm_cloud.testing.conformance import Subject

Factory = Callable[[pytest.FixtureRequest], AbstractContextManager[Subject]]
FACTORIES: dict[str, Factory] = {}


def factory(name: str) -> Callable[[Factory], Factory]:
    def deco(fn: Factory) -> Factory:
        FACTORIES[name] = fn
        return fn

    return deco


def tiny_model(request: pytest.FixtureRequest) -> Path:
    """A tiny NHWC model with a metadata input, like sklesion's interface."""
    from derm_cloud.testing.tiny_models import build_tiny_onnx_model

    tmp: pytest.TempPathFactory = request.getfixturevalue("tmp_path_factory")
    return build_tiny_onnx_model(tmp.mktemp("conf") / "tiny", with_metadata=True, layout="NHWC")


@factory("local-onnx[tiny]")
@contextmanager
def _local_onnx_tiny(request: pytest.FixtureRequest) -> Iterator[Subject]:
    import derm_cloud

    with derm_cloud.create("local-onnx", model_dir=tiny_model(request)) as clf:
        yield Subject(clf)


@factory("local-onnx[sklesion]")
@contextmanager
def _local_onnx_sklesion(request: pytest.FixtureRequest) -> Iterator[Subject]:
    import derm_cloud

    with derm_cloud.create("local-onnx", model_dir=request.getfixturevalue("sklesion_model_dir")) as clf:
        yield Subject(clf)


@factory("local-tflite[vertex-edge-uint8]")
@contextmanager
def _local_tflite_vertex_edge(request: pytest.FixtureRequest) -> Iterator[Subject]:
    import derm_cloud
    from derm_cloud.models.imports import import_model
    from derm_cloud.testing.service_exports import build_vertex_edge_export

    tmp: pytest.TempPathFactory = request.getfixturevalue("tmp_path_factory")
    root = tmp.mktemp("tflite")
    model_dir = import_model(build_vertex_edge_export(root / "export"), root / "home").model_dir
    with derm_cloud.create("local-tflite", model_dir=model_dir) as clf:
        # uint8 scores dequantized in steps of 1/256: they sum to 1 only within a few steps.
        yield Subject(clf, sums_to_one=False)


@factory("vertex[rest,custom]")
@contextmanager
def _vertex_rest(request: pytest.FixtureRequest) -> Iterator[Subject]:
    from derm_cloud.testing.emulators.vertex import VertexEmulator, vertex_backend_for

    with VertexEmulator(tiny_model(request), schema="custom") as emu, vertex_backend_for(emu) as clf:
        yield Subject(clf, emu)


@factory("vertex[grpc,automl]")
@contextmanager
def _vertex_grpc(request: pytest.FixtureRequest) -> Iterator[Subject]:
    from derm_cloud.testing.emulators.vertex import VertexEmulator, vertex_backend_for

    with VertexEmulator(tiny_model(request)) as emu, vertex_backend_for(emu, transport="grpc") as clf:
        yield Subject(clf, emu)


@factory("google-vision")
@contextmanager
def _cloud_vision(request: pytest.FixtureRequest) -> Iterator[Subject]:
    from derm_cloud.testing.emulators.cloud_vision import CloudVisionEmulator, cloud_vision_backend_for

    with CloudVisionEmulator() as emu, cloud_vision_backend_for(emu) as clf:
        yield Subject(clf, emu, sums_to_one=False)


@factory("azure-openai")
@contextmanager
def _azure_openai(request: pytest.FixtureRequest) -> Iterator[Subject]:
    from derm_cloud.testing.emulators.azure_openai import AzureOpenAIEmulator, azure_openai_backend_for

    with AzureOpenAIEmulator(tiny_model(request)) as emu, azure_openai_backend_for(emu) as clf:
        yield Subject(clf, emu)


@factory("vertex-gemini")
@contextmanager
def _vertex_gemini(request: pytest.FixtureRequest) -> Iterator[Subject]:
    from derm_cloud.testing.emulators.gemini import GeminiEmulator, gemini_backend_for

    with GeminiEmulator(tiny_model(request)) as emu, gemini_backend_for(emu) as clf:
        yield Subject(clf, emu)


@factory("rekognition-custom-labels")
@contextmanager
def _rekognition(request: pytest.FixtureRequest) -> Iterator[Subject]:
    from derm_cloud.testing.emulators.rekognition import RekognitionEmulator, rekognition_backend_for

    # Tags named as a person would at training; mapped onto the canonical codes by name.
    names = {"mel": "Melanoma", "nv": "Nevus", "bcc": "Basal cell carcinoma"}
    with RekognitionEmulator(tiny_model(request), label_names=names) as emu, rekognition_backend_for(emu) as clf:
        yield Subject(clf, emu)


@factory("sagemaker[adapter]")
@contextmanager
def _sagemaker_adapter(request: pytest.FixtureRequest) -> Iterator[Subject]:
    from derm_cloud.testing.emulators.sagemaker import SageMakerRuntimeEmulator, sagemaker_backend_for

    with SageMakerRuntimeEmulator() as emu:
        emu.add_endpoint("derm", tiny_model(request), response_format="adapter")
        with sagemaker_backend_for(emu, "derm") as clf:
            yield Subject(clf, emu)


@factory("sagemaker[jumpstart,serverless]")
@contextmanager
def _sagemaker_jumpstart(request: pytest.FixtureRequest) -> Iterator[Subject]:
    from derm_cloud.testing.emulators.sagemaker import SageMakerRuntimeEmulator, sagemaker_backend_for

    with SageMakerRuntimeEmulator() as emu:
        emu.add_endpoint("derm-js", tiny_model(request), response_format="jumpstart", serverless=True)
        with sagemaker_backend_for(emu, "derm-js") as clf:
            yield Subject(clf, emu)


@factory("azure-custom-vision")
@contextmanager
def _custom_vision(request: pytest.FixtureRequest) -> Iterator[Subject]:
    from derm_cloud.testing.emulators.azure_custom_vision import CustomVisionEmulator, custom_vision_backend_for

    with CustomVisionEmulator(tiny_model(request)) as emu, custom_vision_backend_for(emu) as clf:
        yield Subject(clf, emu)


@factory("azure-ml")
@contextmanager
def _azure_ml(request: pytest.FixtureRequest) -> Iterator[Subject]:
    from derm_cloud.testing.emulators.azure_ml import AzureMLEmulator, azure_ml_backend_for

    emu = AzureMLEmulator(tiny_model(request))
    with emu, azure_ml_backend_for(emu, send_metadata=True, images_per_request=2) as clf:
        yield Subject(clf, emu)


@factory("local-hf[tiny-vit]")
@contextmanager
def _local_hf(request: pytest.FixtureRequest) -> Iterator[Subject]:
    import derm_cloud
    from derm_cloud.testing.tiny_hf import ANWARKH1_LABELS, build_tiny_vit

    tmp: pytest.TempPathFactory = request.getfixturevalue("tmp_path_factory")
    folder = build_tiny_vit(tmp.mktemp("vit") / "tiny-vit", labels=ANWARKH1_LABELS)
    with derm_cloud.create("local-hf", model=str(folder)) as clf:
        yield Subject(clf)


@factory("local-probe[tiny-embedder]")
@contextmanager
def _probe_tiny(request: pytest.FixtureRequest) -> Iterator[Subject]:
    import derm_cloud
    from derm_cloud.testing.tiny_embedders import build_tiny_probe

    tmp: pytest.TempPathFactory = request.getfixturevalue("tmp_path_factory")
    with derm_cloud.create("probe", model_dir=build_tiny_probe(tmp.mktemp("probe") / "probe")) as clf:
        yield Subject(clf)


@factory("zero-shot[vertex-medsiglip]")
@contextmanager
def _zero_shot_medsiglip(request: pytest.FixtureRequest) -> Iterator[Subject]:
    import derm_cloud
    from derm_cloud.testing.emulators.vertex_embeddings import VertexEmbeddingEmulator, vertex_embedder_for
    from derm_cloud.testing.tiny_embedders import build_tiny_embedder

    tmp: pytest.TempPathFactory = request.getfixturevalue("tmp_path_factory")
    encoder = build_tiny_embedder(tmp.mktemp("zero-shot") / "tiny-embedder")
    emu = VertexEmbeddingEmulator(encoder, serving_api="medsiglip")
    with emu, vertex_embedder_for(emu) as emb, derm_cloud.create("zero-shot", embedder=emb) as clf:
        yield Subject(clf, emu)


@pytest.fixture(params=sorted(FACTORIES), scope="module")
def subject(request: pytest.FixtureRequest) -> Iterator[Subject]:
    with FACTORIES[request.param](request) as s:
        yield s


REMOTE = sorted(name for name in FACTORIES if not name.startswith("local-"))


@pytest.fixture(params=REMOTE, scope="module")
def remote(request: pytest.FixtureRequest) -> Iterator[Subject]:
    """Every cloud backend with its emulator (for the fault rules that every remote backend must follow)."""
    with FACTORIES[request.param](request) as s:
        yield s

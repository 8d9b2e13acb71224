"""An emulator hosting a model runs it as local-onnx does: same session options, each received image decoded once.

Two backends serving one model on one machine must agree within 10 % at p50 (issue 20); a gap between them is
a bug in our input path until shown otherwise. These tests pin, without timing anything, the two causes that
`benchmarks/latency_parity.py` looks at: a differently configured onnxruntime session, and work the emulator
did that local-onnx does not (a JPEG walked once by the entropy check, then decoded again in full).
"""

from __future__ import annotations

import io
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

import derm_cloud
import derm_cloud.image_bytes
import derm_cloud.images
import derm_cloud.payload
from derm_cloud.backends._runner import ModelRunner
from derm_cloud.testing.launch import build_local, start
from derm_cloud.testing.tiny_models import build_tiny_onnx_model

# The emulated backends of the default comparison that host a model (Cloud Vision hosts none).
HOSTING = {
    "sagemaker": {"endpoint_name": "derm-cloud"},
    "azure-ml": {},
    "azure-custom-vision": {},
    "vertex": {"schema": "automl"},
    "azure-openai": {},
    "vertex-gemini": {},
    "rekognition-custom-labels": {},
}


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_tiny_onnx_model(tmp_path_factory.mktemp("parity") / "tiny", with_metadata=True, layout="NHWC")


@pytest.fixture(scope="module")
def backends(model_dir: Path) -> Iterator[dict[str, Any]]:
    """Each emulator hosting the tiny model, with its backend, started as `emulate = true` starts them."""
    started: dict[str, Any] = {}
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # Custom Vision's retirement notice
            for kind, options in HOSTING.items():
                emulator = start(kind, model_dir, options=options, transport=None)
                started[kind] = (emulator, build_local(kind, emulator, options))
        yield started
    finally:
        for emulator, clf in started.values():
            clf.close()
            emulator.stop()


def _jpeg() -> bytes:
    rng = np.random.default_rng(0)
    out = io.BytesIO()
    Image.fromarray(rng.integers(0, 255, (120, 160, 3), dtype=np.uint8)).save(out, "JPEG", quality=90)
    return out.getvalue()


def _hosted_runners(kind: str, emulator: Any, clf: Any, payload: Any, monkeypatch: pytest.MonkeyPatch) -> Any:
    """The model runner that answered one call of this backend (whatever the emulator keeps it in)."""
    seen: list[ModelRunner] = []
    original = ModelRunner.run_tensors

    def spy(self: ModelRunner, *args: Any) -> Any:
        seen.append(self)
        return original(self, *args)

    monkeypatch.setattr(ModelRunner, "run_tensors", spy)
    clf.predict(payload)
    monkeypatch.setattr(ModelRunner, "run_tensors", original)
    assert len(seen) == 1, f"{kind}: the hosted model ran {len(seen)} times for one call"
    return seen[0]


def _options(runner: Any) -> dict[str, Any]:
    opts = runner.session.get_session_options()
    return {
        "intra_op_num_threads": opts.intra_op_num_threads,
        "inter_op_num_threads": opts.inter_op_num_threads,
        "graph_optimization_level": opts.graph_optimization_level,
        "execution_mode": opts.execution_mode,
        "enable_cpu_mem_arena": opts.enable_cpu_mem_arena,
        "enable_mem_pattern": opts.enable_mem_pattern,
        "providers": runner.session.get_providers(),
    }


@pytest.mark.parametrize("kind", sorted(HOSTING))
def test_the_hosted_session_is_configured_as_local_onnx(
    kind: str, backends: dict[str, Any], model_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    emulator, clf = backends[kind]
    with derm_cloud.create("local-onnx", model_dir=str(model_dir)) as local:
        assert _options(_hosted_runners(kind, emulator, clf, derm_cloud.prepare_payload(_jpeg()), monkeypatch)) == (
            _options(local.model)
        )


@pytest.mark.parametrize("kind", sorted(HOSTING))
def test_the_emulator_decodes_a_received_jpeg_once(
    kind: str, backends: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    """One full decode per image, which also verifies it: no separate entropy walk of the same bytes first."""
    calls: list[str] = []

    def counted(name: str, module: Any) -> None:
        original = getattr(module, name)

        def wrapper(*args: Any, **kwargs: Any) -> Any:
            calls.append(name)
            return original(*args, **kwargs)

        monkeypatch.setattr(module, name, wrapper)

    for name in ("_decode_rgb", "_decode_strict_rgb"):
        counted(name, derm_cloud.payload)
    counted("verify_jpeg_entropy", derm_cloud.images)
    _emulator, clf = backends[kind]
    payload = derm_cloud.prepare_payload(_jpeg())  # the client's preparation (its own check) is not counted
    calls.clear()
    clf.predict(payload)
    assert calls == ["_decode_strict_rgb"], f"{kind}: the image was walked by {calls}"


def test_a_damaged_jpeg_is_still_refused_by_the_hosted_model(model_dir: Path) -> None:
    """Decoding once keeps the damage check: the full strict decode refuses what the entropy walk refused."""
    from derm_cloud.serving import BadRequestError, ModelServer

    data = bytearray(_jpeg())
    scan = data.index(b"\xff\xda")
    for k in range(scan + 40, len(data) - 10, 7):
        data[k] = 0x00 if data[k] != 0x00 else 0x11  # a stretch of corrupt entropy-coded data
    with pytest.raises(BadRequestError, match="(?i)corrupt|damaged|jpeg"):
        ModelServer(model_dir).sagemaker_invocations(bytes(data), "image/jpeg")

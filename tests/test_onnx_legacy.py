"""The 2018 WinMLTools export generation in miniature: every quirk of the real files, on a graph small enough to
build here, so the upgrade is checked on every machine (the real exports are in
check_customvision_real_exports, run by hand until the exports are in the shared data folder).

The graph has what Custom Vision's opset-1 exports have (nodes out of order, initializers not declared as inputs,
BatchNormalization without consumed_inputs, MaxPool with dilations, a legacy per-channel broadcast, ImageScaler,
LegacyPadding, FC, Sigmoid, a ZipMap declared as a map), with an ImageScaler that really scales and a 16x16
feature map that LegacyPadding must pad, which the real files never exercise. It is compared with the independent
numpy interpreter of the original graph (customvision_reference) on synthetic, non-square images.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from customvision_reference import run_numpy, windows_ml_pixels
from PIL import Image

import derm_cloud
from derm_cloud.errors import ModelSpecError
from derm_cloud.models.imports import import_model
from derm_cloud.models.spec import Preprocess
from derm_cloud.preprocess import image_tensor

TAGS = ["alpha", "beta", "gamma"]


def _winmltools_like_export(path: Path, *, extra_node: object = None) -> Path:
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(7)

    def init(name: str, array: np.ndarray) -> onnx.TensorProto:
        return numpy_helper.from_array(array.astype(np.float32), name)

    inits = [
        init("bn_scale", np.array([1.0, 0.5, 2.0])),
        init("bn_bias", np.array([0.1, -0.2, 0.3])),
        init("bn_mean", np.array([60.0, 70.0, 80.0])),
        init("bn_var", np.array([900.0, 1600.0, 2500.0])),
        init("mul_scale", np.array([1.5, 0.5, 1.0])),
        init("conv_w", rng.normal(0, 0.5, (4, 3, 3, 3))),
        init("conv_b", rng.normal(0, 0.1, (4,))),
        init("fc_w", rng.normal(0, 1.0, (3, 4))),
        init("fc_b", rng.normal(0, 0.1, (3,))),
    ]
    nodes = [
        helper.make_node("Sigmoid", ["z"], ["loss.1"]),  # listed first: the real files are out of order too
        helper.make_node("ImageScaler", ["data"], ["scaled"], scale=0.5, bias=[1.0, 2.0, 3.0]),
        helper.make_node(
            "BatchNormalization",
            ["scaled", "bn_scale", "bn_bias", "bn_mean", "bn_var"],
            ["bn"],
            epsilon=1e-5,
            spatial=1,
            is_test=1,
        ),
        helper.make_node("Mul", ["bn", "mul_scale"], ["m"], axis=1, broadcast=1),
        helper.make_node(
            "Conv", ["m", "conv_w", "conv_b"], ["c"], kernel_shape=[3, 3], strides=[2, 2], auto_pad="VALID"
        ),
        helper.make_node(
            "MaxPool", ["r_padded"], ["p"], kernel_shape=[3, 3], strides=[2, 2], auto_pad="VALID", dilations=[1, 1]
        ),
        helper.make_node("Relu", ["c"], ["r"]),
        helper.make_node(
            "LegacyPadding",
            ["r"],
            ["r_padded"],
            domain="com.microsoft",
            kernel_shape=[3, 3],
            strides=[2, 2],
            pads=[0, 0],
            value=float(np.finfo(np.float32).min),
        ),
        helper.make_node("GlobalAveragePool", ["p"], ["g"]),
        helper.make_node("Flatten", ["g"], ["f"], axis=1),
        helper.make_node("FC", ["f", "fc_w", "fc_b"], ["z"], axis=1, axis_w=1),
        helper.make_node("ZipMap", ["loss.1"], ["loss"], domain="ai.onnx.ml", classlabels_strings=TAGS),
    ]
    if extra_node is not None:
        nodes.append(extra_node)
    image = helper.make_tensor_value_info("data", TensorProto.FLOAT, ["None", 3, 33, 33])
    zipmap_out = helper.make_value_info(
        "loss", helper.make_map_type_proto(TensorProto.STRING, helper.make_tensor_type_proto(TensorProto.FLOAT, [1]))
    )
    graph = helper.make_graph(nodes, "project_iteration", [image], [zipmap_out], inits)
    model = helper.make_model(
        graph,
        opset_imports=[
            helper.make_opsetid("", 1),
            helper.make_opsetid("com.microsoft", 1),
            helper.make_opsetid("ai.onnx.ml", 1),
        ],
        producer_name="WinMLTools",
        producer_version="0.1.0.5072",
    )
    model.ir_version = 3
    onnx.save(model, str(path))
    return path


def _images(folder: Path) -> list[Path]:
    rng = np.random.default_rng(3)
    paths = []
    for i, (w, h) in enumerate([(50, 40), (31, 47), (33, 33), (64, 20)]):
        pixels = (rng.random((h, w, 3)) * 255).astype(np.uint8)
        path = folder / f"img{i}.png"
        Image.fromarray(pixels).save(path)
        paths.append(path)
    return paths


def test_a_winmltools_export_is_upgraded_and_answers_like_the_original_graph(tmp_path: Path) -> None:
    import onnx
    import onnxruntime

    export = _winmltools_like_export(tmp_path / "tiny.onnx")
    with pytest.raises(Exception, match="consumed_inputs"):  # as published, onnxruntime refuses it, as the real ones
        onnxruntime.InferenceSession(str(export), providers=["CPUExecutionProvider"])
    result = import_model(export, tmp_path / "home")
    assert result.spec.labels == tuple(TAGS)
    written = onnx.load(str(result.model_dir / "model.onnx"))
    assert written.ir_version == 3 and {o.domain for o in written.opset_import} <= {"", "ai.onnx.ml"}
    steps = " | ".join(json.loads((result.model_dir / "spec.json").read_text())["facts"]["upgraded"])
    for expected in (
        "topological",
        "declared as graph inputs",
        "consumed_inputs",
        "dilations",
        "FC",
        "Mul by 0.5",
        "[top 0, left 0, bottom 1, right 1]",
        "legacy broadcast operand [3] at axis 1 reshaped to [3, 1, 1]",
        "opset 1 upgraded to 7",
    ):
        assert expected in steps, expected
    with derm_cloud.create("local-onnx", model_dir=result.model_dir, allow_unmapped=True) as clf:
        for path in _images(tmp_path):
            ours = {s.label: s.score for s in clf.predict(path).provider_scores}
            theirs = run_numpy(export, windows_ml_pixels(path, 33, 33))
            assert max(abs(ours[t] - theirs[t]) for t in TAGS) < 1e-5, path.name


def test_an_unknown_operator_in_an_opset_1_export_is_refused_by_name(tmp_path: Path) -> None:
    from onnx import helper

    odd = helper.make_node("Crop", ["data"], ["cropped"], domain="com.example")
    export = _winmltools_like_export(tmp_path / "odd.onnx", extra_node=odd)
    with pytest.raises(ModelSpecError, match=r"opset 1.*Crop \(com\.example\).*cannot be upgraded"):
        import_model(export, tmp_path / "home")


@pytest.mark.parametrize("size", [(301, 199), (199, 301), (228, 227), (227, 227), (17, 400)])
def test_crop_to_aspect_cuts_the_region_windows_ml_cuts(size: tuple[int, int], tmp_path: Path) -> None:
    rng = np.random.default_rng(size[0])
    pixels = (rng.random((size[1], size[0], 3)) * 255).astype(np.uint8)
    pre = Preprocess(resize="crop_to_aspect", height=227, width=227, interpolation="pil_bilinear", scale=1.0)
    ours = image_tensor(pixels, pre)
    Image.fromarray(pixels).save(tmp_path / "image.png")
    windows_ml = windows_ml_pixels(tmp_path / "image.png", 227, 227)[0, ::-1]  # back to RGB
    assert np.array_equal(ours, windows_ml)

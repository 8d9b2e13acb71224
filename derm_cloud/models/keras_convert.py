"""Convert a two-input Keras 3 classifier (image + metadata vector) to ONNX, without TensorFlow, and check it.

Keras 3 runs on the *torch* backend here, where a functional model is a `torch.nn.Module`; the TorchDynamo ONNX
exporter then writes it with a symbolic batch dimension. Every conversion is verified numerically with
onnxruntime (batched outputs equal per-image outputs; ONNX equals Keras);
`parity_check` then measures the agreement on real images. What is specific
to one model (input size, metadata layout, preprocessing) comes in an
`ImageMetadataInputs`; see `derm_cloud.models.sklesion.MODEL_INPUTS`.

Heavy dependencies (keras, torch, onnx, onnxruntime) are imported inside the functions that need them, so
importing this module costs only numpy.

Example:
    >>> from derm_cloud.models.sklesion import MODEL_INPUTS
    >>> info = convert_to_onnx(Path("model.keras"), Path("out/model.onnx"), MODEL_INPUTS)  # doctest: +SKIP
    >>> info.dynamic_batch, info.keras_max_abs_diff  # doctest: +SKIP
    (True, 5.2e-07)
"""

from __future__ import annotations

import contextlib
import logging
import platform
import time
import warnings
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Final, Literal

import numpy as np

from derm_cloud.errors import ConversionError, MissingDependencyError
from derm_cloud.models._keras_runtime import (
    fixed_batch,
    import_keras_torch,
    keras_predict,
    load_keras_model,
    ort_predict,
    ort_session,
)
from derm_cloud.models.keras_inputs import ImageMetadataInputs, synthetic_inputs

__all__ = [
    "DEFAULT_OPSET",
    "ConversionInfo",
    "Route",
    "convert_to_onnx",
    "import_keras_torch",
]

DEFAULT_OPSET: Final = 18
_ONNX_INPUT_NAMES: Final = ("image", "metadata")
_ONNX_OUTPUT_NAME: Final = "probabilities"
_BATCH_CHECK_SIZES: Final[tuple[int, ...]] = (1, 4, 16)
_BATCH_CHECK_ATOL: Final = 1e-5

Route = Literal["torch-dynamo-dynamic-batch", "keras-export-fixed-batch"]


@dataclass(frozen=True)
class ConversionInfo:
    """What `convert_to_onnx` produced and how it was checked.

    Attributes:
        onnx_path: where the ONNX model was written.
        route: `"torch-dynamo-dynamic-batch"` (preferred) or `"keras-export-fixed-batch"` (fallback).
        dynamic_batch: whether the batch dimension of every input and the output is symbolic.
        max_batch: `None` when the batch is dynamic, else the fixed batch size (1).
        export_seconds: wall time of the export call alone (tracing, translation, optimisation, save).
        total_seconds: wall time of the whole call including loading Keras and the checks.
        opset: ONNX default-domain opset of the written model.
        onnx_bytes: size of the written file.
        input_names: ONNX input names, in order (image first, metadata second).
        input_shapes: ONNX input shapes; symbolic dimensions are strings.
        output_names: ONNX output names.
        batch_check_max_abs_diff: per checked batch size, the max |difference| between batched onnxruntime
            outputs and per-image batch-1 outputs (synthetic inputs). Empty for a fixed-batch model.
        keras_max_abs_diff: max |onnxruntime - Keras| on the synthetic check inputs.
        parameters: parameter count of the Keras model.
        versions: library versions used for the conversion.
        fallback_reason: why the dynamic route was not used, if it was not.

    Example:
        >>> info.to_dict()["route"]  # doctest: +SKIP
        'torch-dynamo-dynamic-batch'
    """

    onnx_path: Path
    route: Route
    dynamic_batch: bool
    max_batch: int | None
    export_seconds: float
    total_seconds: float
    opset: int
    onnx_bytes: int
    input_names: tuple[str, ...]
    input_shapes: tuple[tuple[int | str, ...], ...]
    output_names: tuple[str, ...]
    batch_check_max_abs_diff: dict[int, float]
    keras_max_abs_diff: float
    parameters: int
    versions: dict[str, str]
    fallback_reason: str | None = None

    def to_dict(self) -> dict[str, Any]:
        """Return a JSON-serialisable dict (paths as strings, dict keys as strings)."""
        data = asdict(self)
        data["onnx_path"] = str(self.onnx_path)
        data["input_shapes"] = [list(s) for s in self.input_shapes]
        data["input_names"] = list(self.input_names)
        data["output_names"] = list(self.output_names)
        data["batch_check_max_abs_diff"] = {str(k): v for k, v in self.batch_check_max_abs_diff.items()}
        return data


def convert_to_onnx(
    keras_path: Path,
    onnx_path: Path,
    inputs: ImageMetadataInputs,
    *,
    opset: int = DEFAULT_OPSET,
    dynamic_batch: bool = True,
) -> ConversionInfo:
    """Convert a two-input `model.keras` to ONNX via Keras on the torch backend.

    Preferred route: `torch.onnx.export(dynamo=True)` on the Keras functional model (a `torch.nn.Module`
    under the torch backend) with `dynamic_shapes` marking dimension 0 of both inputs as one symbolic
    `batch`. The result is checked with onnxruntime: batched outputs at batch 1, 4 and 16 must equal the
    per-image batch-1 outputs within 1e-5, and outputs must match Keras within 1e-4. If the dynamic export
    fails or does not pass, the function falls back to `keras.Model.export(format="onnx")` at a fixed
    batch of 1 and says why in `fallback_reason`.

    The file is written to a temporary name beside `onnx_path` and renamed only after the checks passed.

    Args:
        keras_path: the verified `model.keras`.
        onnx_path: where to write the ONNX model.
        inputs: the model's input sizes and how to make plausible inputs for the checks.
        opset: ONNX opset to target (18 is supported by onnxruntime >= 1.14 and the cloud runtimes).
        dynamic_batch: try the dynamic-batch route first (`False` goes straight to the fixed-batch route).

    Returns:
        A `ConversionInfo` with the route, whether the batch is dynamic, timings and check figures.

    Raises:
        ConversionError: no route produced a model that reproduces Keras.
        MissingDependencyError: keras, torch, onnx, onnxscript or onnxruntime is missing.

    Example:
        >>> convert_to_onnx(Path("model.keras"), Path("model.onnx"), MODEL_INPUTS).route  # doctest: +SKIP
        'torch-dynamo-dynamic-batch'
    """
    total_start = time.perf_counter()
    onnx_path = Path(onnx_path)
    onnx_path.parent.mkdir(parents=True, exist_ok=True)
    model = load_keras_model(Path(keras_path))
    check_images, check_meta = synthetic_inputs(inputs, 4, seed=2)
    keras_ref = keras_predict(model, check_images, check_meta)

    tmp = onnx_path.with_name(onnx_path.name + ".partial")

    def keras_max_diff(session: Any) -> float:
        onnx_ref = ort_predict(session, check_images, check_meta, batch_size=len(check_images))
        diff = float(np.abs(onnx_ref - keras_ref).max())
        if not diff <= 1e-4:  # written this way round so NaN fails too
            raise ConversionError(f"ONNX model differs from Keras by {diff:.3g} on synthetic inputs")
        return diff

    fallback_reason: str | None = None
    route: Route
    batch_diffs: dict[int, float] = {}
    if dynamic_batch:
        route = "torch-dynamo-dynamic-batch"
        try:
            export_seconds = _export_dynamic(model, inputs, tmp, opset)
            session = ort_session(tmp)
            if fixed_batch(session) is not None:
                raise ConversionError("the exported model still has a fixed batch dimension")
            batch_diffs = _batch_consistency(session, inputs, _BATCH_CHECK_SIZES)
            worst = max(batch_diffs.values())
            if worst > _BATCH_CHECK_ATOL:
                raise ConversionError(f"batched outputs differ from batch-1 outputs by {worst:.3g}")
            keras_diff = keras_max_diff(session)
        except MissingDependencyError:
            raise
        except Exception as exc:
            # torch.export/torch.onnx raise a zoo of exception types (UserError, OnnxExporterError, guard
            # failures...); any of them, or a failed check, means "use the verified fixed-batch route".
            fallback_reason = f"{type(exc).__name__}: {str(exc)[:500]}"
            session = None
            tmp.unlink(missing_ok=True)
            batch_diffs = {}
    if not dynamic_batch or fallback_reason is not None:
        route = "keras-export-fixed-batch"
        try:
            export_seconds = _export_fixed(model, inputs, tmp, opset)
        except Exception as exc:
            tmp.unlink(missing_ok=True)
            raise ConversionError(
                f"both ONNX export routes failed; dynamic: {fallback_reason}; fixed-batch: {exc}"
            ) from exc
        session = ort_session(tmp)
        try:
            keras_diff = keras_max_diff(session)
        except ConversionError:
            session = None
            tmp.unlink(missing_ok=True)
            raise

    opset_found, in_names, in_shapes, out_names = _onnx_io(tmp)
    fixed = fixed_batch(session)
    del session  # release the file before the rename (matters on Windows)
    tmp.replace(onnx_path)
    return ConversionInfo(
        onnx_path=onnx_path,
        route=route,
        dynamic_batch=fixed is None,
        max_batch=fixed,
        export_seconds=round(export_seconds, 2),
        total_seconds=round(time.perf_counter() - total_start, 2),
        opset=opset_found,
        onnx_bytes=onnx_path.stat().st_size,
        input_names=in_names,
        input_shapes=in_shapes,
        output_names=out_names,
        batch_check_max_abs_diff=batch_diffs,
        keras_max_abs_diff=keras_diff,
        parameters=int(model.count_params()),
        versions=_versions(),
        fallback_reason=fallback_reason,
    )


# --- private helpers ---------------------------------------------------------------------------------------------


def _batch_consistency(session: Any, inputs: ImageMetadataInputs, sizes: Sequence[int]) -> dict[int, float]:
    """Max |batched - per-image batch-1| output difference for each batch size."""
    n = max(sizes)
    images, meta = synthetic_inputs(inputs, n, seed=1)
    single = ort_predict(session, images, meta, batch_size=1)
    result: dict[int, float] = {}
    for size in sizes:
        batched = ort_predict(session, images, meta, batch_size=size)
        result[size] = float(np.abs(batched - single).max())
    return result


def _versions() -> dict[str, str]:
    from importlib.metadata import PackageNotFoundError, version

    found: dict[str, str] = {"python": platform.python_version()}
    for dist in ("torch", "keras", "onnx", "onnxscript", "onnxruntime", "numpy"):
        try:
            found[dist] = version(dist)
        except PackageNotFoundError:
            continue
    return found


def _export_dynamic(model: Any, inputs: ImageMetadataInputs, path: Path, opset: int) -> float:
    """Export with torch.onnx's dynamo exporter and a symbolic batch; returns the export wall time."""
    import torch

    class _TwoInputs(torch.nn.Module):
        # torch.onnx wants positional tensors; the Keras functional model takes a list [image, metadata].
        def __init__(self, inner: Any) -> None:
            super().__init__()
            self.inner = inner

        def forward(self, image: torch.Tensor, metadata: torch.Tensor) -> Any:
            return self.inner([image, metadata], training=False)

    wrapper = _TwoInputs(model).eval()
    # Batch 2, not 1: torch.export specialises size-1 dimensions to the constant 1.
    images, meta = synthetic_inputs(inputs, 2)
    batch = torch.export.Dim("batch", min=1, max=4096)
    start = time.perf_counter()
    # The exporter warns about things that do not matter here (axis renaming, deprecated pytree internals,
    # torchvision ops it cannot register); the exported graph is verified numerically afterwards.
    with _quiet_exporter():
        program = torch.onnx.export(
            wrapper,
            (torch.from_numpy(images), torch.from_numpy(meta)),
            dynamo=True,
            dynamic_shapes={"image": {0: batch}, "metadata": {0: batch}},
            input_names=list(_ONNX_INPUT_NAMES),
            output_names=[_ONNX_OUTPUT_NAME],
            opset_version=opset,
            optimize=True,
            verbose=False,
        )
        if program is None:  # only the legacy exporter returns None
            raise ConversionError("torch.onnx.export(dynamo=True) returned no program")
        # Weights inline: an 86 MB model is far below protobuf's 2 GB limit, and one file renames atomically.
        program.save(str(path), external_data=False)
    return time.perf_counter() - start


def _export_fixed(model: Any, inputs: ImageMetadataInputs, path: Path, opset: int) -> float:
    """The verified fallback route: keras' own ONNX export at a fixed batch of 1."""
    keras = import_keras_torch()
    images, meta = synthetic_inputs(inputs, 1)
    model.predict([images, meta], verbose=0)  # keras needs one call before export
    start = time.perf_counter()
    with _quiet_exporter():  # same exporter noise as in _export_dynamic; verified numerically by the caller
        model.export(
            str(path),
            format="onnx",
            verbose=False,
            opset_version=opset,
            input_signature=[
                [
                    keras.InputSpec(shape=(1, inputs.height, inputs.width, 3), dtype="float32"),
                    keras.InputSpec(shape=(1, inputs.metadata_length), dtype="float32"),
                ]
            ],
        )
    return time.perf_counter() - start


# torch.onnx logs one "torchvision is not installed. Skipping torchvision::nms" line per torchvision op through
# this logger; this model uses none of them, so the lines are noise to a user.
_EXPORTER_REGISTRATION_LOGGER = "torch.onnx._internal.exporter._registration"


@contextlib.contextmanager
def _quiet_exporter() -> Iterator[None]:
    """Silence the ONNX exporter's warnings and registration log lines for the duration (both restored)."""
    logger = logging.getLogger(_EXPORTER_REGISTRATION_LOGGER)
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)
            warnings.simplefilter("ignore", FutureWarning)
            warnings.simplefilter("ignore", DeprecationWarning)
            yield
    finally:
        logger.setLevel(level)


def _onnx_io(path: Path) -> tuple[int, tuple[str, ...], tuple[tuple[int | str, ...], ...], tuple[str, ...]]:
    import onnx

    proto = onnx.load(str(path), load_external_data=False)
    opset = next((o.version for o in proto.opset_import if o.domain in ("", "ai.onnx")), -1)

    def dims(value: Any) -> tuple[int | str, ...]:
        return tuple(
            d.dim_param if d.HasField("dim_param") else int(d.dim_value) for d in value.type.tensor_type.shape.dim
        )

    inits = {i.name for i in proto.graph.initializer}
    graph_inputs = [i for i in proto.graph.input if i.name not in inits]
    return (
        int(opset),
        tuple(i.name for i in graph_inputs),
        tuple(dims(i) for i in graph_inputs),
        tuple(o.name for o in proto.graph.output),
    )

"""`local-onnx` embedder: any image encoder exported to ONNX, run by onnxruntime on this machine.

The folder holds `model.onnx` and `embedder.json` (`derm_cloud.embedders.spec`): input size, normalisation,
layout, the output holding the embeddings and its dimension. `derm-cloud models embedder sklesion` writes one
from the sklesion network cut at its penultimate layer. Nothing leaves the machine.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from derm_cloud.base import BackendInfo
from derm_cloud.embedders.base import Embedder, RawEmbedding
from derm_cloud.embedders.spec import EmbedderSpec
from derm_cloud.errors import MissingDependencyError, ModelSpecError
from derm_cloud.images import DEFAULT_LIMITS, ImageLimits, PreparedImage
from derm_cloud.models.cache import models_dir
from derm_cloud.preprocess import image_tensor

__all__ = ["SKLESION_EMBEDDER_FOLDER", "LocalOnnxEmbedder", "resolve_embedder_dir"]

#: cache folder `derm-cloud models embedder sklesion` writes; the short name `"sklesion"` points there.
SKLESION_EMBEDDER_FOLDER = "sklesion-0.2.2-embedder"


def resolve_embedder_dir(name_or_path: str | os.PathLike[str]) -> Path:
    """`"sklesion"` (the exported sklesion embedder in the cache) or a folder path.

    Raises:
        ModelSpecError: `"sklesion"` was asked for but not exported yet, naming the command that exports it.
    """
    text = os.fspath(name_or_path)
    if text == "sklesion":
        path = models_dir() / SKLESION_EMBEDDER_FOLDER
        if not (path / "embedder.json").is_file():
            raise ModelSpecError(
                f"the sklesion embedder is not in the cache ({path}); export it with "
                "`derm-cloud models embedder sklesion` (after `derm-cloud models fetch sklesion`)"
            )
        return path
    return Path(text).expanduser()


class LocalOnnxEmbedder(Embedder):
    """Embed images with an ONNX image encoder folder.

    Args:
        model_dir: an embedder folder (`model.onnx` + `embedder.json`), or `"sklesion"`.
        max_batch: images per onnxruntime run.
        intra_op_threads: onnxruntime's intra-op thread pool (default: onnxruntime's choice).

    Example:
        >>> with LocalOnnxEmbedder("sklesion") as emb:  # doctest: +SKIP
        ...     print(emb.embed("lesion.jpg").dimension)
        32
    """

    backend_name = "local-onnx"
    default_max_batch = 16
    decodes_every_pixel = True

    def __init__(
        self,
        model_dir: str | os.PathLike[str] = "sklesion",
        *,
        max_batch: int | None = None,
        intra_op_threads: int | None = None,
        image_limits: ImageLimits = DEFAULT_LIMITS,
    ) -> None:
        try:
            import onnxruntime as ort
        except ImportError as exc:
            raise MissingDependencyError(
                "the local-onnx embedder needs onnxruntime; run: pip install 'derm-cloud[onnx]'"
            ) from exc
        self.directory = resolve_embedder_dir(model_dir)
        self.spec = EmbedderSpec.load(self.directory)
        options = ort.SessionOptions()
        if intra_op_threads:
            options.intra_op_num_threads = intra_op_threads
        try:
            self.session = ort.InferenceSession(
                str(self.directory / self.spec.model_file), sess_options=options, providers=["CPUExecutionProvider"]
            )
        except Exception as exc:  # onnxruntime raises its own Fail/InvalidGraph types
            raise ModelSpecError(f"onnxruntime cannot load {self.directory / self.spec.model_file}: {exc}") from exc
        inputs = self.session.get_inputs()
        if len(inputs) != 1:
            raise ModelSpecError(
                f"{self.directory}: an image encoder takes one input, the graph has {len(inputs)} "
                f"({', '.join(i.name for i in inputs)}); fix other inputs to constants when exporting"
            )
        outputs = {o.name: o for o in self.session.get_outputs()}
        if self.spec.output not in outputs:
            raise ModelSpecError(
                f"{self.directory}: embedder.json names output {self.spec.output!r}, the graph has {', '.join(outputs)}"
            )
        width = outputs[self.spec.output].shape[-1]
        if isinstance(width, int) and width != self.spec.dimension:
            raise ModelSpecError(
                f"{self.directory}: output {self.spec.output!r} has {width} values, embedder.json says dimension "
                f"{self.spec.dimension}"
            )
        self.image_input = inputs[0].name
        # A fixed batch axis of 1 (some exports) means one image per run whatever max_batch asks.
        fixed_one = inputs[0].shape[0] == 1
        super().__init__(
            model_id=self.spec.model_id,
            dimension=self.spec.dimension,
            image_limits=image_limits,
            max_batch=1 if fixed_one else max_batch,
        )

    def _embed_many(self, images: Sequence[PreparedImage], timeout: float | None) -> list[RawEmbedding]:
        pixels = np.stack([image_tensor(im.array(), self.spec.preprocess, self.spec.layout) for im in images])
        out = np.asarray(self.session.run([self.spec.output], {self.image_input: pixels})[0], dtype=np.float32)
        out = out.reshape(len(images), -1)
        if self.spec.l2_normalise:
            out = out / np.maximum(np.linalg.norm(out, axis=1, keepdims=True), 1e-12)
        return [RawEmbedding(row) for row in out]

    def describe(self) -> BackendInfo:
        return BackendInfo(
            backend=self.backend_name,
            provider="local",
            service="onnxruntime on this machine (embeddings)",
            model_id=self.model_id,
            labels_mapped=False,
            billing={"sku": "local.cpu"},
            model_facts=dict(self.spec.facts) | {"dimension": self.spec.dimension},
        )

    def _close(self) -> None:
        del self.session

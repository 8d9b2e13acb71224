"""The part of a local model runner that does not depend on the runtime: preprocessing, batching, softmax.

`ModelRunner` is shared by `OnnxModel` (onnxruntime) and `TfliteModel` (LiteRT), so both run the same
`image_tensor` preprocessing from the same `spec.json` and differ only in how one batch is executed.
`load_model` picks the runtime for a directory.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from derm_cloud.images import PreparedImage
from derm_cloud.models.spec import ModelSpec
from derm_cloud.preprocess import encode_metadata, image_tensor, softmax
from derm_cloud.types import PatientMetadata

__all__ = ["ModelRunner"]


class ModelRunner(ABC):
    """A loaded model directory that turns prepared images into probabilities in the spec's label order.

    Attributes:
        directory: the model directory.
        spec: its `spec.json`.
        max_batch: largest batch one runtime call takes (`None`: any).
    """

    directory: Path
    spec: ModelSpec
    max_batch: int | None = None

    def tensors(self, images: Sequence[PreparedImage]) -> np.ndarray:
        """Preprocess images into one float32 input batch."""
        return np.stack([image_tensor(im.array(), self.spec.preprocess, self.spec.layout) for im in images])

    def run(self, images: Sequence[PreparedImage], metadata: Sequence[PatientMetadata]) -> np.ndarray:
        """Probabilities (n, n_labels) in the model's label order."""
        pixels = self.tensors(images)
        meta = encode_metadata(self.spec, metadata)
        return self.run_tensors(pixels, meta)

    def run_tensors(self, pixels: np.ndarray, meta: np.ndarray | None) -> np.ndarray:
        """Run already preprocessed inputs, honouring a fixed batch size."""
        step = self.max_batch or len(pixels)
        outs = [
            self._run_batch(pixels[lo : lo + step], None if meta is None else meta[lo : lo + step])
            for lo in range(0, len(pixels), step)
        ]
        out = np.concatenate(outs).astype(np.float64)
        return softmax(out) if self.spec.output == "logits" else out

    @abstractmethod
    def _run_batch(self, pixels: np.ndarray, meta: np.ndarray | None) -> np.ndarray:
        """Raw model output (n, n_labels) for one batch of at most `max_batch` images."""

    def close(self) -> None:
        """Release the runtime session (the runner is unusable afterwards)."""

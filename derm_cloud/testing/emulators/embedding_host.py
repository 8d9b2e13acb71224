"""The model an emulated embedding endpoint hosts, and what the emulator can honestly say about text.

The emulated Derm Foundation, MedSigLIP and MedImageInsight endpoints are stand-ins: each hosts a real image
encoder given as an embedding ONNX (for example sklesion cut at its penultimate layer), run by derm-cloud's own
local embedder, so a head trained on its vectors learns from real embeddings of real lesions. It is not the
provider's model: dimensions, values and quality are the hosted encoder's.

Text: the emulator has no text tower of the provider's. It answers text requests in the published shape with a
stand-in text tower (`HostedEncoder.embed_text`): when the hosted encoder was cut from a classifier
(`derm_cloud.models.embedder_cut` keeps the dropped last layer as `dropped_head.npz`), a prompt that names exactly
one HAM10000 class (its code, name or a synonym of `derm_cloud.taxonomy`) is embedded as that class's weight vector
in the stand-in model's own head, so zero-shot scoring through the emulator ranks classes the way that head does;
any other text gets `hash_text_vector`, a deterministic unit vector derived from the text's SHA-256, with no
meaning. Either way a zero-shot figure through an emulator measures the plumbing (requests, prompts, scoring),
never MedSigLIP's or MedImageInsight's zero-shot quality (`describe()` of a backend pointed at an emulator and
`docs/backends/embeddings.md` say so).
"""

from __future__ import annotations

import hashlib
import os
import threading
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from derm_cloud.embedders.base import Embedder

__all__ = ["TEXT_EMBEDDING_NOTE", "HostedEncoder", "ObjectStore", "hash_text_vector"]

#: What every emulated text embedding is, in the words `describe()` and the docs use.
TEXT_EMBEDDING_NOTE = (
    "emulated text embeddings come from a stand-in text tower built from the stand-in image model's own classifier "
    "weights (a prompt naming exactly one HAM10000 class gets that class's weight vector; any other text a SHA-256 "
    "hash vector with no medical meaning): a zero-shot figure through the emulator measures the plumbing (requests, "
    "prompts, scoring), never the provider's model's zero-shot quality"
)


def hash_text_vector(text: str, dimension: int) -> list[float]:
    """A deterministic unit vector for `text` (same text, same vector): the emulator's text embedding.

    Example:
        >>> v = hash_text_vector("dermoscopy melanoma", 8)
        >>> len(v), round(sum(x * x for x in v), 6), v == hash_text_vector("dermoscopy melanoma", 8)
        (8, 1.0, True)
    """
    import numpy as np  # imported when used: the emulator modules import the standard library only

    seed = int.from_bytes(hashlib.sha256(text.encode("utf-8")).digest()[:8], "big")
    vector = np.random.default_rng(seed).standard_normal(dimension)
    return [float(x) for x in vector / np.linalg.norm(vector)]


class HostedEncoder:
    """An image encoder an emulated endpoint hosts: an embedding model directory (ONNX) or any `Embedder`.

    Args:
        model: an embedding model directory (`model.onnx` + `embedder.json`, run by the `local-onnx` embedder) or
            an `Embedder` built elsewhere (the emulator then owns it and closes it).

    Raises:
        MissingDependencyError: onnxruntime is not installed.
    """

    def __init__(self, model: str | os.PathLike[str] | Embedder) -> None:
        if isinstance(model, (str, os.PathLike)):
            from derm_cloud.embedders.registry import create_embedder

            self.embedder: Embedder = create_embedder("local-onnx", model_dir=model)
        else:
            self.embedder = model
        self._lock = threading.Lock()  # one onnxruntime session, many server threads
        self._dimension: int | None = self.embedder.dimension
        #: `{class code: weight vector}` of the head the encoder was cut from (empty: text is hashed only).
        self.class_directions: dict[str, list[float]] = _class_directions(getattr(self.embedder, "directory", None))

    @property
    def model_id(self) -> str:
        return self.embedder.model_id

    @property
    def dimension(self) -> int:
        """The encoder's vector length (learnt from a first image when the encoder does not declare it)."""
        if self._dimension is None:
            from PIL import Image

            self._dimension = len(self.embed_image(_png(Image.new("RGB", (32, 32), (128, 96, 80)))))
        return self._dimension

    def embed_image(self, data: bytes) -> list[float]:
        """The hosted encoder's vector for encoded image bytes.

        Raises:
            InvalidImageError: the bytes are not an image the encoder can read (the emulator turns this into the
                provider's own refusal).
        """
        data = _at_least(data, self.embedder.image_limits.min_side)
        with self._lock:
            vector = self.embedder.embed(data).vector
        self._dimension = int(vector.shape[0])
        return [float(x) for x in vector]

    def embed_text(self, text: str) -> list[float]:
        """The stand-in text tower: a class's head weight vector for a prompt naming exactly that class, else a
        hash vector (see the module's docstring; a stand-in, not the provider's text encoder)."""
        from derm_cloud.taxonomy import classes_named_in

        named = classes_named_in(text)
        if len(named) == 1 and (direction := self.class_directions.get(next(iter(named)))) is not None:
            return list(direction)
        return hash_text_vector(text, self.dimension)

    def close(self) -> None:
        self.embedder.close()


@dataclass
class ObjectStore:
    """Cloud Storage objects an emulated endpoint can read (`gs://` links in requests), with the token they need.

    Attributes:
        objects: `{"gs://bucket/path.png": bytes}`.
        bearer_token: when set, a request must carry this token to read the objects (public buckets: `None`).
    """

    objects: dict[str, bytes] = field(default_factory=dict)
    bearer_token: str | None = None

    def read(self, uri: Any, token: Any) -> bytes:
        """The object's bytes.

        Raises:
            PermissionError: the token is missing or wrong.
            FileNotFoundError: no such object.
        """
        if self.bearer_token is not None and token != self.bearer_token:
            raise PermissionError(f"the bearer token does not grant read access to {uri}")
        if not isinstance(uri, str) or uri not in self.objects:
            raise FileNotFoundError(f"no object {uri}")
        return self.objects[uri]


def _class_directions(directory: Any) -> dict[str, list[float]]:
    """Unit weight vectors per class of the head an embedder folder was cut from (`{}` without one)."""
    if directory is None:
        return {}
    import numpy as np

    from derm_cloud.models.embedder_cut import load_dropped_head

    head = load_dropped_head(directory)
    if head is None:
        return {}
    weight, _bias, labels = head
    norms = np.linalg.norm(weight, axis=1, keepdims=True)
    return {
        label: [float(x) for x in row] for label, row in zip(labels, weight / np.maximum(norms, 1e-12), strict=True)
    }


def _at_least(data: bytes, min_side: int) -> bytes:
    """`data`, or a PNG of it scaled up to `min_side` px when it is an image smaller than that.

    The providers resize every image to their model's input size themselves (MedImageInsight to 512x512, the
    HAI-DEF models to 448x448), so they take images far below derm-cloud's floor for a lesion photo (the
    MedImageInsight page's own example is 2x2 px); the stand-in does the same rather than refuse them.
    """
    import io

    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(io.BytesIO(data)) as image:
            if min(image.size) >= min_side:
                return data
            scale = min_side / min(image.size)
            size = (max(min_side, round(image.width * scale)), max(min_side, round(image.height * scale)))
            return _png(image.convert("RGB").resize(size, Image.Resampling.NEAREST))
    except (UnidentifiedImageError, OSError, ValueError):
        return data  # not an image: the encoder refuses it in its own words


def _png(image: Any) -> bytes:
    import io

    out = io.BytesIO()
    image.save(out, format="PNG")
    return out.getvalue()

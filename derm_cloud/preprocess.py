"""Turn RGB images into model input tensors, as a model's `Preprocess` says.

numpy and Pillow only: the same code runs in the local backend, in every serving adapter and in the
emulators, so a model gives the same answer wherever it is hosted.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

import numpy as np

from derm_cloud.errors import InvalidImageError, ModelSpecError

if TYPE_CHECKING:
    from PIL import Image as PILImage

    from derm_cloud.models.spec import ModelSpec, Preprocess
    from derm_cloud.types import PatientMetadata

__all__ = [
    "encode_metadata",
    "image_tensor",
    "metadata_encoder",
    "resize_bilinear_half_pixel",
    "softmax",
]


@functools.lru_cache(maxsize=64)
def _half_pixel_axis(in_size: int, out_size: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    # Cached: a dataset has a handful of image sizes, and the sample positions depend on the sizes only (the
    # arrays returned are never written to).
    # Mirrors TensorFlow's compute_interpolation_weights with HalfPixelScaler, in float32 like TF, so the
    # sample positions (and hence the result) match TF bit for bit in most pixels.
    scale = np.float32(in_size) / np.float32(out_size)
    centres = (np.arange(out_size, dtype=np.float32) + np.float32(0.5)) * scale - np.float32(0.5)
    floor = np.floor(centres)
    lower = np.maximum(floor, 0).astype(np.intp)
    upper = np.minimum(np.ceil(centres), in_size - 1).astype(np.intp)
    lerp = (centres - floor).astype(np.float32)
    return lower, upper, lerp


def resize_bilinear_half_pixel(arr: np.ndarray, height: int, width: int) -> np.ndarray:
    """Resize an HxWxC image like `tf.image.resize(..., method="bilinear", antialias=False)`.

    Half-pixel centres (source = (dst + 0.5) * in/out - 0.5), edge samples clamped, no antialiasing (so a
    large downscale aliases exactly as TensorFlow's does), aspect ratio not preserved. The arithmetic follows
    TF's kernel in float32: interpolate along x on the two source rows, then along y.

    Args:
        arr: image of shape (H, W, C), any real dtype (typically uint8 RGB).
        height: output height.
        width: output width.

    Returns:
        float32 array of shape (height, width, C) with values in the input's range (0..255 for uint8); not
        rounded or clipped, as TensorFlow returns it.

    Raises:
        InvalidImageError: `arr` is not a non-empty 3-D array or the size is not positive.

    Example:
        >>> import numpy as np
        >>> resize_bilinear_half_pixel(np.array([[[0], [10], [20], [30]]], np.uint8), 1, 2)[0, :, 0].tolist()
        [5.0, 25.0]
    """
    if arr.ndim != 3 or min(arr.shape) == 0:
        raise InvalidImageError(f"expected a non-empty HxWxC image array, got shape {arr.shape}")
    if height <= 0 or width <= 0:
        raise InvalidImageError(f"output size must be positive, got {height}x{width}")
    in_h, in_w = arr.shape[0], arr.shape[1]
    y0, y1, y_lerp = _half_pixel_axis(in_h, height)
    x0, x1, x_lerp = _half_pixel_axis(in_w, width)
    # Gather the four neighbours in the source dtype (uint8: 4x less memory traffic), then convert only the
    # height*width*C samples that are used.
    rows0 = arr[y0]
    rows1 = arr[y1]
    top_left = rows0[:, x0].astype(np.float32)
    top_right = rows0[:, x1].astype(np.float32)
    bottom_left = rows1[:, x0].astype(np.float32)
    bottom_right = rows1[:, x1].astype(np.float32)
    xl = x_lerp[None, :, None]
    top = top_left + (top_right - top_left) * xl
    bottom = bottom_left + (bottom_right - bottom_left) * xl
    out: np.ndarray = top + (bottom - top) * y_lerp[:, None, None]
    return out


_PIL_FILTERS = {"pil_bilinear": 2, "pil_bicubic": 3, "nearest": 0}  # PIL.Image.Resampling values


def _resize(img: PILImage.Image | np.ndarray, size_hw: tuple[int, int], interpolation: str) -> np.ndarray:
    h, w = size_hw
    if interpolation == "bilinear_half_pixel":
        return resize_bilinear_half_pixel(np.asarray(img), h, w)
    if _height_width(img) == (h, w):
        return np.asarray(img, dtype=np.float32)
    if isinstance(img, np.ndarray):
        from PIL import Image

        img = Image.fromarray(img, mode="RGB")
    return np.asarray(img.resize((w, h), resample=_PIL_FILTERS[interpolation]), dtype=np.float32)


def _centre_region(img: PILImage.Image | np.ndarray, height: int, width: int) -> np.ndarray:
    """The largest centred region of `img` with the aspect ratio width:height, as Windows ML crops it.

    Windows ML binds an image to a fixed-size input by cropping first, at the image's own resolution, then
    scaling (onnxruntime `winml/lib/Api/ImageFeatureValue.cpp`, `CenterAndCropBounds`); the region's size
    is rounded to the nearest pixel and its offset floored, in that code's integer arithmetic, reproduced here.
    """
    arr = np.asarray(img)
    h, w = arr.shape[:2]
    ratio = np.float32(width) / np.float32(height)  # the C++ code computes the ratio in float
    if ratio * np.float32(h) < w:  # too wide: cut left and right
        region_w, region_h = min(int(ratio * np.float32(h) + np.float32(0.5)), w), h
    else:  # too tall: cut top and bottom
        region_w, region_h = w, min(int(np.float32(w) / ratio + np.float32(0.5)), h)
    top, left = (h - region_h) // 2, (w - region_w) // 2
    return arr[top : top + region_h, left : left + region_w]


def _height_width(img: PILImage.Image | np.ndarray) -> tuple[int, int]:
    return (img.shape[0], img.shape[1]) if isinstance(img, np.ndarray) else (img.height, img.width)


def image_tensor(img: PILImage.Image | np.ndarray, pre: Preprocess, layout: str = "NCHW") -> np.ndarray:
    """One RGB image (`PIL.Image` or HxWx3 `uint8` array) to a float32 tensor of shape (3, H, W) or (H, W, 3).

    No batch axis. An array is used as it is; a `PIL.Image` is converted (a copy of every pixel).
    """
    if pre.resize == "squash":
        arr = _resize(img, (pre.height, pre.width), pre.interpolation)
    elif pre.resize == "crop_to_aspect":
        arr = _resize(_centre_region(img, pre.height, pre.width), (pre.height, pre.width), pre.interpolation)
    elif pre.resize == "shorter_side":
        shorter = int(pre.shorter or 0)
        height, width = _height_width(img)
        if width <= height:
            size = (round(height * shorter / width), shorter)
        else:
            size = (shorter, round(width * shorter / height))
        arr = _resize(img, size, pre.interpolation)
    else:
        arr = np.asarray(img, dtype=np.float32)
    if pre.crop is not None:
        ch, cw = pre.crop
        h, w = arr.shape[:2]
        if ch > h or cw > w:
            raise ModelSpecError(f"centre crop {ch}x{cw} is larger than the resized image {h}x{w}")
        top = round((h - ch) / 2.0)
        left = round((w - cw) / 2.0)
        arr = arr[top : top + ch, left : left + cw]
    if pre.channel_order == "BGR":
        arr = arr[..., ::-1]
    if pre.scale != 1.0:  # a multiply by 1.0 is a full-image pass for nothing
        arr = arr * np.float32(pre.scale)
    if pre.mean != (0.0, 0.0, 0.0) or pre.std != (1.0, 1.0, 1.0):
        arr = (arr - np.asarray(pre.mean, np.float32)) / np.asarray(pre.std, np.float32)
    arr = arr.astype(np.float32, copy=False)
    if layout == "NCHW":
        arr = np.ascontiguousarray(arr.transpose(2, 0, 1))
    return arr


MetadataEncoder = Callable[["PatientMetadata"], np.ndarray]


def _sklesion_v1(meta: PatientMetadata) -> np.ndarray:
    from derm_cloud.models.sklesion_metadata import encode_metadata as encode

    vector: np.ndarray = encode(meta.age, meta.sex, meta.site)
    return vector


_ENCODERS: dict[str, MetadataEncoder] = {"sklesion-v1": _sklesion_v1}


def metadata_encoder(name: str) -> MetadataEncoder:
    """The metadata encoder a spec names (`"sklesion-v1"`)."""
    try:
        return _ENCODERS[name]
    except KeyError:
        raise ModelSpecError(
            f"unknown metadata encoding {name!r}; known encodings: {', '.join(sorted(_ENCODERS))}"
        ) from None


def encode_metadata(spec: ModelSpec, metas: Sequence[PatientMetadata]) -> np.ndarray | None:
    """Stack encoded metadata for a batch, or `None` when the model takes none."""
    if spec.metadata_encoding is None:
        return None
    encode = metadata_encoder(spec.metadata_encoding)
    return np.stack([encode(m) for m in metas]).astype(np.float32)


def softmax(logits: np.ndarray) -> np.ndarray:
    """Numerically stable softmax over the last axis."""
    shifted = logits - logits.max(axis=-1, keepdims=True)
    e = np.exp(shifted)
    out: np.ndarray = e / e.sum(axis=-1, keepdims=True)
    return out

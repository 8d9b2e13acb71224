"""Skin-tone estimation: Individual Typology Angle (ITA) of the non-lesion skin, and Fitzpatrick types from metadata.

HAM10000 and most dermoscopy sets record no skin type, so a fairness report on them can only group images by an
*estimate* of skin colour. `estimate_ita` computes the ITA (Chardon et al. 1991):

```python
ITA = arctan((L* - 50) / b*) * 180 / pi
```

on CIELAB values (sRGB, D65) of the healthy skin around the lesion, and maps it to the six ITA bands. Where
the metadata carries a Fitzpatrick skin type (ISIC archive `fitzpatrick_skin_type` "I".."VI",
Fitzpatrick17k `fitzpatrick_scale` 1..6 with -1 for unknown), the dataset loaders read it
(`derm_cloud.data.fields.fitzpatrick_from_metadata`); a recorded type always wins over an estimate.

Caveats (stated wherever these estimates are shown; see `ITA_CAVEAT`):

* ITA measures constitutive skin colour, Fitzpatrick type measures sun reactivity: they correlate poorly and
  are not interchangeable; there is no canonical ITA -> Fitzpatrick mapping.
* On dermoscopy ITA is biased by vignetting (dark corners), lesion pixels, hair, immersion gel and bubbles,
  rulers and the device's lighting and white balance. The borders are cropped, the corners, lesion, hair and
  glare are excluded, and what remains is still an estimate of image colour, never the patient's skin type.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from derm_cloud.errors import ConfigError

if TYPE_CHECKING:
    from derm_cloud.images import ImageInput, PreparedImage

__all__ = [
    "ITA_BANDS",
    "ITA_CATEGORIES",
    "ITA_CAVEAT",
    "SkinToneEstimate",
    "estimate_ita",
    "ita_category",
    "lab_to_srgb",
    "srgb_to_lab",
]

#: (category, lower bound exclusive, upper bound inclusive) in degrees; Chardon et al. 1991.
ITA_BANDS: tuple[tuple[str, float, float], ...] = (
    ("very light", 55.0, math.inf),
    ("light", 41.0, 55.0),
    ("intermediate", 28.0, 41.0),
    ("tan", 10.0, 28.0),
    ("brown", -30.0, 10.0),
    ("dark", -math.inf, -30.0),
)
#: The six ITA categories from lightest to darkest.
ITA_CATEGORIES: tuple[str, ...] = tuple(name for name, _, _ in ITA_BANDS)

ITA_CAVEAT = (
    "Skin tone is an Individual Typology Angle (ITA) estimate from the image's non-lesion skin, not the patient's "
    "skin type. ITA measures skin colour, Fitzpatrick type measures sun reactivity; they correlate poorly and "
    "there is no canonical mapping between them. On dermoscopy the estimate is biased by vignetting, lesion "
    "pixels, hair, gel and bubbles, rulers and the device's lighting and white balance."
)

# sRGB (IEC 61966-2-1) linear RGB -> XYZ, and the D65 reference white.
_RGB_TO_XYZ = np.array(
    [[0.4124564, 0.3575761, 0.1804375], [0.2126729, 0.7151522, 0.0721750], [0.0193339, 0.1191920, 0.9503041]]
)
_D65 = np.array([0.95047, 1.0, 1.08883])
_EPS = (6 / 29) ** 3


@dataclass(frozen=True)
class SkinToneEstimate:
    """The ITA estimate of one image.

    Attributes:
        ita: median ITA in degrees over the skin pixels used, `None` when too little skin was visible.
        category: the ITA band (`"very light"` ... `"dark"`), `None` when `ita` is `None`.
        pixels_used: how many pixels (after down-scaling) entered the median.
        method: how the estimate was made, for reports.
        caveat: why this is not a skin type; shown next to every figure built on it.
        lightness: median L* of the pixels used (`None` when unavailable).
        yellowness: median b* of the pixels used (`None` when unavailable).
        reason: why `ita` is `None` (too little skin, blue/grey colour cast), else `None`.
    """

    ita: float | None
    category: str | None
    pixels_used: int
    method: str
    caveat: str = ITA_CAVEAT
    lightness: float | None = None
    yellowness: float | None = None
    reason: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def ita_category(ita: float | None) -> str | None:
    """Map an ITA in degrees to its band.

    Example:
        >>> ita_category(48.0)
        'light'
    """
    if ita is None or math.isnan(ita):
        return None
    for name, low, high in ITA_BANDS:
        if low < ita <= high:
            return name
    return None  # pragma: no cover - the bands cover the real line


def srgb_to_lab(rgb: np.ndarray) -> np.ndarray:
    """Convert sRGB `uint8` (or 0..1 float) pixels of shape (..., 3) to CIELAB under D65.

    Example:
        >>> srgb_to_lab(np.array([255, 255, 255], dtype=np.uint8)).round(1).tolist()
        [100.0, 0.0, 0.0]
    """
    arr = np.asarray(rgb)
    c = arr.astype(np.float64) / 255.0 if arr.dtype == np.uint8 else arr.astype(np.float64)
    linear = np.where(c <= 0.04045, c / 12.92, ((c + 0.055) / 1.055) ** 2.4)
    xyz = linear @ _RGB_TO_XYZ.T / _D65
    f = np.where(xyz > _EPS, np.cbrt(xyz), xyz / (3 * (6 / 29) ** 2) + 4 / 29)
    lightness = 116 * f[..., 1] - 16
    a = 500 * (f[..., 0] - f[..., 1])
    b = 200 * (f[..., 1] - f[..., 2])
    return np.stack([lightness, a, b], axis=-1)


def lab_to_srgb(lab: np.ndarray) -> np.ndarray:
    """Convert CIELAB (D65) values of shape (..., 3) to sRGB `uint8` (clipped to the gamut).

    Used to build test patches of a known colour and to draw ITA band swatches in reports.
    """
    lab = np.asarray(lab, dtype=np.float64)
    fy = (lab[..., 0] + 16) / 116
    f = np.stack([fy + lab[..., 1] / 500, fy, fy - lab[..., 2] / 200], axis=-1)
    xyz = np.where(f > 6 / 29, f**3, 3 * (6 / 29) ** 2 * (f - 4 / 29)) * _D65
    linear = np.clip(xyz @ np.linalg.inv(_RGB_TO_XYZ).T, 0.0, 1.0)
    c = np.where(linear <= 0.0031308, 12.92 * linear, 1.055 * linear ** (1 / 2.4) - 0.055)
    return np.asarray(np.clip(np.rint(c * 255), 0, 255), dtype=np.uint8)


def estimate_ita(
    image: ImageInput | PreparedImage,
    *,
    border_fraction: float = 0.08,
    exclude_corners: bool = True,
    exclude_lesion: bool = True,
    inner_radius: float = 0.5,
    max_side: int = 256,
    min_pixels: int = 200,
    min_skin_fraction: float = 0.1,
) -> SkinToneEstimate:
    """Estimate the ITA of the skin around a lesion.

    Steps: down-scale to `max_side`; crop `border_fraction` from every edge (dermoscopy vignetting); drop
    the corners outside the inscribed ellipse (the dark ring of a round dermoscope field) and the centre, where
    the lesion usually is; convert to CIELAB
    (D65); drop the lesion (Otsu threshold on L*, widened by a few pixels), hair (dark thin structures found by
    a black-hat filter), very dark pixels (L* < 15) and glare (L* > 97 or a saturated channel); compute the ITA
    of the median L* and median b* of what is left (medians resist the remaining hair, gel and lesion edges).

    Args:
        image: a path, bytes, `PIL.Image`, numpy `uint8` RGB array or a prepared image.
        border_fraction: share of width/height cropped from each edge (`derm-ita` removes >= 4%).
        exclude_corners: ignore pixels outside the ellipse inscribed in the cropped image.
        exclude_lesion: segment the lesion and ignore it (switch off for patches of plain skin).
        inner_radius: also ignore the centre, inside this fraction of the ellipse (dermoscopy centres the
            lesion); `0` keeps it.
        max_side: longest side the image is reduced to first; the median barely changes, the run time does.
        min_pixels: fewer usable skin pixels than this gives `ita=None`.
        min_skin_fraction: so does keeping less than this share of the ring (the lesion fills the frame).

    Returns:
        A `SkinToneEstimate`; `ita` is `None` (with `reason`) when too little skin is visible or
        the image has a blue/grey colour cast (median b* <= 0), where ITA is undefined.

    Raises:
        InvalidImageError: the input is not a usable image.

    Example:
        >>> estimate_ita("lesion.jpg").category  # doctest: +SKIP
        'very light'
    """
    if not 0 <= border_fraction < 0.5:
        raise ConfigError(f"border_fraction must be in [0, 0.5), got {border_fraction}")
    rgb = _rgb_array(image, max_side)
    h, w = rgb.shape[:2]
    dy, dx = round(h * border_fraction), round(w * border_fraction)
    rgb = rgb[dy : h - dy or None, dx : w - dx or None]
    h, w = rgb.shape[:2]
    lab = srgb_to_lab(rgb)
    lightness, b = lab[..., 0], lab[..., 2]

    usable = np.ones((h, w), dtype=bool)
    steps = [f"border {border_fraction:.0%} cropped"]
    yy, xx = np.mgrid[0:h, 0:w]
    radius = np.sqrt(((yy + 0.5 - h / 2) / max(h / 2, 1.0)) ** 2 + ((xx + 0.5 - w / 2) / max(w / 2, 1.0)) ** 2)
    if exclude_corners:
        usable &= radius <= 1.0
        steps.append("corners outside the inscribed ellipse dropped")
    if inner_radius > 0:
        # Dermoscopy centres the lesion: the surrounding ring holds most of the healthy skin.
        usable &= radius >= inner_radius
        steps.append(f"centre (radius < {inner_radius:g} of the ellipse) dropped")
    ring = int(usable.sum())
    usable &= (lightness >= 15.0) & (lightness <= 97.0) & (rgb.max(axis=-1) < 250)
    steps.append("L* < 15, L* > 97 and saturated pixels dropped")
    # Hair: thin dark lines are much darker than their neighbourhood after a grey closing (black-hat).
    hair = _grey_closing(lightness, 7) - lightness > 12.0
    usable &= ~_dilate(hair, 3)
    steps.append("hair (black-hat > 12 L*) dropped")
    if exclude_lesion and usable.sum() >= min_pixels:
        threshold, separation = _otsu(lightness[usable])
        # Plain skin gives two nearly equal Otsu classes; cutting it would only discard healthy skin.
        if separation >= 6.0:
            # The lesion's edge fades into the skin: cut a quarter of the class gap above Otsu's threshold.
            cut = threshold + 0.25 * separation
            lesion = _dilate(lightness < cut, 5)
            usable &= ~lesion
            steps.append(f"lesion dropped (L* < {cut:.1f}: Otsu + a quarter of the class gap, widened 2 px)")
        else:
            steps.append("no lesion found (Otsu classes < 6 L* apart)")
    used = int(usable.sum())
    method = "ITA of the median L* and b* of non-lesion skin (sRGB -> CIELAB D65): " + "; ".join(steps)
    if used < max(min_pixels, min_skin_fraction * ring):
        return SkinToneEstimate(
            None,
            None,
            used,
            method,
            reason=f"only {used} of {ring} pixels look like skin: the lesion, hair or shadow fills the frame",
        )
    lv, bv = float(np.median(lightness[usable])), float(np.median(b[usable]))
    if bv <= 0.0:
        # Skin is yellow-red (b* > 0) under any sane white balance; b* <= 0 means a blue/grey device cast, where
        # arctan((L-50)/b) flips sign and would call pale skin "dark".
        return SkinToneEstimate(
            None,
            None,
            used,
            method,
            lightness=lv,
            yellowness=bv,
            reason=f"median b* is {bv:.1f} <= 0: the image has a blue/grey cast (device white balance), ITA undefined",
        )
    ita = math.degrees(math.atan((lv - 50.0) / bv))
    return SkinToneEstimate(
        ita=ita, category=ita_category(ita), pixels_used=used, method=method, lightness=lv, yellowness=bv
    )


# --- image helpers ----------------------------------------------------------------------------------------------


def _rgb_array(image: Any, max_side: int) -> np.ndarray:
    from PIL import Image

    from derm_cloud.images import PreparedImage, load_image

    prepared = image if isinstance(image, PreparedImage) else load_image(image)
    pil = prepared.image
    if max(pil.size) > max_side:
        scale = max_side / max(pil.size)
        size = (max(16, round(pil.size[0] * scale)), max(16, round(pil.size[1] * scale)))
        pil = pil.resize(size, Image.Resampling.BILINEAR, reducing_gap=2.0)
    return np.asarray(pil.convert("RGB"), dtype=np.uint8)


def _window_reduce(values: np.ndarray, size: int, reduce: str) -> np.ndarray:
    # Max/min over a square window is separable: two 1-D passes cost 2*size instead of size**2 per pixel.
    pad = size // 2
    out = values
    for axis in (0, 1):
        widths = [(0, 0), (0, 0)]
        widths[axis] = (pad, pad)
        windows = np.lib.stride_tricks.sliding_window_view(np.pad(out, widths, mode="edge"), size, axis=axis)
        out = windows.max(axis=-1) if reduce == "max" else windows.min(axis=-1)
    return out


def _grey_closing(values: np.ndarray, size: int) -> np.ndarray:
    return _window_reduce(_window_reduce(values, size, "max"), size, "min")


def _dilate(mask: np.ndarray, size: int) -> np.ndarray:
    return _window_reduce(mask.astype(np.uint8), size, "max").astype(bool)


def _otsu(values: np.ndarray, bins: int = 128) -> tuple[float, float]:
    """Otsu threshold of `values` and the distance between the two class means."""
    lo, hi = float(values.min()), float(values.max())
    if hi - lo < 1e-6:
        return lo, 0.0
    hist, edges = np.histogram(values, bins=bins, range=(lo, hi))
    centres = (edges[:-1] + edges[1:]) / 2
    weight = hist.astype(np.float64)
    w0 = np.cumsum(weight)
    w1 = w0[-1] - w0
    m0 = np.cumsum(weight * centres)
    with np.errstate(divide="ignore", invalid="ignore"):
        mean0 = m0 / w0
        mean1 = (m0[-1] - m0) / w1
        between = w0 * w1 * (mean0 - mean1) ** 2
    between = np.nan_to_num(between, nan=-1.0)
    k = int(np.argmax(between[:-1]))
    return float(edges[k + 1]), float(mean1[k] - mean0[k])

"""Metadata as a stated choice: which backend answers with patient metadata, and which in both modes.

A model that sees age, sex and site can score differently from the same model seeing the image alone (sklesion
moves a histology-confirmed melanoma from nv 0.709 to mel 0.816). If only some backends received metadata, the
report would show the effect of metadata as a difference between providers; if metadata were dropped for
every backend because one cannot take it, a capable backend's own figure would fall silently (local-onnx:
balanced accuracy 0.916 alone, 0.875 beside a Vertex AutoML backend). So, by default:

* `mode = "auto"`: every backend gets patient metadata when *all* of them can use it. When they differ, the
  cross-backend comparison is image-only (every backend metadata-blind) **and** each backend that can use
  metadata gets a second row with it (`local-onnx +metadata`): both figures are measured, and the report says
  at its top which figure used what;
* `mode = "blind"`: no backend gets metadata (one mode only);
* `mode = "each"`: each backend gets metadata if it can use it (mixed modes: the report warns at its top).

`variants` makes the extra rows an explicit choice: `"auto"` (the default) adds them only where `mode = "auto"`
found backends that differ; `true` adds, for every backend that can use metadata, a row in the other mode;
`false` runs one mode only (the report then says which capable backends answered without metadata).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

__all__ = ["BLIND_SUFFIX", "METADATA_MODES", "VARIANT_CHOICES", "WITH_SUFFIX", "MetadataPlan", "plan_metadata"]

METADATA_MODES = ("auto", "blind", "each")
#: `[metadata] variants`: `"auto"`, or an explicit `True` / `False`.
VARIANT_CHOICES = ("auto", True, False)
WITH_SUFFIX = " +metadata"
BLIND_SUFFIX = " -metadata"


@dataclass(frozen=True)
class MetadataPlan:
    """Which backend gets patient metadata, and which variant rows to add.

    Attributes:
        use: backend name -> whether it is sent patient metadata.
        variants: `(variant name, backend it copies, sends metadata)` for each extra row.
        capabilities_differ: some backends can use metadata and some cannot.
    """

    use: dict[str, bool]
    variants: tuple[tuple[str, str, bool], ...]
    capabilities_differ: bool = False


def plan_metadata(capable: Mapping[str, bool], mode: str = "auto", variants: bool | str = "auto") -> MetadataPlan:
    """Decide each backend's metadata mode from what each one can use.

    Args:
        capable: backend name -> whether it can use patient metadata (`Classifier.uses_metadata`).
        mode: `auto`, `blind` or `each` (see the module docstring).
        variants: `"auto"` (rows with metadata for the capable backends when `mode = "auto"` and capabilities
            differ), `True` (an other-mode row for every backend that can use metadata) or `False` (none).

    Returns:
        The `MetadataPlan`.

    Raises:
        ValueError: an unknown mode or variants value (the config validates both first).

    Example:
        >>> plan = plan_metadata({"local-onnx": True, "vertex": False})
        >>> plan.use, plan.variants
        ({'local-onnx': False, 'vertex': False}, (('local-onnx +metadata', 'local-onnx', True),))
    """
    if mode not in METADATA_MODES:
        raise ValueError(f"metadata mode must be one of {', '.join(METADATA_MODES)}, got {mode!r}")
    if variants not in VARIANT_CHOICES:
        raise ValueError(f"metadata variants must be 'auto', true or false, got {variants!r}")
    all_can = bool(capable) and all(capable.values())
    differ = any(capable.values()) and not all_can
    if mode == "each":
        use = dict(capable)
    else:
        common = mode == "auto" and all_can
        use = {name: common for name in capable}
    add = variants is True or (variants == "auto" and mode == "auto" and differ)
    extra: list[tuple[str, str, bool]] = []
    if add:
        for name, can in capable.items():
            if not can:
                continue
            other = not use[name]
            extra.append((name + (WITH_SUFFIX if other else BLIND_SUFFIX), name, other))
    return MetadataPlan(use=use, variants=tuple(extra), capabilities_differ=differ)

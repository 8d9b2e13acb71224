"""Metadata parity: every backend of a comparison answers in the same patient-metadata mode.

A model that sees age, sex and site can score differently from the same model seeing the image alone (sklesion
moves a histology-confirmed melanoma from nv 0.709 to mel 0.816). If only some backends received metadata, the
report would show the effect of metadata as a difference between providers. So, by default:

* `mode = "auto"`: every backend gets patient metadata when *all* of them can use it, none gets it otherwise
  (metadata-blind);
* `mode = "blind"`: no backend gets metadata;
* `mode = "each"`: each backend gets metadata if it can use it (mixed modes: the report warns at its top).

`variants = true` adds, for every backend that can use metadata, a row of its own in the other mode
(`local-onnx +metadata` beside a blind `local-onnx`), so the gain from metadata is a measured row.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

__all__ = ["BLIND_SUFFIX", "METADATA_MODES", "WITH_SUFFIX", "MetadataPlan", "plan_metadata"]

METADATA_MODES = ("auto", "blind", "each")
WITH_SUFFIX = " +metadata"
BLIND_SUFFIX = " -metadata"


@dataclass(frozen=True)
class MetadataPlan:
    """Which backend gets patient metadata, and which variant rows to add.

    Attributes:
        use: backend name -> whether it is sent patient metadata.
        variants: `(variant name, backend it copies, sends metadata)` for each extra row.
    """

    use: dict[str, bool]
    variants: tuple[tuple[str, str, bool], ...]


def plan_metadata(capable: Mapping[str, bool], mode: str = "auto", variants: bool = False) -> MetadataPlan:
    """Decide each backend's metadata mode from what each one can use.

    Args:
        capable: backend name -> whether it can use patient metadata (`Classifier.uses_metadata`).
        mode: `auto`, `blind` or `each` (see the module docstring).
        variants: add an other-mode row for every backend that can use metadata.

    Returns:
        The `MetadataPlan`.

    Raises:
        ValueError: an unknown mode (the config validates it first).
    """
    if mode not in METADATA_MODES:
        raise ValueError(f"metadata mode must be one of {', '.join(METADATA_MODES)}, got {mode!r}")
    all_can = bool(capable) and all(capable.values())
    if mode == "each":
        use = dict(capable)
    else:
        common = mode == "auto" and all_can
        use = {name: common for name in capable}
    extra: list[tuple[str, str, bool]] = []
    if variants:
        for name, can in capable.items():
            if not can:
                continue
            other = not use[name]
            extra.append((name + (WITH_SUFFIX if other else BLIND_SUFFIX), name, other))
    return MetadataPlan(use=use, variants=tuple(extra))

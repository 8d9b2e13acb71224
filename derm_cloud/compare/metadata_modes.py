"""Metadata parity: every backend of a comparison answers in the same patient-metadata mode.

A model that sees age, sex and site can score differently from the same model seeing the image alone (sklesion
moves a histology-confirmed melanoma from nv 0.709 to mel 0.816). If only some backends received metadata, the
report would show the effect of metadata as a difference between providers. So, by default:

* ``mode = "auto"``: every backend gets patient metadata when *all* of them can use it, none gets it otherwise
  (metadata-blind);
* ``mode = "blind"``: no backend gets metadata;
* ``mode = "each"``: each backend gets metadata if it can use it (mixed modes: the report warns at its top).

``variants = true`` adds, for every backend that can use metadata, a row of its own in the other mode
(``local-onnx +metadata`` beside a blind ``local-onnx``), so the gain from metadata is a measured row.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from derm_cloud.compare.executors import BackendRuntime

__all__ = [
    "METADATA_MODES",
    "MetadataPlan",
    "apply_metadata_plan",
    "metadata_label",
    "metadata_summary",
    "plan_metadata",
]

METADATA_MODES = ("auto", "blind", "each")
WITH_SUFFIX = " +metadata"
BLIND_SUFFIX = " -metadata"


@dataclass(frozen=True)
class MetadataPlan:
    """Which backend gets patient metadata, and which variant rows to add.

    Attributes:
        use: backend name -> whether it is sent patient metadata.
        variants: ``(variant name, backend it copies, sends metadata)`` for each extra row.
    """

    use: dict[str, bool]
    variants: tuple[tuple[str, str, bool], ...]


def plan_metadata(capable: Mapping[str, bool], mode: str = "auto", variants: bool = False) -> MetadataPlan:
    """Decide each backend's metadata mode from what each one can use.

    Args:
        capable: backend name -> whether it can use patient metadata (``Classifier.uses_metadata``).
        mode: ``auto``, ``blind`` or ``each`` (see the module docstring).
        variants: add an other-mode row for every backend that can use metadata.

    Returns:
        The :class:`MetadataPlan`.

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


def apply_metadata_plan(
    runtimes: list[BackendRuntime],
    mode: str,
    variants: bool,
    open_variant: Callable[[BackendRuntime, str], BackendRuntime],
) -> list[BackendRuntime]:
    """Set each runtime's metadata mode and open the variant rows; returns every runtime (variants after theirs).

    Args:
        runtimes: the opened backends.
        mode: the config's ``[metadata] mode``.
        variants: the config's ``[metadata] variants``.
        open_variant: opens a second runtime of a backend under a new name (its own emulator and client).
    """
    capable = {rt.name: rt.classifier.uses_metadata for rt in runtimes}
    plan = plan_metadata(capable, mode, variants)
    for rt in runtimes:
        rt.recipe = replace(rt.recipe, use_metadata=plan.use[rt.name])
    out = list(runtimes)
    for name, base, send in plan.variants:
        original = next(rt for rt in runtimes if rt.name == base)
        variant = open_variant(original, name)
        variant.recipe = replace(variant.recipe, use_metadata=send)
        out.insert(out.index(original) + 1, variant)
    return out


def metadata_summary(infos: Mapping[str, Mapping[str, Any]]) -> tuple[dict[str, Any], list[str]]:
    """The report's metadata facts (per backend: can use it, was sent it) and the warning mixed modes call for."""
    rows = {
        name: {
            "can_use": bool(f.get("uses_metadata")),
            "sent": bool(f.get("metadata_used")),
            "variant_of": f.get("variant_of"),
        }
        for name, f in infos.items()
    }
    base = {n: r for n, r in rows.items() if not r["variant_of"]}
    variants = [n for n, r in rows.items() if r["variant_of"]]
    base_sent = {r["sent"] for r in base.values()}
    warnings: list[str] = []
    if len(base_sent) > 1:
        sent = [n for n, r in base.items() if r["sent"]]
        blind = [n for n, r in base.items() if not r["sent"]]
        mode = "mixed"
        warnings.append(
            f"MIXED METADATA MODES: {', '.join(sent)} received patient metadata (age, sex, site) and "
            f"{', '.join(blind)} did not: differences between them include the effect of metadata, not only of "
            'the provider. [metadata] mode = "auto" (the default) runs every backend in one mode'
        )
    else:
        mode = "with metadata" if base_sent == {True} else "metadata-blind"
    if variants:
        mode += f", plus explicit variant rows in the other mode ({', '.join(variants)})"
    return {"mode": mode, "backends": rows, "variants": variants}, warnings


def metadata_label(row: Mapping[str, Any] | None) -> str:
    """The summary table's ``metadata`` cell of one backend."""
    if not row:
        return "n/a"
    if row["sent"]:
        return "used"
    return "blind (can use)" if row["can_use"] else "blind"

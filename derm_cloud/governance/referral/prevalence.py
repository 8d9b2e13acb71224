"""Referral rates at a stated class mix: a dataset's mix is not a clinic's, so rates are re-weighted to one.

Example:
    >>> round(parse_prevalence("mel=0.02")["mel"], 3), round(sum(parse_prevalence("mel=0.02").values()), 3)
    (0.02, 1.0)
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

from derm_cloud.errors import ConfigError
from derm_cloud.taxonomy import CLASS_CODES

__all__ = ["HAM10000_MIX", "parse_prevalence", "prevalence_weights"]

#: HAM10000's own class mix (counts from HAM10000_metadata.csv): a reference mix, not a clinic's prevalence.
HAM10000_MIX: dict[str, float] = {
    c: n / 10015 for c, n in zip(CLASS_CODES, (327, 514, 1099, 115, 1113, 6705, 142), strict=True)
}


def parse_prevalence(spec: str | None) -> dict[str, float] | None:
    """`"ham10000"` or `"mel=0.02,bcc=0.03"` -> class shares.

    Classes not listed share the remaining mass in HAM10000's proportions, so `"mel=0.02"` means "2%
    melanoma, the rest mixed as in HAM10000".

    Raises:
        ConfigError: an entry is not `CLASS=SHARE`, a share is not a number, or the shares exceed 1.
    """
    if not spec:
        return None
    if spec.strip().lower() == "ham10000":
        return dict(HAM10000_MIX)
    given: dict[str, float] = {}
    for part in spec.split(","):
        key, sep, value = part.partition("=")
        key = key.strip()
        if not sep or key not in CLASS_CODES:
            raise ConfigError(
                f"prevalence entry {part!r} must look like CLASS=SHARE with CLASS in {', '.join(CLASS_CODES)}"
            )
        try:
            given[key] = float(value)
        except ValueError:
            raise ConfigError(f"prevalence share {value!r} for {key} is not a number") from None
    total = sum(given.values())
    if not 0 < total <= 1 + 1e-9 or any(v < 0 for v in given.values()):
        raise ConfigError(f"prevalence shares must be >= 0 and sum to at most 1, got {total:.3f}")
    rest = [c for c in CLASS_CODES if c not in given]
    rest_mass = sum(HAM10000_MIX[c] for c in rest)
    out = dict(given)
    for c in rest:
        out[c] = (1 - total) * HAM10000_MIX[c] / rest_mass if rest_mass else 0.0
    return out


def prevalence_weights(y: np.ndarray, prevalence: Mapping[str, float] | None) -> np.ndarray | None:
    """Per-image weights that re-weight the set's class mix to `prevalence` (classes absent here are dropped)."""
    if not prevalence:
        return None
    unknown = sorted(set(prevalence) - set(CLASS_CODES))
    if unknown:
        raise ConfigError(f"prevalence has unknown classes {unknown}")
    present = {c: int((y == c).sum()) for c in CLASS_CODES if (y == c).any()}
    total = sum(prevalence.get(c, 0.0) for c in present)
    if total <= 0:
        raise ConfigError("prevalence gives no weight to any class present in the labels")
    per_class = {c: prevalence.get(c, 0.0) / total / n for c, n in present.items()}
    return np.array([per_class.get(str(c), 0.0) for c in y])

"""Small helpers every comparison module needs: a leaf module, so imports in ``derm_cloud.compare`` point one way.

The config (fingerprint), the runner (stored config), the analysis (report config) and the executors (progress
totals) all used these. They lived in the runner, which imports the other three, so each of them had to import
the runner back lazily: a five-module circle. This module imports nothing from ``derm_cloud.compare`` at run
time; everything else may import it.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from derm_cloud.compare.config import ComparisonConfig

__all__ = ["planned_units", "redact_config"]

_SECRET_KEY = re.compile(r"(?i)(key|secret|token|password|credential|sas|connection_string)")


def redact_config(value: Any) -> Any:
    """The config with values of secret-looking keys (``api_key``, ``prediction_key``, ...) replaced.

    Other strings lose the secrets they carry inside them (a ``scoring_uri`` with ``?code=...``, a URL with a
    password) by :func:`derm_cloud.redaction.redact`.
    """
    if isinstance(value, str):
        from derm_cloud.redaction import redact

        return redact(value, limit=None)
    if isinstance(value, Mapping):
        return {
            k: ("<redacted>" if _SECRET_KEY.search(str(k)) and v is not None else redact_config(v))
            for k, v in value.items()
        }
    if isinstance(value, (list, tuple)):
        return [redact_config(v) for v in value]
    return value


def planned_units(config: ComparisonConfig, n_samples: int, backend: str) -> int:
    """How many results a backend will store in a complete run (for progress bars)."""
    sc = config.scenarios
    total = n_samples if sc["quality"].enabled else 0
    total += sc["single_stream"]["queries"] if sc["single_stream"].enabled else 0
    total += sc["server"]["queries"] if sc["server"].enabled else 0
    if sc["offline"].enabled:
        total += sc["offline"]["queries"] * len(sc["offline"]["concurrency"])
    total += sc["cold_start"]["trials"] if sc["cold_start"].enabled else 0
    return total

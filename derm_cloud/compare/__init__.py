"""The comparator: quality, agreement, fairness, latency and cost of several backends in one reproducible run.

Run it from the command line (``derm-cloud compare CONFIG``) or from Python::

    from derm_cloud.compare import run_comparison

    result = run_comparison("compare.toml")        # or a dict, or None for the embedded default
    print(result.html, result.summary["cost"]["backends"]["sagemaker"]["monthly"])

Results are stored as they arrive (``<output>/runs.sqlite``), so an interrupted run resumes where it stopped.
The report supports triage and research; it is not a diagnosis, and a clinician reviews every result.

Names are imported lazily so that ``import derm_cloud.compare.metrics`` stays light.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from derm_cloud.compare.config import ComparisonConfig, ConfigFileError, load_config, parse_config
    from derm_cloud.compare.cost import PriceCatalogue
    from derm_cloud.compare.runner import ComparisonResult, run_comparison
    from derm_cloud.compare.store import RunStore

__all__ = [
    "ComparisonConfig",
    "ComparisonResult",
    "ConfigFileError",
    "PriceCatalogue",
    "RunStore",
    "load_config",
    "parse_config",
    "run_comparison",
]

_WHERE = {
    "ComparisonConfig": "config",
    "ConfigFileError": "config",
    "load_config": "config",
    "parse_config": "config",
    "PriceCatalogue": "cost",
    "ComparisonResult": "runner",
    "run_comparison": "runner",
    "RunStore": "store",
}


def __getattr__(name: str) -> Any:
    if name in _WHERE:
        return getattr(importlib.import_module(f"derm_cloud.compare.{_WHERE[name]}"), name)
    raise AttributeError(f"module 'derm_cloud.compare' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(__all__)

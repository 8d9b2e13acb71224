"""The comparator: quality, agreement, fairness, latency and cost of several backends in one reproducible run.

Run it from the command line (`derm-cloud compare CONFIG`) or from Python:

```python
from derm_cloud.compare import run_comparison

result = run_comparison("compare.toml")        # or a dict, or None for the embedded default
print(result.html, result.summary["cost"]["backends"]["sagemaker"]["monthly"])
```

Three stages with typed hand-offs, each in its own subpackage: `run` (config in, result rows out: `RunResults`),
`analysis` (rows to a `Summary`, pure functions) and `report` (the `Summary` as HTML, Markdown, JSON, figures
and exports); `pipeline.run_comparison` chains them. Results are stored as they arrive
(`<output>/runs.sqlite`), so an interrupted run resumes where it stopped.
The report supports triage and research; it is not a diagnosis, and a clinician reviews every result.

Names are imported lazily so that `import derm_cloud.compare.analysis.metrics` stays light.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from derm_cloud.compare.analysis.summary import Summary
    from derm_cloud.compare.pipeline import ComparisonResult, run_comparison
    from derm_cloud.compare.run.config import ComparisonConfig, ConfigFileError
    from derm_cloud.compare.run.config_file import load_config, parse_config
    from derm_cloud.compare.run.prices import PriceCatalogue
    from derm_cloud.compare.run.results import RunResults
    from derm_cloud.compare.run.store import RunStore

__all__ = [
    "ComparisonConfig",
    "ComparisonResult",
    "ConfigFileError",
    "PriceCatalogue",
    "RunResults",
    "RunStore",
    "Summary",
    "load_config",
    "parse_config",
    "run_comparison",
]

_WHERE = {
    "ComparisonConfig": "run.config",
    "ConfigFileError": "run.config",
    "load_config": "run.config_file",
    "parse_config": "run.config_file",
    "PriceCatalogue": "run.prices",
    "RunResults": "run.results",
    "RunStore": "run.store",
    "ComparisonResult": "pipeline",
    "run_comparison": "pipeline",
    "Summary": "analysis.summary",
}


def __getattr__(name: str) -> Any:
    if name in _WHERE:
        return getattr(importlib.import_module(f"derm_cloud.compare.{_WHERE[name]}"), name)
    raise AttributeError(f"module 'derm_cloud.compare' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(__all__)

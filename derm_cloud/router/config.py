"""Build a `Router` from the `[[backends]]` entries the comparator reads.

The file is parsed and validated by `derm_cloud.compare.run.config_file` (same keys, same errors with line
numbers) and each entry is built by the comparator's own `prepare`, which
starts an emulator for `emulate = true`. So the backends an architect compared offline are, entry for entry,
the deployments an engineer routes across:

```python
router = router_from_config("compare.toml", deployments=["sagemaker", "local"], shadow="vertex")
```

It builds on the comparator, so it stands on the comparator's layer, above the rest of the router (which
imports nothing of it): import it from here, not from `derm_cloud.router`.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from derm_cloud.errors import ConfigError

if TYPE_CHECKING:
    from derm_cloud.router.core import Router

__all__ = ["router_from_config"]


def router_from_config(
    source: str | os.PathLike[str] | Mapping[str, Any],
    *,
    deployments: Sequence[str] | None = None,
    groups: Mapping[str, str] | None = None,
    shadow: str | None = None,
    shadow_sample_rate: float = 0.1,
    shadow_queue_size: int = 32,
    name: str = "router",
    **router_kwargs: Any,
) -> Router:
    """A router over the config's backends, in file order (or the order of `deployments`).

    Args:
        source: a `.toml`/`.yaml` comparison config path, or the same content as a dict.
        deployments: backend names to route across, in fallback order; default: every backend but `shadow`.
        groups: backend name -> group for load balancing equivalent deployments.
        shadow: backend name to run as the shadow (see `ShadowComparison`).
        shadow_sample_rate, shadow_queue_size: the shadow's sampling share and queue bound.
        name: the router's name.
        **router_kwargs: `policy`, `hedge`, `telemetry`, `max_workers` for `Router`.

    Raises:
        ConfigFileError: the file is invalid (the message names the key and its line).
        ConfigError: a name in `deployments`, `groups` or `shadow` is not a backend of the file.
    """
    from derm_cloud.compare.run.backends import prepare
    from derm_cloud.compare.run.config_file import load_config, parse_config
    from derm_cloud.router.core import Router
    from derm_cloud.router.policy import Deployment
    from derm_cloud.router.shadow import ShadowComparison

    cfg = parse_config(source) if isinstance(source, Mapping) else load_config(Path(source))
    by_name = {b.name: b for b in cfg.backends}
    wanted = list(deployments) if deployments is not None else [n for n in by_name if n != shadow]
    for label, names in (
        ("deployments", wanted),
        ("groups", list(groups or {})),
        ("shadow", [shadow] if shadow else []),
    ):
        unknown = [n for n in names if n not in by_name]
        if unknown:
            raise ConfigError(f"{label}: {', '.join(unknown)} not among the config's backends ({', '.join(by_name)})")
    if not wanted:
        raise ConfigError("the router needs at least one deployment besides the shadow")
    default_timeout = float(cfg.scenario_defaults.get("request_timeout_s", 60.0))
    runtimes: list[Any] = []
    try:
        deps = []
        for backend in wanted:
            rt = prepare(by_name[backend], default_timeout)
            runtimes.append(rt)
            deps.append(Deployment(backend, rt.classifier, group=(groups or {}).get(backend)))
        shadow_cmp = None
        if shadow:
            rt = prepare(by_name[shadow], default_timeout)
            runtimes.append(rt)
            shadow_cmp = ShadowComparison(
                rt.classifier, name=shadow, sample_rate=shadow_sample_rate, queue_size=shadow_queue_size
            )
        emulators = [rt.emulator for rt in runtimes if rt.emulator is not None]
        return Router(deps, name=name, shadow=shadow_cmp, owns=[_Stopper(e) for e in emulators], **router_kwargs)
    except BaseException:
        for rt in runtimes:
            rt.close()
        raise


class _Stopper:
    """Closes an emulator started for the router (emulators have `stop`, the router calls `close`)."""

    def __init__(self, emulator: Any) -> None:
        self.emulator = emulator

    def close(self) -> None:
        self.emulator.stop()

"""The deployments behind one emulated Azure ML endpoint, and how requests without a deployment header are routed.

Azure ML splits an endpoint's traffic between deployments by percentage. The emulator routes with a smooth
weighted round robin (as nginx does): deterministic, with exact shares over every sum-of-weights requests.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from derm_cloud.serving import ModelServer
    from derm_cloud.testing.emulators.base import Response

__all__ = ["Deployment", "Deployments"]


@dataclass
class Deployment:
    """One deployment: a model server (or a function of the request body), its SKU and its traffic share in %."""

    name: str
    server: ModelServer | None
    respond: Callable[[bytes], Response] | None
    instance_type: str
    instance_count: int
    traffic: int = 0
    _credit: int = field(default=0, repr=False)


class Deployments:
    """The endpoint's deployments by name, with the traffic split (thread-safe)."""

    def __init__(self) -> None:
        self._by_name: dict[str, Deployment] = {}
        self._lock = threading.Lock()

    def add(self, deployment: Deployment) -> None:
        self._by_name[deployment.name] = deployment

    def get(self, name: str) -> Deployment | None:
        return self._by_name.get(name)

    def values(self) -> list[Deployment]:
        return list(self._by_name.values())

    def __iter__(self) -> Iterator[str]:
        return iter(self._by_name)

    def set_traffic(self, traffic: Mapping[str, int]) -> None:
        """Set the split, e.g. `{"blue": 90, "green": 10}` (deployments not named get 0).

        Raises:
            ValueError: a name is not a deployment.
        """
        unknown = sorted(set(traffic) - set(self._by_name))
        if unknown:
            raise ValueError(f"no deployment(s) named {unknown}")
        with self._lock:
            for d in self._by_name.values():
                d.traffic, d._credit = int(traffic.get(d.name, 0)), 0

    def pick(self) -> Deployment | None:
        """The deployment that serves the next request (`None` when no deployment has traffic)."""
        # Smooth weighted round robin (nginx): exact shares over every sum-of-weights requests, no randomness.
        with self._lock:
            live = [d for d in self._by_name.values() if d.traffic > 0]
            if not live:
                return None
            for d in live:
                d._credit += d.traffic
            best = max(live, key=lambda d: d._credit)
            best._credit -= sum(d.traffic for d in live)
            return best

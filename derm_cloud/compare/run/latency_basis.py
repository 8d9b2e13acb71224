"""Where a backend computes its answer, and so what its latency measures: a plain rule over its recorded facts.

The run stage uses it to time backends that compute on this machine one at a time
(`derm_cloud.compare.run.facts.computes_here`); the analysis uses it to label each backend's latency (an
emulator's latency is the emulator's, never the provider's). Both read it here, so the analysis needs nothing
from the run stage but its results and plain values.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from derm_cloud.backends._http import is_loopback

__all__ = ["LATENCY_BASES", "latency_basis"]

#: What a backend's latency measures, by where its answer is computed (the report prints the label).
LATENCY_BASES = {
    "emulator": "127.0.0.1 emulator, not the provider",
    "local": "local model on this machine",
    "loopback": "endpoint on this machine (loopback address)",
    "remote": "the provider's endpoint, over the network",
}


def latency_basis(facts: Mapping[str, Any]) -> str:
    """`emulator`, `local`, `loopback` or `remote`: where the backend described by `facts` computes its answer.

    `facts` is a backend's `describe()` as a dict (or what `backend_facts` records): `emulated` (a derm-cloud
    emulator stood in for the cloud), `provider == "local"` (a local model), and `endpoint` (a loopback host).
    """
    if facts.get("emulated"):
        return "emulator"
    if facts.get("provider") == "local":
        return "local"
    return "loopback" if is_loopback(facts.get("endpoint")) else "remote"

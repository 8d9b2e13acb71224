"""The embedder a probe or zero-shot folder records: what to write down, and whether it can still be called.

`probe.json` (`derm-cloud probe fit`) and `zero_shot.json` (`derm-cloud probe zero-shot`) both record the embedder
they were made through: its registry name, options, model id and dimension. Neither records a key, nor an
emulator's address (127.0.0.1 and a port that changes from run to run, dead once the emulator stops): a folder
made through an emulator records `"emulated": true` and the endpoint's identity (`endpoint_id`, `project`, ...),
and is compared with `emulate = true`, which starts the emulator again and passes its address.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from derm_cloud.errors import ModelSpecError

__all__ = ["ADDRESS_OPTIONS", "check_recorded_endpoint", "made_through_emulator", "recordable_options"]

_SECRET_OPTIONS = frozenset({"key", "api_key", "token", "access_token", "credential", "credentials", "password"})
#: Embedder options that say where the endpoint is (Vertex REST or gRPC, an Azure ML scoring URI).
ADDRESS_OPTIONS = frozenset({"api_endpoint", "channel", "scoring_uri"})


def _loopback_url(value: Any) -> bool:
    from derm_cloud.backends._http import is_loopback

    return isinstance(value, str) and "://" in value and is_loopback(value)


def recordable_options(options: Mapping[str, Any]) -> dict[str, Any]:
    """The embedder options worth recording: no secret, no emulator's address (127.0.0.1 and an ephemeral port)."""
    return {k: v for k, v in options.items() if k not in _SECRET_OPTIONS and not _loopback_url(v)}


def made_through_emulator(recorded: Mapping[str, Any]) -> bool:
    """`"emulated": true`, or (a folder written before that key) an emulator's address among the options."""
    options = recorded.get("options") or {}
    return bool(recorded.get("emulated")) or any(_loopback_url(v) for v in options.values())


def _unreachable_loopback(options: Mapping[str, Any]) -> str | None:
    """The first loopback URL among `options` that nothing listens on (a stopped emulator), else `None`."""
    import socket
    from urllib.parse import urlsplit

    for value in options.values():
        if _loopback_url(value):
            parts = urlsplit(value)
            try:
                socket.create_connection((parts.hostname or "127.0.0.1", parts.port or 80), timeout=1.0).close()
            except OSError:
                return str(value)
    return None


def check_recorded_endpoint(made: str, spec_file: str, recorded: Mapping[str, Any], options: Mapping[str, Any]) -> None:
    """Refuse, naming the fix, to create an embedder whose emulated endpoint is gone.

    Args:
        made: what the folder is and how it was made, for the message ("the probe in X was fitted").
        spec_file: the file that records the embedder (`probe.json`, `zero_shot.json`), for the message.
        recorded: the folder's `embedder` entry.
        options: the options the embedder would be created with (recorded ones, then those given).

    Raises:
        ModelSpecError: the folder was made through an emulator and `options` name no address to call, or the
            address they name is an emulator that no longer listens.
    """
    fix = (
        "compare it with `emulate = true` on its [[backends]] entry (the comparator starts the "
        f"{recorded['name']} emulator hosting the stand-in encoder and points the embedder at it), or pass "
        "embedder_options with the address of a running emulator"
    )
    if recorded.get("emulated") and not ADDRESS_OPTIONS & set(options):
        raise ModelSpecError(
            f"{made} through an emulated {recorded['name']} endpoint (a stand-in encoder on 127.0.0.1, stopped "
            f"since), so {spec_file} records no address to call: {fix}"
        )
    gone = _unreachable_loopback(options)
    if gone is not None:
        raise ModelSpecError(f"{made} on {gone}, where no emulator listens any more: {fix}")

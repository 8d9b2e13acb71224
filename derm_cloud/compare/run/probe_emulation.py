"""`emulate = true` for a backend made of an embedder and a head (`probe`): start the embedder's emulator.

A probe folder names its embedder (`vertex-medsiglip`, `vertex-derm-foundation`, `azure-medimageinsight`); the
comparator starts that endpoint's emulator hosting the stand-in encoder (`model_dir`, default: sklesion cut at
its penultimate layer, as `derm-cloud emulate` hosts) and creates the probe with embedder options pointing at it.
The options are built from a picklable view of the emulator (`derm_cloud.compare.run.emulation.capture`), so a
Ray worker builds the same probe through the real SDK client against the same 127.0.0.1 port.

A head means something only in the embedding space it was trained in: a probe fitted on the provider's endpoint
is refused here (a stand-in encoder gives other vectors), and so is a stand-in whose dimension is not the head's.

Example:
    >>> emu = start_embedding_emulator(cfg)  # doctest: +SKIP
    >>> clf = build_probe(capture("probe", emu), {"model_dir": "runs/probe-medsiglip"})  # doctest: +SKIP
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from derm_cloud.errors import ConfigError

if TYPE_CHECKING:
    from derm_cloud.base import Classifier
    from derm_cloud.compare.run.config import BackendConfig

__all__ = ["EMBEDDING_BACKENDS", "build_probe", "embedder_overrides", "start_embedding_emulator"]

#: Backend types whose emulator is their embedder's (the `model_dir` option names a probe folder).
EMBEDDING_BACKENDS = frozenset({"probe"})
#: The stand-in encoder an embedding emulator hosts when the config names none (`derm-cloud emulate`'s default).
DEFAULT_STAND_IN = "sklesion"


def _probe_spec(cfg: BackendConfig) -> dict[str, Any]:
    from derm_cloud.backends.probe import read_probe_spec

    folder = cfg.options.get("model_dir")
    if not folder:
        raise ConfigError(f"backend {cfg.name!r}: a probe needs options.model_dir (the folder `probe fit` wrote)")
    return read_probe_spec(folder)


def _fitted_on_emulator(recorded: Mapping[str, Any]) -> bool:
    """`"emulated": true`, or (a folder written before that key) an emulator's address among the options."""
    from derm_cloud.backends._http import is_loopback

    options = recorded.get("options") or {}
    return bool(recorded.get("emulated")) or any(
        isinstance(v, str) and "://" in v and is_loopback(v) for v in options.values()
    )


def start_embedding_emulator(cfg: BackendConfig) -> Any:
    """Start the emulator of the probe's embedder hosting the stand-in encoder; check it fits the head.

    Raises:
        ConfigError: the embedder has no emulator, the probe was fitted on the provider's endpoint, or the
            stand-in's dimension is not the head's; each names the fix.
    """
    from derm_cloud.embedders.local_onnx import resolve_embedder_dir
    from derm_cloud.testing.launch import EMULATED_EMBEDDER_TYPES, start

    recorded = _probe_spec(cfg)["embedder"]
    kind = str(recorded["name"])
    if kind not in EMULATED_EMBEDDER_TYPES:
        raise ConfigError(
            f"backend {cfg.name!r}: its probe embeds with {kind!r}, which has no emulator (emulated embedders: "
            f"{', '.join(sorted(EMULATED_EMBEDDER_TYPES))}); drop emulate = true"
        )
    if not _fitted_on_emulator(recorded):
        raise ConfigError(
            f"backend {cfg.name!r}: its probe was fitted on the provider's {kind} endpoint; an emulator's stand-in "
            "encoder gives other embeddings, so its head would mean nothing there. Drop emulate = true (and give "
            "credentials through the environment), or fit a probe through the emulator"
        )
    encoder = resolve_embedder_dir(cfg.model_dir or DEFAULT_STAND_IN)
    transport = cfg.emulator.get("transport")
    if kind.startswith("vertex-"):
        emulator = _start_vertex(kind, encoder, recorded.get("options") or {}, transport)
    else:
        emulator = start(kind, encoder, options={}, transport=transport)
    try:
        _check_dimension(cfg.name, emulator, int(recorded["dimension"]), encoder)
    except BaseException:
        emulator.stop()
        raise
    emulator.derm_embedder = kind
    return emulator


def _start_vertex(kind: str, encoder: Any, options: Mapping[str, Any], transport: str | None) -> Any:
    """The Vertex emulator serving the probe's own endpoint name: the embedder's model id is then the recorded one."""
    from derm_cloud.backends.gcp_vertex import _parse_endpoint
    from derm_cloud.testing.emulators.vertex_embeddings import VertexEmbeddingEmulator

    project, location, endpoint_id = _parse_endpoint(
        str(options.get("endpoint_id", "2345678901")), options.get("project"), options.get("location", "us-central1")
    )
    grpc = (transport or options.get("transport") or "rest") == "grpc"
    emulator = VertexEmbeddingEmulator(
        encoder,
        serving_api=kind.removeprefix("vertex-"),  # type: ignore[arg-type]
        project=project or "derm-cloud-test",
        location=location,
        endpoint_id=endpoint_id,
        grpc=grpc,
    )
    emulator.start()
    emulator.derm_transport = "grpc" if grpc else "rest"  # type: ignore[attr-defined]
    return emulator


def _check_dimension(name: str, emulator: Any, wanted: int, encoder: Any) -> None:
    hosted = getattr(emulator, "embedding_endpoints", None)
    encoders = [e.encoder for e in hosted.values()] if hosted else list(getattr(emulator, "encoders", {}).values())
    for enc in encoders:
        if enc.dimension != wanted:
            raise ConfigError(
                f"backend {name!r}: the stand-in encoder {encoder} gives {enc.dimension} values, the probe's head "
                f"takes {wanted}: set model_dir to the encoder the probe was fitted through"
            )


def embedder_overrides(view: Mapping[str, Any]) -> dict[str, Any]:
    """Embedder options that point the probe's embedder at the emulator of `view` (anonymous or its test key)."""
    kind = view.get("embedder", "")
    if kind.startswith("vertex-"):
        from google.auth.credentials import AnonymousCredentials

        if view.get("transport") == "grpc":
            import grpc

            return {"transport": "grpc", "channel": grpc.insecure_channel(view["grpc_target"])}
        return {"transport": "rest", "api_endpoint": view["url"], "credentials": AnonymousCredentials()}  # type: ignore[no-untyped-call]
    if kind == "azure-medimageinsight":
        return {"scoring_uri": view["scoring_uri"], "key": view["key"]}  # its model id: the host, no port
    raise ConfigError(f"no emulator wiring for embedder {kind!r}")


def build_probe(view: Mapping[str, Any], options: Mapping[str, Any]) -> Classifier:
    """The probe of `options.model_dir`, its embedder pointed at the emulator of `view` (config options win)."""
    from derm_cloud.backends.probe import ProbeClassifier

    opts = dict(options)
    embedder_options = embedder_overrides(view) | dict(opts.pop("embedder_options", None) or {})
    return ProbeClassifier(opts.pop("model_dir"), embedder_options=embedder_options, **opts)

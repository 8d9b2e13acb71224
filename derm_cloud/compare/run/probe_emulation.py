"""`emulate = true` for a backend made of an embedder and a head (`probe`, `zero-shot`): start the embedder's emulator.

A probe folder (`derm-cloud probe fit`) or a zero-shot folder (`derm-cloud probe zero-shot`) names its embedder
(`vertex-medsiglip`, `vertex-derm-foundation`, `azure-medimageinsight`); a zero-shot backend without a folder names
it in its options (`embedder`, `embedder_options`). The comparator starts that endpoint's emulator hosting the
stand-in encoder (`model_dir`, default: sklesion cut at its penultimate layer, as `derm-cloud emulate` hosts) and
creates the backend with embedder options pointing at it. The options are built from a picklable view of the
emulator (`derm_cloud.compare.run.emulation.capture`), so a Ray worker builds the same backend through the real SDK
client against the same 127.0.0.1 port.

What the folder learnt from the embedder (a probe's head, a zero-shot folder's prompt embeddings) means something
only in that embedding space: a folder made on the provider's endpoint is refused here (a stand-in encoder gives
other vectors), and so is a stand-in whose dimension is not the recorded one.

Example:
    >>> emu = start_embedding_emulator(cfg)  # doctest: +SKIP
    >>> clf = build_embedding_backend(capture("probe", emu), {"model_dir": "runs/probe-medsiglip"})  # doctest: +SKIP
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from derm_cloud.errors import ConfigError

if TYPE_CHECKING:
    from derm_cloud.base import Classifier
    from derm_cloud.compare.run.config import BackendConfig

__all__ = ["EMBEDDING_BACKENDS", "build_embedding_backend", "embedder_overrides", "start_embedding_emulator"]

#: Backend types whose emulator is their embedder's (`model_dir` in their options names their folder).
EMBEDDING_BACKENDS = frozenset({"probe", "zero-shot"})
#: The stand-in encoder an embedding emulator hosts when the config names none (`derm-cloud emulate`'s default).
DEFAULT_STAND_IN = "sklesion"


@dataclass(frozen=True)
class _Recorded:
    """The embedder a backend of `EMBEDDING_BACKENDS` calls, as its folder (or its options) name it.

    Attributes:
        embedder: `name`, `options` and, from a folder, `dimension`, `model_id` and `emulated`.
        made: how the folder was made, for messages ("its probe was fitted"); `None`: no folder, nothing learnt.
        learnt: what the folder keeps of the embedding space ("head", "prompt embeddings").
    """

    embedder: Mapping[str, Any]
    made: str | None
    learnt: str


def _recorded(cfg: BackendConfig) -> _Recorded:
    folder = cfg.options.get("model_dir")
    if cfg.type == "probe":
        from derm_cloud.backends.probe import read_probe_spec

        if not folder:
            raise ConfigError(f"backend {cfg.name!r}: a probe needs options.model_dir (the folder `probe fit` wrote)")
        return _Recorded(read_probe_spec(folder)["embedder"], "its probe was fitted", "head")
    if folder:
        from derm_cloud.backends.zero_shot import read_zero_shot_folder

        embedder = read_zero_shot_folder(folder)[0]["embedder"]
        return _Recorded(embedder, "its zero-shot folder was written", "prompt embeddings")
    name = cfg.options.get("embedder")
    if not isinstance(name, str):
        raise ConfigError(
            f"backend {cfg.name!r}: zero-shot with emulate = true needs options.model_dir (a folder `derm-cloud probe "
            "zero-shot` wrote) or options.embedder (vertex-medsiglip or azure-medimageinsight)"
        )
    return _Recorded({"name": name, "options": dict(cfg.options.get("embedder_options") or {})}, None, "")


def start_embedding_emulator(cfg: BackendConfig) -> Any:
    """Start the emulator of the backend's embedder hosting the stand-in encoder; check it fits the folder.

    Raises:
        ConfigError: the embedder has no emulator, the folder was made on the provider's endpoint, or the
            stand-in's dimension is not the recorded one; each names the fix.
    """
    from derm_cloud.backends.recorded_embedder import made_through_emulator
    from derm_cloud.embedders.local_onnx import resolve_embedder_dir
    from derm_cloud.testing.launch import EMULATED_EMBEDDER_TYPES, start

    recorded = _recorded(cfg)
    kind = str(recorded.embedder["name"])
    if kind not in EMULATED_EMBEDDER_TYPES:
        raise ConfigError(
            f"backend {cfg.name!r}: it embeds with {kind!r}, which has no emulator (emulated embedders: "
            f"{', '.join(sorted(EMULATED_EMBEDDER_TYPES))}); drop emulate = true"
        )
    if recorded.made is not None and not made_through_emulator(recorded.embedder):
        raise ConfigError(
            f"backend {cfg.name!r}: {recorded.made} on the provider's {kind} endpoint; an emulator's stand-in "
            f"encoder gives other embeddings, so its {recorded.learnt} would mean nothing there. Drop emulate = true "
            "(and give credentials through the environment), or make it again through the emulator"
        )
    encoder = resolve_embedder_dir(cfg.model_dir or DEFAULT_STAND_IN)
    if cfg.type == "zero-shot":
        _check_text_tower(cfg.name, encoder)
    transport = cfg.emulator.get("transport")
    if kind.startswith("vertex-"):
        emulator = _start_vertex(kind, encoder, recorded.embedder.get("options") or {}, transport)
    else:
        emulator = start(kind, encoder, options={}, transport=transport)
    try:
        if recorded.embedder.get("dimension") is not None:
            _check_dimension(cfg.name, emulator, int(recorded.embedder["dimension"]), encoder, recorded.learnt)
    except BaseException:
        emulator.stop()
        raise
    emulator.derm_embedder = kind
    return emulator


def _check_text_tower(name: str, encoder: Any) -> None:
    """Refuse a stand-in whose text tower would be hash vectors: zero-shot scores through it would be noise."""
    from derm_cloud.models.embedder_cut import DROPPED_HEAD_FILE, load_dropped_head

    if load_dropped_head(encoder) is None:
        raise ConfigError(
            f"backend {name!r}: the stand-in encoder {encoder} has no {DROPPED_HEAD_FILE} (it was exported before "
            "derm-cloud kept the cut's head, or is not a cut classifier), so the emulated text tower would answer "
            "prompts with vectors without meaning. Export it again: `derm-cloud models embedder sklesion "
            "--overwrite` (or give model_dir a folder cut by this version)"
        )


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


def _check_dimension(name: str, emulator: Any, wanted: int, encoder: Any, learnt: str) -> None:
    hosted = getattr(emulator, "embedding_endpoints", None)
    encoders = [e.encoder for e in hosted.values()] if hosted else list(getattr(emulator, "encoders", {}).values())
    for enc in encoders:
        if enc.dimension != wanted:
            raise ConfigError(
                f"backend {name!r}: the stand-in encoder {encoder} gives {enc.dimension} values, the folder records "
                f"{wanted} (its {learnt}): set model_dir to the encoder the folder was made through"
            )


def embedder_overrides(view: Mapping[str, Any]) -> dict[str, Any]:
    """Embedder options that point the backend's embedder at the emulator of `view` (anonymous or its test key)."""
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


def build_embedding_backend(view: Mapping[str, Any], options: Mapping[str, Any]) -> Classifier:
    """The probe or zero-shot backend of `options`, its embedder pointed at the emulator of `view`.

    The emulator's address and test key win over `embedder_options` of the config: with `emulate = true` every
    call goes to the emulator, even from a config written for the provider's endpoint (its `scoring_uri`).
    """
    opts = dict(options)
    embedder_options = dict(opts.pop("embedder_options", None) or {}) | embedder_overrides(view)
    if view["kind"] == "zero-shot":
        from derm_cloud.backends.zero_shot import ZeroShotClassifier

        return ZeroShotClassifier(opts.pop("model_dir", None), embedder_options=embedder_options, **opts)
    from derm_cloud.backends.probe import ProbeClassifier

    return ProbeClassifier(opts.pop("model_dir"), embedder_options=embedder_options, **opts)

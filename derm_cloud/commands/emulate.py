"""`derm-cloud emulate`: run cloud emulators on 127.0.0.1 for manual testing or another process's CI."""

from __future__ import annotations

import argparse
import contextlib
import json
import signal
import sys
import threading
from pathlib import Path
from typing import Any, get_args

_KINDS = (
    "sagemaker",
    "azure-custom-vision",
    "azure-ml",
    "vertex",
    "google-vision",
    "azure-openai",
    "vertex-gemini",
    "rekognition-custom-labels",
)
#: Embedding endpoints: started only when named (they host an embedding model, `--embed-model-dir`).
_EMBED_KINDS = ("vertex-medsiglip", "vertex-derm-foundation", "azure-medimageinsight")


def register(sub: Any) -> None:
    p = sub.add_parser(
        "emulate",
        help="run cloud API emulators on 127.0.0.1 hosting a model",
        description=(
            "Start derm-cloud's emulator of each named cloud API on 127.0.0.1, hosting a model directory, and "
            "print, per cloud, the environment variables, names and dummy credentials its SDK needs, and a "
            "snippet for the real SDK and for the derm-cloud backend. Runs until interrupted. Emulators "
            "are for tests: no authentication beyond fixed test keys, no TLS."
        ),
    )
    p.add_argument(
        "clouds",
        nargs="*",
        default=["all"],
        metavar="CLOUD",
        help=f"{', '.join(_KINDS)} or all (classifier APIs); embedding endpoints, only when named: "
        f"{', '.join(_EMBED_KINDS)}",
    )
    p.add_argument("--model-dir", default="sklesion", help="model directory or 'sklesion' (default)")
    p.add_argument(
        "--embed-model-dir",
        default="sklesion",
        help="embedder folder (model.onnx + embedder.json) or its name in the cache, default: sklesion (exported "
        "by `derm-cloud models embedder sklesion`): the embedding endpoints host it as a stand-in for the "
        "provider's model",
    )
    p.add_argument("--transport", choices=["rest", "grpc"], default="rest", help="Vertex transport")
    p.add_argument(
        "--fault",
        action="append",
        default=[],
        metavar="KIND[:TIMES]",
        help="inject a fault into every emulator, e.g. throttle:3, error:1, not_ready:2, drip:1 (repeatable)",
    )
    p.add_argument(
        "--json",
        action="store_true",
        help="print one JSON object per line per emulator: URL, names, dummy keys, env, backend options, snippets",
    )
    p.add_argument("--once", action="store_true", help="print the connection details and stop (smoke test)")
    p.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    from derm_cloud.errors import ConfigError
    from derm_cloud.models.cache import resolve_model_dir
    from derm_cloud.testing.connect import connection, render_text
    from derm_cloud.testing.emulators.base import Fault, FaultKind
    from derm_cloud.testing.launch import start

    kinds = list(_KINDS) if args.clouds in (["all"], []) else args.clouds
    unknown = [k for k in kinds if k not in _KINDS + _EMBED_KINDS]
    if unknown:
        raise ConfigError(f"unknown cloud(s) {unknown}; choose from {', '.join(_KINDS + _EMBED_KINDS)} or all")
    faults = []
    known = get_args(FaultKind)
    for spec in args.fault:
        kind, _, times = spec.partition(":")
        if kind not in known:
            raise ConfigError(f"--fault {spec!r}: unknown fault {kind!r}; choose from {', '.join(known)}")
        try:
            faults.append(Fault(kind, times=int(times or 1)))  # type: ignore[arg-type]
        except ValueError:
            raise ConfigError(f"--fault {spec!r}: TIMES must be a whole number, e.g. throttle:3") from None
    classifier_kinds = [k for k in kinds if k in _KINDS]
    model_dir = resolve_model_dir(args.model_dir) if classifier_kinds else None
    embed_dir = None
    if any(k in _EMBED_KINDS for k in kinds):
        from derm_cloud.embedders.local_onnx import resolve_embedder_dir

        embed_dir = resolve_embedder_dir(args.embed_model_dir)  # a folder, or a name in the cache
        _note_text_tower(kinds, embed_dir)
    running = []
    try:
        for kind in kinds:
            hosted = embed_dir if kind in _EMBED_KINDS else None if kind == "google-vision" else model_dir
            emu = start(kind, hosted, options={}, transport=args.transport)
            running.append(emu)
            for fault in faults:
                emu.inject(fault)
            info = connection(kind, emu)
            print(json.dumps(info) if args.json else render_text(info) + "\n", flush=True)
        if not args.json:
            print(
                "Emulators hold test keys only. Save lesion.jpg beside a snippet to run it; Ctrl-C stops.", flush=True
            )
        if not args.once:
            stop = threading.Event()
            signal.signal(signal.SIGTERM, lambda *_: stop.set())
            with contextlib.suppress(KeyboardInterrupt):
                stop.wait()
    finally:
        for emu in running:
            emu.stop()
    return 0


def _note_text_tower(kinds: list[str], embed_dir: Path) -> None:
    """Say so when the hosted encoder's text tower can only answer with hash vectors (zero-shot would be noise)."""
    from derm_cloud.models.embedder_cut import DROPPED_HEAD_FILE, load_dropped_head

    text_kinds = [k for k in kinds if k in ("vertex-medsiglip", "azure-medimageinsight")]
    if text_kinds and load_dropped_head(embed_dir) is None:
        print(
            f"NOTE: {embed_dir} has no {DROPPED_HEAD_FILE}: {', '.join(text_kinds)} will embed text as vectors "
            "without meaning (images are fine). For zero-shot through the emulator, export the encoder again: "
            "`derm-cloud models embedder sklesion --overwrite`",
            file=sys.stderr,
            flush=True,
        )

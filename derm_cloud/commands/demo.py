"""`derm-cloud demo`: the web demo (Gradio) across backends, on this machine by default."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from derm_cloud.errors import ConfigError

_MAX_SAMPLES = 50


def register(sub: Any) -> None:
    from derm_cloud.demo.backends import DEFAULT_BACKENDS, EMULATED_BACKENDS

    p = sub.add_parser(
        "demo",
        help="web demo: upload a lesion photo and compare backends side by side",
        description=(
            "Start a local web app (Gradio) where a person uploads a lesion photo or picks a sample, chooses "
            "backends and sees their predictions side by side with latency, cost of the call, data handling and "
            "the referral decision. With no options it serves sklesion locally and behind the SageMaker, Azure ML, "
            "Vertex AI and Custom Vision emulators (no credentials). Triage support only, not a diagnosis: a "
            "clinician reviews every result."
        ),
    )
    p.add_argument(
        "--backend",
        "-b",
        action="append",
        choices=("local-onnx", *EMULATED_BACKENDS),
        metavar="NAME",
        help=f"backend to offer, repeatable (default: {', '.join(DEFAULT_BACKENDS)}); cloud names are emulated "
        "in-process and host --model-dir",
    )
    p.add_argument("--model-dir", default="sklesion", help="model directory every backend serves (default sklesion)")
    p.add_argument(
        "--config",
        metavar="FILE",
        help="take the backends from a comparison config's [[backends]] (real endpoints or emulate = true) "
        "instead of --backend",
    )
    p.add_argument(
        "--samples",
        metavar="DIR",
        help="folder of sample images to offer (default: the dermapred example image, fetched from PyPI once)",
    )
    p.add_argument(
        "--monthly-volume",
        type=int,
        default=100_000,
        help="calls per month an always-on endpoint's cost is shared over in each card's cost line (default 100000)",
    )
    p.add_argument("--policy", metavar="FILE", help="referral policy JSON (default: derm-cloud's default rules)")
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1: this machine only)")
    p.add_argument("--port", type=int, default=7860, help="port (default 7860)")
    p.add_argument(
        "--share",
        choices=("true", "false"),
        default="false",
        help="open a public gradio.live link (default false; images then pass through gradio's tunnel servers)",
    )
    p.add_argument("--max-upload-mb", type=float, default=10.0, help="largest upload accepted, in MB (default 10)")
    p.set_defaults(handler=run_demo_command)


def _samples(folder: str | None) -> tuple[list[Path], str]:
    """Sample images and their attribution line."""
    if folder is not None:
        root = Path(folder).expanduser()
        if not root.is_dir():
            raise ConfigError(f"--samples {folder!r} is not a folder; pass a folder of .jpg/.png images")
        found = sorted(p for p in root.iterdir() if p.suffix.lower() in (".jpg", ".jpeg", ".png") and p.is_file())
        if not found:
            raise ConfigError(f"--samples {folder!r} holds no .jpg, .jpeg or .png images")
        note = root / "ATTRIBUTION.txt"
        return found[:_MAX_SAMPLES], note.read_text(encoding="utf-8").strip() if note.is_file() else ""
    from derm_cloud.models.example_image import EXAMPLE_ATTRIBUTION, example_image_dir

    try:
        example = example_image_dir()
    except Exception as exc:  # offline: the demo still works with uploads
        print(f"derm-cloud demo: no sample image ({exc}); upload photos or pass --samples DIR", file=sys.stderr)
        return [], ""
    return sorted(example.glob("*.jpg")), EXAMPLE_ATTRIBUTION


def run_demo_command(args: argparse.Namespace) -> int:
    from derm_cloud.demo.app import DemoSession, private_upload_dir, run_demo
    from derm_cloud.demo.backends import DEFAULT_BACKENDS, backends_from_config, open_backends

    if args.monthly_volume <= 0:
        raise ConfigError(f"--monthly-volume must be positive, got {args.monthly_volume}")
    if args.max_upload_mb <= 0:
        raise ConfigError(f"--max-upload-mb must be positive, got {args.max_upload_mb}")
    if args.config and args.backend:
        raise ConfigError("pass either --config or --backend, not both")
    # Before gradio is imported: its upload folder and telemetry switch are read from the environment.
    upload_dir = private_upload_dir()
    samples, attribution = _samples(args.samples)
    policy = None
    if args.policy:
        from derm_cloud.governance.referral import ReferralPolicy

        policy = ReferralPolicy.load(args.policy)
    from derm_cloud.compare.run.prices import PriceCatalogue

    if args.config:
        backends = backends_from_config(args.config)
    else:
        model_dir = args.model_dir
        if model_dir == "sklesion":
            from derm_cloud.compare.run.defaults import ensure_sklesion

            model_dir = str(ensure_sklesion())
        backends = open_backends(args.backend or DEFAULT_BACKENDS, model_dir=model_dir)
    session = DemoSession(
        backends=backends,
        samples=samples,
        policy=policy,
        catalogue=PriceCatalogue.load(),
        monthly_volume=args.monthly_volume,
        max_upload_bytes=int(args.max_upload_mb * 1024 * 1024),
        upload_root=upload_dir,
        attribution=attribution,
    )
    if args.share == "true":
        print("derm-cloud demo: --share true sends images through gradio's public tunnel servers", file=sys.stderr)

    def ready(url: str) -> None:
        # One parseable line: scripts and the browser test wait for it.
        print(f"derm-cloud demo running on {url} (Ctrl-C to stop)", flush=True)

    run_demo(session, host=args.host, port=args.port, share=args.share == "true", upload_dir=upload_dir, ready=ready)
    return 0

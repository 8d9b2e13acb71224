"""The Gradio app of `derm-cloud demo`: upload or pick a photo, choose backends, compare their answers.

Data handling (what a person uploading a photo needs to know, and what the tests check):

* Gradio writes every upload to its upload folder before any handler runs. The demo points that folder
  (`GRADIO_TEMP_DIR`) at a private directory made for this process (mode 0700), deletes each upload as soon
  as it has been read, deletes within seconds any upload that no handler reads (refused, abandoned, or an empty
  temp file: `UploadReaper`) and removes the folder on exit.
* The image is decoded and its EXIF, GPS, XMP, ICC and comment data dropped (`PreparedImage.upload_bytes`)
  before anything else happens, so no backend, local or remote, ever sees them. The stripped bytes live only in
  the browser session's server-side state (dropped when the tab closes, or after 15 minutes).
* No image is written back to disk: the preview is an inline `data:` URL, results are HTML.
* Gradio's telemetry is switched off (`GRADIO_ANALYTICS_ENABLED=False`) and `share` is off by default.

Every page shows that this is not a diagnosis and that a clinician reviews every result.

Example:
    >>> from derm_cloud.demo.backends import open_backends
    >>> backends = open_backends(["local-onnx"], model_dir="sklesion")  # doctest: +SKIP
    >>> demo = build_demo(backends, samples=[])  # doctest: +SKIP
    >>> demo.launch(server_port=7860)  # doctest: +SKIP
"""

from __future__ import annotations

import base64
import contextlib
import io
import os
import shutil
import signal
import tempfile
import threading
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from derm_cloud.demo.reaper import UploadReaper
from derm_cloud.demo.render import (
    DEFAULT_MONTHLY_VOLUME,
    DISCLAIMER,
    BackendResult,
    render_error,
    render_results,
    render_status,
)
from derm_cloud.errors import ConfigError, DermCloudError, InvalidImageError
from derm_cloud.images import ImageLimits, load_image

if TYPE_CHECKING:
    from derm_cloud.compare.run.prices import PriceCatalogue
    from derm_cloud.demo.backends import DemoBackends
    from derm_cloud.governance.referral import ReferralPolicy

__all__ = [
    "ALLOWED_SUFFIXES",
    "DEFAULT_MAX_UPLOAD_BYTES",
    "DemoSession",
    "build_demo",
    "private_upload_dir",
    "run_demo",
]

DEFAULT_MAX_UPLOAD_BYTES = 10 * 1024 * 1024
ALLOWED_SUFFIXES = (".jpg", ".jpeg", ".png")
_ALLOWED_FORMATS = ("JPEG", "MPO", "PNG")  # MPO: phone JPEGs with a depth map; decoded as JPEG
_SESSION_TTL_S = 15 * 60
# HAM10000 localization values (what sklesion's metadata encoder understands).
SITES = (
    "abdomen",
    "acral",
    "back",
    "chest",
    "ear",
    "face",
    "foot",
    "genital",
    "hand",
    "lower extremity",
    "neck",
    "scalp",
    "trunk",
    "upper extremity",
)
_CSS = """
.dc-cards {display: flex; flex-wrap: wrap; gap: 12px;}
.dc-card {border: 1px solid #ccc; border-radius: 8px; padding: 10px; min-width: 240px; flex: 1;}
.dc-card h3 {margin: 0 0 4px 0;}
.dc-service {font-size: 0.85em; color: #555; margin-bottom: 6px;}
.dc-top td {padding: 2px 8px 2px 0;}
.dc-prob {text-align: right; font-variant-numeric: tabular-nums;}
.dc-error, .dc-backend-error {color: #a00000;}
.dc-referral {margin-top: 12px; padding: 10px; border-radius: 8px; background: #fff6e0;}
.dc-referral[data-refer="false"] {background: #eef7ee;}
.dc-disclaimer, .dc-banner {padding: 8px; border-left: 4px solid #a00000; background: #fff0f0;}
"""


@dataclass
class DemoSession:
    """What the app's handlers need: backends, samples, policy, prices and limits.

    Attributes:
        backends: the live backends, in display order.
        samples: sample images offered in the picker (read from disk, never deleted).
        policy: the referral rules.
        catalogue: prices for the cost of each call (`None`: costs show as unknown).
        monthly_volume: calls per month an always-on endpoint's monthly cost is shared over.
        max_upload_bytes: largest upload accepted.
        upload_root: gradio's upload folder; only files inside it are deleted after reading.
        attribution: credit line for the samples, shown under the picker.
    """

    backends: DemoBackends
    samples: list[Path] = field(default_factory=list)
    policy: ReferralPolicy | None = None
    catalogue: PriceCatalogue | None = None
    monthly_volume: int = DEFAULT_MONTHLY_VOLUME
    max_upload_bytes: int = DEFAULT_MAX_UPLOAD_BYTES
    upload_root: Path | None = None
    attribution: str = ""

    @property
    def limits(self) -> ImageLimits:
        return ImageLimits(max_bytes=self.max_upload_bytes)

    # --- handlers (plain functions of plain values, so they are testable without a browser) ---------------------

    def accept_upload(self, path: str | None) -> tuple[bytes | None, str, str]:
        """Read an upload, delete gradio's copy, validate it and strip its metadata.

        Returns:
            `(stripped_bytes or None, status_html, preview_html)`.
        """
        if not path:
            return None, render_status("No image yet: upload a photo or pick a sample.", ok=False), ""
        try:
            data = self._read_limited(Path(path))
        except InvalidImageError as exc:
            return None, render_error(str(exc)), ""
        finally:
            self._discard(Path(path))
        return self._accept_bytes(data, Path(path).name)

    def accept_sample(self, name: str | None) -> tuple[bytes | None, str, str]:
        """Load one of the offered samples (by file name) like an upload, without deleting it."""
        chosen = next((p for p in self.samples if p.name == name), None)
        if chosen is None:
            return None, render_error(f"no sample named {name!r}; pick one from the list"), ""
        try:
            data = self._read_limited(chosen)
        except InvalidImageError as exc:
            return None, render_error(str(exc)), ""
        return self._accept_bytes(data, chosen.name)

    def classify(
        self,
        image: bytes | None,
        chosen: Sequence[str] | None,
        age: str | float | None,
        sex: str | None,
        site: str | None,
    ) -> str:
        """Call each chosen backend (one after another, so latencies do not compete) and render the results."""
        from derm_cloud.governance.referral import ReferralPolicy
        from derm_cloud.types import PatientMetadata

        if image is None:
            return render_error("upload a photo (JPEG or PNG) or pick a sample first", "Nothing to classify")
        if not chosen:
            return render_error("choose at least one backend", "Nothing to classify")
        text = str(age).strip() if age is not None else ""
        try:
            years = float(text) if text else None
        except ValueError:
            return render_error(f"age must be a number of years (or empty), got {text!r}", "Check the details")
        try:
            meta = PatientMetadata(age=years, sex=sex or "unknown", site=site or None)
        except ConfigError as exc:
            return render_error(str(exc), "Check the details")
        results = []
        for name in chosen:
            backend = self.backends.get(name)
            try:
                prediction = backend.classifier.predict(image, meta)
            except DermCloudError as exc:
                results.append(BackendResult(name, backend.info, error=f"{type(exc).__name__}: {exc}"))
            else:
                results.append(BackendResult(name, backend.info, prediction))
        policy = self.policy or ReferralPolicy()
        answered = [r.prediction for r in results if r.prediction is not None]
        decision = policy.evaluate(answered) if answered else None
        return render_results(
            results,
            decision,
            policy_text=policy.describe(),
            catalogue=self.catalogue,
            monthly_volume=self.monthly_volume,
        )

    # --- helpers -------------------------------------------------------------------------------------------------

    def _read_limited(self, path: Path) -> bytes:
        limit_mb = self.max_upload_bytes / (1024 * 1024)
        if path.suffix.lower() not in ALLOWED_SUFFIXES:
            raise InvalidImageError(
                f"{path.name!r} is not a JPEG or PNG file; upload a .jpg, .jpeg or .png photo of the lesion"
            )
        try:
            size = path.stat().st_size
        except OSError:
            raise InvalidImageError("the upload is gone (it is deleted after use); upload it again") from None
        if size > self.max_upload_bytes:
            raise InvalidImageError(
                f"the file is {size / (1024 * 1024):.1f} MB; the limit is {limit_mb:g} MB. Downscale or crop the "
                "photo to the lesion and upload it again"
            )
        return path.read_bytes()

    def _accept_bytes(self, data: bytes, name: str) -> tuple[bytes | None, str, str]:
        try:
            prepared = load_image(data, limits=self.limits)
            if prepared.source_format not in _ALLOWED_FORMATS:
                raise InvalidImageError(
                    f"{name!r} is a {prepared.source_format} image with a JPEG/PNG name; upload a real JPEG or PNG"
                )
            stripped, _mime = prepared.upload_bytes(formats=("JPEG", "PNG"))
        except InvalidImageError as exc:
            return None, render_error(str(exc)), ""
        removed = ", ".join(sorted(prepared.had_metadata)) or "none found"
        width, height = prepared.size
        status = render_status(
            f"Image accepted: {width}x{height} {prepared.source_format}. Metadata removed before any backend saw it: "
            f"{removed}. The upload file was deleted; the stripped image stays in this session's memory only."
        )
        return stripped, status, _preview(prepared.image)

    def _discard(self, path: Path) -> None:
        """Delete an upload (and its per-file folder) when it is inside gradio's upload folder."""
        if self.upload_root is None:
            return
        root = self.upload_root.resolve()
        target = path.resolve()
        if root not in target.parents:
            return  # never delete anything outside the upload folder (a sample, a user's file)
        with contextlib.suppress(OSError):
            target.unlink()
        with contextlib.suppress(OSError):
            if target.parent != root:
                target.parent.rmdir()


def _preview(image: Any) -> str:
    """A small inline JPEG of the stripped image (a data: URL, so nothing is written to disk)."""
    thumb = image.copy()
    thumb.thumbnail((256, 256))
    buf = io.BytesIO()
    thumb.save(buf, format="JPEG", quality=85)
    encoded = base64.b64encode(buf.getvalue()).decode("ascii")
    return f'<img class="dc-preview" alt="the image as the backends receive it" src="data:image/jpeg;base64,{encoded}">'


def private_upload_dir() -> Path:
    """Make a private (0700) upload folder and point gradio at it; call before gradio builds an app.

    Also switches gradio's telemetry off. Returns the folder; `run_demo` removes it on exit.
    """
    folder = Path(tempfile.mkdtemp(prefix="derm-cloud-demo-"))
    os.chmod(folder, 0o700)
    os.environ["GRADIO_TEMP_DIR"] = str(folder)
    os.environ["GRADIO_ANALYTICS_ENABLED"] = "False"
    return folder


def build_demo(session: DemoSession) -> Any:
    """The `gradio.Blocks` app over `session` (not launched).

    Raises:
        MissingDependencyError: gradio is not installed (`pip install 'derm-cloud[demo]'`).
    """
    os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
    try:
        import gradio as gr
    except ImportError as exc:
        from derm_cloud.errors import MissingDependencyError

        raise MissingDependencyError("the demo needs gradio; run: pip install 'derm-cloud[demo]'") from exc

    limit_mb = session.max_upload_bytes / (1024 * 1024)
    names = session.backends.names
    with gr.Blocks(title="derm-cloud demo", analytics_enabled=False, delete_cache=(60, 60)) as demo:
        gr.Markdown(
            "# derm-cloud: one lesion photo, several providers\n"
            "The same skin-lesion model on this machine and behind each cloud's API, side by side."
        )
        gr.HTML(f'<div class="dc-banner" id="dc-banner" role="note"><b>{DISCLAIMER}</b></div>')
        image_state = gr.State(None, time_to_live=_SESSION_TTL_S)
        with gr.Row():
            with gr.Column():
                # No file_types: gradio would refuse other files itself, before our handler, and leave them on
                # disk; accept_upload refuses them with a message and deletes them at once.
                upload = gr.File(
                    label=f"Lesion photo (JPEG or PNG, up to {limit_mb:g} MB)",
                    type="filepath",
                    elem_id="dc-upload",
                )
                sample = gr.Dropdown(
                    choices=[p.name for p in session.samples],
                    value=session.samples[0].name if session.samples else None,
                    label="...or a sample image" if session.samples else "No samples (start with --samples DIR)",
                    interactive=bool(session.samples),
                    elem_id="dc-sample",
                )
                use_sample = gr.Button("Use this sample", interactive=bool(session.samples), elem_id="dc-use-sample")
                if session.attribution:
                    gr.Markdown(f"<small>{session.attribution}</small>")
                status = gr.HTML(render_status("No image yet: upload a photo or pick a sample.", ok=False))
                preview = gr.HTML("", elem_id="dc-preview")
            with gr.Column():
                chosen = gr.CheckboxGroup(choices=names, value=names, label="Backends", elem_id="dc-backends")
                with gr.Row():
                    # A Textbox, not gr.Number: an empty Number shows and sends 0, which would mean a newborn.
                    age = gr.Textbox(label="Age (years, optional)", value="", placeholder="e.g. 45", elem_id="dc-age")
                    sex = gr.Radio(["unknown", "female", "male"], value="unknown", label="Sex")
                site = gr.Dropdown(["", *SITES], value="", label="Body site (optional)")
                classify = gr.Button("Classify", variant="primary", elem_id="dc-classify")
        results = gr.HTML("", elem_id="dc-results-box")
        gr.Markdown(
            "<small>Nothing is stored: uploads are deleted as soon as they are read and their EXIF/GPS data is "
            "removed before any backend sees them. Emulated backends run on this machine (127.0.0.1) through each "
            "cloud's real SDK; they host the same model, so differences between columns are the provider's API, "
            "not the model.</small>"
        )

        upload.upload(session.accept_upload, inputs=upload, outputs=[image_state, status, preview]).then(
            lambda: None, outputs=upload
        )
        use_sample.click(session.accept_sample, inputs=sample, outputs=[image_state, status, preview])
        classify.click(session.classify, inputs=[image_state, chosen, age, sex, site], outputs=results)
    return demo


def _interrupt(signum: int, frame: Any) -> None:
    raise KeyboardInterrupt


def run_demo(
    session: DemoSession,
    *,
    host: str = "127.0.0.1",
    port: int = 7860,
    share: bool = False,
    upload_dir: Path | None = None,
    ready: Any = None,
) -> None:
    """Build, launch and serve the app until Ctrl-C; then close the backends and delete the upload folder.

    Args:
        session: the handlers' state (`session.upload_root` should be `upload_dir`).
        host, port: where to listen (`127.0.0.1` keeps the demo on this machine).
        share: open a public gradio.live tunnel (images then travel through gradio's servers).
        upload_dir: the folder from `private_upload_dir`, removed on exit.
        ready: called with the local URL once the server answers (used by the CLI to print it).
    """
    demo = build_demo(session)
    reaper = UploadReaper(upload_dir).start() if upload_dir is not None else None
    try:
        demo.launch(
            server_name=host,
            server_port=port,
            share=share,
            max_file_size=session.max_upload_bytes,
            show_error=True,
            quiet=True,
            prevent_thread_lock=True,
            run_history=False,  # gradio would otherwise keep every run (results, inputs) in the browser
            css=_CSS,
        )
        if ready is not None:
            ready(demo.local_url)
        if threading.current_thread() is threading.main_thread():
            # SIGTERM (a service manager, `timeout`) must clean up like Ctrl-C: delete the upload folder.
            signal.signal(signal.SIGTERM, _interrupt)
        demo.block_thread()
    finally:
        if reaper is not None:
            reaper.stop()
        with contextlib.suppress(Exception):
            demo.close()
        session.backends.close()
        if upload_dir is not None:
            shutil.rmtree(upload_dir, ignore_errors=True)

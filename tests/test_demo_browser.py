"""The web demo end to end in headless Chromium, plus its handlers in-process.

The browser tests start ``derm-cloud demo`` in a subprocess on a free port with a tiny model served locally and
behind two cloud emulators, drive the system Chromium through Playwright (no browser download: CI installs
Debian's ``chromium``), upload a real HAM10000 dev image (HAM10000, Tschandl et al. 2018, CC BY-NC 4.0; read
from ../shared/data, never copied), read the rendered predictions and compare them with the library's own
answer, and check that bad uploads show a clear error and that no upload is left on disk.
"""

from __future__ import annotations

import io
import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from tests_helpers import dev_image, dev_rows

CHROMIUM = os.environ.get("DERM_CLOUD_CHROMIUM", "/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
BACKENDS = ["local-onnx", "sagemaker", "vertex"]
LABELS = ["local-onnx", "sagemaker (emulated)", "vertex (emulated)"]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _expected_top3(model_dir: Path, image: Path) -> list[tuple[str, float]]:
    import derm_cloud

    with derm_cloud.create("local-onnx", model_dir=str(model_dir)) as clf:
        return [(s.label, s.score) for s in clf.predict(image).top(3)]


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory, tiny_model_dir: Path) -> Iterator[dict[str, Any]]:
    """``derm-cloud demo`` in a subprocess, its TMPDIR (where the upload folder lives) and its output."""
    root = tmp_path_factory.mktemp("demo")
    samples = root / "samples"
    samples.mkdir()
    sample = dev_image(dev_rows(2)[1])
    (samples / sample.name).symlink_to(sample)  # offered as a sample, not copied
    tmpdir, cwd = root / "tmp", root / "cwd"
    tmpdir.mkdir()
    cwd.mkdir()
    port = _free_port()
    cmd = [sys.executable, "-m", "derm_cloud.cli", "demo", "--model-dir", str(tiny_model_dir)]
    cmd += ["--samples", str(samples), "--port", str(port), "--max-upload-mb", "1"]
    for name in BACKENDS:
        cmd += ["--backend", name]
    # PYTHONPATH: the subprocess runs from another folder, so it must import this checkout, not an installed copy.
    repo = str(Path(__file__).resolve().parents[1])
    env = {**os.environ, "TMPDIR": str(tmpdir), "PYTHONWARNINGS": "ignore", "PYTHONPATH": repo}
    log = (root / "demo.log").open("w+")
    proc = subprocess.Popen(cmd, cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=log, text=True)
    assert proc.stdout is not None
    url = None
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline:
        line = proc.stdout.readline()
        if not line:
            break
        if line.startswith("derm-cloud demo running on "):
            url = line.split()[4]
            break
    if url is None:
        proc.kill()
        log.seek(0)
        pytest.fail(f"the demo did not start: {log.read()[-3000:]}")
    upload_dirs = list(tmpdir.glob("derm-cloud-demo-*"))
    yield {"url": url, "proc": proc, "tmpdir": tmpdir, "cwd": cwd, "upload_dirs": upload_dirs, "sample": sample}
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=30)
    log.close()


@pytest.fixture(scope="module")
def page(demo: dict[str, Any]) -> Iterator[Any]:
    from playwright.sync_api import sync_playwright

    if not Path(CHROMIUM).is_file():
        pytest.fail(f"no Chromium at {CHROMIUM}: run `apt-get install -y chromium` or set DERM_CLOUD_CHROMIUM")
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        pg = browser.new_page()
        pg.set_default_timeout(30_000)
        pg.goto(demo["url"])
        pg.wait_for_selector("#dc-banner")
        yield pg
        browser.close()


def _cards(pg: Any) -> dict[str, dict[str, Any]]:
    out = {}
    for card in pg.locator(".dc-card").all():
        rows = [
            (r.get_attribute("data-code"), float(r.get_attribute("data-prob"))) for r in card.locator(".dc-row").all()
        ]
        out[card.get_attribute("data-backend")] = {
            "rows": rows,
            "ms": float(card.locator(".dc-latency").get_attribute("data-ms")),
            "cost": card.locator(".dc-cost").inner_text(),
            "stores": card.locator(".dc-stores").inner_text(),
        }
    return out


@pytest.mark.browser
def test_upload_shows_predictions_side_by_side(page: Any, demo: dict[str, Any], tiny_model_dir: Path) -> None:
    image = dev_image(dev_rows(1)[0])
    page.locator("#dc-upload input[type=file]").set_input_files(str(image))
    page.wait_for_selector(".dc-status[data-kind=ok]")
    assert "Image accepted: 600x450 JPEG" in page.inner_text(".dc-status")
    page.click("#dc-classify")
    page.wait_for_selector("#dc-referral")
    cards = _cards(page)
    assert list(cards) == LABELS
    expected = _expected_top3(tiny_model_dir, image)
    for label, card in cards.items():
        # Every column is the same model reached through a different API: same top classes, same probabilities.
        assert [code for code, _ in card["rows"]] == [code for code, _ in expected], label
        for (_, got), (_, want) in zip(card["rows"], expected, strict=True):
            assert got == pytest.approx(want, abs=1e-5), label
        assert card["ms"] > 0
    assert cards["local-onnx"]["cost"] == "no per-call charge (runs on this machine)"
    # An always-on endpoint's call costs its month shared over the stated volume: 0.115 x 730 / 100,000.
    assert cards["sagemaker (emulated)"]["cost"].startswith("$0.00084 per call at 100,000 calls/month (1 x ")
    assert cards["local-onnx"]["stores"].startswith("no: the image stays on this machine")
    referral = page.locator("#dc-referral")
    assert referral.get_attribute("data-refer") in ("true", "false")
    assert "Policy: refer when" in referral.inner_text()
    assert "not a diagnosis" in page.inner_text("#dc-results")
    assert "clinician reviews every result" in page.inner_text("#dc-banner")


@pytest.mark.browser
def test_sample_picker_classifies_the_sample(page: Any, demo: dict[str, Any], tiny_model_dir: Path) -> None:
    page.click("#dc-use-sample")
    page.wait_for_function("document.querySelector('.dc-status').innerText.includes('Image accepted')")
    page.locator("#dc-backends label", has_text="vertex (emulated)").click()  # untick one backend
    page.click("#dc-classify")
    page.wait_for_function(
        "document.querySelectorAll('.dc-card').length === 2 && document.querySelector('#dc-referral')"
    )
    cards = _cards(page)
    assert list(cards) == ["local-onnx", "sagemaker (emulated)"]
    expected = _expected_top3(tiny_model_dir, demo["sample"])
    assert cards["local-onnx"]["rows"][0][0] == expected[0][0]
    assert cards["local-onnx"]["rows"][0][1] == pytest.approx(expected[0][1], abs=1e-5)
    page.locator("#dc-backends label", has_text="vertex (emulated)").click()  # restore for later tests


@pytest.mark.browser
def test_bad_uploads_show_a_clear_error(page: Any, tmp_path: Path) -> None:
    fake = tmp_path / "lesion.jpg"
    fake.write_text("this is a text file renamed to .jpg")
    page.locator("#dc-upload input[type=file]").set_input_files(str(fake))
    page.wait_for_selector(".dc-status[data-kind=error]")
    message = page.inner_text(".dc-status")
    assert "Cannot use this image" in message and "not a readable image" in message
    # Classify without an accepted image: refused with a message, no results.
    page.click("#dc-classify")
    page.wait_for_function("document.querySelector('#dc-results-box').innerText.includes('Nothing to classify')")

    big = tmp_path / "big.jpg"
    big.write_bytes(b"\xff\xd8\xff\xe0" + os.urandom(1_600_000))  # over the demo's --max-upload-mb 1
    page.locator("#dc-upload input[type=file]").set_input_files(str(big))
    page.wait_for_function("document.body.innerText.includes('exceed the maximum allowed size')")
    assert "big.jpg" in page.inner_text("body")


@pytest.mark.browser
def test_upload_never_processed_is_removed_within_seconds(demo: dict[str, Any]) -> None:
    # An upload posted straight to gradio's upload route, with no event to read it (a client that goes away).
    import urllib.request

    photo = _exif_jpeg(dev_image(dev_rows(1)[0]))
    boundary = "dcboundary7d1f"
    body = (
        (
            f'--{boundary}\r\nContent-Disposition: form-data; name="files"; filename="phone.jpg"\r\n'
            "Content-Type: image/jpeg\r\n\r\n"
        ).encode()
        + photo
        + f"\r\n--{boundary}--\r\n".encode()
    )
    request = urllib.request.Request(
        f"{demo['url'].rstrip('/')}/gradio_api/upload",
        data=body,
        headers={"Content-Type": f"multipart/form-data; boundary={boundary}"},
    )
    with urllib.request.urlopen(request, timeout=30) as answer:
        stored = [Path(p) for p in json.loads(answer.read())]
    assert stored and demo["upload_dirs"][0] in stored[0].parents
    start = time.monotonic()
    while any(p.exists() for p in stored) and time.monotonic() - start < 30:
        time.sleep(0.5)
    # Gradio's own sweep would leave it for 60-90 s, EXIF included; the reaper removes it after 10 s unread.
    assert not any(p.exists() for p in stored), f"still on disk after {time.monotonic() - start:.0f} s"


def test_nothing_uploaded_is_kept_and_the_upload_folder_is_removed(page: Any, demo: dict[str, Any]) -> None:
    upload_dirs = demo["upload_dirs"]
    assert len(upload_dirs) == 1 and oct(upload_dirs[0].stat().st_mode & 0o777) == "0o700"
    files = [p for base in (demo["tmpdir"], demo["cwd"]) for p in base.rglob("*") if p.is_file()]
    # Anything holding image data would be a kept upload (gradio leaves empty placeholders, onnxruntime a .ses).
    images = [p for p in files if p.read_bytes()[:3] == b"\xff\xd8\xff" or p.read_bytes()[:4] == b"\x89PNG"]
    assert images == [], images
    assert all(p.stat().st_size == 0 for p in upload_dirs[0].rglob("*") if p.is_file())
    proc = demo["proc"]
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=30) == 0
    assert not upload_dirs[0].exists()


# --- the handlers in-process (no browser): what the backends receive, and failures per backend ----------------------


def _exif_jpeg(source: Path) -> bytes:
    from PIL import Image

    with Image.open(source) as img:
        exif = Image.Exif()
        exif[0x010F] = "PhoneMaker"  # Make
        exif.get_ifd(0x8825)[2] = (51.0, 30.0, 0.0)  # GPSLatitude
        buf = io.BytesIO()
        img.save(buf, format="JPEG", exif=exif.tobytes(), quality=92)
    return buf.getvalue()


@pytest.fixture
def session(tiny_model_dir: Path, tmp_path: Path) -> Iterator[Any]:
    from derm_cloud.compare.run.prices import PriceCatalogue
    from derm_cloud.demo.app import DemoSession
    from derm_cloud.demo.backends import open_backends

    with open_backends(["local-onnx", "sagemaker"], model_dir=tiny_model_dir) as backends:
        yield DemoSession(backends=backends, catalogue=PriceCatalogue.load(), upload_root=tmp_path / "uploads")


def test_upload_is_deleted_and_exif_never_reaches_a_backend(session: Any, tmp_path: Path) -> None:
    from derm_cloud.images import metadata_markers

    upload = tmp_path / "uploads" / "abc123" / "phone.jpg"
    upload.parent.mkdir(parents=True)
    upload.write_bytes(_exif_jpeg(dev_image(dev_rows(1)[0])))
    assert {"exif", "gps"} <= metadata_markers(upload.read_bytes())
    stripped, status, preview = session.accept_upload(str(upload))
    assert not upload.exists() and not upload.parent.exists()
    assert "exif, gps" in status and preview.startswith('<img class="dc-preview"')
    assert metadata_markers(stripped) == frozenset()
    html = session.classify(stripped, ["local-onnx", "sagemaker (emulated)"], "45", "male", "back")
    assert html.count('class="dc-row"') == 6
    emulator = session.backends.get("sagemaker (emulated)").emulator
    sent = emulator.requests_to("/invocations")
    assert len(sent) == 1 and metadata_markers(sent[0].body) == frozenset()


def test_a_throttled_backend_fails_alone(session: Any) -> None:
    from derm_cloud.testing.emulators.base import Fault

    data = dev_image(dev_rows(1)[0]).read_bytes()
    emulator = session.backends.get("sagemaker (emulated)").emulator
    emulator.inject(Fault("throttle", times=2, retry_after=0))  # the demo retries once, then gives up
    html = session.classify(data, ["local-onnx", "sagemaker (emulated)"], "", "unknown", "")
    assert 'data-backend="sagemaker (emulated)" data-ok="false"' in html and "ThrottledError" in html
    assert 'data-backend="local-onnx" data-ok="true"' in html and 'id="dc-referral"' in html


def test_bad_inputs_are_refused_with_a_message(session: Any, tmp_path: Path) -> None:
    outside = tmp_path / "notes.txt"
    outside.write_text("hello")
    image, status, _ = session.accept_upload(str(outside))
    assert image is None and "not a JPEG or PNG file" in status
    assert outside.exists()  # never deletes a file outside gradio's upload folder
    data = dev_image(dev_rows(1)[0]).read_bytes()
    assert "age must be a number" in session.classify(data, ["local-onnx"], "forty", "male", "")
    assert "choose at least one backend" in session.classify(data, [], "", "unknown", "")
    session.max_upload_bytes = 1000
    big = tmp_path / "uploads" / "x" / "big.png"
    big.parent.mkdir(parents=True)
    big.write_bytes(b"\x89PNG" + b"\x00" * 5000)
    image, status, _ = session.accept_upload(str(big))
    assert image is None and "the limit is" in status and not big.exists()

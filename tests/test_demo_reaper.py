"""The demo's upload reaper: unread uploads and empty temp files go within seconds, fresh ones stay."""

from __future__ import annotations

import os
import time
from pathlib import Path

from derm_cloud.demo.reaper import UploadReaper


def test_sweep_removes_only_stale_files_and_emptied_folders(tmp_path: Path) -> None:
    stale = tmp_path / "abc" / "phone.jpg"
    stale.parent.mkdir()
    stale.write_bytes(b"\xff\xd8\xff exif and gps inside")
    placeholder = tmp_path / "tmpk2j3h4"  # gradio's empty NamedTemporaryFile left by an aborted parse
    placeholder.write_bytes(b"")
    fresh = tmp_path / "def" / "being-written.jpg"
    fresh.parent.mkdir()
    fresh.write_bytes(b"\xff\xd8\xff")
    old = time.time() - 30
    for path in (stale, placeholder, stale.parent):
        os.utime(path, (old, old))
    reaper = UploadReaper(tmp_path, ttl=10)
    assert reaper.sweep() == 2
    assert not stale.exists() and not placeholder.exists() and fresh.exists()
    assert reaper.sweep(now=time.time() + 60) == 1 and not fresh.exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == []


def test_thread_sweeps_until_stopped(tmp_path: Path) -> None:
    upload = tmp_path / "x.jpg"
    upload.write_bytes(b"\xff\xd8\xff")
    reaper = UploadReaper(tmp_path, ttl=0.2, interval=0.1).start()
    try:
        deadline = time.monotonic() + 5
        while upload.exists() and time.monotonic() < deadline:
            time.sleep(0.05)
    finally:
        reaper.stop()
    assert not upload.exists() and reaper.removed == 1

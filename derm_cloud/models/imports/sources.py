"""Where an export comes from: a folder, a `.zip` / `.tar.gz` archive, a lone `.onnx` file, or an `https://`
URL a service gave.

Archives are unpacked with every member checked to stay inside the target folder (a crafted `../` entry or
an absolute path is refused, not silently skipped), and URLs are downloaded through `requests` into a
temporary file whose SHA-256 is recorded as provenance. Query strings (SAS tokens, signed URLs) are never kept:
only the URL without its query is stored.
"""

from __future__ import annotations

import hashlib
import shutil
import tarfile
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

from derm_cloud.errors import ConfigError, ModelSpecError

__all__ = ["Unpacked", "public_url", "sha256_file", "unpack"]


@dataclass(frozen=True)
class Unpacked:
    """An export laid out as a folder, with where it came from."""

    folder: Path
    source: str
    sha256: str | None
    temporary: Path | None = None

    def cleanup(self) -> None:
        if self.temporary is not None:
            shutil.rmtree(self.temporary, ignore_errors=True)


def public_url(url: str) -> str:
    """`url` without its query and fragment: signed download links carry credentials there.

    Example:
        >>> public_url("https://acct.blob.core.windows.net/exports/m.zip?sv=2020&sig=SECRET")
        'https://acct.blob.core.windows.net/exports/m.zip'
    """
    parts = urlsplit(url)
    netloc = parts.hostname or ""
    if parts.port:
        netloc += f":{parts.port}"
    return urlunsplit((parts.scheme, netloc, parts.path, "", ""))


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def unpack(source: str | Path, *, timeout: float = 120.0) -> Unpacked:
    """A folder holding the export: `source` itself, or a temporary folder it was downloaded/unpacked into.

    Raises:
        ConfigError: the source does not exist or cannot be downloaded.
        ModelSpecError: the archive is damaged or tries to write outside its folder.
    """
    text = str(source)
    if text.startswith(("http://", "https://")):
        tmp = Path(tempfile.mkdtemp(prefix="derm-cloud-import-"))
        archive = tmp / (Path(urlsplit(text).path).name or "export.zip")
        _download(text, archive, timeout)
        digest = sha256_file(archive)
        folder = _extract(archive, tmp / "export")
        return Unpacked(folder, public_url(text), digest, tmp)
    path = Path(text).expanduser()
    if path.is_dir():
        return Unpacked(path, str(path), None)
    if not path.is_file():
        raise ConfigError(f"{text!r} is neither a folder, an archive nor an http(s) URL of an export")
    tmp = Path(tempfile.mkdtemp(prefix="derm-cloud-import-"))
    if path.suffix.lower() == ".onnx":
        # Custom Vision's 2018 ONNX exports download as one .onnx file, tags inside: a folder of one.
        (tmp / "export").mkdir()
        shutil.copyfile(path, tmp / "export" / path.name)
        return Unpacked(tmp / "export", str(path), sha256_file(path), tmp)
    return Unpacked(_extract(path, tmp / "export"), str(path), sha256_file(path), tmp)


def _download(url: str, target: Path, timeout: float) -> None:
    import requests

    try:
        with requests.get(url, stream=True, timeout=timeout) as response:
            if response.status_code != 200:
                raise ConfigError(
                    f"downloading the export from {public_url(url)} failed with HTTP {response.status_code}; "
                    "export links expire: request a new one from the service"
                )
            with target.open("wb") as fh:
                for chunk in response.iter_content(1 << 20):
                    fh.write(chunk)
    except requests.RequestException as exc:
        raise ConfigError(f"cannot download the export from {public_url(url)}: {type(exc).__name__}") from None


def _extract(archive: Path, target: Path) -> Path:
    target.mkdir(parents=True, exist_ok=True)
    root = target.resolve()
    try:
        if zipfile.is_zipfile(archive):
            with zipfile.ZipFile(archive) as zf:
                for name in zf.namelist():
                    _check_member(root, name, archive)
                zf.extractall(target)
        elif tarfile.is_tarfile(archive):
            with tarfile.open(archive) as tf:
                for member in tf.getmembers():
                    _check_member(root, member.name, archive)
                    if member.issym() or member.islnk():
                        raise ModelSpecError(f"{archive.name} holds a link ({member.name}); exports never do")
                tf.extractall(target, filter="data")
        else:
            raise ModelSpecError(f"{archive.name} is not a zip or tar archive of an export")
    except (zipfile.BadZipFile, tarfile.TarError, EOFError) as exc:
        raise ModelSpecError(f"{archive.name} is damaged ({exc}); download the export again") from None
    # An archive with one top folder (SavedModel zips, some tarballs) is read from inside it.
    entries = [p for p in target.iterdir() if not p.name.startswith(".")]
    if len(entries) == 1 and entries[0].is_dir():
        return entries[0]
    return target


def _check_member(root: Path, name: str, archive: Path) -> None:
    destination = (root / name).resolve()
    if destination != root and root not in destination.parents:
        raise ModelSpecError(f"{archive.name} tries to write outside its folder ({name!r}); refusing to unpack it")

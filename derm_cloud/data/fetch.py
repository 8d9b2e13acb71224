"""`derm-cloud data fetch NAME`: download a public dermatology dataset into the user cache, ready to load.

Every source is described once, in `catalogue.toml` beside this module (URLs, checksums, source page, licence,
attribution). A fetch resolves each file's URL (directly, through the Dataverse file listing, or through the
Hugging Face Hub listing), downloads it resumably (`derm_cloud.data.download`), verifies its checksum,
unpacks archives, writes a manifest in a layout `load_dataset` reads
(`derm_cloud.data.prepare`), and stores `LICENCE.txt` and `SOURCE.json` (URLs and the digests seen)
beside the data.

A mirror replaces `https://HOST/PATH` by `MIRROR/HOST/PATH` for every request (`mirror=` or
`$DERM_CLOUD_DATA_MIRROR`), so tests and institutional mirrors need no change to the catalogue.

Example:
    >>> result = fetch_dataset("pad-ufes-20")  # doctest: +SKIP
    >>> load_dataset(result.load_path).describe()["class_counts"]  # doctest: +SKIP
"""

from __future__ import annotations

import fnmatch
import json
import os
import shutil
import tarfile
import time
import tomllib
import urllib.parse
import zipfile
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from derm_cloud.data.download import (
    STALL_TIMEOUT_S,
    describe_failure,
    download,
    file_digest,
    mirror_url,
    network_advice,
    requests_module,
)
from derm_cloud.data.integrity import integrity_check
from derm_cloud.errors import ConfigError, DownloadError, MissingDependencyError

__all__ = [
    "CATALOGUE_PATH",
    "DatasetSource",
    "FetchResult",
    "catalogue",
    "datasets_dir",
    "fetch_dataset",
    "integrity_check",
    "lookup_source",
]

CATALOGUE_PATH = Path(__file__).with_name("catalogue.toml")
MIRROR_ENV = "DERM_CLOUD_DATA_MIRROR"


@dataclass(frozen=True)
class SourceFile:
    """One file of a dataset as the catalogue lists it (see the comment at the top of `catalogue.toml`)."""

    name: str
    url: str | None = None
    dataverse: Mapping[str, str] | None = None
    hf_repo: str | None = None
    revision: str = "main"
    pattern: str = "*"
    sha256: str | None = None
    extract: str | None = None
    rows: int | None = None


@dataclass(frozen=True)
class DatasetSource:
    """A catalogue entry: where a dataset comes from, under which terms, and how it is laid out once fetched."""

    key: str
    title: str
    source_page: str
    licence: str
    attribution: str
    layout: str
    load: str = "."
    note: str | None = None
    manual_steps: str | None = None
    files: tuple[SourceFile, ...] = ()

    @property
    def manual(self) -> bool:
        """True when the terms need a person (sign-in, agreement): the fetcher prints the steps instead."""
        return self.layout == "manual"

    def licence_text(self) -> str:
        """What is printed after a fetch and stored as `LICENCE.txt`."""
        lines = [self.title, f"Source: {self.source_page}", f"Licence: {self.licence}", f"Cite: {self.attribution}"]
        return "\n".join(lines + ([f"Note: {self.note}"] if self.note else [])) + "\n"


@dataclass
class FetchResult:
    """What a fetch produced.

    Attributes:
        source: the catalogue entry.
        folder: the dataset folder in the cache.
        load_path: what to pass to `load_dataset`.
        files: per downloaded file, its URL, size and SHA-256 (also in `SOURCE.json`).
        notes: what the user should know (digests recorded because none is published, images missing ...).
    """

    source: DatasetSource
    folder: Path
    load_path: Path
    files: list[dict[str, Any]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


def catalogue(path: Path = CATALOGUE_PATH) -> dict[str, DatasetSource]:
    """The datasets of the catalogue, by name.

    Raises:
        ConfigError: the catalogue file is malformed (names the entry).
    """
    with path.open("rb") as fh:
        data = tomllib.load(fh)
    out = {}
    for key, entry in data.items():
        try:
            files = tuple(
                SourceFile(**{**f, "sha256": f.get("sha256") or None, "name": f.get("name", f.get("hf_repo", ""))})
                for f in entry.get("files", [])
            )
            fields = {k: v for k, v in entry.items() if k != "files"}
            out[key] = DatasetSource(key=key, files=files, **fields)
        except TypeError as exc:
            raise ConfigError(f"{path.name}: entry [{key}] is malformed: {exc}") from exc
    return out


def datasets_dir() -> Path:
    """`<cache>/datasets`: one folder per fetched dataset (see `derm_cloud.models.cache.cache_dir`)."""
    from derm_cloud.models.cache import cache_dir

    return cache_dir() / "datasets"


def fetch_dataset(
    name: str | DatasetSource,
    *,
    dest: str | os.PathLike[str] | None = None,
    mirror: str | None = None,
    quiet: bool = False,
    retries: int = 3,
    limit: int | None = None,
    expect_sha256: Mapping[str, str] | None = None,
    say: Callable[[str], None] = print,
    stall_timeout: float = STALL_TIMEOUT_S,
) -> FetchResult:
    """Download, verify, unpack and lay out one catalogue dataset.

    Args:
        name: a catalogue name (`"ham10000"`, `"pad-ufes-20"` ...) or a `DatasetSource`.
        dest: dataset folder (default `<cache>/datasets/<name>`).
        mirror: base URL replacing every host (default `$DERM_CLOUD_DATA_MIRROR`).
        quiet: no progress output.
        retries: extra attempts per file after a cut connection, each resuming.
        limit: Fitzpatrick17k only: download at most this many images.
        expect_sha256: `{file name: digest}` pins for files the catalogue has no digest for.
        say: where status lines go (`print`; a no-op when quiet).
        stall_timeout: seconds without a byte from a host before an attempt fails and is retried.

    Raises:
        ConfigError: unknown name, or a dataset that needs manual steps (the message holds them).
        DownloadError: a download failed after its retries (rerunning resumes; the message names what to check
            and `--mirror`), or a file without a published digest fails its own integrity check.
        ChecksumMismatchError: a file does not have its pinned or published digest.
    """
    source = name if isinstance(name, DatasetSource) else lookup_source(name)
    if source.manual:
        raise ConfigError(f"{source.key} cannot be downloaded by a script.\n{source.manual_steps}")
    mirror = mirror if mirror is not None else os.environ.get(MIRROR_ENV) or None
    folder = Path(dest).expanduser() if dest else datasets_dir() / source.key
    folder.mkdir(parents=True, exist_ok=True)
    result = FetchResult(source, folder, folder / source.load)
    record_path = folder / "SOURCE.json"
    previous = json.loads(record_path.read_text()) if record_path.is_file() else {}
    seen = {f["name"]: f for f in previous.get("files", [])}
    for entry in source.files:
        for name_, url, pinned, md5 in _resolve(entry, mirror, expect_sha256 or {}):
            target = folder / "downloads" / name_
            check = integrity_check(entry, name_)
            done = _already_there(target, seen.get(name_), pinned, check)
            if done is not None:
                result.files.append({**done, "name": name_, "url": url})  # complete and verified on an earlier run
            else:
                say(f"{name_}: downloading from {urllib.parse.urlsplit(url).netloc}")
                got = download(
                    url, target, sha256=pinned, md5=md5, retries=retries, quiet=quiet, check=check,
                    stall_timeout=stall_timeout,
                )  # fmt: skip
                info = {"name": name_, "url": url, "size": got.size, "sha256": got.sha256, "pinned": bool(pinned)}
                result.files.append(info)
                if not pinned:
                    result.notes.append(
                        f"{name_}: no SHA-256 is published; recorded {got.sha256} in SOURCE.json (verify it against "
                        "another download, then pin it with --expect-sha256)"
                    )
                say(f"{name_}: {got.size / 1e6:.1f} MB, sha256 {got.sha256}" + (" (verified)" if pinned or md5 else ""))
            if entry.extract:
                _extract(target, folder / entry.extract)
    _write_record(record_path, source, result, mirror)
    from derm_cloud.data.prepare import prepare

    result.notes += prepare(source.layout, folder, mirror=mirror, quiet=quiet, limit=limit, say=say)
    (folder / "LICENCE.txt").write_text(source.licence_text(), encoding="utf-8")
    return result


def _already_there(
    target: Path, seen: Mapping[str, Any] | None, pinned: str | None, check: Callable[[Path], str | None] | None
) -> dict[str, Any] | None:
    """The record of a complete earlier download of `target`, or `None` when it must be downloaded."""
    if not target.is_file():
        return None
    if seen is None and not pinned and check is not None and check(target) is not None:
        # No record of a finished fetch and no digest: an older fetch may have kept a cut file. Resume it.
        target.replace(target.with_name(target.name + ".part"))
        return None
    digest = seen["sha256"] if seen and seen.get("size") == target.stat().st_size else file_digest(target)
    if pinned and digest != pinned.lower():
        target.unlink()  # a stale or corrupt copy: fetch it again
        return None
    return {"size": target.stat().st_size, "sha256": digest, "pinned": bool(pinned)}


def lookup_source(name: str) -> DatasetSource:
    """The catalogue entry called `name` (case-insensitive).

    Raises:
        ConfigError: no such dataset; the message lists the catalogue.
    """
    entries = catalogue()
    key = name.strip().lower()
    if key not in entries:
        raise ConfigError(f"unknown dataset {name!r}; available: {', '.join(entries)}")
    return entries[key]


def _resolve(
    entry: SourceFile, mirror: str | None, expect: Mapping[str, str]
) -> list[tuple[str, str, str | None, str | None]]:
    """`[(file name, URL, pinned sha256, published md5)]` for one catalogue file entry."""
    if entry.url:
        return [(entry.name, mirror_url(entry.url, mirror), entry.sha256 or expect.get(entry.name), None)]
    if entry.dataverse:
        return [_resolve_dataverse(entry, mirror, expect)]
    if entry.hf_repo:
        return _resolve_hf(entry, mirror, expect)
    raise ConfigError(f"catalogue file {entry.name!r} has no url, dataverse or hf_repo")


def _resolve_dataverse(
    entry: SourceFile, mirror: str | None, expect: Mapping[str, str]
) -> tuple[str, str, str | None, str | None]:
    dv = dict(entry.dataverse or {})
    server = mirror_url(dv["server"], mirror).rstrip("/")
    listing = f"{server}/api/datasets/:persistentId/?persistentId={urllib.parse.quote(dv['doi'], safe=':/')}"
    requests = requests_module()
    try:
        resp = requests.get(listing, timeout=(15, 60))
        resp.raise_for_status()
        files = resp.json()["data"]["latestVersion"]["files"]
    except (requests.ConnectionError, requests.Timeout) as exc:
        raise DownloadError(
            f"cannot list the files of {dv['doi']} at {listing}: {describe_failure(exc, listing)}; then rerun"
        ) from exc
    except (requests.RequestException, ValueError, KeyError, TypeError) as exc:
        raise DownloadError(
            f"cannot list the files of {dv['doi']} at {listing}: {exc}; the answer is not a Dataverse file listing: "
            "check the URL, a proxy that rewrites answers, or the --mirror URL (it must serve MIRROR/HOST/PATH)"
        ) from exc
    for f in files:
        data_file = f.get("dataFile", {})
        if dv["filename"] in (data_file.get("filename"), data_file.get("originalFileName")):
            url = f"{server}/api/access/datafile/{data_file['id']}" + (
                f"?format={dv['format']}" if dv.get("format") else ""
            )
            checksum = data_file.get("checksum") or {}
            md5 = data_file.get("md5") or (checksum.get("value") if checksum.get("type") == "MD5" else None)
            return entry.name, url, entry.sha256 or expect.get(entry.name), md5
    raise DownloadError(f"{dv['doi']} has no file named {dv['filename']!r} any more; the catalogue needs updating")


def _resolve_hf(
    entry: SourceFile, mirror: str | None, expect: Mapping[str, str]
) -> list[tuple[str, str, str | None, str | None]]:
    try:
        from huggingface_hub import HfApi, hf_hub_url
    except ImportError as exc:
        raise MissingDependencyError(
            "fetching from the Hugging Face Hub needs: pip install 'derm-cloud[data]'"
        ) from exc
    endpoint = mirror_url("https://huggingface.co", mirror).rstrip("/")
    repo = str(entry.hf_repo)
    try:
        tree = list(
            HfApi(endpoint=endpoint).list_repo_tree(repo, repo_type="dataset", revision=entry.revision, recursive=True)
        )
    except Exception as exc:  # the hub client raises its own tree of errors; one message for all of them
        raise DownloadError(f"cannot list {repo} on {endpoint}: {exc}; {network_advice(endpoint)}; then rerun") from exc
    out: list[tuple[str, str, str | None, str | None]] = []
    for item in tree:
        path = getattr(item, "path", "")
        if getattr(item, "size", None) is None or not fnmatch.fnmatch(Path(path).name, entry.pattern):
            continue
        lfs = getattr(item, "lfs", None)
        published = lfs.sha256 if lfs is not None else None
        url = hf_hub_url(repo, path, repo_type="dataset", revision=entry.revision, endpoint=endpoint)
        out.append((path, url, published or expect.get(path), None))
    if not out:
        raise DownloadError(f"{repo} at {entry.revision} has no files matching {entry.pattern!r}")
    return out


def _extract(archive: Path, into: Path) -> None:
    """Unpack a zip or tar once (a marker records it), refusing members that would land outside `into`."""
    marker = into / f".extracted-{archive.name}"
    if marker.is_file():
        return
    into.mkdir(parents=True, exist_ok=True)
    root = into.resolve()
    if zipfile.is_zipfile(archive):
        with zipfile.ZipFile(archive) as zf:
            for member in zf.infolist():
                target = (into / member.filename).resolve()
                if not target.is_relative_to(root):
                    raise ConfigError(f"{archive.name}: member {member.filename!r} would extract outside {into}")
                if member.filename.startswith("__MACOSX/"):
                    continue
                if member.is_dir():
                    target.mkdir(parents=True, exist_ok=True)
                    continue
                target.parent.mkdir(parents=True, exist_ok=True)
                with zf.open(member) as src, target.open("wb") as dst:
                    shutil.copyfileobj(src, dst)
    elif tarfile.is_tarfile(archive):
        with tarfile.open(archive) as tf:
            tf.extractall(into, filter="data")  # the data filter rejects absolute paths, links out and devices
    else:
        raise ConfigError(f"{archive.name} is neither a zip nor a tar archive; the download may be an error page")
    marker.write_text(time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()) + "\n")


def _write_record(path: Path, source: DatasetSource, result: FetchResult, mirror: str | None) -> None:
    record = {
        "dataset": source.key,
        "title": source.title,
        "source_page": source.source_page,
        "licence": source.licence,
        "attribution": source.attribution,
        "fetched_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "mirror": mirror,
        "files": result.files,
    }
    path.write_text(json.dumps(record, indent=2) + "\n", encoding="utf-8")

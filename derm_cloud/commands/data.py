"""`derm-cloud data list | fetch NAME | example [PATH]`: public dermatology datasets and a sample photo.

Datasets are downloaded into the user cache; `example` writes one sample photo to try the library on (the
first code block of the quick start and of the router guide classify it).
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path
from typing import Any

from derm_cloud.errors import ConfigError


def register(sub: Any) -> None:
    p = sub.add_parser(
        "data",
        help="list and fetch public dermatology datasets (HAM10000, PAD-UFES-20, Fitzpatrick17k, ISIC ...)",
        description="Download public dermatology datasets into the derm-cloud cache, verified and laid out for "
        "load_dataset. Each dataset keeps its own licence: it is printed and stored beside the data.",
    )
    dsub = p.add_subparsers(dest="data_command", metavar="SUBCOMMAND")
    p.set_defaults(handler=lambda args: (p.print_help(), 2)[1])

    ls = dsub.add_parser("list", help="the datasets of the catalogue, their licences and whether they are fetched")
    ls.set_defaults(handler=run_list)

    f = dsub.add_parser(
        "fetch",
        help="download, verify and unpack one dataset (resumes an interrupted download)",
        description="Download NAME's files (resuming .part files), verify their checksums, unpack them into "
        "<cache>/datasets/NAME and write a layout load_dataset reads. Prints the licence and attribution.",
    )
    f.add_argument("name", metavar="NAME", help="catalogue name (see `derm-cloud data list`)")
    f.add_argument("--dest", help="dataset folder (default: <cache>/datasets/NAME)")
    f.add_argument(
        "--mirror",
        help="base URL replacing every host: https://HOST/PATH is fetched from MIRROR/HOST/PATH "
        "(default $DERM_CLOUD_DATA_MIRROR); for a network without access to the sources",
    )
    f.add_argument("--retries", type=int, default=3, help="extra attempts per file, each resuming (default 3)")
    f.add_argument(
        "--stall-timeout",
        type=float,
        default=30.0,
        metavar="S",
        help="seconds without a byte from a host before an attempt fails and is retried (default 30)",
    )
    f.add_argument("--limit", type=int, help="fitzpatrick17k: fetch at most N images")
    f.add_argument(
        "--expect-sha256",
        action="append",
        default=[],
        metavar="FILE=DIGEST",
        help="pin the SHA-256 of a file the catalogue publishes none for (repeatable)",
    )
    f.add_argument("-q", "--quiet", action="store_true", help="no progress output")
    f.set_defaults(handler=run_fetch)

    e = dsub.add_parser(
        "example",
        help="write a sample skin photo to PATH (default lesion.jpg) to try derm-cloud on",
        description="Write the example photo of the dermapred 0.0.3 wheel on PyPI (Apache-2.0; a phone photo of "
        "skin with small naevi, not dermoscopy, unlabelled) to PATH: downloaded once into the derm-cloud cache "
        "and checked against its pinned SHA-256. An existing different file at PATH is never overwritten. For "
        "labelled dermoscopy images, see `derm-cloud data fetch ham10000`.",
    )
    e.add_argument("path", nargs="?", default="lesion.jpg", metavar="PATH", help="file to write (default lesion.jpg)")
    e.set_defaults(handler=run_example)


def run_list(args: argparse.Namespace) -> int:
    from derm_cloud.data.fetch import catalogue, datasets_dir

    for key, source in catalogue().items():
        fetched = (datasets_dir() / key / "SOURCE.json").is_file()
        state = "manual download" if source.manual else "fetched" if fetched else "not fetched"
        print(f"{key:<15} {state:<16} {source.licence.split(' (')[0]:<22} {source.title}")
    return 0


def run_fetch(args: argparse.Namespace) -> int:
    from derm_cloud.data.fetch import fetch_dataset, lookup_source

    source = lookup_source(args.name)
    if source.manual:
        print(f"{source.title}\nLicence: {source.licence}\n\n{source.manual_steps}")
        return 2
    pins = {}
    for spec in args.expect_sha256:
        name, sep, digest = spec.partition("=")
        if not sep or len(digest.strip()) != 64:
            raise ConfigError(f"--expect-sha256 {spec!r} must look like FILE=<64 hex digits>")
        pins[name.strip()] = digest.strip().lower()
    say = (lambda _line: None) if args.quiet else print
    result = fetch_dataset(
        source,
        dest=args.dest,
        mirror=args.mirror,
        quiet=args.quiet,
        retries=args.retries,
        limit=args.limit,
        expect_sha256=pins,
        say=say,
        stall_timeout=args.stall_timeout,
    )
    for note in result.notes:
        say(f"note: {note}")
    # The licence is printed even with -q: using the data means accepting its terms.
    print(source.licence_text(), end="")
    print(f"ready: load_dataset({str(result.load_path)!r})  (licence and sources in {result.folder})")
    return 0


def run_example(args: argparse.Namespace) -> int:
    from derm_cloud.models.example_image import EXAMPLE_ATTRIBUTION, example_image_dir

    data = (example_image_dir() / "dermapred-example.jpg").read_bytes()
    target = Path(args.path).expanduser()
    if target.is_dir():
        raise ConfigError(f"{target} is a folder; name the file to write, e.g. {target / 'lesion.jpg'}")
    if target.exists():
        if target.read_bytes() != data:
            # Never overwrite: PATH may well be someone's own lesion photo.
            raise ConfigError(f"{target} exists and is not the example photo; choose another PATH or move it away")
        print(f"{target}: already the example photo")
    else:
        target.parent.mkdir(parents=True, exist_ok=True)
        part = target.with_name(f".{target.name}.{os.getpid()}.part")  # whole file or none: rename when written
        part.write_bytes(data)
        os.replace(part, target)
        print(f"{target}: the example photo, {len(data) / 1e6:.1f} MB")
    print(EXAMPLE_ATTRIBUTION)
    print("Triage and research only: a clinician reviews every result; nothing here is a diagnosis.")
    return 0

"""`derm-cloud dataset build-validation` and `derm-cloud dataset audit`."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from derm_cloud.errors import ConfigError

_STRATA = "label,sex,age_band,site,skin_tone"


def register(sub: Any) -> None:
    p = sub.add_parser("dataset", help="validation sets and dataset audits", description="Dataset governance tools.")
    dsub = p.add_subparsers(dest="dataset_command", metavar="SUBCOMMAND")
    p.set_defaults(handler=lambda args: _help(p))

    b = dsub.add_parser(
        "build-validation",
        help="a seeded, lesion-level, stratified validation set",
        description="Pick a small, diverse validation set: whole lesions only (none shared with the rest), every "
        "class and group represented as far as the data allows, the unfilled cells reported. Writes a CSV "
        "manifest (images referenced, not copied) plus <out>.report.json and <out>.report.md.",
    )
    b.add_argument("source", metavar="SOURCE", help="labelled CSV manifest, HAM10000 folder or parquet")
    size = b.add_mutually_exclusive_group()
    size.add_argument("--size", type=int, default=200, help="images in the set (default 200)")
    size.add_argument("--fraction", type=float, help="share of the images instead of --size")
    b.add_argument("--seed", type=int, default=0, help="the same seed gives the same set (default 0)")
    b.add_argument("--out", "-o", required=True, help="manifest CSV to write")
    b.add_argument("--rest-out", help="also write the remaining images (no lesion in common) to this CSV")
    b.add_argument("--strata", default=_STRATA, help=f"comma-separated strata (default {_STRATA})")
    b.add_argument("--allocation", choices=["balanced", "proportional"], default="balanced")
    b.add_argument("--min-per-group", type=int, default=2, help="lesions wanted per group (default 2)")
    b.add_argument("--min-per-cell", type=int, default=1, help="lesions wanted per class within a group (default 1)")
    b.add_argument("--images-per-lesion", type=int, help="keep at most N images of a chosen lesion")
    b.add_argument(
        "--skin-tone",
        choices=["auto", "fitzpatrick", "ita", "none"],
        default="auto",
        help="skin-tone groups: Fitzpatrick from metadata, else ITA estimated from the images (default auto)",
    )
    b.set_defaults(handler=run_build_validation)

    a = dsub.add_parser(
        "audit",
        help="class balance, lesions, duplicates, metadata and skin-tone coverage of a dataset",
        description="Audit a dataset (optionally against a second one) and write audit.md, audit.html (plots "
        "embedded) and audit.json. Metadata-only sources work; image checks use the images found locally.",
    )
    a.add_argument("source", metavar="SOURCE", help="CSV manifest or metadata, HAM10000 folder, parquet file/folder")
    a.add_argument("--against", metavar="SOURCE2", help="a second dataset to compare with")
    a.add_argument("--out", "-o", required=True, help="output folder")
    a.add_argument("--no-images", action="store_true", help="skip the image checks (duplicates, ITA)")
    a.add_argument("--max-images", type=int, help="check at most N images per dataset (seeded sample)")
    a.add_argument("--hash-distance", type=int, default=4, help="pHash bits counted as a duplicate (default 4)")
    a.add_argument("--name", help="name of SOURCE in the report")
    a.add_argument("--against-name", help="name of SOURCE2 in the report")
    a.add_argument("--quiet", "-q", action="store_true", help="no progress bar or progress lines")
    a.set_defaults(handler=run_audit)


def _help(parser: argparse.ArgumentParser) -> int:
    parser.print_help()
    return 2


def run_build_validation(args: argparse.Namespace) -> int:
    from derm_cloud.governance.validation_set import build_validation_set

    strata = tuple(s.strip() for s in args.strata.split(",") if s.strip())
    vs = build_validation_set(
        args.source,
        size=None if args.fraction is not None else args.size,
        seed=args.seed,
        strata=strata,
        holdout_fraction=args.fraction,
        allocation=args.allocation,
        min_per_group=args.min_per_group,
        min_per_cell=args.min_per_cell,
        images_per_lesion=args.images_per_lesion,
        skin_tone=args.skin_tone,
    )
    out = Path(args.out)
    vs.write_manifest(out, rest_path=args.rest_out)
    json_path, md_path = vs.write_report(out.with_name(out.stem + ".report"))
    counts = vs.class_counts()
    print(
        f"{len(vs.selected)} images from {vs.source} (seed {vs.seed}); {len(vs.rest)} left, "
        f"{len(vs.shared_lesions())} lesions shared; skin tone from {vs.skin_tone_source}"
    )
    print("classes: " + ", ".join(f"{c} {n}" for c, n in counts.items()))
    unfilled = vs.unfilled
    print(f"unfilled cells: {len(unfilled)}")
    for c in unfilled[:15]:
        print(f"  {c.stratum:<22} {c.value:<30} {c.chosen}/{c.target} {c.unit}: {c.reason}")
    if len(unfilled) > 15:
        print(f"  ... {len(unfilled) - 15} more in {md_path}")
    for note in vs.notes:
        print(f"note: {note}")
    print(f"wrote {out}" + (f", {args.rest_out}" if args.rest_out else "") + f", {json_path}, {md_path}")
    return 0


def run_audit(args: argparse.Namespace) -> int:
    from derm_cloud.governance.audit import audit_dataset, compare_audits, write_audit_report

    if args.hash_distance < 0 or args.hash_distance > 64:
        raise ConfigError(f"--hash-distance must be between 0 and 64 bits, got {args.hash_distance}")
    from derm_cloud.progress import Progress, mode_for

    cache: dict[str, Any] = {}
    tracker = Progress(mode_for(args.quiet), prefix="derm-cloud: dataset audit", unit="images")
    options = {
        "images": not args.no_images,
        "max_images": args.max_images,
        "hash_distance": args.hash_distance,
        "progress": tracker,
    }
    audits = [audit_dataset(args.source, name=args.name, cache=cache, **options)]
    comparison = None
    if args.against:
        audits.append(audit_dataset(args.against, name=args.against_name, cache=cache, **options))
        comparison = compare_audits(audits[0], audits[1])
    tracker.close()
    paths = write_audit_report(audits, args.out, comparison)
    for a in audits:
        print(f"{a.name}:")
        for finding in a.findings:
            print(f"  - {finding}")
    if comparison is not None:
        print("differences:")
        for finding in comparison.findings:
            print(f"  - {finding}")
    print(f"wrote {paths['markdown']}, {paths['html']}, {paths['json']}")
    return 0

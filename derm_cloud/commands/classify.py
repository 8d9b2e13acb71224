"""`derm-cloud classify` and `derm-cloud backends`."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from typing import Any

from derm_cloud.errors import ConfigError

DISCLAIMER = "Triage support only, not a diagnosis: a clinician reviews every result."


def register(sub: Any) -> None:
    p = sub.add_parser(
        "classify",
        help="classify one or more images with a backend",
        description=f"Classify lesion images and print the ranked HAM10000 classes. {DISCLAIMER}",
    )
    p.add_argument("images", nargs="+", metavar="IMAGE", help="image files (JPEG, PNG, ...)")
    p.add_argument("--backend", "-b", default="local-onnx", help="backend name (see `derm-cloud backends`)")
    p.add_argument(
        "--option",
        "-o",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="backend option, repeatable (e.g. -o model_dir=sklesion -o endpoint_name=derm); "
        "each value is read as the type the backend declares for it (JSON for lists and mappings)",
    )
    p.add_argument("--age", type=float, help="patient age in years (models that use metadata)")
    p.add_argument("--sex", choices=["female", "male", "unknown"], default="unknown")
    p.add_argument("--site", help="anatomical site as in HAM10000 (back, face, lower extremity, ...)")
    p.add_argument("--top-k", "-k", type=int, default=3, help="classes to show per image (default 3)")
    p.add_argument("--json", action="store_true", help="print one JSON object per image instead of a table")
    p.set_defaults(handler=run_classify)

    b = sub.add_parser("backends", help="list backends, whether each is installed, and how to install it")
    b.add_argument("--json", action="store_true")
    b.set_defaults(handler=run_backends)


def parse_options(pairs: list[str], backend: str | None = None) -> dict[str, Any]:
    """`["a=1", "b=x"]` -> options typed by backend `backend`'s declared parameter types.

    A `str` option stays a string however numeric it looks (`endpoint_id=1234567890`); an `int` option
    that does not parse raises a ConfigError naming it. Without `backend` the values stay strings.
    """
    raw: dict[str, str] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise ConfigError(f"--option {pair!r} must look like KEY=VALUE")
        raw[key] = value
    if backend is None:
        return dict(raw)
    from derm_cloud.options import options_from_strings
    from derm_cloud.registry import get_backend_class

    return options_from_strings(get_backend_class(backend), raw)


def run_classify(args: argparse.Namespace) -> int:
    import derm_cloud

    if args.top_k < 1 or args.top_k > 7:
        raise ConfigError(f"--top-k must be between 1 and 7, got {args.top_k}")
    meta = derm_cloud.PatientMetadata(age=args.age, sex=args.sex, site=args.site)
    failures = 0
    with derm_cloud.create(args.backend, **parse_options(args.option, args.backend)) as clf:
        for path in args.images:
            try:
                pred = clf.predict(path, meta)
            except derm_cloud.InvalidImageError as exc:
                failures += 1
                print(f"{path}: invalid image: {exc}", file=sys.stderr)
                continue
            if args.json:
                row = pred.to_dict()
                row["image"] = path
                row["top_k"] = row["top_k"][: args.top_k]
                row["note"] = DISCLAIMER
                print(json.dumps(row))
            else:
                print(format_prediction(path, pred, args.top_k))
    if not args.json:
        print(DISCLAIMER)
    return 1 if failures else 0


def format_prediction(path: str, pred: Any, top_k: int) -> str:
    from derm_cloud.taxonomy import class_info

    lines = [f"{path}  [{pred.backend} / {pred.model_id}, {pred.latency_ms:.0f} ms]"]
    if not pred.mapped:
        lines.append("  labels do not map to lesion classes; the model's own labels, best first:")
        for s in sorted(pred.provider_scores, key=lambda s: -s.score)[:top_k]:
            lines.append(f"    {s.label:<40} {s.score:6.3f}")
        return "\n".join(lines)
    lines.append(f"  {'rank':<5}{'class':<7}{'name':<50}{'probability':>11}")
    for rank, s in enumerate(pred.top(top_k), 1):
        info = class_info(s.label)
        flag = "  (malignant)" if info.malignant else ""
        lines.append(f"  {rank:<5}{s.label:<7}{info.name:<50}{s.score:>11.3f}{flag}")
    return "\n".join(lines)


def run_backends(args: argparse.Namespace) -> int:
    from derm_cloud.registry import available_backends

    entries = available_backends()
    if args.json:
        print(
            json.dumps(
                [
                    {
                        "name": e.name,
                        "installed": e.installed,
                        "missing": list(e.missing),
                        "install": e.install_hint,
                        "summary": e.summary,
                    }
                    for e in entries
                ],
                indent=2,
            )
        )
        return 0
    rows: list[tuple[str, ...]] = [("backend", "installed", "install with", "description")]
    rows += [(e.name, "yes" if e.installed else "no", e.install_hint, e.summary) for e in entries]
    print("\n".join(format_columns(rows)))
    return 0


def format_columns(rows: Sequence[Sequence[str]], gap: int = 2) -> list[str]:
    """Left-aligned columns, each as wide as its longest cell plus `gap` spaces (the last is not padded).

    Widths come from the rows themselves, so a long name (a plugin backend, `rekognition-custom-labels`) widens
    its column instead of running into the next one.
    """
    widths = [max(len(row[i]) for row in rows) + gap for i in range(len(rows[0]) - 1)]
    return ["".join(cell.ljust(width) for cell, width in zip(row, widths, strict=False)) + row[-1] for row in rows]

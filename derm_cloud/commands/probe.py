"""`derm-cloud probe`: train a head on embeddings of labelled images, and show a probe folder.

```bash
derm-cloud probe fit --dataset DEV.csv --out runs/probe-sklesion [--embedder local-onnx]
    [--embedder-option model_dir=sklesion ...] [--holdout 0.3] [--sizes 50 100 200 500] [--seed 0] [--overwrite]
    [--embed-via batch --batch-option model_id=456 --batch-option bucket=my-bucket ...]
derm-cloud probe info runs/probe-sklesion [--json]
derm-cloud probe zero-shot --embedder vertex-medsiglip --embedder-option ... --out runs/zero-shot-medsiglip
    [--prompts PROMPTS.toml] [--temperature T] [--dataset DEV.csv [--limit N]] [--overwrite] [--json]
```

`derm-cloud models embedder sklesion` (the `models` command) writes the local embedder `fit` uses by default;
its handler, `run_embedder_export`, lives here with the other probe commands.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

from derm_cloud.errors import ConfigError

__all__ = ["register", "run_embedder_export", "run_fit", "run_info", "run_zero_shot"]


def register(sub: Any) -> None:
    probe = sub.add_parser(
        "probe",
        help="train a linear head on embeddings (a probe) and show probe folders",
        description="A probe is a small head trained on embeddings of your labelled images, from a local encoder or "
        "a medical foundation-model endpoint; the folder it writes is served by the `probe` backend.",
    )
    psub = probe.add_subparsers(dest="probe_command", metavar="ACTION")
    probe.set_defaults(handler=lambda args: probe.print_help() or 2)
    f = psub.add_parser("fit", help="embed a labelled dataset (cached), measure by lesion-disjoint folds, fit, save")
    f.add_argument("--dataset", required=True, help="labelled images: CSV manifest, folder, HAM10000 layout, parquet")
    f.add_argument("--out", type=Path, required=True, help="probe folder to write (probe.json + head.npz)")
    f.add_argument("--embedder", default="local-onnx", help="embedder registry name (default: local-onnx)")
    f.add_argument(
        "--embedder-option",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="embedder option, repeatable (default for local-onnx: model_dir=sklesion); values are JSON when they "
        "parse as JSON, else strings; never a key or token (embedders read those from the environment)",
    )
    f.add_argument("--holdout", type=float, help="share of lesions set aside as holdout.csv for `derm-cloud compare`")
    f.add_argument("--sizes", type=int, nargs="+", default=[50, 100, 200, 500], help="learning-curve sizes")
    f.add_argument("--folds", type=int, default=5, help="outer lesion-disjoint folds (5)")
    f.add_argument("--seed", type=int, default=0)
    f.add_argument("--limit", type=int, help="a seeded class-stratified subset of N images (a quick look)")
    f.add_argument("--overwrite", action="store_true", help="replace --out if it exists")
    f.add_argument(
        "--embed-via",
        choices=["online", "batch"],
        default="online",
        help="batch: embed the images the cache lacks with one Vertex AI batch prediction job first (vertex-medsiglip"
        ", vertex-derm-foundation; see docs/batch.md); the fit then finds them cached",
    )
    f.add_argument(
        "--batch-option",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="batch job option, repeatable: model_id, bucket (required), machine_type, accelerator_type, "
        "accelerator_count, service_account, poll_s; emulate=EMBEDDER_DIR runs the job on this machine's emulator",
    )
    f.add_argument("--json", action="store_true", help="print probe.json instead of a summary")
    f.set_defaults(handler=run_fit)
    i = psub.add_parser("info", help="what a probe folder records: embedder, data, out-of-fold figures, curve")
    i.add_argument("folder", type=Path)
    i.add_argument("--json", action="store_true")
    i.set_defaults(handler=run_info)
    z = psub.add_parser(
        "zero-shot",
        help="embed text prompts per class once (no labels), optionally measure on a labelled set, save a folder",
        description="Zero-shot from text prompts with an embedder that embeds text (MedSigLIP, MedImageInsight); the "
        "folder it writes is served by the `zero-shot` backend. Scores are uncalibrated.",
    )
    z.add_argument("--out", type=Path, required=True, help="folder to write (zero_shot.json + text_embeddings.npz)")
    z.add_argument("--embedder", required=True, help="embedder registry name (vertex-medsiglip, azure-medimageinsight)")
    z.add_argument("--embedder-option", action="append", default=[], metavar="KEY=VALUE", help="as for `probe fit`")
    z.add_argument("--prompts", type=Path, help="TOML prompt file ([prompts] with a list per class); default: built in")
    z.add_argument("--temperature", type=float, help="multiplier on similarities (default: the model's own)")
    z.add_argument(
        "--dataset", help="labelled images to measure it on (every image is a test image: nothing is fitted)"
    )
    z.add_argument("--limit", type=int, help="a seeded class-stratified subset of N images of --dataset")
    z.add_argument("--seed", type=int, default=0)
    z.add_argument("--overwrite", action="store_true", help="replace --out if it exists")
    z.add_argument("--json", action="store_true", help="print zero_shot.json instead of a summary")
    z.set_defaults(handler=run_zero_shot)


def _options(pairs: list[str]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise ConfigError(f"--embedder-option takes KEY=VALUE, got {pair!r}")
        try:
            out[key] = json.loads(value)
        except json.JSONDecodeError:
            out[key] = value
    return out


def run_fit(args: argparse.Namespace) -> int:
    import derm_cloud
    from derm_cloud.data import load_dataset
    from derm_cloud.probe.fit import fit_probe

    options = _options(args.embedder_option)
    if args.embedder == "local-onnx":
        from derm_cloud.embedders.local_onnx import resolve_embedder_dir

        # Recorded as a path, so the probe folder works wherever the cache is the same.
        options["model_dir"] = str(resolve_embedder_dir(options.get("model_dir", "sklesion")).resolve())
    dataset = load_dataset(args.dataset)
    if args.limit is not None:
        dataset = dataset.subset(min(args.limit, len(dataset)), seed=args.seed)
    start = time.perf_counter()
    say = None if args.json else lambda line: print(line, file=sys.stderr, flush=True)
    with derm_cloud.create_embedder(args.embedder, **options) as embedder:
        before = None
        if args.embed_via == "batch":
            from derm_cloud.probe.batch_embed import batch_cache_filler

            batch_options = _options(args.batch_option)
            before = batch_cache_filler(embedder, batch_options, job_name=f"probe-{args.out.name}", say=say)
        result = fit_probe(
            dataset,
            embedder,
            args.out,
            embedder_name=args.embedder,
            embedder_options=options,
            seed=args.seed,
            outer_splits=args.folds,
            sizes=args.sizes,
            holdout=args.holdout,
            overwrite=args.overwrite,
            progress=say,
            before_embedding=before,
        )
    if args.json:
        print(json.dumps(result.spec, indent=2))
        return 0
    print(summary(result.spec, result.folder))
    print(f"({time.perf_counter() - start:.0f} s; {result.embedded_now} images embedded in this run)")
    if result.holdout is not None:
        print(f"compare it on the held-out images: [dataset] source = {str(result.holdout)!r}")
    return 0


def summary(spec: dict[str, Any], folder: Path) -> str:
    """A few lines a person reads: what the probe is, how it was measured, its learning curve."""
    oof, data, emb = spec.get("out_of_fold") or {}, spec.get("data") or {}, spec["embedder"]

    def ci(values: Any) -> str:
        return f" (95% CI {values[0]:.3f}-{values[1]:.3f})" if values else ""

    lines = [
        f"probe {spec['model_id']} in {folder}",
        f"  embedder   {emb['name']} {emb['model_id']} ({emb['dimension']} values)",
        f"  data       {data.get('source')}: {data.get('images')} images, {data.get('lesions')} lesions, "
        f"sha256 {str(data.get('sha256'))[:12]}",
        f"  head       {spec['head'].get('kind')}, C={spec['head'].get('C')}",
    ]
    if oof:
        sens = oof.get("melanoma_sensitivity")
        lines += [
            f"  out of fold ({oof.get('folds')} lesion-disjoint folds, nested):",
            f"    balanced accuracy     {oof['balanced_accuracy']:.3f}{ci(oof.get('balanced_accuracy_ci'))}",
            f"    melanoma sensitivity  {'n/a' if sens is None else f'{sens:.3f}'}"
            f"{ci(oof.get('melanoma_sensitivity_ci'))}",
        ]
    curve = spec.get("learning_curve") or []
    if curve:
        lines.append("  learning curve (labelled images per fold -> balanced accuracy, 95% CI):")
        lines += [f"    {p['n']:>7.0f}  {p['balanced_accuracy']:.3f}{ci(p.get('ci'))}" for p in curve]
    lines.append("  for triage support and research: a clinician reviews every result")
    return "\n".join(lines)


def run_info(args: argparse.Namespace) -> int:
    from derm_cloud.backends.probe import read_probe_spec

    spec = read_probe_spec(args.folder)
    print(json.dumps(spec, indent=2) if args.json else summary(spec, args.folder))
    return 0


def run_zero_shot(args: argparse.Namespace) -> int:
    import derm_cloud
    from derm_cloud.probe.zero_shot import write_zero_shot

    options = _options(args.embedder_option)
    dataset = None
    if args.dataset:
        from derm_cloud.data import load_dataset

        dataset = load_dataset(args.dataset)
        if args.limit is not None:
            dataset = dataset.subset(min(args.limit, len(dataset)), seed=args.seed)
    with derm_cloud.create_embedder(args.embedder, **options) as embedder:
        run = write_zero_shot(
            embedder,
            args.out,
            embedder_name=args.embedder,
            embedder_options=options,
            prompts=args.prompts,
            temperature=args.temperature,
            dataset=dataset,
            overwrite=args.overwrite,
            progress=None if args.json else lambda line: print(line, file=sys.stderr, flush=True),
        )
    spec = run.spec
    if args.json:
        print(json.dumps(spec, indent=2))
        return 0
    lines = [
        f"zero-shot {spec['model_id']} in {run.folder}",
        f"  embedder     {args.embedder} {spec['embedder']['model_id']} ({spec['embedder']['dimension']} values)",
        f"  prompts      {spec['text_embeddings']['prompts']} ({spec['prompts_version']}), text embeddings sha256 "
        f"{spec['text_embeddings']['fingerprint'][:12]}",
        f"  temperature  {spec['temperature']['value']:.4g} ({spec['temperature']['source']})",
    ]
    measured = spec.get("measured")
    if measured:
        ci = measured.get("balanced_accuracy_ci") or [float("nan")] * 2
        lines.append(
            f"  measured on  {measured['source']}: {measured['images']} images, no labels used: balanced accuracy "
            f"{measured['balanced_accuracy']:.3f} (95% CI {ci[0]:.3f}-{ci[1]:.3f})"
        )
    for key in ("stand_in", "text_embeddings"):
        if key in spec["facts"]:
            lines.append(f"  STAND-IN     {spec['facts'][key]}")
    lines.append("  scores are uncalibrated; for triage support and research: a clinician reviews every result")
    print("\n".join(lines))
    return 0


def run_embedder_export(args: argparse.Namespace) -> int:
    from derm_cloud.embedders.local_onnx import SKLESION_EMBEDDER_FOLDER
    from derm_cloud.models.cache import models_dir
    from derm_cloud.models.embedder_cut import export_classifier_embedder

    out = args.out or (
        models_dir() / (SKLESION_EMBEDDER_FOLDER if args.name == "sklesion" else f"{args.name}-embedder")
    )
    start = time.perf_counter()
    spec, check = export_classifier_embedder(args.name, out, images=args.verify_images, overwrite=args.overwrite)
    print(f"wrote {out}: {spec.model_id}, {spec.dimension} values (the activation {check.tensor!r})")
    print(
        f"checked on {check.images} images: cut vs full graph's penultimate activation max |diff| "
        f"{check.max_abs_diff_embedding:.2e}; the head applied to the embedding vs the full output "
        f"{check.max_abs_diff_probabilities:.2e} ({time.perf_counter() - start:.0f} s)"
    )
    return 0

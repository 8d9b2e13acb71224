"""`derm-cloud models import`: bring a model exported from a managed service home, as a local model folder.

    derm-cloud models import EXPORT [--out DIR] [--project P] [--iteration I] [--flavor F] [--trust-pickle]
    derm-cloud models import --custom-vision PROJECT_ID ITERATION_ID [--flavor OnnxFloat16] [--endpoint URL]
    derm-cloud models import --sagemaker-training-job NAME [--region R]
    derm-cloud models import --vertex-model MODEL_ID --project P --location L --destination gs://BUCKET/PREFIX

EXPORT is a folder, a `.zip`/`.tar.gz` archive or the download URL a service gave. With `--custom-vision`
the export is requested through the training API (key from `$AZURE_CUSTOM_VISION_TRAINING_KEY`, endpoint from
`--endpoint` or `$AZURE_CUSTOM_VISION_TRAINING_ENDPOINT`); with `--sagemaker-training-job` the job's
`model.tar.gz` is downloaded from S3; with `--vertex-model` the model is exported (`--flavor`: the export
format, default `tflite`) to `--destination` and the folder downloaded (Application Default Credentials;
`--endpoint` overrides the Vertex host). The folder written loads with `local-onnx` (`local-tflite` for
TFLite exports).
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
from pathlib import Path
from typing import Any

from derm_cloud.errors import ConfigError

__all__ = ["register_import"]


def register_import(msub: Any) -> None:
    p = msub.add_parser(
        "import",
        help="import a model exported from Custom Vision, SageMaker JumpStart or Vertex AI Edge into a local folder",
        description="Import a managed service's export (folder, archive or download URL), or fetch it through the "
        "service's API first, and write a model folder that local-onnx (or local-tflite, for TFLite exports) "
        "runs, with its provenance.",
    )
    p.add_argument("source", nargs="?", help="export folder, .zip/.tar.gz archive or download URL")
    p.add_argument("--out", type=Path, help="model folder to write (default: the model cache)")
    p.add_argument(
        "--custom-vision", nargs=2, metavar=("PROJECT_ID", "ITERATION_ID"), help="export this iteration first"
    )
    p.add_argument(
        "--endpoint",
        help="Custom Vision training endpoint ($AZURE_CUSTOM_VISION_TRAINING_ENDPOINT); with --vertex-model the "
        "Vertex AI host (default {location}-aiplatform.googleapis.com)",
    )
    p.add_argument("--sagemaker-training-job", metavar="NAME", help="download this training job's model.tar.gz")
    p.add_argument("--region", help="AWS region of the training job")
    p.add_argument("--vertex-model", metavar="MODEL_ID", help="export this Vertex AI model and download it")
    p.add_argument("--location", help="Vertex AI region of the model (e.g. us-central1)")
    p.add_argument("--destination", help="gs://BUCKET/PREFIX the Vertex export is written to")
    p.add_argument("--project", help="provenance: project name or id (--vertex-model: the Google Cloud project)")
    p.add_argument("--iteration", help="provenance: iteration or model version")
    p.add_argument(
        "--flavor",
        help="export flavor (Custom Vision: OnnxFloat16 or TensorFlowLite; default ONNX float32; Vertex: the "
        "export format id, default tflite)",
    )
    p.add_argument("--trust-pickle", action="store_true", help="allow pickled PyTorch models (they run code)")
    p.add_argument("--overwrite", action="store_true", help="replace --out if it exists")
    p.add_argument("--json", action="store_true")
    p.set_defaults(handler=run_import)


def run_import(args: argparse.Namespace) -> int:
    from derm_cloud.models.imports import import_model

    modes = sum(bool(x) for x in (args.source, args.custom_vision, args.sagemaker_training_job, args.vertex_model))
    if modes != 1:
        raise ConfigError(
            "give exactly one of: an EXPORT path/URL, --custom-vision PROJECT ITERATION, "
            "--sagemaker-training-job NAME, or --vertex-model MODEL_ID"
        )
    provenance: dict[str, Any] = {"project": args.project, "iteration": args.iteration, "flavor": args.flavor}
    with tempfile.TemporaryDirectory(prefix="derm-cloud-fetch-") as tmp:
        source: str = args.source or ""
        if args.custom_vision:
            from derm_cloud.models.imports.cloud import export_custom_vision

            project_id, iteration_id = args.custom_vision
            endpoint = args.endpoint or os.environ.get("AZURE_CUSTOM_VISION_TRAINING_ENDPOINT", "")
            key = os.environ.get("AZURE_CUSTOM_VISION_TRAINING_KEY", "")
            if not endpoint or not key:
                raise ConfigError(
                    "--custom-vision needs the training endpoint (--endpoint or $AZURE_CUSTOM_VISION_TRAINING_"
                    "ENDPOINT) and $AZURE_CUSTOM_VISION_TRAINING_KEY (never passed on the command line)"
                )
            # The TFLite flavor belongs to the TensorFlow platform; every other flavor derm-cloud runs is ONNX.
            platform = "TensorFlow" if args.flavor == "TensorFlowLite" else "ONNX"
            source = export_custom_vision(
                endpoint, key, project_id, iteration_id, platform=platform, flavor=args.flavor
            )
            provenance.update(project=args.project or project_id, iteration=args.iteration or iteration_id)
        elif args.sagemaker_training_job:
            from derm_cloud.models.imports.cloud import sagemaker_model_artifacts

            path, uri = sagemaker_model_artifacts(args.sagemaker_training_job, tmp, region=args.region)
            source = str(path)
            provenance.update(training_job=args.sagemaker_training_job, model_artifacts=uri)
        elif args.vertex_model:
            source, vertex_facts = _fetch_vertex(args, Path(tmp) / "vertex-export")
            provenance.update(vertex_facts)
        result = import_model(
            source, args.out, provenance=provenance, trust_pickle=args.trust_pickle, overwrite=args.overwrite
        )
    row = {
        "model_dir": str(result.model_dir),
        "layout": result.layout,
        "model_id": result.spec.model_id,
        "labels": list(result.spec.labels),
        "label_space": result.spec.facts.get("label_space"),
        "provenance": result.spec.facts.get("provenance"),
    }
    if args.json:
        print(json.dumps(row, indent=2))
        return 0
    labels = result.spec.labels
    print(f"{result.spec.model_id}: {result.model_dir} ({result.layout}, {len(labels)} labels)")
    backend = "local-tflite" if result.spec.model_file.endswith(".tflite") else "local-onnx"
    own = result.spec.facts.get("label_space") == "own"
    if own:
        shown = ", ".join(labels[:8]) + (f" and {len(labels) - 8} more" if len(labels) > 8 else "")
        print(
            f"  its labels ({shown}) are not the 7 HAM10000 classes: it is imported with its own label space, and "
            "classify shows those labels as they are (never as lesion classes) with -o allow_unmapped=true; if they "
            'are lesion classes under other names, pass -o label_overrides=\'{"tag": "mel", ...}\' instead'
        )
    extra = " -o allow_unmapped=true" if own else ""
    print(f"  run it: derm-cloud classify IMAGE --backend {backend} -o model_dir={result.model_dir}{extra}")
    return 0


def _fetch_vertex(args: argparse.Namespace, out_dir: Path) -> tuple[str, dict[str, Any]]:
    """Export `--vertex-model` to `--destination` and download it; the folder and its provenance."""
    from derm_cloud.models.imports.cloud import export_vertex_model

    missing = [
        flag
        for flag, value in (
            ("--project", args.project),
            ("--location", args.location),
            ("--destination", args.destination),
        )
        if not value
    ]
    if missing:
        raise ConfigError(
            f"--vertex-model needs {', '.join(missing)} (the Google Cloud project, the model's region such as "
            "us-central1, and a gs://BUCKET/PREFIX the export may be written to)"
        )
    export_format = args.flavor or "tflite"
    folder, uri = export_vertex_model(
        args.vertex_model,
        project=args.project,
        location=args.location,
        destination=args.destination,
        out_dir=out_dir,
        export_format_id=export_format,
        api_endpoint=args.endpoint,
    )
    facts = {
        "model": args.vertex_model.rsplit("/", 1)[-1],
        "vertex_model": args.vertex_model,
        "location": args.location,
        "export_format": export_format,
        "flavor": export_format,
        "artifact_uri": uri,
    }
    return str(folder), facts

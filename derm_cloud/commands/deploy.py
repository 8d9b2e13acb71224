"""`derm-cloud deploy`: package a model with its serving adapter for a cloud."""

from __future__ import annotations

import argparse
import json
from typing import Any


def register(sub: Any) -> None:
    from derm_cloud.deploy.package import CLOUDS

    deploy = sub.add_parser(
        "deploy",
        help="package a model directory with its serving adapter for SageMaker, Azure ML or Vertex AI",
        description="Deployment artefacts for the derm-cloud serving adapters (see infra/ for the cloud resources).",
    )
    actions = deploy.add_subparsers(dest="deploy_command", metavar="ACTION")
    p = actions.add_parser(
        "package",
        help="write the artefact layout a cloud expects (model archive, container build context, YAML)",
        description=(
            "Package MODEL_DIR with its adapter: sagemaker -> model.tar.gz (model at the root + code/inference.py "
            "+ code/requirements.txt) and container/ (the `serve` image build context); azureml -> model/, "
            "code/score.py, environment/conda.yaml, endpoint.yml, deployment.yml; vertex -> container/ (custom "
            "container with the model baked in) and model/. Each carries its own copy of derm_cloud and a "
            "MANIFEST.json with sha256 digests."
        ),
    )
    p.add_argument("model_dir", metavar="MODEL_DIR", help="model directory (model.onnx + spec.json) or 'sklesion'")
    p.add_argument("--cloud", required=True, choices=CLOUDS, help="target cloud")
    p.add_argument("--out", required=True, metavar="DIR", help="output folder (must be empty or absent)")
    p.add_argument("--overwrite", action="store_true", help="replace a non-empty output folder")
    p.add_argument("--adapters-dir", metavar="DIR", help="adapters/ folder (default: shipped or source checkout)")
    p.add_argument("--endpoint-name", default="derm-cloud", help="azureml: online endpoint name")
    p.add_argument("--instance-type", default="Standard_DS3_v2", help="azureml: deployment instance type")
    p.add_argument("--instance-count", type=int, default=1, help="azureml: deployment instance count")
    p.add_argument("--json", action="store_true", help="print the result as JSON")
    p.set_defaults(handler=run_package)
    deploy.set_defaults(handler=lambda args: deploy.print_help() or 2)


def run_package(args: argparse.Namespace) -> int:
    from derm_cloud.deploy.package import package_model

    result = package_model(
        args.cloud,
        args.model_dir,
        args.out,
        adapters_dir=args.adapters_dir,
        endpoint_name=args.endpoint_name,
        instance_type=args.instance_type,
        instance_count=args.instance_count,
        overwrite=args.overwrite,
    )
    if args.json:
        payload = {
            "cloud": result.cloud,
            "out_dir": str(result.out_dir),
            "artefacts": [str(p) for p in result.artefacts],
            "manifest": str(result.manifest),
            "next_steps": result.next_steps,
        }
        print(json.dumps(payload, indent=2))
        return 0
    print(f"{result.cloud} package written to {result.out_dir}")
    for path in result.artefacts:
        print(f"  {path.relative_to(result.out_dir)}{'/' if path.is_dir() else ''}")
    print("next steps:")
    for step in result.next_steps:
        print(f"  - {step}")
    return 0

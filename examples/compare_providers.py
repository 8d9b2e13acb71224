"""For the architect: compare the same model on this machine and behind each cloud's API, then open the report.

Runs ``derm_cloud.compare.run_comparison`` over a labelled dataset (a CSV manifest with a ``label`` or ``dx``
column, a folder, or the HAM10000 layout) with the model served by ``local-onnx`` and by the SageMaker, Azure
ML and Vertex AI emulators (the clouds' real SDKs against 127.0.0.1, no credentials), and writes the HTML report:
quality with confidence intervals, latency percentiles, cost per month and per 1,000 predictions, and
fairness. Point ``--config`` at your own comparison config to compare real endpoints instead.

    python examples/compare_providers.py --dataset ../shared/data/ham10000/dev.csv --limit 50 --open

Images in the default dataset: HAM10000 (Tschandl et al. 2018, CC BY-NC 4.0). The report supports choosing a
provider; it is not a clinical validation, and a clinician reviews every result.
"""

from __future__ import annotations

import argparse
import sys
import webbrowser
from pathlib import Path
from typing import Any

from derm_cloud.compare import run_comparison

DEFAULT_DATASET = Path(__file__).resolve().parents[2] / "shared" / "data" / "ham10000" / "dev.csv"
CLOUDS = ("sagemaker", "azure-ml", "vertex")


def build_config(
    dataset: str | None, model_dir: str, out: str, limit: int | None, *, quick: bool, clouds: tuple[str, ...] = CLOUDS
) -> dict[str, Any]:
    """A comparison config: the model locally plus behind each cloud's emulator."""
    backends: list[dict[str, Any]] = [{"name": "local-onnx", "type": "local-onnx", "options": {"model_dir": model_dir}}]
    options = {
        "sagemaker": {"endpoint_name": "derm-cloud", "instance_type": "ml.m5.large"},
        "azure-ml": {"instance_type": "Standard_DS3_v2", "send_metadata": True},
        "vertex": {"schema": "automl"},
    }
    for cloud in clouds:
        backends.append(
            {"name": cloud, "type": cloud, "emulate": True, "model_dir": model_dir, "options": options[cloud]}
        )
    config: dict[str, Any] = {
        "title": "Where should the lesion classifier run? Local vs SageMaker vs Azure ML vs Vertex AI",
        "output": out,
        # One backend at a time: concurrent backends on one machine would measure each other's load.
        "backends_in_parallel": False,
        "dataset": {"source": dataset, "limit": limit},
        "population": {"monthly_volume": 100_000},
        "backends": backends,
    }
    if quick:
        # Enough to exercise every section; a real decision needs the default (larger) query counts.
        config["scenarios"] = {
            "warmup": 1,
            "min_samples": 5,
            "bootstrap": 50,
            "single_stream": {"queries": 6},
            "server": {"queries": 6, "target_qps": 20.0, "latency_bound_ms": 5000},
            "offline": {"queries": 6, "concurrency": [1, 2]},
            "cold_start": {"trials": 1, "warm_queries": 1},
        }
        config["fairness"] = {"skin_tone": "none"}
    return config


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--dataset", default=str(DEFAULT_DATASET), help="labelled manifest, folder or HAM10000 layout")
    parser.add_argument("--model-dir", default="sklesion", help="model every backend serves (default: sklesion)")
    parser.add_argument("--config", help="a comparison config of your own (real endpoints); overrides the above")
    parser.add_argument("--limit", type=int, default=50, help="class-stratified subset of the dataset (default 50)")
    parser.add_argument("--out", default="derm-cloud-report", help="report folder")
    parser.add_argument("--quick", action="store_true", help="small latency scenarios (a smoke run)")
    parser.add_argument("--open", action="store_true", help="open the HTML report in the browser when done")
    args = parser.parse_args(argv)

    if args.config:
        result = run_comparison(args.config, limit=args.limit, output=args.out)
    else:
        model_dir = args.model_dir
        if model_dir == "sklesion":
            from derm_cloud.compare.run.defaults import ensure_sklesion

            model_dir = str(ensure_sklesion())
        config = build_config(args.dataset, model_dir, args.out, args.limit, quick=args.quick)
        result = run_comparison(config)
    print(f"report: {result.html}")
    print(f"data:   {result.json}  (figures in {result.figures_dir})")
    for warning in result.warnings[:10]:
        print(f"note: {warning}", file=sys.stderr)
    if args.open:
        webbrowser.open(result.html.resolve().as_uri())
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Throughput of the local-onnx backend against a bare onnxruntime loop, measured side by side in one run.

For batch sizes 1 and 16 it times, on the same dev images:
  * bare  - onnxruntime on tensors preprocessed beforehand (the model alone; the ceiling);
  * bare+prep - a hand-written loop doing decode + resize + onnxruntime (what a user would write);
  * derm-cloud - ``LocalOnnxClassifier.predict_batch`` (decode, validation, metadata, mapping, timing);
and reports derm-cloud / bare+prep (goal >= 0.95x), plus the per-image split between the library's own
decode+resize and model time. Rounds alternate between the contenders so that machine noise hits all alike.

    python benchmarks/local_throughput.py [--images 32] [--rounds 3] [--model-dir sklesion]
"""

from __future__ import annotations

import argparse
import csv
import statistics
import time
from pathlib import Path

import numpy as np

import derm_cloud
from derm_cloud.backends.local_onnx import OnnxModel
from derm_cloud.images import load_image
from derm_cloud.preprocess import encode_metadata, image_tensor
from derm_cloud.types import PatientMetadata

DEV_CSV = Path(__file__).resolve().parents[2] / "shared" / "data" / "ham10000" / "dev.csv"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model-dir", default="sklesion")
    parser.add_argument("--images", type=int, default=32)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()

    with DEV_CSV.open() as fh:
        paths = [DEV_CSV.parent / r["file"] for r in list(csv.DictReader(fh))[: args.images]]
    model = OnnxModel(args.model_dir, intra_op_threads=args.threads)
    spec = model.spec
    clf = derm_cloud.create("local-onnx", model_dir=args.model_dir, intra_op_threads=args.threads)
    metas = [PatientMetadata()] * len(paths)

    # Split of one image's time: decode + resize (library) vs model.
    t0 = time.perf_counter()
    prepared = [load_image(p) for p in paths]
    tensors = np.stack([image_tensor(im.image, spec.preprocess, spec.layout) for im in prepared])
    prep_ms = (time.perf_counter() - t0) * 1000 / len(paths)
    meta = encode_metadata(spec, metas)
    model.run_tensors(tensors[:2], None if meta is None else meta[:2])  # warm-up

    def bare(bs: int) -> None:
        for lo in range(0, len(paths), bs):
            model.run_tensors(tensors[lo : lo + bs], None if meta is None else meta[lo : lo + bs])

    def bare_with_prep(bs: int) -> None:
        for lo in range(0, len(paths), bs):
            chunk = [load_image(p) for p in paths[lo : lo + bs]]
            x = np.stack([image_tensor(im.image, spec.preprocess, spec.layout) for im in chunk])
            model.run_tensors(x, None if meta is None else meta[lo : lo + bs])

    def library(bs: int) -> None:
        clf.predict_batch(paths, metas, batch_size=bs)

    contenders = {"bare onnxruntime": bare, "bare + decode/resize": bare_with_prep, "derm-cloud local-onnx": library}
    print(f"model {spec.model_id}, {len(paths)} dev images, {args.threads} threads, fixed batch: {model.max_batch}")
    print(f"per image: decode+resize {prep_ms:.1f} ms (library code)")
    for bs in (1, 16):
        times: dict[str, list[float]] = {k: [] for k in contenders}
        for _ in range(args.rounds):
            for name, fn in contenders.items():  # interleaved: noise hits every contender alike
                start = time.perf_counter()
                fn(bs)
                times[name].append(time.perf_counter() - start)
        rates = {k: len(paths) / statistics.median(v) for k, v in times.items()}
        print(f"\nbatch {bs}: images/s (median of {args.rounds} rounds)")
        for name, rate in rates.items():
            print(f"  {name:<24} {rate:7.2f}")
        ratio = rates["derm-cloud local-onnx"] / rates["bare + decode/resize"]
        print(f"  derm-cloud / bare+decode {ratio:5.3f}x (goal >= 0.95x)")
        model_ms = 1000 / rates["bare onnxruntime"]
        print(f"  per image: model {model_ms:.1f} ms, decode+resize {prep_ms:.1f} ms")
    clf.close()


if __name__ == "__main__":
    main()

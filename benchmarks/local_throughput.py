"""Throughput of the local-onnx backend against an independent baseline, measured side by side in one run.

The baseline shares no code with derm-cloud: plain Pillow decode, a TensorFlow-style half-pixel bilinear resize
written here in numpy, and ``onnxruntime.InferenceSession.run``. Its probabilities are checked equal to the
library's (within 1e-4) before anything is timed, so both do the same work. Contenders:

* baseline - the hand-written loop above, one image at a time or in batches;
* predict - ``clf.predict(path)`` one image at a time (batch 1 only);
* predict_batch - ``clf.predict_batch(paths, batch_size=B)``.

Each round takes the next chunk of images (``--chunk``, 32 by default) and runs every contender on that same
chunk, back to back, in an order that rotates from round to round; ``--passes`` goes over all the images that
many times. A round's ratio is contender / baseline images/s within that round, so the machine's drift (this
machine is shared) hits both sides of a ratio: each figure is the median ratio over rounds with its 95 %
bootstrap interval, beside the median images/s and its min-max spread. Goal: >= 0.99x the baseline.

    PYTHONPATH=. python benchmarks/local_throughput.py [--images 192] [--chunk 32] [--passes 3]
        [--model-dir sklesion] [--batches 1,16]

Real images: HAM10000, Tschandl et al. 2018, CC BY-NC 4.0 (read in place, never copied).
"""

from __future__ import annotations

import argparse
import csv
import json
import statistics
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

DEV_CSV = Path(__file__).resolve().parents[2] / "shared" / "data" / "ham10000" / "dev.csv"


def _axis(in_size: int, out_size: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    # Half-pixel centres, float32 like TensorFlow: src = (dst + 0.5) * in / out - 0.5, clamped at the edges.
    src = (np.arange(out_size, dtype=np.float32) + 0.5) * np.float32(in_size / out_size) - 0.5
    lo = np.floor(src)
    frac = (src - lo).astype(np.float32)
    return np.clip(lo, 0, in_size - 1).astype(int), np.clip(lo + 1, 0, in_size - 1).astype(int), frac


def _baseline_tensor(path: Path, height: int, width: int) -> np.ndarray:
    from PIL import Image

    with Image.open(path) as im:
        arr = np.asarray(im.convert("RGB"))
    y0, y1, fy = _axis(arr.shape[0], height)
    x0, x1, fx = _axis(arr.shape[1], width)
    top = arr[y0][:, x0].astype(np.float32) * (1 - fx[None, :, None]) + arr[y0][:, x1] * fx[None, :, None]
    bottom = arr[y1][:, x0].astype(np.float32) * (1 - fx[None, :, None]) + arr[y1][:, x1] * fx[None, :, None]
    out: np.ndarray = top * (1 - fy[:, None, None]) + bottom * fy[:, None, None]
    return out


def _interval(ratios: np.ndarray) -> tuple[float, float]:
    """95 % bootstrap interval of the median of per-round ratios."""
    rng = np.random.default_rng(0)
    medians = np.median(rng.choice(ratios, size=(2000, ratios.size)), axis=1)
    low, high = np.percentile(medians, [2.5, 97.5])
    return float(low), float(high)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model-dir", default="sklesion")
    parser.add_argument("--images", type=int, default=192, help="distinct dev images, cycled if more are asked")
    parser.add_argument("--chunk", type=int, default=32, help="images per round")
    parser.add_argument("--passes", type=int, default=3, help="times every chunk is measured")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--batches", default="1,16", help="batch sizes to measure, e.g. 16")
    args = parser.parse_args()
    import onnxruntime as ort

    import derm_cloud
    from derm_cloud.models.cache import resolve_model_dir

    with DEV_CSV.open() as fh:
        rows = list(csv.DictReader(fh))
    paths = [DEV_CSV.parent / r["file"] for r in (rows * (1 + args.images // len(rows)))[: args.images]]
    model_dir = resolve_model_dir(args.model_dir)
    spec = json.loads((model_dir / "spec.json").read_text())
    height, width = spec["preprocess"]["height"], spec["preprocess"]["width"]
    options = ort.SessionOptions()
    options.intra_op_num_threads = args.threads
    session = ort.InferenceSession(str(model_dir / "model.onnx"), options, providers=["CPUExecutionProvider"])
    inputs = [i.name for i in session.get_inputs()]
    clf = derm_cloud.create("local-onnx", model_dir=str(model_dir), intra_op_threads=args.threads)
    # The metadata input for "no metadata" is the model's contract, not measured work: taken once from the spec's
    # encoder so both sides feed the model the same vector.
    from derm_cloud.preprocess import metadata_encoder
    from derm_cloud.types import PatientMetadata

    unknown = metadata_encoder(spec["metadata_input"]["encoding"])(PatientMetadata()).astype(np.float32)

    def baseline(batch: int, subset: list[Path] = paths) -> list[np.ndarray]:
        out = []
        for lo in range(0, len(subset), batch):
            x = np.stack([_baseline_tensor(p, height, width) for p in subset[lo : lo + batch]])
            feed = {inputs[0]: x}
            if len(inputs) > 1:
                feed[inputs[1]] = np.repeat(unknown[None], len(x), axis=0)
            out.extend(session.run(None, feed)[0])
        return out

    # Same work: probabilities equal before timing (the library reports them in canonical class order).
    from derm_cloud.taxonomy import CLASS_CODES

    order = [spec["labels"].index(code) for code in CLASS_CODES]
    mine = np.asarray([p.vector() for p in clf.predict_batch(paths[:8])])
    theirs = np.asarray(baseline(8, paths[:8]))[:, order]
    gap = float(np.abs(mine - theirs).max())
    print(f"model {spec['model_id']}, {len(paths)} images, {args.threads} threads; max |p - p_baseline| = {gap:.2e}")
    assert gap < 1e-4, "the baseline does not compute what the library computes"

    chunks = [paths[lo : lo + args.chunk] for lo in range(0, len(paths), args.chunk)]
    for batch in (int(b) for b in args.batches.split(",")):
        contenders: dict[str, Callable[[list[Path]], object]] = {"baseline": lambda chunk, b=batch: baseline(b, chunk)}
        if batch == 1:
            contenders["predict"] = lambda chunk: [clf.predict(p) for p in chunk]
        contenders["predict_batch"] = lambda chunk, b=batch: clf.predict_batch(chunk, batch_size=b)
        rates: dict[str, list[float]] = {k: [] for k in contenders}
        names = list(contenders)
        for r in range(args.passes * len(chunks)):
            chunk = chunks[r % len(chunks)]
            for name in names[r % len(names) :] + names[: r % len(names)]:
                start = time.perf_counter()
                contenders[name](chunk)
                rates[name].append(len(chunk) / (time.perf_counter() - start))
        print(f"\nbatch {batch}: {len(rates['baseline'])} rounds of {args.chunk} images")
        print("  contender      images/s median [min-max]   ratio to baseline, median of rounds [95% interval]")
        for name, values in rates.items():
            ratios = np.asarray(values) / np.asarray(rates["baseline"])
            low, high = _interval(ratios)
            print(
                f"  {name:<14} {statistics.median(values):7.2f} [{min(values):.2f}-{max(values):.2f}]"
                f"        {float(np.median(ratios)):.3f}x [{low:.3f}-{high:.3f}]"
            )
    clf.close()


if __name__ == "__main__":
    main()

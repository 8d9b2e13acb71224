"""What derm-cloud adds to a cloud call: our ``predict()`` against the bare SDK call, same emulator, same image.

For each backend (SageMaker, Custom Vision, Azure ML, Vertex REST and gRPC, Cloud Vision, Azure OpenAI), each
served by its local emulator through the real SDK, and each image (a 600x450 HAM10000 dermoscopy JPEG, a
generated 4000x3000 phone photo with EXIF GPS, a PNG), three contenders run interleaved (the order rotates
every round, warm-up calls excluded):

* bare - the SDK method our backend calls, called directly with the image file's bytes (recorded once from
  one of our calls, with our payload swapped for the raw file: the same request a user would hand-write);
* ours(file) - ``clf.predict(path)``: read, check, strip metadata (and the JPEG damage check) on every call;
* ours(payload) - ``clf.predict(payload)`` with ``derm_cloud.prepare_payload(path)`` done once, as a
  comparison run does for every backend.

Reported per row: median and p95 in ms, the median ratio to bare and the added ms at the median. Goal: ratio
<= 1.05 or <= 0.3 ms added. The emulators run in this process (hosting a tiny ONNX model), so their own work
is in both sides of every ratio.

Before the backends it measures the client-side preparation of each JPEG: header parse and lossless strip,
the libjpeg entropy check added to it (the damage check), and a full Pillow decode, side by side.

    python benchmarks/backend_overhead.py [--calls 150] [--phone-calls 30] [--warmup 10] [--out table.md]
    python benchmarks/backend_overhead.py --backends ""   # the preparation costs only

Real images: HAM10000, Tschandl et al. 2018, CC BY-NC 4.0 (read in place, never copied).
"""

from __future__ import annotations

import argparse
import base64
import csv
import io
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

import derm_cloud
from derm_cloud.base import Classifier

DEV_CSV = Path(__file__).resolve().parents[2] / "shared" / "data" / "ham10000" / "dev.csv"

# Where each backend calls its SDK: (object holding the method, method name).
SDK_METHODS: dict[str, Callable[[Any], tuple[Any, str]]] = {
    "sagemaker": lambda clf: (clf.client, "invoke_endpoint"),
    "azure-custom-vision": lambda clf: (
        clf._client,
        "classify_image" if clf.store_images else "classify_image_with_no_store",
    ),
    "azure-ml": lambda clf: (clf._session, "post"),
    "vertex-rest": lambda clf: (clf._client, "predict"),
    "vertex-grpc": lambda clf: (clf._client, "predict"),
    "cloud-vision": lambda clf: (clf._client, "label_detection"),
    "azure-openai": lambda clf: (clf._client.chat.completions, "create"),
}


def _backends(model: Path, stack: ExitStack) -> dict[str, Classifier]:
    from derm_cloud.testing.emulators.azure_custom_vision import CustomVisionEmulator, custom_vision_backend_for
    from derm_cloud.testing.emulators.azure_ml import AzureMLEmulator, azure_ml_backend_for
    from derm_cloud.testing.emulators.azure_openai import AzureOpenAIEmulator, azure_openai_backend_for
    from derm_cloud.testing.emulators.cloud_vision import CloudVisionEmulator, cloud_vision_backend_for
    from derm_cloud.testing.emulators.sagemaker import SageMakerRuntimeEmulator, sagemaker_backend_for
    from derm_cloud.testing.emulators.vertex import VertexEmulator, vertex_backend_for

    sagemaker = stack.enter_context(SageMakerRuntimeEmulator())
    sagemaker.add_endpoint("derm", model, response_format="adapter")
    vertex_rest = stack.enter_context(VertexEmulator(model, schema="custom"))
    vertex_grpc = stack.enter_context(VertexEmulator(model))
    custom_vision = stack.enter_context(CustomVisionEmulator(model))
    azure_ml = stack.enter_context(AzureMLEmulator(model))
    vision = stack.enter_context(CloudVisionEmulator())
    openai = stack.enter_context(AzureOpenAIEmulator(model, decimals=6))
    makers: dict[str, Callable[[], Classifier]] = {
        "sagemaker": lambda: sagemaker_backend_for(sagemaker, "derm"),
        "azure-custom-vision": lambda: custom_vision_backend_for(custom_vision),
        "azure-ml": lambda: azure_ml_backend_for(azure_ml),
        "vertex-rest": lambda: vertex_backend_for(vertex_rest),
        "vertex-grpc": lambda: vertex_backend_for(vertex_grpc, transport="grpc"),
        "cloud-vision": lambda: cloud_vision_backend_for(vision),
        "azure-openai": lambda: azure_openai_backend_for(openai),
    }
    return {name: stack.enter_context(make()) for name, make in makers.items()}


def _images(folder: Path) -> dict[str, Path]:
    with DEV_CSV.open(newline="") as fh:
        row = next(csv.DictReader(fh))
    dermoscopy = DEV_CSV.parent / row["file"]
    rgb = Image.open(dermoscopy).convert("RGB")
    # A phone photo: 4000x3000, sensor-like noise, EXIF with GPS, as a camera writes it.
    rng = np.random.default_rng(0)
    big = np.asarray(rgb.resize((4000, 3000), Image.Resampling.BICUBIC), dtype=np.int16)
    noisy = np.clip(big + rng.normal(0, 4, big.shape), 0, 255).astype(np.uint8)
    exif = Image.Exif()
    exif[0x010F] = "PhoneMaker"
    exif[0x8825] = {1: "N", 2: (48.0, 12.0, 30.0), 3: "E", 4: (16.0, 22.0, 5.0)}
    phone = folder / "phone-4000x3000.jpg"
    Image.fromarray(noisy).save(phone, "JPEG", quality=88, exif=exif.tobytes())
    png = folder / "dermoscopy.png"
    rgb.save(png, "PNG")
    return {"dermoscopy 600x450 JPEG": dermoscopy, "phone 4000x3000 JPEG": phone, "dermoscopy 600x450 PNG": png}


def _swap(value: Any, ours: bytes, raw: bytes) -> Any:
    """``value`` with our payload bytes (raw or base64, also inside JSON bodies) replaced by the raw file's."""
    ours64, raw64 = base64.b64encode(ours), base64.b64encode(raw)
    if isinstance(value, bytes):
        return raw if value == ours else value.replace(ours64, raw64)
    if isinstance(value, str):
        return value.replace(ours64.decode(), raw64.decode())
    if isinstance(value, dict):
        return {k: _swap(v, ours, raw) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return type(value)(_swap(v, ours, raw) for v in value)
    return value


@contextmanager
def _recorded(holder: Any, name: str) -> Iterator[list[tuple[tuple[Any, ...], dict[str, Any]]]]:
    calls: list[tuple[tuple[Any, ...], dict[str, Any]]] = []
    original = getattr(holder, name)

    def record(*args: Any, **kwargs: Any) -> Any:
        calls.append((args, kwargs))
        return original(*args, **kwargs)

    # Some SDKs read attributes off their own methods (msrest: self.method.metadata["url"]): keep them.
    vars(record).update(vars(getattr(original, "__func__", original)))
    had_own = name in vars(holder)
    setattr(holder, name, record)
    try:
        yield calls
    finally:
        if had_own:
            setattr(holder, name, original)
        else:
            delattr(holder, name)


def _bare_call(name: str, clf: Classifier, path: Path) -> Callable[[], Any]:
    holder, method = SDK_METHODS[name](clf)
    payload = derm_cloud.prepare_payload(path)
    with _recorded(holder, method) as calls:
        clf.predict(payload)
    sent = payload.data
    args, kwargs = calls[-1]
    raw = path.read_bytes()
    args, kwargs = _swap(args, sent, raw), _swap(kwargs, sent, raw)
    original = getattr(holder, method)

    def bare() -> Any:
        result = original(*args, **kwargs)
        if isinstance(result, dict) and hasattr(result.get("Body"), "read"):
            result["Body"].read()  # boto3 streams the answer: reading it is part of the call
        return result

    return bare


def _measure(contenders: dict[str, Callable[[], Any]], calls: int, warmup: int) -> dict[str, list[float]]:
    times: dict[str, list[float]] = {k: [] for k in contenders}
    names = list(contenders)
    for i in range(warmup + calls):
        order = names[i % len(names) :] + names[: i % len(names)]  # rotate who goes first
        for key in order:
            start = time.perf_counter()
            contenders[key]()
            elapsed = (time.perf_counter() - start) * 1000
            if i >= warmup:
                times[key].append(elapsed)
    return times


def _decode_costs(images: dict[str, Path], calls: int) -> list[str]:
    """Client-side preparation per JPEG, side by side: what the damage check costs against a full decode."""
    from derm_cloud.images import ImageLimits

    structure_only = ImageLimits(jpeg_entropy_check=False)
    lines = [
        "| image | header + strip (structure check) ms | + libjpeg entropy check ms | Pillow full decode ms |",
        "|---|---|---|---|",
    ]
    for label, path in images.items():
        if not label.endswith("JPEG"):
            continue
        data = path.read_bytes()

        def full_decode(data: bytes = data) -> None:
            Image.open(io.BytesIO(data)).load()

        t = _measure(
            {
                "structure": lambda data=data: derm_cloud.prepare_payload(data, limits=structure_only),
                "entropy": lambda data=data: derm_cloud.prepare_payload(data),
                "decode": full_decode,
            },
            calls if "phone" not in label else max(3, calls // 10),
            2,
        )
        s, e, d = (statistics.median(t[k]) for k in ("structure", "entropy", "decode"))
        lines.append(f"| {label} | {s:.2f} | {e:.2f} | {d:.2f} |")
    return lines


def _p95(values: list[float]) -> float:
    return float(np.percentile(values, 95))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=150, help="timed calls per contender (small images)")
    parser.add_argument("--phone-calls", type=int, default=30, help="timed calls per contender (phone photo)")
    parser.add_argument("--warmup", type=int, default=10)
    parser.add_argument("--backends", default=",".join(SDK_METHODS))
    parser.add_argument("--out", type=Path, default=None, help="also write the Markdown table here")
    args = parser.parse_args()
    from derm_cloud.testing.tiny_models import build_tiny_onnx_model

    lines = [
        "| backend | image | bare median / p95 ms | ours(file) median / p95 ms | ratio | added ms "
        "| ours(payload) median / p95 ms | ratio | added ms | note |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    with tempfile.TemporaryDirectory() as tmp, ExitStack() as stack:
        model = build_tiny_onnx_model(Path(tmp) / "tiny", with_metadata=True, layout="NHWC")
        images = _images(Path(tmp))
        costs = _decode_costs(images, args.calls)
        print("\n".join(costs), flush=True)
        backends = _backends(model, stack) if args.backends else {}
        for name in filter(None, args.backends.split(",")):
            clf = backends[name]
            for label, path in images.items():
                payload = derm_cloud.prepare_payload(path)
                note = ""
                try:
                    bare = _bare_call(name, clf, path)
                    bare()
                except Exception as exc:  # the raw file is over a limit our backend re-encodes to fit
                    lines.append(
                        f"| {name} | {label} | refused: {type(exc).__name__} | | | | | | | bare SDK call fails |"
                    )
                    print(lines[-1], flush=True)
                    continue
                reencoded = clf.predict(payload).extra.get("payload_reencoded")
                if reencoded:
                    note = "payload re-encoded to fit this provider"
                n = args.phone_calls if "phone" in label else args.calls
                t = _measure(
                    {
                        "bare": bare,
                        "file": lambda clf=clf, path=path: clf.predict(path),
                        "payload": lambda clf=clf, payload=payload: clf.predict(payload),
                    },
                    n,
                    args.warmup,
                )
                b, f, p = (statistics.median(t[k]) for k in ("bare", "file", "payload"))
                lines.append(
                    f"| {name} | {label} | {b:.2f} / {_p95(t['bare']):.2f} | {f:.2f} / {_p95(t['file']):.2f} "
                    f"| {f / b:.3f} | {f - b:+.2f} | {p:.2f} / {_p95(t['payload']):.2f} | {p / b:.3f} "
                    f"| {p - b:+.2f} | {note} |"
                )
                print(lines[-1], flush=True)
    table = "\n".join([*costs, "", *lines])
    print()
    print(table)
    if args.out:
        args.out.write_text(table + "\n")
    sys.stdout.flush()


if __name__ == "__main__":
    main()

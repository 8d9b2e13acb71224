"""Helpers of ``compare_scaling.py`` section 3: a CPU-bound backend and CPU time grouped by module (yappi).

The backend is registered with ``register_backend("cpu-bound", "cpu_share:CpuBoundClassifier")``: this file's
folder is on ``sys.path`` when a benchmark script in it runs.
"""

from __future__ import annotations

import os
from collections import defaultdict
from collections.abc import Iterable
from typing import Any

import numpy as np

from derm_cloud.base import BackendInfo, Classifier, RawResult
from derm_cloud.images import PreparedImage
from derm_cloud.taxonomy import CLASS_CODES, LabelMap
from derm_cloud.types import PatientMetadata

#: SDK packages (client side) and emulator packages (the providers' side, running in this process).
SDKS = (
    "boto3",
    "botocore",
    "s3transfer",
    "google",
    "grpc",
    "azure",
    "msrest",
    "openai",
    "httpx",
    "httpcore",
    "requests",
    "urllib3",
    "anyio",
    "h11",
    "proto",
    "isodate",
    "certifi",
    "charset_normalizer",
    "idna",
)
EMULATORS = ("moto", "werkzeug", "flask", "starlette", "uvicorn", "jinja2", "responses")
ANALYSIS = ("matplotlib", "pandas", "sklearn", "scipy", "fairlearn", "pyarrow", "kiwisolver", "fontTools", "pyparsing")
GROUPS = (
    "derm-cloud",
    "cloud SDKs",
    "emulators",
    "model",
    "codecs+numpy",
    "cpu-bound backend",
    "report libs",
    "stdlib+builtins",
    "other",
)
#: what the groups hold, for the printed table
NOTE = "report libs: matplotlib, pandas, scikit-learn, scipy, fairlearn (figures and metrics of the report)"


class CpuBoundClassifier(Classifier):
    """A backend whose work is all CPU in this process: full decode, float conversion, colour statistics.

    Scores are a softmax of colour moments: meaningless as a classifier (never use it for triage); it exists
    to load the CPU the way a small local model does.
    """

    backend_name = "cpu-bound"
    decodes_every_pixel = True

    def __init__(self, rounds: int = 6) -> None:
        super().__init__(label_map=LabelMap.for_labels(list(CLASS_CODES)), model_id=f"cpu-bound-{rounds}")
        self.rounds = rounds

    def _predict_one(self, image: PreparedImage, metadata: PatientMetadata, timeout: float | None) -> RawResult:
        pixels = image.array().astype(np.float32) / 255.0
        moments = np.zeros(len(CLASS_CODES))
        for k in range(self.rounds):
            # Repeated full-image passes: the cost grows with pixels, like a model's first layers.
            blurred = (pixels + np.roll(pixels, k + 1, axis=0) + np.roll(pixels, k + 1, axis=1)) / 3
            moments[k % len(moments)] += float(np.std(blurred))
        scores = np.exp(moments - moments.max())
        scores /= scores.sum()
        return RawResult(scores=list(zip(CLASS_CODES, scores.tolist(), strict=True)))

    def describe(self) -> BackendInfo:
        return BackendInfo(backend=self.backend_name, provider="local", service="numpy", model_id=self.model_id)


def group_of(module: str, name: str) -> str:
    """The group a profiled function belongs to, from its file path (or, for a C built-in, its module)."""
    path = module.replace(os.sep, "/")
    if path.endswith("cpu_share.py"):
        return "cpu-bound backend"
    if "/derm_cloud/testing/" in path:
        return "emulators"
    if "/derm_cloud/" in path:
        return "derm-cloud"
    if "onnxruntime" in path or "InferenceSession" in name:
        return "model"
    package = path.split("site-packages/", 1)[1].split("/", 1)[0] if "site-packages/" in path else ""
    if package in EMULATORS:
        return "emulators"
    if package in SDKS:
        return "cloud SDKs"
    if package in ("PIL", "simplejpeg", "numpy") or "numpy" in name or module in ("numpy", "PIL", "simplejpeg"):
        return "codecs+numpy"
    if package in ANALYSIS:
        return "report libs"
    if not package:
        return "stdlib+builtins"  # the standard library, C built-ins (json, sqlite3, sockets, threading)
    return "other"


def cpu_by_group(stats: Iterable[Any]) -> tuple[dict[str, float], list[tuple[str, float]]]:
    """Sum yappi's own-time (``tsub``, CPU clock) of every function per group, in seconds.

    Returns:
        The totals per group and the ten costliest functions of the ``other`` group (what it is made of).
    """
    totals: dict[str, float] = defaultdict(float)
    other: list[tuple[str, float]] = []
    for stat in stats:
        group = group_of(stat.module, stat.name)
        totals[group] += stat.tsub
        if group == "other":
            other.append((f"{stat.module.rsplit('/', 1)[-1]}:{stat.name}", stat.tsub))
    top = sorted(other, key=lambda kv: -kv[1])[:10]
    return {group: totals.get(group, 0.0) for group in GROUPS}, top

"""Shadow comparison: do two providers agree on live traffic? Answered off the answer's path.

A router hands every answered request to `ShadowComparison.offer`. A sampled share of them is put on a
bounded queue (never waited on: a full queue drops the request and counts the drop) and a background worker
sends the same prepared image and metadata to the shadow backend. The shadow's answer is compared with the
live answer; nothing about it ever reaches the caller, and a shadow failure only counts as one.

Kept per pair (live deployment, shadow): top-1 agreement, Cohen's kappa of the top-1 labels, max and mean
`|dp|` over the seven class probabilities, melanoma-call disagreements (one says melanoma at argmax, the
other does not) and latency of both sides. Per request only the request id and the scores are kept, never image
bytes or patient fields; the id is the caller's `Prediction.request_id`, so records join the live answers.
`ShadowComparison.report` is JSON the comparator's report can include; `ShadowComparison.to_markdown`
is a small table.
"""

from __future__ import annotations

import json
import logging
import os
import queue
import random
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from derm_cloud.base import Classifier
from derm_cloud.errors import ConfigError, DermCloudError
from derm_cloud.images import PreparedImage
from derm_cloud.taxonomy import CLASS_CODES
from derm_cloud.types import PatientMetadata, Prediction

__all__ = ["PairAgreement", "ShadowComparison", "kappa_from_counts"]

logger = logging.getLogger("derm_cloud.router.shadow")

_LATENCY_WINDOW = 2048
HUMAN_REVIEW_NOTE = "Triage and research support only, never a diagnosis: a clinician reviews every result."


def kappa_from_counts(pairs: dict[tuple[str, str], int]) -> float | None:
    """Cohen's kappa from counts of (rater A label, rater B label); `None` when chance agreement is 1.

    Example:
        >>> round(kappa_from_counts({("mel", "mel"): 1, ("nv", "nv"): 1, ("nv", "bcc"): 1, ("bcc", "bcc"): 1}), 3)
        0.636
    """
    n = sum(pairs.values())
    if n == 0:
        return None
    observed = sum(c for (a, b), c in pairs.items() if a == b) / n
    row: dict[str, int] = {}
    col: dict[str, int] = {}
    for (a, b), c in pairs.items():
        row[a] = row.get(a, 0) + c
        col[b] = col.get(b, 0) + c
    expected = sum(row[k] * col.get(k, 0) for k in row) / (n * n)
    if abs(expected - 1.0) < 1e-12:
        return None
    return (observed - expected) / (1.0 - expected)


def _percentile(values: list[float], q: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    return ordered[max(0, min(len(ordered) - 1, round(q / 100 * (len(ordered) - 1))))]


@dataclass
class PairAgreement:
    """Running agreement of one live deployment with the shadow."""

    live: str
    shadow: str
    n: int = 0
    top1_agree: int = 0
    melanoma_disagreements: int = 0
    max_abs_dp: float = 0.0
    sum_max_abs_dp: float = 0.0
    label_pairs: dict[tuple[str, str], int] = field(default_factory=dict)
    live_latency_ms: deque[float] = field(default_factory=lambda: deque(maxlen=_LATENCY_WINDOW))
    shadow_latency_ms: deque[float] = field(default_factory=lambda: deque(maxlen=_LATENCY_WINDOW))

    def add(self, live: Prediction, shadow: Prediction) -> dict[str, Any]:
        """Fold one pair of answers in; returns the per-request record (ids and scores only)."""
        dp = max(abs(live.probabilities[c] - shadow.probabilities[c]) for c in CLASS_CODES)
        a, b = str(live.label), str(shadow.label)
        self.n += 1
        self.top1_agree += a == b
        self.melanoma_disagreements += (a == "mel") != (b == "mel")
        self.max_abs_dp = max(self.max_abs_dp, dp)
        self.sum_max_abs_dp += dp
        self.label_pairs[(a, b)] = self.label_pairs.get((a, b), 0) + 1
        self.live_latency_ms.append(live.latency_ms)
        self.shadow_latency_ms.append(shadow.latency_ms)
        return {"live_label": a, "shadow_label": b, "max_abs_dp": dp}

    def summary(self) -> dict[str, Any]:
        live, shadow = list(self.live_latency_ms), list(self.shadow_latency_ms)
        return {
            "live": self.live,
            "shadow": self.shadow,
            "n": self.n,
            "top1_agreement": self.top1_agree / self.n if self.n else None,
            "cohen_kappa": kappa_from_counts(self.label_pairs),
            "max_abs_dp": self.max_abs_dp if self.n else None,
            "mean_max_abs_dp": self.sum_max_abs_dp / self.n if self.n else None,
            "melanoma_call_disagreements": self.melanoma_disagreements,
            "latency_ms": {
                "live_p50": _percentile(live, 50),
                "live_p95": _percentile(live, 95),
                "shadow_p50": _percentile(shadow, 50),
                "shadow_p95": _percentile(shadow, 95),
            },
        }


class ShadowComparison:
    """Send a sampled share of live requests to a shadow backend and keep running agreement.

    Args:
        shadow: the backend under evaluation. It runs with its own retry policy, in a background thread.
        name: its name in the report (default: its backend name).
        sample_rate: share of answered requests also sent to the shadow (0-1).
        queue_size: requests waiting for the shadow at most; more are dropped (and counted), never waited on.
        keep_records: per-request records kept (request id, labels, scores), newest last.
        seed: seeds the sampling, for reproducible tests.

    Example:
        >>> shadow = ShadowComparison(vertex_clf, sample_rate=0.05)  # doctest: +SKIP
        >>> router = Router([sagemaker_clf, onnx_clf], shadow=shadow)  # doctest: +SKIP
        >>> shadow.report()["pairs"][0]["top1_agreement"]  # doctest: +SKIP
        0.98
    """

    def __init__(
        self,
        shadow: Classifier,
        *,
        name: str | None = None,
        sample_rate: float = 0.1,
        queue_size: int = 32,
        keep_records: int = 1000,
        seed: int | None = None,
    ) -> None:
        if not 0 <= sample_rate <= 1:
            raise ConfigError(f"sample_rate must be between 0 and 1, got {sample_rate!r}")
        if queue_size < 1:
            raise ConfigError(f"queue_size must be at least 1, got {queue_size!r}")
        self.shadow = shadow
        self.name = name or shadow.backend_name or type(shadow).__name__
        self.sample_rate = sample_rate
        self._rng = random.Random(seed)
        self._queue: queue.Queue[tuple[str, str, PreparedImage, PatientMetadata, Prediction] | None] = queue.Queue(
            maxsize=queue_size
        )
        self._lock = threading.Lock()
        self._pairs: dict[str, PairAgreement] = {}
        self.records: deque[dict[str, Any]] = deque(maxlen=keep_records)
        self.counts = {"offered": 0, "sampled": 0, "dropped": 0, "compared": 0, "failed": 0, "unmapped": 0}
        self._closed = False
        self._idle = threading.Condition(self._lock)
        self._outstanding = 0  # queued or being compared
        self._worker = threading.Thread(target=self._run, name=f"shadow-{self.name}", daemon=True)
        self._worker.start()

    def offer(
        self, request_id: str, live_deployment: str, image: PreparedImage, meta: PatientMetadata, live: Prediction
    ) -> bool:
        """Queue a live request for the shadow if sampled and there is room; never blocks, never raises."""
        with self._lock:
            self.counts["offered"] += 1
            if self._closed or self._rng.random() >= self.sample_rate:
                return False
            self.counts["sampled"] += 1
            self._outstanding += 1
        try:
            self._queue.put_nowait((request_id, live_deployment, image, meta, live))
        except queue.Full:
            with self._lock:
                self.counts["dropped"] += 1
                self._outstanding -= 1
            return False
        return True

    def _run(self) -> None:
        while True:
            item = self._queue.get()
            if item is None:
                return
            try:
                self._compare(*item)
            finally:
                with self._lock:
                    self._outstanding -= 1
                    self._idle.notify_all()
                del item  # the prepared image is released as soon as it was compared

    def _compare(
        self, request_id: str, live_name: str, image: PreparedImage, meta: PatientMetadata, live: Prediction
    ) -> None:
        try:
            start = time.perf_counter()
            raw, attempts = self.shadow._call(image, meta)
            answer = self.shadow._to_prediction(raw, attempts, (time.perf_counter() - start) * 1000)
        except DermCloudError as exc:
            logger.info("shadow %s failed: %s", self.name, type(exc).__name__)
            with self._lock:
                self.counts["failed"] += 1
            return
        except Exception:  # a shadow bug must never surface on the live path; it is counted and logged
            logger.exception("shadow %s raised an unexpected error", self.name)
            with self._lock:
                self.counts["failed"] += 1
            return
        with self._lock:
            if not (live.mapped and answer.mapped):
                self.counts["unmapped"] += 1
                return
            pair = self._pairs.setdefault(live_name, PairAgreement(live_name, self.name))
            record = pair.add(live, answer)
            self.counts["compared"] += 1
            self.records.append(
                {
                    "request_id": request_id,
                    "live": live_name,
                    **record,
                    "live_probabilities": dict(live.probabilities),
                    "shadow_probabilities": dict(answer.probabilities),
                    "live_latency_ms": live.latency_ms,
                    "shadow_latency_ms": answer.latency_ms,
                }
            )

    def drain(self, timeout: float = 10.0) -> bool:
        """Wait until the queue is empty and the worker idle (for tests and reports); True if it got there."""
        end = time.monotonic() + timeout
        with self._idle:
            while self._outstanding:
                left = end - time.monotonic()
                if left <= 0:
                    return False
                self._idle.wait(min(left, 0.05))
        return True

    def report(self, *, records: bool = False) -> dict[str, Any]:
        """Agreement per pair plus counts (JSON-compatible); `records=True` adds the per-request records."""
        with self._lock:
            out: dict[str, Any] = {
                "shadow": self.name,
                "sample_rate": self.sample_rate,
                "counts": dict(self.counts),
                "pairs": [p.summary() for p in self._pairs.values()],
                "note": HUMAN_REVIEW_NOTE,
            }
            if records:
                out["records"] = list(self.records)
        return out

    def to_json(self, path: str | os.PathLike[str], *, records: bool = False) -> Path:
        """Write `report` to `path`; returns the path."""
        p = Path(path)
        p.write_text(json.dumps(self.report(records=records), indent=2))
        return p

    def to_markdown(self) -> str:
        """A small Markdown section: one row per (live, shadow) pair."""
        rep = self.report()
        c = rep["counts"]
        lines = [
            f"### Shadow comparison: {rep['shadow']} (sample rate {rep['sample_rate']:.0%})",
            "",
            f"{c['compared']} compared, {c['dropped']} dropped on overload, {c['failed']} shadow failures.",
            "",
            "| live | n | top-1 agreement | Cohen's kappa | max abs dp | melanoma-call disagreements "
            "| live p50 ms | shadow p50 ms |",
            "|---|---|---|---|---|---|---|---|",
        ]
        for p in rep["pairs"]:
            lat = p["latency_ms"]
            lines.append(
                f"| {p['live']} | {p['n']} | {_fmt(p['top1_agreement'])} | {_fmt(p['cohen_kappa'])} | "
                f"{_fmt(p['max_abs_dp'])} | {p['melanoma_call_disagreements']} | {_fmt(lat['live_p50'], 1)} | "
                f"{_fmt(lat['shadow_p50'], 1)} |"
            )
        lines += ["", rep["note"]]
        return "\n".join(lines) + "\n"

    def close(self) -> None:
        """Stop the worker (requests still queued are dropped) and close the shadow backend."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
        while True:
            try:
                self._queue.get_nowait()
            except queue.Empty:
                break
        self._queue.put(None)
        self._worker.join(timeout=5.0)
        self.shadow.close()


def _fmt(value: float | None, digits: int = 3) -> str:
    return "n/a" if value is None else f"{value:.{digits}f}"

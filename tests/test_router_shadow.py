"""Shadow comparison on live traffic: agreement equals the offline oracle, overload never touches the answer path.

Images: HAM10000 dev set (Tschandl et al. 2018, CC BY-NC 4.0), read from ../shared/data.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from tests_helpers import dev_image, dev_rows

import derm_cloud
from derm_cloud import Router, RouterPolicy, ShadowComparison
from derm_cloud.compare.analysis.agreement import cohen_kappa
from derm_cloud.router.shadow import kappa_from_counts
from derm_cloud.testing.emulators.base import Fault
from derm_cloud.testing.emulators.sagemaker import SageMakerRuntimeEmulator, sagemaker_backend_for


@pytest.fixture
def emulator(tiny_meta_model_dir: Path) -> Iterator[SageMakerRuntimeEmulator]:
    with SageMakerRuntimeEmulator() as emu:
        emu.add_endpoint("shadow", tiny_meta_model_dir)
        yield emu


def _rows(n: int) -> list[tuple[Path, dict[str, object]]]:
    return [(dev_image(r), {"age": float(r["age"]), "sex": r["sex"], "site": r["localization"]}) for r in dev_rows(n)]


def test_running_agreement_equals_the_offline_comparison(
    emulator: SageMakerRuntimeEmulator, tiny_model_dir: Path, tiny_meta_model_dir: Path, tmp_path: Path
) -> None:
    rows = _rows(8)
    shadow = ShadowComparison(sagemaker_backend_for(emulator, "shadow"), name="sagemaker-meta", sample_rate=1.0)
    live = derm_cloud.create("local-onnx", model_dir=str(tiny_model_dir))
    with Router([live], name="triage", shadow=shadow) as router:
        answers = [router.predict(img, meta) for img, meta in rows]
        assert shadow.drain(timeout=30)
        report = shadow.report(records=True)
        markdown = shadow.to_markdown()
        written = json.loads(shadow.to_json(tmp_path / "shadow.json").read_text())
    # oracle: the two models called directly, compared offline with the comparator's own kappa
    with derm_cloud.create("local-onnx", model_dir=str(tiny_meta_model_dir)) as other:
        theirs = [other.predict(img, meta) for img, meta in rows]
    a, b = [str(p.label) for p in answers], [str(p.label) for p in theirs]
    dps = [max(abs(x - y) for x, y in zip(p.vector(), q.vector(), strict=True)) for p, q in zip(answers, theirs)]
    (pair,) = report["pairs"]
    assert report["counts"]["compared"] == 8 and report["counts"]["dropped"] == 0
    assert pair["live"] == "local-onnx" and pair["shadow"] == "sagemaker-meta" and pair["n"] == 8
    assert pair["top1_agreement"] == pytest.approx(sum(x == y for x, y in zip(a, b)) / 8)
    assert pair["max_abs_dp"] == pytest.approx(max(dps), abs=1e-5)
    assert pair["melanoma_call_disagreements"] == sum((x == "mel") != (y == "mel") for x, y in zip(a, b))
    want_kappa = cohen_kappa(a, b)
    assert pair["cohen_kappa"] == (pytest.approx(want_kappa) if want_kappa is not None else None)
    assert pair["latency_ms"]["shadow_p50"] > 0
    assert written["pairs"] == report["pairs"] and "clinician reviews every result" in written["note"]
    assert "| local-onnx | 8 |" in markdown
    # records: ids and scores only, never image bytes or patient fields
    assert {r["request_id"] for r in report["records"]} and len(report["records"]) == 8
    keys = {k for r in report["records"] for k in r}
    assert keys == {
        "request_id",
        "live",
        "live_label",
        "shadow_label",
        "max_abs_dp",
        "live_probabilities",
        "shadow_probabilities",
        "live_latency_ms",
        "shadow_latency_ms",
    }
    text = json.dumps(report)
    assert "age" not in keys and "lower extremity" not in text and "back" not in text


def test_shadow_overload_never_delays_or_fails_the_primary(
    emulator: SageMakerRuntimeEmulator, tiny_model_dir: Path
) -> None:
    emulator.inject(Fault("slow", times=100, delay=1.0))
    shadow = ShadowComparison(sagemaker_backend_for(emulator, "shadow"), sample_rate=1.0, queue_size=1)
    live = derm_cloud.create("local-onnx", model_dir=str(tiny_model_dir))
    rows = _rows(8)
    with Router([live], shadow=shadow, policy=RouterPolicy(deadline_s=2.0)) as router:
        router.predict(*rows[0])  # warm the local model
        timings = []
        for img, meta in rows:
            start = time.monotonic()
            pred = router.predict(img, meta)
            timings.append(time.monotonic() - start)
            assert pred.route is not None and pred.route.deployment == "local-onnx"
        counts = dict(shadow.counts)
    assert max(timings) < 0.5  # each shadow call takes 1 s; none of that is on the answer's path
    assert counts["sampled"] == 9 and counts["dropped"] >= 6  # one in the worker, one queued, the rest dropped


def test_a_failing_shadow_is_counted_and_the_primary_still_answers(
    emulator: SageMakerRuntimeEmulator, tiny_model_dir: Path
) -> None:
    emulator.inject(Fault("error", status=500, times=100))
    from derm_cloud import RetryPolicy

    shadow = ShadowComparison(
        sagemaker_backend_for(emulator, "shadow", retry=RetryPolicy(max_attempts=1)), sample_rate=1.0
    )
    with Router([derm_cloud.create("local-onnx", model_dir=str(tiny_model_dir))], shadow=shadow) as router:
        preds = [router.predict(img, meta) for img, meta in _rows(3)]
        assert shadow.drain(timeout=10)
        report = shadow.report()
    assert all(p.backend == "local-onnx" for p in preds)
    assert report["counts"]["failed"] == 3 and report["counts"]["compared"] == 0 and report["pairs"] == []


def test_sampling_share_is_respected(tiny_model_dir: Path) -> None:
    shadow = ShadowComparison(derm_cloud.create("local-onnx", model_dir=str(tiny_model_dir)), sample_rate=0.0)
    with Router([derm_cloud.create("local-onnx", model_dir=str(tiny_model_dir))], shadow=shadow) as router:
        router.predict(_rows(1)[0][0])
        assert shadow.drain(timeout=5)
    assert shadow.counts["offered"] == 1 and shadow.counts["sampled"] == 0
    with pytest.raises(derm_cloud.ConfigError, match="sample_rate"):
        ShadowComparison(shadow.shadow, sample_rate=1.5)


@pytest.mark.parametrize(
    ("a", "b"),
    [
        (["mel", "nv", "nv", "bcc"], ["mel", "nv", "bcc", "bcc"]),
        (["nv"] * 5 + ["mel"] * 3, ["nv"] * 4 + ["mel"] * 4),
        (["nv", "nv"], ["nv", "nv"]),
    ],
)
def test_kappa_from_counts_matches_the_comparators(a: list[str], b: list[str]) -> None:
    counts: dict[tuple[str, str], int] = {}
    for x, y in zip(a, b, strict=True):
        counts[(x, y)] = counts.get((x, y), 0) + 1
    want = cohen_kappa(a, b)
    got = kappa_from_counts(counts)
    assert got == (pytest.approx(want) if want is not None else None)


def _pred(label: str, p: float, backend: str) -> derm_cloud.Prediction:
    rest = (1.0 - p) / 6
    probs = {c: (p if c == label else rest) for c in derm_cloud.CLASS_CODES}
    return derm_cloud.Prediction(probs, (), backend, "m", latency_ms=10.0)


def test_pair_agreement_counts_melanoma_disagreements_and_kappa() -> None:
    from derm_cloud.router.shadow import PairAgreement

    pairs = [("mel", "mel"), ("mel", "nv"), ("nv", "nv"), ("bcc", "nv"), ("nv", "mel"), ("bkl", "bkl")]
    agreement = PairAgreement("live", "shadow")
    for a, b in pairs:
        agreement.add(_pred(a, 0.7, "live"), _pred(b, 0.6, "shadow"))
    summary = agreement.summary()
    assert summary["n"] == 6 and summary["top1_agreement"] == pytest.approx(3 / 6)
    assert summary["melanoma_call_disagreements"] == 2
    assert summary["cohen_kappa"] == pytest.approx(cohen_kappa([a for a, _ in pairs], [b for _, b in pairs]))
    assert summary["max_abs_dp"] == pytest.approx(0.7 - 0.4 / 6)  # a class at 0.7 on one side, (1-0.6)/6 on the other

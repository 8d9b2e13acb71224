"""Taxonomy, Prediction, registry, retry policy, package hygiene."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import pytest

import derm_cloud
from derm_cloud.errors import (
    BackendNotFoundError,
    CircuitOpenError,
    ConfigError,
    DeadlineExceededError,
    MissingDependencyError,
    ServiceError,
    ThrottledError,
    UnmappableLabelsError,
)
from derm_cloud.registry import BackendEntry, available_backends, get_backend_class
from derm_cloud.retry import CircuitBreaker, RetryPolicy, call_timeout
from derm_cloud.taxonomy import CLASS_CODES, MALIGNANT_CODES, LabelMap
from derm_cloud.types import LabelScore, PatientMetadata, Prediction

ANWARKH1 = [
    "benign_keratosis-like_lesions",
    "basal_cell_carcinoma",
    "actinic_keratoses",
    "vascular_lesions",
    "melanocytic_Nevi",
    "melanoma",
    "dermatofibroma",
]


def test_canonical_order_and_malignant_flags() -> None:
    assert CLASS_CODES == ("akiec", "bcc", "bkl", "df", "mel", "nv", "vasc")
    assert {"akiec", "bcc", "mel"} == MALIGNANT_CODES


def test_anwarkh1_labels_map_by_name() -> None:
    lm = LabelMap.for_labels(ANWARKH1)
    assert lm.codes == ("bkl", "bcc", "akiec", "vasc", "nv", "mel", "df")
    probs = lm.to_canonical([0.0, 0.1, 0.0, 0.0, 0.6, 0.3, 0.0])
    assert probs[CLASS_CODES.index("nv")] == pytest.approx(0.6)
    assert probs[CLASS_CODES.index("mel")] == pytest.approx(0.3)


def test_isic_upper_case_headers_and_full_names_map() -> None:
    assert LabelMap.for_labels(["MEL", "NV", "BCC", "AKIEC", "BKL", "DF", "VASC"]).mapped
    names = [c.name for c in derm_cloud.CLASSES]
    assert LabelMap.for_labels(names).codes == CLASS_CODES


def test_imagenet_labels_do_not_map_and_say_why() -> None:
    imagenet = ["tench", "goldfish", "great white shark", "tiger shark", "hammerhead", "electric ray", "stingray"]
    with pytest.raises(UnmappableLabelsError, match="do not map onto the 7 HAM10000 classes") as info:
        LabelMap.for_labels(imagenet)
    assert "allow_unmapped=True" in str(info.value)
    assert LabelMap.for_labels(imagenet, allow_unmapped=True).mapped is False


def test_custom_tags_map_with_overrides_and_missing_class_is_named() -> None:
    tags = ["mole", "melanoma", "bcc", "akiec", "bkl", "df", "vasc"]
    with pytest.raises(UnmappableLabelsError, match="no output for nv"):
        LabelMap.for_labels(tags)
    assert LabelMap.for_labels(tags, overrides={"mole": "nv"}).code_of("mole") == "nv"
    with pytest.raises(UnmappableLabelsError, match="not a HAM10000 class code"):
        LabelMap.for_labels(tags, overrides={"mole": "freckle"})


def test_duplicate_mapping_is_refused() -> None:
    with pytest.raises(UnmappableLabelsError, match="several outputs map to mel"):
        LabelMap.for_labels([*CLASS_CODES, "melanoma"])


def _prediction(**probs: float) -> Prediction:
    full = dict.fromkeys(CLASS_CODES, 0.0)
    full.update(probs)
    return Prediction(full, (LabelScore(0.5, "x"),), backend="b", model_id="m")


def test_prediction_topk_ties_and_malignant_probability() -> None:
    p = _prediction(mel=0.4, nv=0.4, bcc=0.2)
    assert [s.label for s in p.top(3)] == ["mel", "nv", "bcc"]  # tie broken by canonical order
    assert p.label == "mel"
    assert p.malignant_probability == pytest.approx(0.6)
    assert Prediction.from_dict(p.to_dict()) == p
    assert p.to_dict()["top_k"][0]["name"] == "Melanoma"


def test_prediction_requires_all_classes() -> None:
    with pytest.raises(ValueError, match="must cover exactly"):
        Prediction({"mel": 1.0}, (), backend="b", model_id="m")


def test_metadata_validation_messages() -> None:
    assert PatientMetadata(age="45", sex="Male", site=" Back ") == PatientMetadata(45.0, "male", "back")  # type: ignore[arg-type]
    assert PatientMetadata(age=float("nan")).age is None
    with pytest.raises(ConfigError, match="age must be between 0 and 130"):
        PatientMetadata(age=200)
    with pytest.raises(ConfigError, match="sex must be one of"):
        PatientMetadata(sex="x")
    with pytest.raises(ConfigError, match="skin type 1-6"):
        PatientMetadata(fitzpatrick=7)


def test_registry_lists_every_backend_with_install_hint() -> None:
    names = {e.name for e in available_backends()}
    assert {"local-onnx", "local-hf", "sagemaker", "azure-custom-vision", "azure-ml", "vertex"} <= names
    for e in available_backends():
        assert e.install_hint.startswith("pip install")


def test_unknown_backend_and_missing_extra() -> None:
    with pytest.raises(BackendNotFoundError, match="known backends"):
        get_backend_class("nope")
    entry = BackendEntry("x", "m:C", "fancy", ("definitely-not-installed-dist",), "")
    assert entry.missing == ("definitely-not-installed-dist",)
    derm_cloud.registry._EXTRA["needs-extra"] = entry  # type: ignore[attr-defined]
    try:
        with pytest.raises(MissingDependencyError, match=r"pip install 'derm-cloud\[fancy\]'"):
            derm_cloud.create("needs-extra")
    finally:
        derm_cloud.registry._EXTRA.pop("needs-extra")  # type: ignore[attr-defined]


def test_wrong_option_name_is_a_config_error(tiny_model_dir: Path) -> None:
    with pytest.raises(ConfigError, match="unexpected keyword argument 'modeldir'"):
        derm_cloud.create("local-onnx", modeldir=str(tiny_model_dir))


def test_register_backend_at_runtime(tiny_model_dir: Path) -> None:
    derm_cloud.register_backend("my-onnx", "derm_cloud.backends.local_onnx:LocalOnnxClassifier")
    with derm_cloud.create("my-onnx", model_dir=tiny_model_dir) as clf:
        assert clf.predict_batch([]) == []


def test_broken_entry_point_names_the_target() -> None:
    derm_cloud.register_backend("broken", "derm_cloud.backends.local_onnx:Nope")
    derm_cloud.register_backend("not-a-class", "derm_cloud.backends.local_onnx:__all__")
    try:
        with pytest.raises(BackendNotFoundError, match=r"'derm_cloud\.backends\.local_onnx:Nope'.*no attribute 'Nope'"):
            get_backend_class("broken")
        with pytest.raises(BackendNotFoundError, match="broken"):
            derm_cloud.create("broken")
        with pytest.raises(BackendNotFoundError, match="not a Classifier subclass"):
            get_backend_class("not-a-class")
    finally:
        derm_cloud.registry._EXTRA.pop("broken")  # type: ignore[attr-defined]
        derm_cloud.registry._EXTRA.pop("not-a-class")  # type: ignore[attr-defined]


def test_call_timeout_is_the_configured_timeout_cut_to_the_deadline() -> None:
    assert call_timeout(30.0, None) == 30.0
    assert call_timeout(30.0, 2.5) == 2.5
    assert call_timeout(1.0, 5.0) == 1.0
    assert call_timeout(30.0, 0.0) == 0.001  # never 0 or negative: some SDKs read that as "no timeout"
    assert call_timeout(30.0, -3.0) == 0.001


def test_retry_honours_retry_after_and_counts_attempts() -> None:
    sleeps: list[float] = []
    policy = RetryPolicy(max_attempts=4, deadline=30, sleep=sleeps.append, seed=1)
    calls = iter([ThrottledError("slow down", retry_after=2.5), ServiceError("boom"), "ok"])

    def fn(timeout: float | None) -> str:
        item = next(calls)
        if isinstance(item, Exception):
            raise item
        return item

    assert policy.call(fn, backend="t") == ("ok", 3)
    assert sleeps[0] == 2.5 and 0 <= sleeps[1] <= 0.4


def test_retry_after_beyond_max_delay_is_honoured() -> None:
    sleeps: list[float] = []
    policy = RetryPolicy(max_attempts=3, max_delay=10, deadline=30, sleep=sleeps.append)
    calls = iter([ThrottledError("slow down", retry_after=12), "ok"])

    def fn(timeout: float | None) -> str:
        item = next(calls)
        if isinstance(item, Exception):
            raise item
        return item

    assert policy.call(fn, backend="t") == ("ok", 2)
    assert sleeps == [12]  # not cut to max_delay: the server said 12 s


def test_attempt_is_abandoned_at_the_deadline_whatever_the_sdk_does() -> None:
    policy = RetryPolicy(max_attempts=3, deadline=0.5)

    def ignores_its_timeout(timeout: float | None) -> str:
        time.sleep(3)  # like boto3: no per-call timeout
        return "late"

    start = time.monotonic()
    with pytest.raises(DeadlineExceededError, match="0.5 s deadline"):
        policy.call(ignores_its_timeout, backend="t")
    assert time.monotonic() - start <= 0.5 * 1.05


def test_retry_stops_at_deadline_and_breaker_opens() -> None:
    policy = RetryPolicy(max_attempts=10, deadline=1.0, sleep=lambda s: None)

    def always_throttled(timeout: float | None) -> str:
        raise ThrottledError("quota", retry_after=5)

    # The service asked for more than the deadline leaves: fail at once, saying how long it asked to wait.
    with pytest.raises(ThrottledError, match="asked to wait 5 s before retrying, more than the 1.0 s left"):
        policy.call(always_throttled, backend="t")

    def always_failing(timeout: float | None) -> str:
        raise ServiceError("boom")

    policy = RetryPolicy(max_attempts=10, deadline=0.05, base_delay=1.0, seed=1, sleep=time.sleep)
    with pytest.raises(DeadlineExceededError, match=r"would pass the 0\.1 s deadline"):
        policy.call(always_failing, backend="t")
    breaker = CircuitBreaker(failure_threshold=2, reset_after=60)
    policy = RetryPolicy(max_attempts=1, breaker=breaker)
    for _ in range(2):
        with pytest.raises(ThrottledError):
            policy.call(always_throttled, backend="t")
    with pytest.raises(CircuitOpenError, match="calls paused"):
        policy.call(always_throttled, backend="t")


def test_public_names_are_complete_and_sorted() -> None:
    exported = derm_cloud.__all__
    assert exported == sorted(exported, key=lambda n: (not n.isupper(), n)) or exported == sorted(exported)
    public = {n for n in vars(derm_cloud) if not n.startswith("_") and n[0].isupper()}
    assert public <= set(exported), public - set(exported)


def test_import_loads_no_heavy_dependency() -> None:
    code = (
        "import sys\nbefore = set(sys.modules)\nimport derm_cloud, derm_cloud.cli\nderm_cloud.cli.build_parser()\n"
        # Namespace stubs such as `google` can be preloaded by .pth files: only count what derm_cloud loaded.
        "new = {m.split('.')[0] for m in set(sys.modules) - before}\n"
        "heavy = ['boto3', 'botocore', 'azure', 'google', 'onnxruntime', 'torch', 'transformers', 'openai', 'grpc',"
        " 'sklearn', 'matplotlib', 'keras', 'msrest', 'ray', 'gradio']\n"
        "print(','.join(m for m in heavy if m in new))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == ""


def test_metadata_of_the_wrong_type_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="sex must be one of"):
        PatientMetadata(sex=1)  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="site must be an anatomical site"):
        PatientMetadata(site=3)  # type: ignore[arg-type]


def test_backends_table_keeps_its_columns_apart_for_long_names(capsys: pytest.CaptureFixture[str]) -> None:
    from derm_cloud.cli import main

    long_name = "a-plugin-backend-with-a-very-long-name-indeed"
    derm_cloud.register_backend(long_name, "derm_cloud.backends.local_onnx:LocalOnnxClassifier")
    try:
        assert main(["backends"]) == 0
    finally:
        derm_cloud.registry._EXTRA.pop(long_name)  # type: ignore[attr-defined]
    header, *rows = capsys.readouterr().out.splitlines()
    starts = [header.index(title) for title in ("installed", "install with", "description")]
    names = {row.split()[0]: row for row in rows}
    assert {"rekognition-custom-labels", long_name} <= set(names)
    for name, row in names.items():
        # Every value starts at its column, with at least two spaces after the one before it.
        assert row[: starts[0]].rstrip() == name and row[len(name) : len(name) + 2] == "  ", row
        assert row[starts[0] :].split()[0] in ("yes", "no"), row
        assert row[starts[1] :].startswith("pip install"), row
        assert row[starts[2] - 2 : starts[2]] == "  " and row[starts[2]] != " ", row

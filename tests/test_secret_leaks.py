"""A secret planted in an endpoint's userinfo, in its query and in a key never reaches anything derm-cloud writes.

Every backend that takes an endpoint URL (Azure ML, Custom Vision, Azure OpenAI, SageMaker and Rekognition
through boto3) is pointed at its emulator with ``https://user:PASSWORD@host/...?sig=SIG&code=CODE`` and a planted
key, and the emulators fail (connection resets, timeouts, 404, a closed port) so that error texts are made from
those URLs. Then ``runs.sqlite`` (raw bytes), every file the comparator writes, the command line's stdout and
stderr, the log records, and ``str()``/``repr()`` of every derm-cloud error type are searched: 0 hits (issue 18).

Images: HAM10000 (Tschandl et al. 2018, CC BY-NC 4.0), read from shared/data.
"""

from __future__ import annotations

import io
import logging
import socket
import subprocess
import sys
from collections.abc import Iterator
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import pytest
import yaml
from tests_helpers import DEV_CSV, dev_image, dev_rows

import derm_cloud.errors as errors_module
from derm_cloud.cli import main
from derm_cloud.errors import (
    ChecksumMismatchError,
    CircuitOpenError,
    DeploymentCheckError,
    DermCloudError,
    RemoteError,
)
from derm_cloud.redaction import RedactingFormatter, format_exception
from derm_cloud.testing.emulators.azure_custom_vision import CustomVisionEmulator
from derm_cloud.testing.emulators.azure_ml import AzureMLEmulator
from derm_cloud.testing.emulators.azure_openai import AzureOpenAIEmulator
from derm_cloud.testing.emulators.base import EmulatorServer, Fault
from derm_cloud.testing.emulators.rekognition import RekognitionEmulator
from derm_cloud.testing.emulators.sagemaker import SageMakerRuntimeEmulator

PASSWORD = "Pl4ntedPassw0rd"  # URL userinfo
SIG = "Pl4ntedSig0Value"  # query values
CODE = "Pl4ntedC0deValue"
KEY = "Pl4ntedKey0Value"  # API key, subscription (prediction) key, endpoint key
AWS_SECRET = "Pl4ntedAwsSecret0Key"  # the AWS secret access key boto3 signs with
SECRETS = (PASSWORD, SIG, CODE, KEY, AWS_SECRET)


def secret_url(base: str, path: str = "") -> str:
    """``base`` + ``path`` with the password in its userinfo and the signature and code in its query."""
    scheme, _, rest = base.partition("://")
    return f"{scheme}://user:{PASSWORD}@{rest.rstrip('/')}{path}?sig={SIG}&code={CODE}"


def hits(text: str | bytes) -> list[str]:
    data = text.encode() if isinstance(text, str) else text
    return [s for s in SECRETS if s.encode() in data]


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture
def aws_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "AKIAPLANTEDKEYID0001")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", AWS_SECRET)
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")


@pytest.fixture
def failing_clouds(tiny_model_dir: Path, aws_env: None) -> Iterator[list[dict[str, Any]]]:
    """Backend configs (name, type, options) for every URL-taking cloud, each on an emulator that fails."""
    with ExitStack() as stack:

        def start(emulator: EmulatorServer, *faults: Fault) -> Any:
            stack.enter_context(emulator)
            for fault in faults:
                emulator.inject(fault)
            return emulator

        resets = Fault("reset", times=10_000)
        aml = start(AzureMLEmulator(tiny_model_dir, key=KEY), resets)
        aml_slow = start(AzureMLEmulator(tiny_model_dir, key=KEY), Fault("timeout", delay=1.0, times=10_000))
        aml_404 = start(AzureMLEmulator(tiny_model_dir, key=KEY), Fault("error", status=404, times=10_000))
        cv = start(CustomVisionEmulator(tiny_model_dir, prediction_key=KEY), resets)
        aoai = start(AzureOpenAIEmulator(tiny_model_dir, api_key=KEY), resets)
        sm = start(SageMakerRuntimeEmulator(), Fault("timeout", delay=1.0, times=10_000))
        sm.add_endpoint("derm", tiny_model_dir)
        rk = start(RekognitionEmulator(tiny_model_dir), resets)
        yield [
            {"name": "aml", "type": "azure-ml", "options": {"scoring_uri": secret_url(aml.url, "/score"), "key": KEY}},
            {
                "name": "aml-slow",
                "type": "azure-ml",
                "options": {"scoring_uri": secret_url(aml_slow.url, "/score"), "key": KEY, "timeout": 0.3},
            },
            {
                "name": "aml-404",
                "type": "azure-ml",
                "options": {"scoring_uri": secret_url(aml_404.url, "/score"), "key": KEY},
            },
            {
                "name": "aml-closed-port",
                "type": "azure-ml",
                "options": {"scoring_uri": secret_url(f"http://127.0.0.1:{closed_port()}", "/score"), "key": KEY},
            },
            {
                "name": "cv",
                "type": "azure-custom-vision",
                "options": {
                    "endpoint": secret_url(cv.url),
                    "prediction_key": KEY,
                    "project_id": cv.project_id,
                    "published_name": cv.published_name,
                },
            },
            {
                "name": "aoai",
                "type": "azure-openai",
                "options": {"azure_endpoint": secret_url(aoai.url), "api_key": KEY, "deployment": "gpt-4o"},
            },
            {
                "name": "sm",
                "type": "sagemaker",
                "options": {
                    "endpoint_name": "derm",
                    "endpoint_url": secret_url(sm.url),
                    "region": "us-east-1",
                    "read_timeout": 0.3,
                },
            },
            {
                "name": "rk",
                "type": "rekognition-custom-labels",
                "options": {"project_version_arn": rk.project_version_arn, "endpoint_url": secret_url(rk.url)},
            },
        ]


def test_planted_secrets_reach_no_store_export_output_or_log(
    tmp_path: Path,
    tiny_model_dir: Path,
    failing_clouds: list[dict[str, Any]],
    capfd: pytest.CaptureFixture[str],
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO)
    caplog.set_level(logging.DEBUG, logger="derm_cloud")
    # What an application logging everything (SDK DEBUG logs print URLs and headers) gets through the formatter.
    debug_log = io.StringIO()
    handler = logging.StreamHandler(debug_log)
    handler.setFormatter(RedactingFormatter("%(levelname)s %(name)s %(message)s"))
    root = logging.getLogger()
    root.addHandler(handler)
    level = root.level
    root.setLevel(logging.DEBUG)
    out = tmp_path / "out"
    scen = {"warmup": 0, "single_stream": {"enabled": False}, "server": {"enabled": False}}
    scen |= {"offline": {"enabled": False}, "cold_start": {"enabled": False}, "min_samples": 2, "bootstrap": 20}
    config = {
        "title": "planted secrets",
        "output": str(out),
        "dataset": {"source": str(DEV_CSV), "limit": 8},
        "fairness": {"skin_tone": "none"},
        "scenarios": scen,
        "backends": [
            {"name": "local", "type": "local-onnx", "options": {"model_dir": str(tiny_model_dir)}},
            *failing_clouds,
        ],
    }
    path = tmp_path / "secrets.yaml"
    path.write_text(yaml.safe_dump(config))
    try:
        assert main(["compare", str(path), "--quiet"]) == 0
        classify_codes = []
        for backend in failing_clouds:
            options = [f"{k}={v}" for k, v in backend["options"].items()]
            argv = ["classify", "-b", backend["type"], *(a for o in options for a in ("-o", o))]
            classify_codes.append(main([*argv, str(dev_image(dev_rows(1)[0]))]))
    finally:
        root.removeHandler(handler)
        root.setLevel(level)
    assert classify_codes == [1] * len(failing_clouds)  # every cloud failed, so error texts were made

    import sqlite3

    with sqlite3.connect(out / "runs.sqlite") as db:
        failed = dict(db.execute("SELECT backend, COUNT(*) FROM results WHERE ok = 0 GROUP BY backend").fetchall())
        causes = db.execute("SELECT COUNT(*) FROM results WHERE extra_json LIKE '%circuit_first_cause%'").fetchone()[0]
    assert set(failed) == {b["name"] for b in failing_clouds}  # each cloud's errors are stored ...
    assert causes > 0  # ... including the first failure behind an open circuit (where the issue found 48 hits)
    written = [p for p in out.rglob("*") if p.is_file()]
    names = {p.name for p in written}
    assert {"runs.sqlite", "report.html", "report.md", "report.json", "predictions.csv", "predictions.jsonl"} <= names
    assert any(p.parent.name == "isic" for p in written)
    for file in written:
        assert hits(file.read_bytes()) == [], file

    captured = capfd.readouterr()
    assert "error:" in captured.err  # the classify failures were printed ...
    assert hits(captured.out) == [] and hits(captured.err) == []  # ... without the secrets
    # derm-cloud's own records at any level, everyone's from INFO up (SDKs' DEBUG records quote URLs and headers:
    # the RedactingFormatter above is what an application logging at DEBUG needs).
    records = [r for r in caplog.records if r.name.startswith("derm_cloud") or r.levelno >= logging.INFO]
    assert records
    leaking = [f"{r.name}: {r.getMessage()}" for r in records if hits(f"{r.getMessage()} {r.exc_text or ''}")]
    assert leaking == []
    assert "botocore" in debug_log.getvalue() and "urllib3" in debug_log.getvalue()
    assert [line for line in debug_log.getvalue().splitlines() if hits(line)] == []


def test_backend_repr_and_facts_hold_no_secret(failing_clouds: list[dict[str, Any]]) -> None:
    import derm_cloud

    for backend in failing_clouds:
        with derm_cloud.create(backend["type"], **backend["options"]) as clf:
            info = clf.describe()
            assert hits(repr(clf)) == [] and hits(repr(info)) == [], backend["name"]
            assert info.endpoint is not None and "127.0.0.1" in info.endpoint  # still says where calls go


def test_classify_command_prints_no_secret_in_a_subprocess(tiny_model_dir: Path) -> None:
    # The issue's own reproduction: the stderr of `derm-cloud classify ... -o scoring_uri=...`.
    with AzureMLEmulator(tiny_model_dir, key=KEY) as emu:
        emu.inject(Fault("reset", times=100))
        options = ["-o", f"scoring_uri={secret_url(emu.url, '/score')}", "-o", f"key={KEY}"]
        run = subprocess.run(
            [
                sys.executable,
                "-m",
                "derm_cloud.cli",
                "classify",
                "-b",
                "azure-ml",
                *options,
                str(dev_image(dev_rows(1)[0])),
            ],
            capture_output=True,
            text=True,
            timeout=120,
        )
    assert run.returncode == 1 and "ServiceError" in run.stderr and "<redacted>" in run.stderr
    assert hits(run.stdout + run.stderr) == []


def _every_error_type() -> list[type[DermCloudError]]:
    # Every module that defines a DermCloudError of its own, so the list does not depend on what ran before.
    import derm_cloud.compare.run.config
    import derm_cloud.models.example_image
    import derm_cloud.serving_errors  # noqa: F401

    found: list[type[DermCloudError]] = []
    todo: list[type[DermCloudError]] = [DermCloudError]
    while todo:
        cls = todo.pop()
        found.append(cls)
        todo.extend(cls.__subclasses__())
    named = {getattr(errors_module, n) for n in errors_module.__all__}
    assert {c for c in named if isinstance(c, type) and issubclass(c, DermCloudError)} <= set(found)
    return found


# The forms SDKs and providers write a URL and a key in: plain, header lines, a dict repr, a relative URL.
PLANTED_TEXT = (
    f"POST {secret_url('https://ep.westeurope.inference.ml.azure.com', '/score')} failed; "
    f"HTTPConnectionPool(host='127.0.0.1', port=1): Max retries exceeded with url: /score?sig={SIG}&code={CODE}; "
    f"Failed to resolve 'user:{PASSWORD}@ep.example.com'; "
    f"headers {{'api-key': '{KEY}', 'Ocp-Apim-Subscription-Key': '{KEY}', 'Authorization': 'Key {KEY}'}}; "
    f"Prediction-Key: {KEY}; x-api-key={KEY}; Authorization: Bearer {KEY}; {{'api_key': '{KEY}'}}; "
    f"aws_secret_access_key={AWS_SECRET}; SharedAccessSignature sr=x&sig={SIG}&se=1"
)


@pytest.mark.parametrize("cls", _every_error_type(), ids=lambda c: c.__name__)
def test_no_error_type_carries_a_planted_secret(cls: type[DermCloudError]) -> None:
    from derm_cloud.compare.run.config import ConfigFileError

    if cls is ChecksumMismatchError:
        error: DermCloudError = cls(PLANTED_TEXT, "0" * 64, "1" * 64)  # type: ignore[call-arg, arg-type]
    elif cls is DeploymentCheckError:
        error = cls(PLANTED_TEXT, {"primary": PLANTED_TEXT})
        assert hits(repr(error.failures)) == []  # type: ignore[attr-defined]
    elif cls is ConfigFileError:
        error = cls(PLANTED_TEXT, key="backends[0].options.scoring_uri", line=3, file="compare.toml")
    elif issubclass(cls, RemoteError):
        error = cls(PLANTED_TEXT, backend="azure-ml", status=503, request_id="req-1")
    else:
        error = cls(PLANTED_TEXT)
    error.add_note(f"while calling {secret_url('https://x.example')}")
    if isinstance(error, CircuitOpenError):
        error.first_cause = f"ServiceError: {PLANTED_TEXT}"
        assert hits(error.first_cause) == []
    assert hits(str(error)) == [] and hits(repr(error)) == [] and hits(repr(error.args)) == []
    assert "<redacted>" in str(error)
    assert "ep.westeurope.inference.ml.azure.com/score" in str(error)  # the host and path stay readable
    assert hits(format_exception(error)) == []


def test_a_traceback_the_command_prints_redacts_the_whole_chain(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    import requests

    import derm_cloud.commands.classify as classify

    def sdk_failure(args: Any) -> int:
        try:
            raise requests.ConnectionError(f"cannot connect to {secret_url('https://ep.example.com', '/score')}")
        except requests.ConnectionError as exc:
            raise RuntimeError(f"an untranslated failure ({KEY=})") from exc

    monkeypatch.setattr(classify, "run_classify", sdk_failure)
    assert main(["classify", "lesion.jpg"]) == 1
    err = capsys.readouterr().err
    assert "Traceback" in err and "RuntimeError" in err and "requests.exceptions.ConnectionError" in err
    assert "ep.example.com/score" in err and hits(err) == []

    def wrapped_failure(args: Any) -> int:
        try:
            raise requests.ConnectionError(f"cannot connect to {secret_url('https://ep.example.com', '/score')}")
        except requests.ConnectionError as exc:
            raise RemoteError(f"cannot reach {secret_url('https://ep.example.com', '/score')}") from exc

    monkeypatch.setattr(classify, "run_classify", wrapped_failure)
    assert main(["classify", "lesion.jpg"]) == 1
    err = capsys.readouterr().err
    assert err.startswith("derm-cloud: error: RemoteError: cannot reach") and hits(err) == []

"""Secrets are redacted wherever they sit in a URL (query, userinfo, fragment) and in provider error texts."""

from __future__ import annotations

from pathlib import Path

import pytest

from derm_cloud.compare import RunStore, run_comparison
from derm_cloud.compare.run.config import redact_config
from derm_cloud.compare.run.store import redact, redact_url


@pytest.mark.parametrize(
    ("text", "secret"),
    [
        ("https://fn.azurewebsites.net/api/score?code=SECRET-CODE-1", "SECRET-CODE-1"),
        ("POST https://u:SECRET-PW-2@x.example/score failed", "SECRET-PW-2"),
        ("https://SECRET-TOKEN-3@x.example/score", "SECRET-TOKEN-3"),
        ("https://x.example/cb#access_token=SECRET-4&state=1", "SECRET-4"),
        ("https://acct.blob.core.windows.net/c/b?sv=2022&sig=SECRET%2F5%3D", "SECRET%2F5"),
        ("Error code: 401 - Incorrect API key provided: sk-proj-SECRET6abcdefgh. You can find it at ...", "SECRET6"),
        ("Incorrect API key provided: ghijSECRET7xyz.", "SECRET7"),
        ("API key AIzaSyA-SECRET8-abcdefghijklmnopqrstuvwxyz invalid", "SECRET8"),
        ("token eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiJTRUNSRVQ5In0.c2lnbmF0dXJl expired", "eyJzdWIiOiJTRUNSRVQ5In0"),
        # urllib3 and requests print the path and query without scheme and host; botocore the bare query.
        ("Max retries exceeded with url: /score?sig=SECRET10&code=x (Caused by ...)", "SECRET10"),
        ("Max retries exceeded with url: /score?sig=x&code=SECRET11 (Caused by ...)", "SECRET11"),
        ("CanonicalRequest:\nPOST\n/\ncode=SECRET12&sig=x\nhost:127.0.0.1", "SECRET12"),
        ("Failed to resolve 'user:SECRET13@ep.example.com'", "SECRET13"),
        # Headers as SDKs log or repr them, under any auth scheme.
        ("{'Authorization': 'Key SECRET14', 'Accept': 'application/json'}", "SECRET14"),
        ("Authorization: SharedAccessSignature sr=x&sig=SECRET15&se=1", "SECRET15"),
        ("Ocp-Apim-Subscription-Key: SECRET16", "SECRET16"),
        ("Prediction-Key: SECRET17", "SECRET17"),
        ("{'x-api-key': 'SECRET18'}", "SECRET18"),
        ("{'api_key': 'SECRET19'}", "SECRET19"),
        ('{"AZURE_OPENAI_API_KEY": "SECRET20"}', "SECRET20"),
        ("aws_secret_access_key=SECRET21", "SECRET21"),
        ("DefaultEndpointsProtocol=https;AccountName=a;AccountKey=SECRET22;EndpointSuffix=core", "SECRET22"),
        ("MyPassword=SECRET23", "SECRET23"),
        ("key='SECRET24'", "SECRET24"),
        ("X-Amz-Security-Token: SECRET25", "SECRET25"),
    ],
)
def test_redact_finds_secrets_in_urls_and_provider_texts(text: str, secret: str) -> None:
    assert secret not in redact(text)
    assert "<redacted>" in redact(text)


def test_harmless_parts_of_a_url_stay_readable() -> None:
    url = "https://ep.westeurope.inference.ml.azure.com/score?api-version=2024-01-01&code=abc"
    assert (
        redact_url(url) == "https://ep.westeurope.inference.ml.azure.com/score?api-version=2024-01-01&code=<redacted>"
    )
    assert redact("http://127.0.0.1:8080/score timed out") == "http://127.0.0.1:8080/score timed out"
    assert redact_config({"model_dir": "/models/m1", "n": 3, "labels": ["a"]}) == {
        "model_dir": "/models/m1",
        "n": 3,
        "labels": ["a"],
    }


@pytest.mark.parametrize(
    "message",
    [
        # Advice that names a setting is not a secret: these stay readable in the errors that carry them.
        "the endpoint refused the credentials (401). Check key= (or AZUREML_ENDPOINT_KEY): the endpoint's key",
        "cannot build the Azure OpenAI client. Pass api_key= (or set AZURE_OPENAI_API_KEY) or azure_ad_token_provider=",
        "--option 'scoring_uri' must look like KEY=VALUE",
        "Vertex rejected the API key: API key not valid. Check api_key=",
        "must be a table of key = value pairs, got list",
        "SHA-256 mismatch for model.onnx: expected " + "0" * 64 + ", got " + "1" * 64,
        "no answer from http://127.0.0.1:8080/score?api-version=2024-01-01 within 2 s",
        "unknown key(s) ['colour'] in spec.json",
        "a static test token: the emulator wants a Bearer header",
        "HTTP 503 from https://dataverse.harvard.edu/api/access/datafile/:persistentId?persistentId=doi:10.7910/DVN/X",
    ],
)
def test_advice_and_facts_stay_readable(message: str) -> None:
    assert redact(message, limit=None) == message


def test_redaction_is_idempotent() -> None:
    text = "POST https://u:pw@x.example/s?code=abc&sig=def failed; url: /s?code=abc; api-key: k1; key='k2'"
    once = redact(text, limit=None)
    assert redact(once, limit=None) == once
    assert not any(s in once for s in ("pw", "abc", "def", "k1", "k2"))


def test_scoring_uri_code_never_reaches_report_or_store(tmp_path: Path, tiny_model_dir: Path) -> None:
    from tests_helpers import DEV_CSV

    from derm_cloud.testing.emulators.azure_ml import AzureMLEmulator

    out = tmp_path / "out"
    scen = {"warmup": 0, "single_stream": {"enabled": False}, "server": {"enabled": False}}
    scen |= {"offline": {"enabled": False}, "cold_start": {"enabled": False}, "min_samples": 2, "bootstrap": 20}
    with AzureMLEmulator(tiny_model_dir) as emu:
        uri = f"{emu.scoring_uri}?code=SECRET-CODE-42"
        cfg = {
            "title": "redaction",
            "output": str(out),
            "dataset": {"source": str(DEV_CSV), "limit": 3},
            "fairness": {"skin_tone": "none"},
            "scenarios": scen,
            "backends": [{"name": "aml", "type": "azure-ml", "options": {"scoring_uri": uri, "key": emu.key}}],
        }
        result = run_comparison(cfg)
        assert emu.requests and "code=" in emu.requests[-1].path  # the secret did reach the service it is for
    with RunStore(out / "runs.sqlite") as store:
        assert store.count(result.run_id) == 3
    assert "?code=<redacted>" in result.summary["backends"]["aml"]["options"]["scoring_uri"]
    files = [result.html, result.markdown, result.json, out / "runs.sqlite", *result.figures_dir.rglob("*")]
    for path in files:
        if path.is_file():
            assert b"SECRET-CODE-42" not in path.read_bytes(), path

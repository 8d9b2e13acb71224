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

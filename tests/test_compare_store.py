"""The run store: one row per key, typed errors without secrets, runs found by fingerprint."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from derm_cloud.compare.run.store import RunStore, redact
from derm_cloud.errors import ConfigError


def test_results_are_keyed_once_and_read_back(tmp_path: Path) -> None:
    with RunStore(tmp_path / "runs.sqlite") as store:
        run = store.create_run(fingerprint="f" * 64, config={"seed": 1}, dataset_fingerprint="sha256:d")
        assert store.start_session(run) == 1
        assert store.add_result(
            run, backend="a", image_id="x", scenario="quality", repeat=0, ok=True, probs=[0.5, 0.5], label="mel"
        )
        # The same key again (e.g. a resumed run racing a stored result) is ignored, never duplicated.
        assert not store.add_result(run, backend="a", image_id="x", scenario="quality", repeat=0, ok=False)
        store.add_result(
            run,
            backend="a",
            image_id="y",
            scenario="quality",
            repeat=0,
            ok=False,
            error_type="ThrottledError",
            error_message="429 from https://x.example/score?sig=abc123&code=7 with api-key: sk-live-123",
        )
        rows = list(store.results(run))
        assert [r.key for r in rows] == [("a", "x", "quality", 0), ("a", "y", "quality", 0)]
        assert rows[0].ok and rows[0].probs == (0.5, 0.5) and rows[0].label == "mel" and rows[0].session == 1
        assert rows[1].error_type == "ThrottledError"
        assert "abc123" not in rows[1].error_message and "sk-live-123" not in rows[1].error_message  # type: ignore[operator]
        assert store.done_keys(run, "a", "quality") == {("x", 0), ("y", 0)}
        assert store.latest_incomplete("f" * 64) == run
        store.finish_run(run)
        assert store.latest_incomplete("f" * 64) is None and store.run(run).status == "complete"
        with pytest.raises(ConfigError, match=f"recent runs: {run}"):
            store.run("missing")
    # WAL journal: a killed writer never leaves a half-written row.
    with sqlite3.connect(tmp_path / "runs.sqlite") as conn:
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"


def test_resume_retries_only_retryable_failures(tmp_path: Path) -> None:
    with RunStore(tmp_path / "runs.sqlite") as store:
        run = store.create_run(fingerprint="f" * 64, config={}, dataset_fingerprint="sha256:d")
        store.start_session(run)
        store.add_result(run, backend="a", image_id="ok", scenario="quality", repeat=0, ok=True, probs=[1.0])
        kinds = {
            "throttled": "ThrottledError",
            "cold": "ModelNotReadyError",
            "deadline": "DeadlineExceededError",
            "5xx": "ServiceError",
            "breaker": "CircuitOpenError",
            "timeout": "ClientTimeout",
            "bad-image": "InvalidImageError",
            "bad-key": "AuthenticationError",
        }
        for image_id, kind in kinds.items():
            store.add_result(
                run, backend="a", image_id=image_id, scenario="quality", repeat=0, ok=False, error_type=kind
            )
        assert store.drop_retryable_failures(run) == 6
        # Successes and failures that would fail the same way again stay done; the rest run again on resume.
        assert store.done_keys(run, "a", "quality") == {("ok", 0), ("bad-image", 0), ("bad-key", 0)}
        assert store.add_result(
            run, backend="a", image_id="throttled", scenario="quality", repeat=0, ok=True, probs=[1.0]
        )
        assert store.drop_retryable_failures(run) == 0


def test_redact_removes_credentials_and_caps_length() -> None:
    text = redact("Authorization: Bearer eyJhbGciOiJIUzI1NiJ9.payload and key=AKIAABCDEFGHIJKLMNOP token=t0k")
    assert "eyJhbGci" not in text and "AKIAABCDEFGHIJKLMNOP" not in text and "t0k" not in text
    assert len(redact("x" * 2000)) == 500
    assert redact("model not ready, retry later") == "model not ready, retry later"


@pytest.mark.parametrize(
    "message",
    [
        '{"api-key": "sekret-value-1"}',
        "{'api-key': 'sekret-value-1'}",
        "DefaultEndpointsProtocol=https;AccountKey=sekret-value-1;EndpointSuffix=core.windows.net",
        "GET https://vision.googleapis.com/v1/images:annotate?key=sekret-value-1&alt=json",
        "x-goog-api-key: sekret-value-1",
    ],
)
def test_redact_removes_keys_in_the_forms_sdks_echo(message: str) -> None:
    from derm_cloud.compare.run.store import redact

    assert "sekret-value-1" not in redact(message)
    assert redact("a monkey=banana") == "a monkey=banana"

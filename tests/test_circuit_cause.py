"""When the circuit opens, the rows it blocked keep the failure that opened it (issue 11, fault 9)."""

from __future__ import annotations

from pathlib import Path

import pytest

from derm_cloud.compare import RunStore, run_comparison
from derm_cloud.errors import CircuitOpenError, ServiceError, ThrottledError
from derm_cloud.retry import CircuitBreaker, RetryPolicy


def test_breaker_keeps_the_first_failure_of_the_streak() -> None:
    policy = RetryPolicy(max_attempts=1, breaker=CircuitBreaker(failure_threshold=2, reset_after=60))
    errors = iter([ThrottledError("quota for project p exhausted"), ServiceError("upstream 502")])

    def failing(timeout: float | None) -> str:
        raise next(errors)

    for expected in (ThrottledError, ServiceError):
        with pytest.raises(expected):
            policy.call(failing, backend="t")
    with pytest.raises(CircuitOpenError, match="first failure: ThrottledError: quota for project p") as info:
        policy.call(failing, backend="t")
    assert info.value.first_cause is not None and info.value.first_cause.startswith("ThrottledError: quota")


def test_rows_blocked_by_an_open_circuit_store_its_first_cause(tmp_path: Path, tiny_model_dir: Path) -> None:
    from tests_helpers import DEV_CSV

    from derm_cloud.testing.emulators.azure_ml import AzureMLEmulator
    from derm_cloud.testing.emulators.base import Fault

    out = tmp_path / "out"
    scen = {"warmup": 0, "single_stream": {"enabled": False}, "server": {"enabled": False}}
    scen |= {"offline": {"enabled": False}, "cold_start": {"enabled": False}, "min_samples": 2, "bootstrap": 20}
    with AzureMLEmulator(tiny_model_dir) as emu:
        emu.inject(Fault("error", status=500, times=1000))
        cfg = {
            "title": "circuit",
            "output": str(out),
            "dataset": {"source": str(DEV_CSV), "limit": 8},
            "fairness": {"skin_tone": "none"},
            "scenarios": scen,
            "backends": [
                {"name": "aml", "type": "azure-ml", "options": {"scoring_uri": emu.scoring_uri, "key": emu.key}}
            ],
        }
        result = run_comparison(cfg)
    with RunStore(out / "runs.sqlite") as store:
        rows = list(store.results(result.run_id))
    blocked = [r for r in rows if r.error_type == "CircuitOpenError"]
    assert blocked and len(rows) == 8
    for row in blocked:
        assert row.extra["circuit_first_cause"].startswith("ServiceError:")
        assert "first failure: ServiceError" in (row.error_message or "")

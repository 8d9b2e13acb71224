"""Risk register and DPIA notes from a real comparator run: every cited figure resolves to the value cited."""

from __future__ import annotations

import copy
import json
import re
from datetime import date
from pathlib import Path
from typing import Any

import pytest
from tests_helpers import DEV_CSV

from derm_cloud.cli import main
from derm_cloud.errors import ConfigError
from derm_cloud.governance.notes import load_run, risk_register

OFF = {"enabled": False}
SCENARIOS = {"warmup": 0, "bootstrap": 50, "single_stream": OFF, "server": OFF, "offline": OFF, "cold_start": OFF}


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A real comparison: a tiny model declared as HAM10000-trained, locally and behind the SageMaker emulator."""
    from derm_cloud.compare import run_comparison
    from derm_cloud.testing.tiny_models import build_tiny_onnx_model

    base = tmp_path_factory.mktemp("notes")
    model = build_tiny_onnx_model(base / "tiny")
    spec = json.loads((model / "spec.json").read_text())
    spec.setdefault("facts", {})["training_data"] = "HAM10000 (test fixture claim)"
    (model / "spec.json").write_text(json.dumps(spec))
    backends = [
        {"name": "local", "type": "local-onnx", "options": {"model_dir": str(model)}},
        {"name": "sm", "type": "sagemaker", "emulate": True, "model_dir": str(model)},
    ]
    config = {
        "title": "notes test",
        "output": str(base / "run"),
        "seed": 0,
        "dataset": {"source": str(DEV_CSV), "limit": 24},
        "scenarios": SCENARIOS,
        "backends": backends,
    }
    run_comparison(config)
    # Referral figures for the same model and images, where `governance notes` finds them (the run folder).
    assert (
        main(
            [
                *("governance", "referral", "-o", f"model_dir={model}", "--dataset", str(DEV_CSV), "--limit", "24"),
                *("--skin-tone", "none", "--out", str(base / "run" / "referral")),
            ]
        )
        == 0
    )
    return base / "run"


def resolve(data: Any, path: str) -> Any:
    for part in path.split("."):
        m = re.fullmatch(r"(.*?)((?:\[\d+\])*)", part)
        assert m is not None
        if m.group(1):
            data = data[m.group(1)]
        for index in re.findall(r"\[(\d+)\]", m.group(2)):
            data = data[int(index)]
    return data


def test_every_entry_cites_figures_that_resolve_in_the_run(run_dir: Path) -> None:
    register = risk_register(run_dir, min_sensitivity=0.9, today=date(2026, 11, 25))
    report = json.loads((run_dir / "report.json").read_text())
    referral = json.loads((run_dir / "referral" / "referral.json").read_text())
    files = {"report.json": report, "referral.json": referral}
    assert register.run_id == report["run"]["run_id"] and register.entries
    for entry in register.entries:
        assert entry.date == "2026-11-25" and entry.evidence
        for ev in entry.evidence:
            assert ev.run_id == register.run_id
            assert resolve(files[ev.source], ev.figure) == ev.value, (entry.title, ev.figure)


def test_entries_cover_performance_fairness_overlap_data_and_oversight(run_dir: Path) -> None:
    register = risk_register(run_dir, min_sensitivity=0.9)
    report = json.loads((run_dir / "report.json").read_text())
    by_category: dict[str, list[Any]] = {}
    for e in register.entries:
        by_category.setdefault(e.category, []).append(e)
    mel = report["quality"]["backends"]["local"]["melanoma"]["sensitivity"]
    assert mel < 0.9  # a random tiny model
    perf = [e for e in by_category["clinical performance"] if e.backend == "local" and "melanoma" in e.title]
    assert perf and f"sensitivity {mel:.3f} < 0.9" in perf[0].title and perf[0].severity == "high"
    overlap = by_category["training data"]
    assert {e.backend for e in overlap} == {"local", "sm"} and "HAM10000" in overlap[0].finding
    dpia = {e.backend: e for e in register.entries if e.dpia}
    assert "images stay on this machine" in dpia["local"].title
    assert "aws" in dpia["sm"].title and report["backends"]["sm"]["region"] in dpia["sm"].finding
    assert "emulator" in dpia["sm"].finding
    assert any("too small to judge" in e.title for e in by_category["evidence gap"])
    assert any(e.title == "Human review remains mandatory" for e in by_category["human oversight"])
    severities = [e.severity for e in register.entries]
    order = {"high": 0, "medium": 1, "low": 2, "info": 3}
    assert severities == sorted(severities, key=order.__getitem__)


def test_notes_cite_the_referral_figures(run_dir: Path) -> None:
    referral = json.loads((run_dir / "referral" / "referral.json").read_text())
    mel = referral["points"]["mel"]
    md = risk_register(run_dir).to_markdown()
    assert f"`points.mel.threshold` = {mel['threshold']:.4g}" in md
    assert f"`points.mel.referral_rate` = {mel['referral_rate']:.4g}" in md
    assert f"costs a referral rate of {mel['referral_rate']:.3f}" in md
    assert "referral.json" in md


def test_budget_and_markdown_layout(run_dir: Path) -> None:
    report, _ = load_run(run_dir)
    priced = copy.deepcopy(report)
    priced["cost"]["backends"]["sm"].update(known=True, monthly=1234.5, idle_monthly=1100.0)
    priced["cost"]["prices_used"] = {"x": {"currency": "USD"}}
    register = risk_register(priced, budget=1000)
    cost = next(e for e in register.entries if e.category == "cost" and e.backend == "sm")
    assert cost.severity == "medium" and "1,234.50 USD/month over budget 1,000" in cost.title
    assert cost.evidence[0].figure == "cost.backends.sm.monthly" and cost.evidence[0].value == 1234.5
    within = next(e for e in risk_register(priced, budget=5000).entries if e.backend == "sm" and e.category == "cost")
    assert within.severity == "info" and "within" in within.title
    md = register.to_markdown()
    assert md.startswith(f"# Risk register and DPIA notes: run {register.run_id}")
    assert "## DPIA notes" in md and md.count("Human review remains mandatory") >= 2
    assert f"| {register.run_id}-R01 |" in md


def test_cli_notes(run_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "register.md"
    assert main(["governance", "notes", str(run_dir), "--min-sensitivity", "0.8", "--out", str(out)]) == 0
    assert "entries from run" in capsys.readouterr().out
    assert "Levels: sensitivity >= 0.8" in out.read_text()
    assert main(["governance", "notes", str(run_dir / "report.json"), "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["entries"] and data["human_review"].startswith("Human review remains mandatory")


def test_not_a_run_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="no comparator report"):
        risk_register(tmp_path)
    (tmp_path / "report.json").write_text('{"format": "something-else"}')
    with pytest.raises(ConfigError, match="not a comparator report"):
        risk_register(tmp_path)


def test_group_entries_from_the_run_and_from_referral_figures(run_dir: Path) -> None:
    report, _ = load_run(run_dir)
    report = copy.deepcopy(report)
    female = report["fairness"]["backends"]["local"]["attributes"]["sex"]["groups"]["female"]
    female.update(small_group=False, n_melanoma=12)
    female["metrics"]["melanoma_sensitivity"]["value"] = 0.5
    referral = json.loads((run_dir / "referral" / "referral.json").read_text())
    referral["groups"].append(
        {"attribute": "site", "group": "back", "n": 50, "positives": 20, "detected": 16, "sensitivity": 0.8}
        | {"sensitivity_ci": [0.58, 0.92], "referral_rate": 0.5, "own_threshold": 0.01, "too_small": False}
    )
    register = risk_register(report, referrals=[referral], min_sensitivity=0.9)
    fair = [e for e in register.entries if e.category == "fairness"]
    run_entry = next(e for e in fair if "for sex = female" in e.title)
    assert run_entry.backend == "local" and "female 0.500" in run_entry.finding
    assert (
        run_entry.evidence[0].figure
        == "fairness.backends.local.attributes.sex.groups.female.metrics.melanoma_sensitivity.value"
    )
    ref_entry = next(e for e in fair if "site = back stays below 0.9" in e.title)
    assert ref_entry.backend == "local"  # the referral's model id is the run's "local" backend
    assert "back 0.800 (95% CI 0.580-0.920) (16/20)" in ref_entry.finding
    index = len(referral["groups"]) - 1
    assert [(ev.figure, ev.value) for ev in ref_entry.evidence] == [(f"groups[{index}].sensitivity", 0.8)]

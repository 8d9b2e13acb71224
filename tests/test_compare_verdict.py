"""The verdict (issue 20 items 1 and 2): constraints judged on intervals, paired tests, ranking, CI gate.

Unit tests of the rules on hand-made figures, then one small real run: two emulated SageMaker endpoints hosting
one tiny model, one slowed by an injected delay fault, on 10 HAM10000 dev images (Tschandl et al. 2018,
CC BY-NC 4.0, read in place). The verdict must pick the faster at equal quality, show the quality once, and
`derm-cloud compare --fail-on-unmet` must exit 1 when a melanoma-sensitivity floor is out of reach.
"""

from __future__ import annotations

import html
import json
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from tests_helpers import DEV_CSV

from derm_cloud.compare.analysis.constraints import MEETS, MISSES, UNSURE, judge_backend, judge_max, judge_min
from derm_cloud.compare.analysis.paired import latency_difference, quality_difference
from derm_cloud.compare.analysis.verdict import verdict_section
from derm_cloud.compare.run.config import ConfigFileError
from derm_cloud.compare.run.config_file import parse_config, with_decision
from derm_cloud.errors import ConfigError
from derm_cloud.taxonomy import CLASS_CODES

# --- the rules at the interval edges -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("interval", "status"),
    [
        ((0.95, 0.99), MEETS),  # lower bound exactly at the floor: met
        ((0.9499, 0.99), UNSURE),  # straddles
        ((0.90, 0.95), UNSURE),  # upper bound exactly at the floor: not shown to miss
        ((0.90, 0.9499), MISSES),
    ],
)
def test_minimum_is_judged_on_the_interval(interval: tuple[float, float], status: str) -> None:
    j = judge_min(0.94, interval, 0.95)
    assert j["status"] == status
    assert j["margin"] == pytest.approx(interval[0] - 0.95)
    assert j["margin_interval"] == pytest.approx([interval[0] - 0.95, interval[1] - 0.95])


@pytest.mark.parametrize(
    ("interval", "status"),
    [((300.0, 500.0), MEETS), ((300.0, 500.1), UNSURE), ((500.0, 600.0), UNSURE), ((500.1, 600.0), MISSES)],
)
def test_maximum_is_judged_on_the_interval(interval: tuple[float, float], status: str) -> None:
    assert judge_max(450.0, interval, 500.0)["status"] == status


def test_missing_figures_are_cannot_tell() -> None:
    assert judge_min(None, None, 0.9)["status"] == UNSURE
    assert judge_max(100.0, [None, None], 500.0)["status"] == UNSURE


def _judge(facts: dict[str, Any], **kw: Any) -> dict[str, dict[str, Any]]:
    constraints = [
        {"key": "max_p95_ms", "threshold": 1000.0},
        {"key": "max_monthly_usd", "threshold": 100.0},
        {"key": "no_image_storage", "threshold": True},
        {"key": "allowed_regions", "threshold": ["eu-west-1"]},
    ]
    args: dict[str, Any] = {"quality": {}, "latency": {}, "samples": [10.0, 12.0, 11.0, 13.0] * 10, "cost": {}}
    args.update(kw)
    return judge_backend(
        constraints, facts=facts, scenario="single_stream", n_boot=100, seed=0, method="linear", **args
    )


def test_emulated_latency_unknown_cost_and_unstated_facts_are_cannot_tell() -> None:
    j = _judge({"emulated": True, "stores_images": None, "data_leaves_machine": True, "region": None})
    assert {k: v["status"] for k, v in j.items()} == dict.fromkeys(j, UNSURE)
    assert "emulator" in j["max_p95_ms"]["reason"] and "unknown" in j["max_monthly_usd"]["reason"]


def test_real_latency_cost_storage_and_region_are_judged() -> None:
    facts = {"emulated": False, "stores_images": True, "data_leaves_machine": True, "region": "us-east-1"}
    j = _judge(facts, cost={"known": True, "monthly": 83.95})
    assert [j[k]["status"] for k in j] == [MEETS, MEETS, MISSES, MISSES]
    assert j["max_monthly_usd"]["margin"] == pytest.approx(100 - 83.95)
    local = _judge({"stores_images": False, "data_leaves_machine": False}, cost={"known": True, "monthly": 150.0})
    assert [local[k]["status"] for k in local] == [MEETS, MISSES, MEETS, MEETS]


# --- paired tests ---------------------------------------------------------------------------------------------


def test_paired_quality_test_separates_only_what_differs() -> None:
    rng = np.random.default_rng(0)
    y = np.repeat(np.arange(7), 12)
    good = np.eye(7)[y] * 0.9 + 0.1 / 7
    bad = np.eye(7)[rng.integers(0, 7, len(y))] * 0.9 + 0.1 / 7
    lesions = [f"L{i // 2}" for i in range(len(y))]  # two images per lesion
    same = quality_difference(y, good, good.copy(), lesions, n_boot=100, seed=0)
    assert same["identical"] and same["indistinguishable"] is True
    differ = quality_difference(y, good, bad, lesions, n_boot=100, seed=0)
    assert differ["indistinguishable"] is False and differ["balanced_accuracy"]["interval"][0] > 0


def test_latency_test_finds_the_faster_and_ties_overlapping_samples() -> None:
    rng = np.random.default_rng(1)
    fast = rng.normal(50, 5, 40)
    assert latency_difference(fast, fast + 100, n_boot=200, seed=0)["faster"] == "a"
    assert latency_difference(fast, rng.permutation(fast), n_boot=200, seed=0)["faster"] is None


# --- ranking and the sentence -----------------------------------------------------------------------------------


def _rows(name: str, probs: np.ndarray, truth: list[str]) -> list[dict[str, Any]]:
    return [
        {"image_id": f"i{k}", "lesion_id": f"L{k}", "truth": t, "backend": name}
        | {f"p_{c}": float(p) for c, p in zip(CLASS_CODES, row, strict=True)}
        for k, (t, row) in enumerate(zip(truth, probs, strict=True))
    ]


def _verdict(
    decision: dict[str, Any], mel_ci: list[float], emulated: bool = False, x_cost_known: bool = True
) -> dict[str, Any]:
    truth = [CLASS_CODES[k % 7] for k in range(28)]
    probs = np.eye(7)[[CLASS_CODES.index(t) for t in truth]]
    q = {
        "n": 28,
        "balanced_accuracy": 1.0,
        "melanoma": {"sensitivity": 0.9},
        "ci": {"balanced_accuracy": [0.97, 1.0], "melanoma_sensitivity": mel_ci},
    }
    names = ("x", "y")
    return verdict_section(
        decision,
        backends={n: {"emulated": emulated, "stores_images": False, "data_leaves_machine": False} for n in names},
        quality={"backends": dict.fromkeys(names, q)},
        latency={},
        latency_samples={"x": [200.0 + k for k in range(30)], "y": [100.0 + k for k in range(30)]},
        cost={"backends": {n: {"known": x_cost_known or n != "x", "monthly": 50.0} for n in names}},
        same_model={
            "groups": [{"fingerprint": "f" * 64, "pairs": [{"reference": "x", "backend": "y", "mismatch": False}]}]
        },
        predictions=[*_rows("x", probs, truth), *_rows("y", probs, truth)],
        volume=1000,
        n_boot=50,
        seed=0,
    )


def test_equal_quality_and_cost_the_faster_is_recommended_and_grouped_as_one_model() -> None:
    v = _verdict({"min_melanoma_sensitivity": 0.8, "max_p95_ms": 1000.0}, [0.85, 0.95])
    assert v["recommended"] == "y" and [r["backend"] for r in v["ranking"]] == ["y", "x"]
    assert v["recommendation"].startswith("Recommend y: meets all 2 constraints; quality indistinguishable from x")
    assert "faster" in v["recommendation"] and v["unmet"] is None
    assert v["models"][0]["backends"] == ["x", "y"] and "latency, cost and operations" in v["models"][0]["note"]


def test_the_sentence_names_constraints_by_label_and_quality_groups_span_the_run() -> None:
    # x's cost is unknown: it cannot tell the budget and ranks in a lower tier than y, with identical answers.
    v = _verdict({"min_melanoma_sensitivity": 0.8, "max_monthly_usd": 100.0}, [0.85, 0.95], x_cost_known=False)
    assert v["recommended"] == "y" and [r["tier"] for r in v["ranking"]] == ["meets all", "cannot tell some"]
    assert v["recommendation"].endswith("; x cannot tell cost <= $100.00/month.")
    assert "max_monthly_usd" not in v["recommendation"] + v["certainty"]
    # One numbering per run: identical answers are one quality group whatever the constraint tier.
    assert [r["quality_group"] for r in v["ranking"]] == [1, 1]
    assert v["ranking"][1]["cannot_tell"] == ["max_monthly_usd"]  # report.json keeps the keys


def test_no_backend_meets_the_floor_names_the_closest() -> None:
    v = _verdict({"min_melanoma_sensitivity": 0.95}, [0.85, 0.93])
    assert v["recommended"] is None and v["meets_all"] == []
    assert v["unmet"] == "No backend meets melanoma sensitivity >= 0.95; closest: y (lower bound 0.850 vs 0.95)"


def test_emulated_latency_limit_gives_no_recommendation() -> None:
    v = _verdict({"max_p95_ms": 1000.0}, [0.85, 0.95], emulated=True)
    assert v["recommended"] is None and "cannot tell" in v["unmet"] and "emulator" in v["unmet"]


# --- the [decision] table and its flags -----------------------------------------------------------------------


def _config(decision: dict[str, Any]) -> dict[str, Any]:
    return {"decision": decision, "backends": [{"name": "a", "type": "local-onnx"}]}


def test_decision_table_is_validated_with_the_fix_named() -> None:
    cfg = parse_config(_config({"min_melanoma_sensitivity": 0.9, "allowed_regions": "eu-west-1"}))
    assert cfg.decision["min_melanoma_sensitivity"] == 0.9 and cfg.decision["allowed_regions"] == ("eu-west-1",)
    with pytest.raises(ConfigFileError, match=r"decision\.min_mel_sensitivity: unknown key \(did you mean"):
        parse_config(_config({"min_mel_sensitivity": 0.9}))
    with pytest.raises(ConfigFileError, match=r"write 0\.95 for 95%"):
        parse_config(_config({"min_melanoma_sensitivity": 95}))
    off = {"scenarios": {"single_stream": {"enabled": False}}}
    with pytest.raises(ConfigFileError, match=r"decision\.latency_scenario: max_p95_ms .* enable"):
        parse_config({**_config({"max_p95_ms": 500}), **off})
    with pytest.raises(ConfigError, match=r"decision\.max_p99_ms \(command line\): must be >= 0\.001"):
        with_decision(cfg, {"max_p99_ms": -1})
    # Constraints judge results; they do not change them, so a new threshold reuses the stored run.
    assert with_decision(cfg, {"max_p95_ms": 300}).fingerprint("d") == cfg.fingerprint("d")


# --- a real run: two endpoints of one model, one slowed by a fault -------------------------------------------------


@pytest.fixture(scope="module")
def slowed_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Any]:
    from derm_cloud.compare import run_comparison
    from derm_cloud.testing.tiny_models import build_tiny_onnx_model

    tmp = tmp_path_factory.mktemp("verdict")
    tiny = build_tiny_onnx_model(tmp / "tiny")
    endpoint = {
        "type": "sagemaker",
        "emulate": True,
        "model_dir": str(tiny),
        "options": {"instance_type": "ml.m5.large"},
    }
    off = {"enabled": False}
    config = {
        "title": "verdict test",
        "output": str(tmp / "report"),
        "seed": 3,
        "backends_in_parallel": False,
        "dataset": {"source": str(DEV_CSV), "limit": 10},
        "fairness": {"skin_tone": "none"},
        "scenarios": {
            "warmup": 1,
            "min_samples": 5,
            "bootstrap": 50,
            "single_stream": {"queries": 10},
            **{s: off for s in ("server", "offline", "cold_start")},
        },
        "decision": {"min_balanced_accuracy": 0.0, "max_monthly_usd": 1000},
        # The slowed endpoint comes first, so that config order cannot be what picks the faster.
        "backends": [{"name": "slowed", **endpoint, "emulator": {"delay_ms": 150}}, {"name": "plain", **endpoint}],
    }
    path = tmp / "verdict.yaml"
    path.write_text(json.dumps(config))  # JSON is YAML: the CLI reads the same config
    return path, run_comparison(path, progress=False)


def test_verdict_picks_the_faster_at_equal_quality_and_shows_quality_once(slowed_run: tuple[Path, Any]) -> None:
    _path, result = slowed_run
    v = json.loads(result.json.read_text())["verdict"]
    assert v["recommended"] == "plain" and v["recommendation"].startswith("Recommend plain")
    assert "same model, same answers" in v["recommendation"] and "faster" in v["recommendation"]
    pair = v["pairs"][0]
    assert pair["quality"]["identical"] and pair["latency"]["faster"] == "b"
    md = result.markdown.read_text()
    assert md.index("## Verdict") < md.index("## Summary") < md.index("## Quality")
    quality = md[md.index("## Quality") : md.index("## PPV")]
    assert "| slowed = plain |" in quality and "| plain |" not in quality and "| slowed |" not in quality
    html = result.html.read_text()
    assert html.index("<h2>Verdict</h2>") < html.index("<h2>Summary</h2>")


def test_fail_on_unmet_exits_1_when_no_backend_reaches_the_floor(
    slowed_run: tuple[Path, Any], capsys: pytest.CaptureFixture[str]
) -> None:
    from derm_cloud.cli import main

    path, result = slowed_run
    mel_high = json.loads(result.json.read_text())["quality"]["backends"]["plain"]["ci"]["melanoma_sensitivity"][1]
    floor = 1.0 if mel_high < 1.0 else pytest.fail("the tiny model found every melanoma: no floor is out of reach")
    # The flag replaces the config's [decision] for this report; the stored run is judged again, not re-run.
    argv = ["compare", str(path), "-q", "--resume", result.run_id, "--min-mel-sensitivity", str(floor)]
    assert main([*argv, "--fail-on-unmet"]) == 1
    err = capsys.readouterr().err.splitlines()
    assert f"derm-cloud: --fail-on-unmet: No backend meets melanoma sensitivity >= {floor:g}; closest: " in err[-1]
    assert json.loads(result.json.read_text())["verdict"]["recommended"] is None


class _OpenTables(HTMLParser):
    """The first header cell of every table outside a `<details>` block (what a reader sees without a click)."""

    def __init__(self) -> None:
        super().__init__()
        self.folded, self.open_tables, self._first = 0, [], False
        self.open_headings: list[str] = []
        self._heading = False

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.folded += tag == "details"
        self._heading = tag == "h2" and not self.folded
        if tag == "table" and not self.folded:
            self.open_tables.append("")
            self._first = True

    def handle_endtag(self, tag: str) -> None:
        self.folded -= tag == "details"
        self._first = self._first and tag != "th"
        self._heading = self._heading and tag != "h2"

    def handle_data(self, data: str) -> None:
        if self._first:
            self.open_tables[-1] += data
        if self._heading:
            self.open_headings.append(data)


def test_one_model_report_is_decision_first_with_the_detail_folded(slowed_run: tuple[Path, Any]) -> None:
    from PIL import Image

    _path, result = slowed_run
    page = result.html.read_text()
    seen = _OpenTables()
    seen.feed(page)
    # Open: the verdict, quality once for the model group, the summary row per backend, the cost table.
    assert seen.open_tables == ["rank", "backend", "backend", "backend"]
    assert seen.open_headings[:3] == ["Verdict", "Quality", "Summary"]
    assert page.index("<th>rank</th>") < page.index("<td>slowed = plain</td>") < page.index("<h2>Summary</h2>")
    # Folded, not dropped: per-class figures, every latency scenario, the method text, the pairwise tests.
    report = json.loads(result.json.read_text())
    for detail in ("<th>backend: class</th>", "<th>single-stream</th>", "<th>pair</th>", "Ranked by: (1)"):
        assert detail in page and page.rindex("<details>", 0, page.index(detail)) > page.rfind(
            "</details>", 0, page.index(detail)
        )
    assert html.escape(report["methods"]["quality"])[:60] in page
    assert "<script" not in page
    # Figures identical for a model group are drawn once (one reliability panel); their data keep both backends.
    assert Image.open(result.figures_dir / "reliability.png").size[0] < 400
    assert {r["backend"] for r in json.loads((result.figures_dir / "reliability.json").read_text())} == {
        "slowed",
        "plain",
    }

"""Golden comparison: a fixed-seed run on emulated clouds gives the recorded per-image answers and figures.

sklesion (local onnxruntime) and two emulated clouds hosting it (SageMaker through its adapter's answer format,
Vertex AI through the AutoML schema, each reached through its real SDK on 127.0.0.1) classify a seeded,
class-stratified subset of 30 HAM10000 dev images, beside a tiny seeded model (not a lesion model) so that
the backends also disagree. The
run's ``predictions.csv`` and the ``quality``, ``agreement`` and ``fairness`` sections of ``report.json`` must
equal the files in ``tests/golden/compare/``, recorded from the comparator before it was split into its run,
analysis and report stages (issue 19): moving code must not move a figure.

What is compared and how:

* Text, integers, booleans, ``None``, keys (and their order: the order of the report's rows) and list
  lengths: exactly.
* Floats: to 1e-12 (absolute, or relative to the magnitude above 1). A restructure may reorder floating-point
  sums (numpy's pairwise sum against a Python loop, say), which moves a figure by a few units in the 16th
  digit; anything that changes behaviour moves it far more: one image more or less in a 30-image set moves a
  share by 1/30, a different bootstrap seed moves an interval end by 1e-3 and more, and a probability that
  took another path to the model (re-encoded pixels, metadata sent) moves by 1e-7 at the least (float32).
* Normalised first (none of these may be compared): the run's output folder, the data folder and the cache
  folder are replaced by ``<output>``, ``<data>`` and ``<cache>``; the run id by ``<run_id>``. Timings, dates and
  fingerprints live in other sections (``run``, ``latency``, ``dataset``), which are not compared.

Each run's report.json is also checked against the JSON Schema shipped in the package
(``derm_cloud/compare/report/report.schema.json``).

The probabilities come from onnxruntime on this machine's CPU (the CI runs here too); a CPU with other vector
instructions can differ in the 7th digit, and the message then says so. To record anew (only when a change of
figures is intended, and say why in the commit):
``DERM_CLOUD_DATA=... PYTHONPATH=. python tests/test_compare_golden.py``.
"""

from __future__ import annotations

import csv
import json
import math
import sys
from pathlib import Path
from typing import Any

import pytest
from tests_helpers import DATA_DIR, DEV_CSV

from derm_cloud.compare import run_comparison
from derm_cloud.compare.report.schema import validate_report

GOLDEN = Path(__file__).parent / "golden" / "compare"
PREDICTIONS = GOLDEN / "predictions.csv"
SECTIONS = GOLDEN / "report_sections.json"
COMPARED_SECTIONS = ("quality", "agreement", "fairness")
TOLERANCE = 1e-12


def golden_config(output: Path, tiny_model: Path) -> dict[str, Any]:
    """The recorded comparison: 30 images, quality pass only (latency is timing, never golden)."""
    off = {"enabled": False}
    emulated = {"emulate": True, "model_dir": "sklesion"}
    return {
        "title": "golden comparison",
        "output": str(output),
        "seed": 11,
        "backends_in_parallel": False,
        "dataset": {"source": str(DEV_CSV), "limit": 30},
        "fairness": {"skin_tone": "auto", "min_group_size": 5},
        # One metadata mode, as every comparison ran before issue 20 (since then the default adds a with-metadata
        # row for each capable backend when backends differ): the recorded figures stay comparable.
        "metadata": {"mode": "auto", "variants": False},
        "scenarios": {
            "bootstrap": 100,
            "request_timeout_s": 120,
            "quality": {"concurrency": 2},
            **{s: off for s in ("single_stream", "server", "offline", "cold_start")},
        },
        "backends": [
            {"name": "local-onnx", "type": "local-onnx", "options": {"model_dir": "sklesion"}},
            {"name": "sagemaker", "type": "sagemaker", **emulated},
            {"name": "vertex", "type": "vertex", **emulated, "options": {"schema": "automl"}},
            # Another model, so that the agreement and same-model sections have disagreements to show.
            {"name": "tiny", "type": "local-onnx", "options": {"model_dir": str(tiny_model)}},
        ],
    }


def _replacements(output: Path, run_id: str) -> list[tuple[str, str]]:
    from derm_cloud.models.cache import cache_dir

    pairs = [(str(output), "<output>"), (str(DATA_DIR), "<data>"), (str(cache_dir()), "<cache>"), (run_id, "<run_id>")]
    return sorted(pairs, key=lambda p: -len(p[0]))  # longest first: a folder inside another is named by its own


def normalise(value: Any, replacements: list[tuple[str, str]]) -> Any:
    """``value`` with machine paths and the run id replaced by placeholders (JSON types kept)."""
    if isinstance(value, str):
        for old, new in replacements:
            value = value.replace(old, new)
        return value
    if isinstance(value, dict):
        return {normalise(k, replacements): normalise(v, replacements) for k, v in value.items()}
    if isinstance(value, list):
        return [normalise(v, replacements) for v in value]
    return value


def _csv_rows(path: Path) -> list[dict[str, str]]:
    with path.open(newline="", encoding="utf-8") as fh:
        return list(csv.DictReader(fh))


def run_golden(output: Path) -> tuple[list[dict[str, str]], dict[str, Any]]:
    """Run the golden comparison; returns (predictions.csv rows, the compared report sections), normalised."""
    from derm_cloud.testing.tiny_models import build_tiny_onnx_model

    tiny = build_tiny_onnx_model(output.parent / "tiny-onnx")  # seeded weights: the same model every time
    result = run_comparison(golden_config(output, tiny), progress=False)
    validate_report(result.json)  # the run's own report.json matches the schema shipped in the package
    swap = _replacements(output, result.run_id)
    report = json.loads(result.json.read_text(encoding="utf-8"))
    rows = [normalise(r, swap) for r in _csv_rows(result.output_dir / "predictions.csv")]
    return rows, normalise({k: report[k] for k in COMPARED_SECTIONS}, swap)


def differences(got: Any, want: Any, where: str = "$") -> list[str]:
    """Where ``got`` differs from ``want`` (floats to :data:`TOLERANCE`, everything else exactly)."""
    if isinstance(want, float) or (isinstance(got, float) and isinstance(want, int) and not isinstance(want, bool)):
        if not isinstance(got, (int, float)) or isinstance(got, bool):
            return [f"{where}: {got!r} where {want!r} was recorded"]
        if math.isnan(want) and math.isnan(got):
            return []
        if abs(got - want) <= TOLERANCE * max(1.0, abs(want)):
            return []
        return [f"{where}: {got!r} where {want!r} was recorded (differs by {abs(got - want):.3g})"]
    if isinstance(want, dict) and isinstance(got, dict):
        out = [f"{where}: key {k!r} recorded but missing" for k in want if k not in got]
        out += [f"{where}: key {k!r} not recorded" for k in got if k not in want]
        if not out and list(got) != list(want):  # the order is what the report's tables show
            out.append(f"{where}: keys in the order {list(got)} where {list(want)} was recorded")
        for k in want:
            if k in got:
                out += differences(got[k], want[k], f"{where}.{k}")
        return out
    if isinstance(want, list) and isinstance(got, list):
        if len(got) != len(want):
            return [f"{where}: {len(got)} items where {len(want)} were recorded"]
        return [d for i, (g, w) in enumerate(zip(got, want, strict=True)) for d in differences(g, w, f"{where}[{i}]")]
    return [] if got == want and type(got) is type(want) else [f"{where}: {got!r} where {want!r} was recorded"]


def _numeric_csv(rows: list[dict[str, str]]) -> list[dict[str, Any]]:
    """CSV cells as floats where the column holds probabilities, so they compare to the tolerance."""
    return [{k: float(v) if k.startswith("p_") and v else v for k, v in r.items()} for r in rows]


def test_differences_reads_floats_to_the_tolerance_and_everything_else_exactly() -> None:
    assert differences({"a": [0.1 + 0.2, "x"]}, {"a": [0.3, "x"]}) == []  # 4e-17 apart: reordered arithmetic
    assert differences({"a": 0.3 + 1e-9}, {"a": 0.3}) == ["$.a: 0.300000001 where 0.3 was recorded (differs by 1e-09)"]
    assert differences({"n": 36}, {"n": 35}) == ["$.n: 36 where 35 was recorded"]
    assert differences({"n": True}, {"n": 1}) == ["$.n: True where 1 was recorded"]
    assert differences({"b": 1}, {"a": 1}) == ["$: key 'a' recorded but missing", "$: key 'b' not recorded"]
    assert differences([1, 2], [1]) == ["$: 2 items where 1 were recorded"]
    assert differences({"b": 1, "a": 1}, {"a": 1, "b": 1}) == [
        "$: keys in the order ['b', 'a'] where ['a', 'b'] was recorded"
    ]


def test_normalise_replaces_paths_and_run_id_longest_first(tmp_path: Path) -> None:
    swap = _replacements(tmp_path / "out", "20250101-000000-abcdef-0123")
    text = f"{tmp_path / 'out' / 'report.json'} of run 20250101-000000-abcdef-0123 on {DEV_CSV}"
    assert normalise({"k": [text]}, swap) == {"k": ["<output>/report.json of run <run_id> on <data>/ham10000/dev.csv"]}


@pytest.mark.slow
def test_golden_comparison_gives_the_recorded_predictions_and_figures(tmp_path: Path, sklesion_model_dir: Path) -> None:
    rows, sections = run_golden(tmp_path / "golden-run")
    want_rows = _csv_rows(PREDICTIONS)
    assert [(r["image_id"], r["backend"]) for r in rows] == [(r["image_id"], r["backend"]) for r in want_rows]
    csv_diff = differences(_numeric_csv(rows), _numeric_csv(want_rows), "predictions.csv")
    assert not csv_diff, (
        f"{len(csv_diff)} cells of predictions.csv differ from the golden copy (a probability off in the 7th digit "
        "on every row points at another CPU's onnxruntime kernels, not at the comparator):\n" + "\n".join(csv_diff[:20])
    )
    want = json.loads(SECTIONS.read_text(encoding="utf-8"))
    assert set(want) == set(COMPARED_SECTIONS)
    for section in COMPARED_SECTIONS:
        diff = differences(sections[section], want[section], f"report.json:{section}")
        assert not diff, f"{len(diff)} differences in {section}:\n" + "\n".join(diff[:20])
    # The run must be one that can tell a change: all four backends scored on a common set of every image.
    assert sections["quality"]["common_set"] == 30 and len(sections["quality"]["backends"]) == 4
    assert sections["fairness"]["available"] and sections["agreement"]["n_disagreements"] > 0


def record(output: Path) -> None:
    """Write the golden files from the code as it stands (run this file as a script)."""
    rows, sections = run_golden(output)
    GOLDEN.mkdir(parents=True, exist_ok=True)
    with PREDICTIONS.open("w", newline="", encoding="utf-8") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    SECTIONS.write_text(json.dumps(sections, indent=1) + "\n", encoding="utf-8")
    print(f"recorded {PREDICTIONS} ({len(rows)} rows) and {SECTIONS}", file=sys.stderr)


if __name__ == "__main__":
    import tempfile

    with tempfile.TemporaryDirectory(prefix="derm-cloud-golden-") as scratch:
        record(Path(scratch) / "golden-run")

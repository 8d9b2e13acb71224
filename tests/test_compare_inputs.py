"""What went into each figure is stated (issue 20, items 5 and 7): metadata modes, in-sample figures, re-encodes.

One small comparison, run once for the module, on synthetic labelled images (no HAM10000 needed): a local
tiny model that can use patient metadata, and an emulated Vertex AI AutoML endpoint (which cannot) hosting the
same model behind a request limit that forces the library to re-encode one large PNG for Vertex only.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

from derm_cloud.compare import ComparisonResult, run_comparison
from derm_cloud.compare.analysis.metadata import metadata_summary
from derm_cloud.compare.run.metadata_modes import plan_metadata
from derm_cloud.errors import ConfigError
from derm_cloud.taxonomy import CLASS_CODES

#: Vertex's request limit in this test: the JPEGs fit, the 1 MB noise PNG does not.
REQUEST_LIMIT = 200_000
BIG_PNG = "big-noise"


def _write_dataset(folder: Path) -> Path:
    """Nine labelled images with patient metadata: eight small JPEGs and one PNG over the request limit."""
    folder.mkdir(parents=True)
    rng = np.random.default_rng(7)
    labels = [*CLASS_CODES, "mel"]
    rows = []
    for i, label in enumerate(labels):
        base = np.full((128, 128, 3), rng.integers(40, 220, size=3), dtype=np.uint8)
        img = np.clip(base + rng.normal(0, 12, size=base.shape), 0, 255).astype(np.uint8)
        name = f"img{i}.jpg"
        Image.fromarray(img).save(folder / name, quality=90)
        rows.append([name, label, 30 + 5 * i, "male" if i % 2 else "female", "back"])
    noise = rng.integers(0, 256, size=(600, 600, 3), dtype=np.uint8)
    Image.fromarray(noise).save(folder / f"{BIG_PNG}.png")
    assert (folder / f"{BIG_PNG}.png").stat().st_size > 3 * REQUEST_LIMIT
    rows.append([f"{BIG_PNG}.png", "nv", 62, "female", "face"])
    manifest = folder / "labels.csv"
    with manifest.open("w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(["file", "label", "age", "sex", "site"])
        writer.writerows(rows)
    return manifest


def config(output: Path, manifest: Path, model: Path, metadata: dict[str, Any] | None = None) -> dict[str, Any]:
    off = {"enabled": False}
    cfg: dict[str, Any] = {
        "title": "inputs",
        "output": str(output),
        "seed": 3,
        "backends_in_parallel": False,
        "dataset": {"source": str(manifest)},
        "fairness": {"skin_tone": "none", "min_group_size": 2},
        "scenarios": {"bootstrap": 20, **{s: off for s in ("single_stream", "server", "offline", "cold_start")}},
        "backends": [
            {"name": "local", "type": "local-onnx", "options": {"model_dir": str(model)}},
            {
                "name": "vertex",
                "type": "vertex",
                "emulate": True,
                "model_dir": str(model),
                "options": {"schema": "automl", "max_request_bytes": REQUEST_LIMIT},
            },
        ],
    }
    if metadata is not None:
        cfg["metadata"] = metadata
    return cfg


@pytest.fixture(scope="module")
def manifest(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return _write_dataset(tmp_path_factory.mktemp("inputs") / "images")


@pytest.fixture(scope="module")
def default_run(
    tmp_path_factory: pytest.TempPathFactory, manifest: Path, tiny_meta_model_dir: Path
) -> ComparisonResult:
    out = tmp_path_factory.mktemp("inputs-report")
    return run_comparison(config(out, manifest, tiny_meta_model_dir), progress=False)


# --- item 5: metadata as a stated choice --------------------------------------------------------------------------


def test_auto_mode_runs_both_modes_for_capable_backends_only_when_capabilities_differ() -> None:
    differ = plan_metadata({"local": True, "cv": False})
    assert differ.use == {"local": False, "cv": False}  # the cross-backend comparison: image-only
    assert differ.variants == (("local +metadata", "local", True),) and differ.capabilities_differ
    same = plan_metadata({"local": True, "sm": True})
    assert same.use == {"local": True, "sm": True} and same.variants == ()
    # An explicit choice runs one mode only.
    assert plan_metadata({"local": True, "cv": False}, "auto", variants=False).variants == ()
    assert plan_metadata({"local": True, "cv": False}, "blind").variants == ()
    with pytest.raises(ValueError, match="variants"):
        plan_metadata({"a": True}, "auto", variants="sometimes")


def test_a_capable_backend_answering_blind_by_choice_is_stated_at_the_top() -> None:
    one_mode = {"local": {"uses_metadata": True, "metadata_used": False}, "cv": {"metadata_used": False}}
    section, notes = metadata_summary(one_mode)
    assert section["note"] == notes[0]
    assert "local answered without the metadata it can use" in notes[0]
    with_all = {"uses_metadata": True, "metadata_used": True}
    section, notes = metadata_summary({"local": with_all, "sm": with_all})
    assert section["note"] is None and notes == [] and section["mode"] == "with metadata"


def test_variants_value_is_checked_in_the_config(manifest: Path, tiny_meta_model_dir: Path, tmp_path: Path) -> None:
    from derm_cloud.compare.run.config_file import parse_config

    bad = config(tmp_path, manifest, tiny_meta_model_dir, {"variants": "sometimes"})
    with pytest.raises(ConfigError, match=r"variants.*true, false or \"auto\""):
        parse_config(bad)
    assert parse_config(config(tmp_path, manifest, tiny_meta_model_dir)).metadata["variants"] == "auto"


def test_default_config_reports_both_figures_for_the_capable_backend(default_run: ComparisonResult) -> None:
    s = default_run.summary
    rows = s["metadata"]["backends"]
    assert {n: (r["can_use"], r["sent"]) for n, r in rows.items()} == {
        "local": (True, False),
        "local +metadata": (True, True),
        "vertex": (False, False),
    }
    quality = s["quality"]["backends"]
    assert quality["local"]["n"] == quality["local +metadata"]["n"] == 9  # both figures, on the common set
    # The metadata moves the tiny model's answers: two figures, not one copied.
    assert quality["local"]["calibration"]["log_loss"] != quality["local +metadata"]["calibration"]["log_loss"]
    note = s["metadata"]["note"]
    assert note in s["top_warnings"]
    assert "local can use patient metadata (age, sex, site); vertex cannot" in note
    assert "Image-only (metadata-blind), the cross-backend comparison: local, vertex." in note
    assert "With metadata: local +metadata (compare each only with its own image-only row)" in note
    md = default_run.markdown.read_text()
    html = default_run.html.read_text()
    assert md.index(note) < md.index("## Summary")  # at the top, above the summary table
    assert html.index("PATIENT METADATA:") < html.index("<h2>Summary</h2>")


# --- item 7: in-sample figures marked in every format --------------------------------------------------------------


def test_in_sample_figures_are_marked_in_every_format(default_run: ComparisonResult) -> None:
    s = default_run.summary
    q = s["quality"]["backends"]["local"]
    assert set(q["in_sample"]) == {"melanoma.at_specificity", "malignant.at_specificity"}
    assert all(p["in_sample"] is True for p in q["melanoma"]["at_specificity"] + q["malignant"]["at_specificity"])
    assert "threshold on the score is chosen on the same images" in q["in_sample"]["melanoma.at_specificity"]
    md, html = default_run.markdown.read_text(), default_run.html.read_text()
    for page in (md, html):
        assert "mel. sens. @ spec 0.90 [in-sample]" in page
        assert "Figures marked [in-sample] are in-sample: the threshold on the score is chosen" in page
    with (default_run.output_dir / "quality_metrics.csv").open(newline="") as fh:
        metrics = {(r["backend"], r["metric"]): r for r in csv.DictReader(fh)}
    at90 = metrics[("local", "melanoma_sensitivity_at_specificity_0.90")]
    assert at90["in_sample"] == "True" and "chosen on the same images" in at90["in_sample_reason"]
    assert metrics[("local", "balanced_accuracy")]["in_sample"] == "False"
    assert float(metrics[("local", "balanced_accuracy")]["value"]) == pytest.approx(q["balanced_accuracy"])
    exported = json.loads((default_run.output_dir / "quality_metrics.json").read_text())
    assert {r["metric"] for r in exported if r["in_sample"]} == {
        f"{k}_sensitivity_at_specificity_{t}" for k in ("melanoma", "malignant") for t in ("0.80", "0.90", "0.95")
    }


def test_method_text_names_the_isic_rule_unmangled(default_run: ComparisonResult) -> None:
    md, html = default_run.markdown.read_text(), default_run.html.read_text()
    for page in (md, html):
        assert "p over 0 5" not in page
    assert "Per class, p > 0.5 (ISIC 2018 rule): a class is called when its own probability exceeds 0.5" in md
    assert "Per class, p &gt; 0.5 (ISIC 2018 rule)" in html


# --- item 7: re-encodes explained ------------------------------------------------------------------------------------


def test_a_provider_reencode_is_named_as_the_cause_and_exported_per_image(default_run: ComparisonResult) -> None:
    s = default_run.summary
    group = next(g for g in s["same_model"]["groups"] if g["backends"] == ["local", "vertex"])
    pair = group["pairs"][0]
    assert pair["mismatch"] is True and pair["image_id"] == BIG_PNG
    assert pair["reencoded"]["images"] == 1 and pair["reencoded"]["above_tolerance"] == 1
    assert pair["reencoded"]["image_ids"] == [BIG_PNG] and pair["reencoded"]["for_backend"] == {BIG_PNG: "vertex"}
    warning = next(w for w in s["top_warnings"] if w.startswith("SAME MODEL, DIFFERENT ANSWERS"))
    assert "CAUSE: 1 of them were re-encoded for vertex only (big-noise;" in warning
    assert "over this provider's limit" in warning
    md = default_run.markdown.read_text()
    assert "| 1 (1 above) | MISMATCH: caused by the re-encode" in md
    with (default_run.output_dir / "predictions.csv").open(newline="") as fh:
        rows = list(csv.DictReader(fh))
    changed = {(r["backend"], r["image_id"]) for r in rows if r["reencoded"]}
    assert changed == {("vertex", BIG_PNG)}
    jsonl = [json.loads(line) for line in (default_run.output_dir / "predictions.jsonl").open()]
    assert {(r["backend"], r["image_id"]) for r in jsonl if r["reencoded"]} == changed
    assert all(r["reencoded"] is None for r in jsonl if (r["backend"], r["image_id"]) not in changed)


# --- item 7: report.json has a JSON Schema, checked in the tests ---------------------------------------------------


def test_report_json_matches_its_schema_and_a_removed_or_mistyped_field_fails(default_run: ComparisonResult) -> None:
    import copy

    import jsonschema

    import derm_cloud
    from derm_cloud.compare.report.schema import SCHEMA_PATH, ReportSchemaError, load_schema, validate_report

    assert SCHEMA_PATH.parent.is_relative_to(Path(derm_cloud.__file__).parent)  # shipped inside the package
    jsonschema.Draft202012Validator.check_schema(load_schema())
    report = json.loads(default_run.json.read_text(encoding="utf-8"))
    validate_report(default_run.json)  # the path form; write_report already checked it (DERM_CLOUD_VALIDATE_REPORT)

    def broken(change: Any) -> dict[str, Any]:
        data = copy.deepcopy(report)
        change(data)
        return data

    cases = {
        "'exports' is a required property": lambda d: d.pop("exports"),
        "'note' is a required property": lambda d: d["metadata"].pop("note"),
        "'in_sample' is a required property": lambda d: d["quality"]["backends"]["local"].pop("in_sample"),
        "True was expected": lambda d: d["quality"]["backends"]["local"]["melanoma"]["at_specificity"][0].update(
            in_sample="yes"
        ),
        "'1' is not of type 'integer'": lambda d: d["same_model"]["groups"][0]["pairs"][0]["reencoded"].update(
            images="1"
        ),
        "'balanced_acuracy' was unexpected": lambda d: d.update(balanced_acuracy=0.5),
        "'0.8' is not of type 'number', 'null'": lambda d: d["cost"]["backends"]["vertex"].update(monthly="0.8"),
    }
    for message, change in cases.items():
        with pytest.raises(ReportSchemaError, match=message.replace("(", r"\(")):
            validate_report(broken(change))


def test_an_emulator_hosting_a_model_without_metadata_input_cannot_use_metadata(
    tmp_path: Path, manifest: Path, tiny_model_dir: Path, tiny_meta_model_dir: Path
) -> None:
    from derm_cloud.compare.run.backends import can_use_metadata, open_runtimes
    from derm_cloud.compare.run.config_file import parse_config

    cfg = config(tmp_path, manifest, tiny_meta_model_dir)
    cfg["backends"] = [
        {"name": "sm-meta", "type": "sagemaker", "emulate": True, "model_dir": str(tiny_meta_model_dir)},
        {"name": "sm-plain", "type": "sagemaker", "emulate": True, "model_dir": str(tiny_model_dir)},
    ]
    runtimes = open_runtimes(parse_config(cfg), skip_unavailable=False, warnings=[])
    try:
        # Both clients send age, sex and site; only the endpoint whose model has a metadata input can use them.
        assert all(rt.classifier.uses_metadata for rt in runtimes)
        assert {rt.name: can_use_metadata(rt) for rt in runtimes} == {
            "sm-meta": True,
            "sm-meta +metadata": True,
            "sm-plain": False,
        }
    finally:
        for rt in runtimes:
            rt.close()

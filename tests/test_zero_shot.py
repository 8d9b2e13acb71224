"""Zero-shot from text prompts: prompt sets, the emulators' stand-in text tower, the backend and its folder.

The emulated endpoints host an encoder cut from a classifier; their text tower maps a prompt naming one class to
that class's weight vector in the classifier's own head. Zero-shot through them therefore means something for the
code path (requests, prompts, scoring) and can be checked against real lesions, while saying nothing of
MedSigLIP's or MedImageInsight's zero-shot quality.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import requests
from tests_helpers import dev_image, dev_rows

import derm_cloud
from derm_cloud.backends.zero_shot import ZeroShotClassifier, read_zero_shot_folder
from derm_cloud.backends.zero_shot_prompts import DEFAULT_PROMPTS, load_prompts
from derm_cloud.embedders.local_onnx import LocalOnnxEmbedder
from derm_cloud.errors import CapabilityError, ConfigError, ModelSpecError
from derm_cloud.models.embedder_cut import export_classifier_embedder, load_dropped_head
from derm_cloud.probe.zero_shot import write_zero_shot
from derm_cloud.taxonomy import CLASS_CODES, classes_named_in
from derm_cloud.testing.emulators.embedding_host import hash_text_vector
from derm_cloud.testing.emulators.medimageinsight import MedImageInsightEmulator, medimageinsight_embedder_for
from derm_cloud.testing.emulators.vertex_embeddings import VertexEmbeddingEmulator, vertex_embedder_for
from derm_cloud.testing.tiny_embedders import build_tiny_embedder

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")


@pytest.fixture(scope="module")
def tiny_embedder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_tiny_embedder(tmp_path_factory.mktemp("zs") / "tiny-embedder")


@pytest.fixture(scope="module")
def tiny_medsiglip(tiny_embedder: Path) -> Iterator[VertexEmbeddingEmulator]:
    with VertexEmbeddingEmulator(tiny_embedder, serving_api="medsiglip") as emu:
        yield emu


# --- prompt sets ---------------------------------------------------------------------------------------------


def test_default_prompts_name_their_own_class_and_nothing_else() -> None:
    prompts = load_prompts()
    assert list(prompts.prompts) == list(CLASS_CODES) and prompts.version.endswith("/1")
    for code, text in prompts.flat:
        assert classes_named_in(text) == {code}, text
    assert prompts.fingerprint == load_prompts(dict(DEFAULT_PROMPTS)).fingerprint  # same prompts, same hash


def test_a_prompt_set_missing_a_class_is_refused(tmp_path: Path) -> None:
    partial = {code: ["dermoscopy skin " + code] for code in CLASS_CODES if code != "df"}
    with pytest.raises(ConfigError, match="no prompts for df"):
        load_prompts(partial)
    with pytest.raises(ConfigError, match="'melanoma' is not a HAM10000 class code|melanoma is not"):
        load_prompts({**partial, "df": ["x"], "melanoma": ["y"]})
    path = tmp_path / "prompts.toml"
    body = "\n".join(f'{code} = ["dermoscopy skin {code}"]' for code in CLASS_CODES)
    path.write_text(f'version = "clinic-2"\n[prompts]\n{body}\n')
    loaded = load_prompts(path)
    assert loaded.version == "clinic-2" and loaded.prompts["mel"] == ("dermoscopy skin mel",)
    path.write_text("[prompts]\n" + "\n".join(line for line in body.splitlines() if not line.startswith("vasc")))
    with pytest.raises(ConfigError, match="no prompts for vasc"):
        load_prompts(path)


def test_an_image_only_embedder_is_refused_naming_the_fix(tiny_embedder: Path) -> None:
    with pytest.raises(CapabilityError, match="vertex-medsiglip") as info:
        ZeroShotClassifier(embedder=LocalOnnxEmbedder(tiny_embedder))
    assert "derm-cloud probe fit" in str(info.value)
    with pytest.raises(ConfigError, match="needs an embedder that embeds text"):
        derm_cloud.create("zero-shot")


# --- the emulators' text requests and stand-in text tower ----------------------------------------------------


def test_medsiglip_text_instances_in_the_published_shape_and_malformed_ones(
    tiny_medsiglip: VertexEmbeddingEmulator, tiny_embedder: Path
) -> None:
    url = f"{tiny_medsiglip.url}/v1/{tiny_medsiglip.resource_name()}:predict"
    # The notebook's text instance (quick_start_with_model_garden.ipynb): {"text": "..."}.
    ok = requests.post(url, json={"instances": [{"text": "dermoscopy skin melanoma"}, {"text": "a rash"}]}, timeout=30)
    assert ok.status_code == 200, ok.text
    first, second = ok.json()["predictions"]
    assert first["input_type"] == "text" and {"model_temperature", "model_bias"} <= set(first)
    head = load_dropped_head(tiny_embedder)
    assert head is not None
    weight, _bias, labels = head
    mel = weight[labels.index("mel")]
    np.testing.assert_allclose(first["embedding"], mel / np.linalg.norm(mel), atol=1e-6)  # the head's own direction
    assert second["embedding"] == pytest.approx(hash_text_vector("a rash", len(mel)))  # names no class: a hash
    for bad in ({"text": 5}, {"prompt": "melanoma"}):
        refused = requests.post(url, json={"instances": [bad]}, timeout=30)
        assert refused.status_code == 400 and "INVALID_REQUEST_FIELD_ERROR" in refused.text


def test_medimageinsight_text_rows_in_the_published_shape_and_malformed_ones(tiny_embedder: Path) -> None:
    with MedImageInsightEmulator(tiny_embedder) as emu:
        headers = {"Authorization": f"Bearer {emu.key}"}
        # The page's text-only request: the image cell empty, the text in the "text" column.
        text_only = {
            "input_data": {"columns": ["image", "text"], "index": [0, 1], "data": [["", "x-ray chest"], ["", "nevus"]]},
            "params": {"get_scaling_factor": "true"},
        }
        answer = requests.post(emu.scoring_uri, json=text_only, headers=headers, timeout=30)
        assert answer.status_code == 200, answer.text
        body = answer.json()
        assert body["image_features"] == [] and len(body["text_features"]) == 2 and "scaling_factor" in body
        for data in ([["", 7]], [["", ""]], [["melanoma"]]):
            malformed = {"input_data": {"columns": ["image", "text"], "index": [0], "data": data}}
            refused = requests.post(emu.scoring_uri, json=malformed, headers=headers, timeout=30)
            assert refused.status_code == 424, data


# --- the backend and its folder ------------------------------------------------------------------------------


def test_zero_shot_folder_round_trip_and_a_changed_model_is_refused(
    tiny_medsiglip: VertexEmbeddingEmulator, tmp_path: Path
) -> None:
    options = {"endpoint_id": tiny_medsiglip.endpoint_id, "api_endpoint": tiny_medsiglip.url}
    with vertex_embedder_for(tiny_medsiglip) as emb:
        run = write_zero_shot(emb, tmp_path / "zs", embedder_name="vertex-medsiglip", embedder_options=options)
    spec, vectors = read_zero_shot_folder(run.folder)
    assert vectors.shape == (21, 5) and spec["temperature"]["value"] == 10.0
    assert "stand-in" in spec["facts"]["text_embeddings"] and "never" in spec["facts"]["text_embeddings"]
    pixels = np.full((32, 32, 3), (190, 90, 70), np.uint8)
    with vertex_embedder_for(tiny_medsiglip) as emb, ZeroShotClassifier(embedder=emb) as direct:
        expected = direct.predict(pixels).vector()
    with vertex_embedder_for(tiny_medsiglip) as emb, ZeroShotClassifier(run.folder, embedder=emb) as from_folder:
        np.testing.assert_allclose(from_folder.predict(pixels).vector(), expected, atol=1e-6)
        facts = from_folder.describe().model_facts["zero_shot"]
    assert facts["labelled_images"] == 0 and "uncalibrated" in facts["calibration"]
    with pytest.raises(ConfigError, match="not both"):
        ZeroShotClassifier(run.folder, prompts=dict(DEFAULT_PROMPTS))
    np.savez(run.folder / "text_embeddings.npz", prompt_vectors=vectors[::-1].astype(np.float32))
    with vertex_embedder_for(tiny_medsiglip) as emb, pytest.raises(ModelSpecError, match="model behind it changed"):
        ZeroShotClassifier(run.folder, embedder=emb)


# --- real lesions through both emulated endpoints ----------------------------------------------------------------


@pytest.fixture(scope="module")
def stand_in_endpoints(sklesion_model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    """Both emulated endpoints hosting sklesion cut at its penultimate layer (one onnxruntime session for both)."""
    folder = tmp_path_factory.mktemp("cut") / "sklesion-embedder"
    export_classifier_embedder(sklesion_model_dir, folder)
    encoder = LocalOnnxEmbedder(folder)
    with VertexEmbeddingEmulator(encoder, serving_api="medsiglip") as vertex, MedImageInsightEmulator(encoder) as mii:
        yield {"vertex-medsiglip": vertex, "azure-medimageinsight": mii}


def _one_per_class() -> tuple[list[Path], list[str]]:
    rows: dict[str, dict[str, str]] = {}
    for row in dev_rows():
        rows.setdefault(row["dx"], row)
    return [dev_image(rows[c]) for c in CLASS_CODES], list(CLASS_CODES)


@pytest.mark.parametrize("endpoint", ["vertex-medsiglip", "azure-medimageinsight"])
def test_zero_shot_through_each_emulated_endpoint_beats_chance(
    stand_in_endpoints: dict[str, Any], endpoint: str
) -> None:
    images, truth = _one_per_class()
    emu = stand_in_endpoints[endpoint]
    emb = vertex_embedder_for(emu) if endpoint == "vertex-medsiglip" else medimageinsight_embedder_for(emu)
    with emb, ZeroShotClassifier(embedder=emb) as clf:
        preds = clf.predict_batch(images)
        info = clf.describe()
    sent = [json.loads(r.body) for r in emu.requests if r.body]
    correct = sum(max(p.probabilities, key=p.probabilities.__getitem__) == t for p, t in zip(preds, truth, strict=True))
    # Seven classes, one image each: chance is one right; the stand-in head's own directions get most right.
    assert correct >= 4, [max(p.probabilities, key=p.probabilities.__getitem__) for p in preds]
    assert all(abs(sum(p.probabilities.values()) - 1) < 1e-6 for p in preds)
    # The same stand-in embeddings through either endpoint: the scores differ only by the endpoint's temperature.
    # MedSigLIP's 10 and MedImageInsight's exp(4.516357) (Microsoft's published scaling_factor) put the median
    # top score near 1; the former placeholder scaling_factor 1.0 (exp(1) = 2.7) left it at 0.57.
    assert float(np.median([max(p.probabilities.values()) for p in preds])) > 0.9
    assert "stand-in" in info.model_facts["stand_in_text"] and info.emulated
    texts = [i.get("text") for body in sent for i in body.get("instances", [])] + [
        row[1] for body in sent for row in body.get("input_data", {}).get("data", [])
    ]
    assert sum(1 for t in texts if t) == len(load_prompts().flat)  # every prompt embedded once, not per image


def test_a_zero_shot_folder_never_records_the_endpoints_key(stand_in_endpoints: dict[str, Any], tmp_path: Path) -> None:
    emu = stand_in_endpoints["azure-medimageinsight"]
    options = {"scoring_uri": emu.scoring_uri, "key": emu.key, "instance_type": "Standard_NC4as_T4_v3"}
    with medimageinsight_embedder_for(emu) as emb:
        run = write_zero_shot(emb, tmp_path / "zs", embedder_name="azure-medimageinsight", embedder_options=options)
    text = (run.folder / "zero_shot.json").read_text()
    assert emu.key not in text and emu.scoring_uri not in text  # neither the key nor the emulator's port
    recorded = json.loads(text)["embedder"]
    assert recorded["options"] == {"instance_type": "Standard_NC4as_T4_v3"} and recorded["emulated"] is True


def test_the_report_draws_zero_shot_as_the_no_labels_point(tiny_medsiglip: VertexEmbeddingEmulator) -> None:
    from derm_cloud.compare.report.cells import md_table
    from derm_cloud.compare.report.probe_section import learning_curve_figure, probe_section

    with vertex_embedder_for(tiny_medsiglip) as emb, ZeroShotClassifier(embedder=emb) as clf:
        facts = clf.describe().model_facts
    curve = [{"asked": 50, "n": 50.0, "balanced_accuracy": 0.6, "ci": [0.5, 0.7]}]
    summary: dict[str, Any] = {
        "backends": {
            "zero-shot": {"model_facts": facts},
            "probe": {"model_facts": {"learning_curve": curve, "embedder": {}}},
            "sklesion": {"model_facts": {}},
        },
        "quality": {
            "backends": {
                "zero-shot": {"balanced_accuracy": 0.31, "ci": {"balanced_accuracy": [0.2, 0.4]}},
                "sklesion": {"balanced_accuracy": 0.72, "ci": {"balanced_accuracy": [0.65, 0.79]}},
            }
        },
        "emulated": ["zero-shot"],
    }
    section = probe_section(summary, md_table)
    assert section is not None
    _title, intro, tables = section
    assert "0 labels" in intro and "uncalibrated" in intro and "stand-in text tower" in intro
    assert "| 31.0% [20.0%, 40.0%] |" in tables[0] and "own weights" in tables[0]
    figure = learning_curve_figure(summary)
    assert figure is not None
    kinds = {(r["backend"], r["kind"], r.get("n")) for r in figure.rows}
    assert ("zero-shot", "zero-shot", 0) in kinds and ("probe", "probe", 50.0) in kinds
    assert ("sklesion", "reference", None) in kinds and not any(k[:2] == ("zero-shot", "reference") for k in kinds)
    only = {**summary, "backends": {"zero-shot": {"model_facts": facts}}}
    assert probe_section(only, md_table) is not None and learning_curve_figure(only) is not None
    # A general multimodal model is zero-shot too (model_facts zero_shot: True), but not from text embeddings:
    # it is a reference line, never a row of this table (the default comparison has two such backends).
    gemini = {"model_facts": {"zero_shot": True, "model": "gemini-2.5-flash"}}
    mixed = {**summary, "backends": {**summary["backends"], "vertex-gemini": gemini}}
    _title, _intro, tables = probe_section(mixed, md_table) or ("", "", [])
    assert "vertex-gemini" not in tables[0] and tables[0].count("\n") == 2  # header, rule, one row
    assert probe_section({**summary, "backends": {"vertex-gemini": gemini}}, md_table) is None

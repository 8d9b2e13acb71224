"""Model-card comparison and governance flags (offline: reference facts and local model directories)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from derm_cloud.cli import main
from derm_cloud.governance.model_cards import ModelCard, compare_model_cards, model_card, model_card_flags
from derm_cloud.models.facts import model_facts

VIT = "Anwarkh1/Skin_Cancer-Image_Classification"
MOBILENET = "google/mobilenet_v2_1.0_224"


def test_card_of_a_model_directory_uses_its_facts(tiny_model_dir: Path) -> None:
    facts = model_facts(str(tiny_model_dir))
    card = model_card(tiny_model_dir)
    assert card.parameters == facts.parameters and card.size_bytes == facts.file_size_bytes
    assert card.architecture == facts.architecture and card.licence == facts.licence
    assert card.labels is not None and card.labels.startswith("7: akiec, bcc")
    assert card.maps_to_ham10000 is True


def test_reference_cards_side_by_side_with_flags() -> None:
    vit, mobile = model_card(VIT, evaluation_dataset="HAM10000 dev.csv"), model_card(MOBILENET)
    assert vit.parameters == model_facts(VIT, local_files_only=True).parameters
    assert any("looks permissive, but the training images are non-commercial" in f for f in vit.flags)
    assert any("overlaps the evaluation data (HAM10000 dev.csv)" in f for f in vit.flags)
    assert not any("non-commercial" in f for f in mobile.flags)  # ImageNet weights
    table = compare_model_cards([VIT, MOBILENET], evaluation_dataset="HAM10000")
    header = table.splitlines()[0]
    assert VIT in header and MOBILENET in header
    assert f"| parameters | {vit.parameters:,} ({vit.parameters / 1e6:.1f}M) |" in table
    for row in ("training data", "licence", "intended use", "known limitations", "governance flags"):
        assert f"| {row} |" in table


@pytest.mark.parametrize(
    ("card", "expected"),
    [
        (ModelCard("a"), "no licence stated"),
        (ModelCard("b", licence="MIT", training_data="HAM10000, CC BY-NC 4.0"), "looks permissive"),
        (ModelCard("c", licence="CC BY-NC 4.0", training_data="own photos"), "research and non-commercial use only"),
        (ModelCard("d", licence="MIT"), "training data not declared"),
        (ModelCard("e", licence="MIT", training_data="x", intended_use="not stated by the card"), "intended use"),
        (ModelCard("f", licence="MIT", training_data="x", intended_use="y"), "no known limitations published"),
        (ModelCard("g", licence="MIT", training_data="x", maps_to_ham10000=False), "latency/cost baseline only"),
    ],
)
def test_flags(card: ModelCard, expected: str) -> None:
    assert any(expected in f for f in model_card_flags(card))


def test_card_from_backend_facts_dict() -> None:
    facts = {"model_id": "sk", "architecture": "Xception", "licence": "MIT", "training_data": "HAM10000"}
    card = model_card(facts, evaluation_dataset="ham10000/dev")
    assert card.model == "sk" and card.architecture == "Xception"
    assert any("overlaps the evaluation data" in f for f in card.flags)


def test_cli_model_cards(tiny_model_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["governance", "model-cards", str(tiny_model_dir), VIT, "--json", "--dataset", "HAM10000"]) == 0
    cards = json.loads(capsys.readouterr().out)
    assert [c["model"] for c in cards][1] == VIT and cards[1]["flags"]
    assert main(["governance", "model-cards", VIT, "--text"]) == 0
    assert "governance flags" in capsys.readouterr().out

"""ManifestSamples: a CSV manifest parsed a slice at a time into the samples the CSV loader makes."""

from __future__ import annotations

from pathlib import Path

import pytest
from tests_helpers import DEV_CSV

from derm_cloud.compare.run.manifest_samples import ManifestSamples
from derm_cloud.data import load_dataset
from derm_cloud.errors import ConfigError


def test_slices_give_the_samples_load_dataset_gives() -> None:
    eager = load_dataset(DEV_CSV).samples
    lazy = ManifestSamples(DEV_CSV)
    assert len(lazy) == len(eager) > 1000
    assert list(lazy) == list(eager)  # ids, paths, labels, metadata, lesion ids
    assert [s.extra for s in lazy[100:140]] == [s.extra for s in eager[100:140]]
    assert lazy[-1] == eager[-1] and lazy[7] == eager[7] and lazy[10:4] == []
    assert lazy[0:9:4] == [eager[0], eager[4], eager[8]]
    assert list(ManifestSamples(DEV_CSV, head=25)) == list(eager[:25])
    with pytest.raises(IndexError):
        lazy[len(eager)]


def test_quoted_newlines_a_byte_order_mark_and_blank_lines(tmp_path: Path) -> None:
    manifest = tmp_path / "m.csv"
    text = (
        "\ufeffimage_id,file,dx,note,age\n"
        'a,img/a.png,mel,"two\nlines, with ""quotes""",40\n'
        "\n"
        "b,/abs/b.jpg,Melanocytic nevi,,\n"
        'c,https://example.org/c.jpg,,"x",55\n'
    )
    manifest.write_text(text, encoding="utf-8")
    samples = ManifestSamples(manifest)
    assert [s.image_id for s in samples] == ["a", "b", "c"]
    a, b, c = samples[0:3]
    assert a.extra == {"note": 'two\nlines, with "quotes"'} and a.label == "mel" and a.metadata.age == 40
    assert a.source == tmp_path / "img" / "a.png" and b.source == Path("/abs/b.jpg")
    assert b.label == "nv" and c.label is None and c.source == "https://example.org/c.jpg"
    assert ManifestSamples(manifest, head=2)[1:] == [b]


def test_a_manifest_without_an_image_column_says_what_to_add(tmp_path: Path) -> None:
    manifest = tmp_path / "m.csv"
    manifest.write_text("label,age\nmel,40\n")
    with pytest.raises(ConfigError, match="no image column; add a 'file'"):
        ManifestSamples(manifest)
    manifest.write_text("file,label\nx.png,not-a-class\n")
    with pytest.raises(ConfigError, match=r"m.csv row 1 \(x\)"):
        ManifestSamples(manifest)[0]  # read lazily: the bad label is found when its row is

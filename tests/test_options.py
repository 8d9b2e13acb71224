"""``-o KEY=VALUE`` options are typed by the backend's signature, not by how the value looks."""

from __future__ import annotations

from pathlib import Path

import pytest

import derm_cloud
from derm_cloud.cli import main
from derm_cloud.commands.classify import parse_options
from derm_cloud.errors import ConfigError


def test_numeric_looking_string_option_stays_a_string_and_reaches_vertex(
    tiny_model_dir: Path, dev_images: list[Path]
) -> None:
    from derm_cloud.testing.emulators.vertex import VertexEmulator, vertex_backend_for

    # The README's own example id: all digits, yet the backend declares endpoint_id as a string.
    opts = parse_options(["endpoint_id=1234567890", "nodes=2", "use_metadata=false", "timeout=7"], "vertex")
    assert opts == {"endpoint_id": "1234567890", "nodes": 2, "use_metadata": False, "timeout": 7.0}
    with VertexEmulator(tiny_model_dir, grpc=False) as emu, vertex_backend_for(emu, **opts) as clf:
        pred = clf.predict(dev_images[0])
    assert pred.mapped and pred.backend == "vertex" and pred.top(1)[0].score > 0


def test_bad_int_option_names_the_option(
    tiny_model_dir: Path, dev_images: list[Path], capsys: pytest.CaptureFixture[str]
) -> None:
    argv = ["classify", str(dev_images[0]), "-b", "local-onnx", "-o", f"model_dir={tiny_model_dir}"]
    assert main([*argv, "-o", "intra_op_threads=abc"]) == 1
    err = capsys.readouterr().err
    assert "ConfigError" in err and "intra_op_threads" in err and "integer" in err and "Traceback" not in err
    assert main([*argv, "-o", "intra_op_threads=2", "--json"]) == 0
    assert '"top_k"' in capsys.readouterr().out


def test_json_only_for_containers_and_unions_with_numbers() -> None:
    opts = parse_options(['label_overrides={"Melanoma": "mel"}', "device=0", "token=true", "revision=1.0"], "local-hf")
    assert opts == {"label_overrides": {"Melanoma": "mel"}, "device": 0, "token": True, "revision": "1.0"}
    with pytest.raises(ConfigError, match="label_overrides"):
        parse_options(["label_overrides=not json"], "local-hf")
    with pytest.raises(ConfigError, match="must look like KEY=VALUE"):
        parse_options(["novalue"], "local-hf")


def test_python_values_of_the_wrong_type_name_the_option(tiny_model_dir: Path) -> None:
    # From a TOML config an unquoted id arrives as an int: refused before the SDK sees it.
    with pytest.raises(ConfigError, match=r"option endpoint_id takes str, got int 1234567890 \(quote it"):
        derm_cloud.create("vertex", endpoint_id=1234567890)
    with pytest.raises(ConfigError, match="option intra_op_threads takes int or NoneType, got str 'abc'"):
        derm_cloud.create("local-onnx", model_dir=tiny_model_dir, intra_op_threads="abc")

"""The shipped comparison configs: examples/compare.toml is the embedded default spelled out; the dataset one
is a valid labelled run."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from derm_cloud.cli import main
from derm_cloud.compare.run.config_file import load_config, parse_config
from derm_cloud.compare.run.defaults import DEFAULT_CONFIG_TOML

ROOT = Path(__file__).resolve().parents[1]
EXAMPLES = ROOT / "examples"


def _comparable(config_dict: dict[str, Any]) -> dict[str, Any]:
    # Where the report goes and which file it came from differ by construction; everything else must not.
    return {k: v for k, v in config_dict.items() if k not in ("output", "source_file")}


def test_compare_toml_is_the_embedded_default() -> None:
    example = load_config(EXAMPLES / "compare.toml")
    embedded = parse_config(DEFAULT_CONFIG_TOML, file="<embedded default config>", base_dir=ROOT)
    assert _comparable(example.to_dict()) == _comparable(embedded.to_dict())
    # Run from the repository root, both write the same folder.
    assert example.output.resolve() == embedded.output.resolve() == ROOT / "derm-cloud-report"
    assert example.fingerprint("same data") == embedded.fingerprint("same data")


def test_compare_dataset_toml_is_a_labelled_run_over_emulated_clouds() -> None:
    config = load_config(EXAMPLES / "compare-dataset.toml")
    # The HAM10000 dev split wherever this machine has it (a fetch, $DERM_CLOUD_DATA, ../shared/data): not a path
    # that exists only beside this project.
    assert config.dataset.source == "ham10000:dev"
    assert config.dataset.limit == 200
    emulated = {b.name for b in config.backends if b.emulate}
    assert emulated == {"sagemaker", "azure-ml", "vertex"}
    assert [b.type for b in config.backends if not b.emulate] == ["local-onnx"]


@pytest.mark.ham10000  # --check loads the dataset: compare-dataset.toml's is the HAM10000 dev split
def test_both_configs_pass_the_cli_check(capsys: Any) -> None:
    for name in ("compare.toml", "compare-dataset.toml"):
        assert main(["compare", str(EXAMPLES / name), "--check"]) == 0
    out = capsys.readouterr().out
    assert out.count("config OK") == 2

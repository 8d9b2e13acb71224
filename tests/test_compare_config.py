"""Comparison config files: defaults, relative paths, and errors that name the bad key and its line."""

from __future__ import annotations

from pathlib import Path

import pytest

from derm_cloud.cli import main
from derm_cloud.compare.run.config import ConfigFileError
from derm_cloud.compare.run.config_file import load_config, parse_config
from derm_cloud.compare.run.config_lines import toml_line
from derm_cloud.compare.run.defaults import DEFAULT_CONFIG_TOML

GOOD = """\
title = "two backends"
output = "reports/run"
seed = 7

[dataset]
source = "data/dev.csv"
limit = 50

[population]
monthly_volume = 20000
melanoma_prevalence = 0.05

[scenarios.server]
target_qps = 4.0
latency_bound_ms = 300

[scenarios.offline]
concurrency = [4, 1, 2, 2]

[[backends]]
name = "local"
type = "local-onnx"
options = { model_dir = "sklesion" }

[[backends]]
name = "sm"
type = "sagemaker"
emulate = true
model_dir = "sklesion"
rate_limit = 20
options = { instance_type = "ml.m5.large" }

[backends.emulator]
delay_ms = 50
"""


def write(tmp_path: Path, text: str, name: str = "compare.toml") -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def error_for(tmp_path: Path, text: str, name: str = "compare.toml") -> ConfigFileError:
    with pytest.raises(ConfigFileError) as info:
        load_config(write(tmp_path, text, name))
    return info.value


def test_valid_config_values_defaults_and_relative_paths(tmp_path: Path) -> None:
    cfg = load_config(write(tmp_path, GOOD))
    assert cfg.title == "two backends" and cfg.seed == 7
    assert cfg.output == tmp_path / "reports" / "run"
    assert cfg.dataset.source == str(tmp_path / "data" / "dev.csv") and cfg.dataset.limit == 50
    assert cfg.monthly_volume == 20000 and cfg.melanoma_prevalence == 0.05
    assert cfg.scenarios["server"]["target_qps"] == 4.0
    assert cfg.scenarios["server"]["queries"] == 200  # default kept
    assert cfg.scenarios["offline"]["concurrency"] == (1, 2, 4)  # sorted, deduplicated
    assert cfg.scenarios["single_stream"].enabled
    local, sm = cfg.backends
    assert (local.name, local.type, local.options) == ("local", "local-onnx", {"model_dir": "sklesion"})
    assert sm.emulate and sm.model_dir == "sklesion" and sm.rate_limit == 20.0
    assert sm.emulator["delay_ms"] == 50.0 and local.emulator["delay_ms"] == 0.0
    assert cfg.executor == "local" and cfg.backends_in_parallel


def test_fingerprint_ignores_output_but_not_results_relevant_keys(tmp_path: Path) -> None:
    a = load_config(write(tmp_path, GOOD))
    b = load_config(write(tmp_path, GOOD.replace('output = "reports/run"', 'output = "elsewhere"'), "b.toml"))
    c = load_config(write(tmp_path, GOOD.replace("seed = 7", "seed = 8"), "c.toml"))
    assert a.fingerprint("sha256:x") == b.fingerprint("sha256:x")
    assert a.fingerprint("sha256:x") != c.fingerprint("sha256:x")
    assert a.fingerprint("sha256:x") != a.fingerprint("sha256:y")


def test_fingerprint_hashes_the_redacted_config_not_secrets(tmp_path: Path) -> None:
    def with_key(key: str) -> str:
        return GOOD.replace(
            'options = { instance_type = "ml.m5.large" }',
            f'options = {{ instance_type = "ml.m5.large", api_key = "{key}" }}',
        )

    a = load_config(write(tmp_path, with_key("sk-first-secret"), "a.toml"))
    b = load_config(write(tmp_path, with_key("sk-other-secret"), "b.toml"))
    assert a.backends[1].options["api_key"] == "sk-first-secret"  # the secret itself is still used by the backend
    assert a.fingerprint("sha256:x") == b.fingerprint("sha256:x")
    # A non-secret option still changes it.
    c = load_config(write(tmp_path, with_key("sk-first-secret").replace("ml.m5.large", "ml.c5.xlarge"), "c.toml"))
    assert a.fingerprint("sha256:x") != c.fingerprint("sha256:x")


def test_unknown_top_level_key_names_key_line_and_suggestion(tmp_path: Path) -> None:
    err = error_for(tmp_path, GOOD.replace("seed = 7", "sed = 7"))
    assert err.key == "sed" and err.line == 3
    assert "compare.toml:3: sed: unknown key (did you mean 'seed'?)" in str(err)


def test_unknown_key_in_second_backend(tmp_path: Path) -> None:
    err = error_for(tmp_path, GOOD.replace("rate_limit = 20", "rate_limt = 20"))
    assert err.key == "backends[1].rate_limt"
    assert err.line == GOOD.splitlines().index("rate_limit = 20") + 1
    assert "did you mean 'rate_limit'" in str(err)


def test_wrong_type_in_nested_scenario_table(tmp_path: Path) -> None:
    err = error_for(tmp_path, GOOD.replace("target_qps = 4.0", 'target_qps = "fast"'))
    assert err.key == "scenarios.server.target_qps"
    assert err.line == GOOD.splitlines().index("target_qps = 4.0") + 1
    assert "must be a number" in str(err)


def test_bad_value_in_sub_table_of_array_element(tmp_path: Path) -> None:
    err = error_for(tmp_path, GOOD.replace("delay_ms = 50", "delay_ms = -5"))
    assert err.key == "backends[1].emulator.delay_ms"
    assert err.line == GOOD.splitlines().index("delay_ms = 50") + 1
    assert ">= 0" in str(err)


def test_bad_key_inside_inline_table(tmp_path: Path) -> None:
    text = GOOD.replace("[backends.emulator]\ndelay_ms = 50\n", "emulator = { delay = 5 }\n")
    err = error_for(tmp_path, text)
    assert err.key == "backends[1].emulator.delay"
    assert err.line == text.splitlines().index("emulator = { delay = 5 }") + 1


def test_unknown_backend_type_and_missing_model_dir(tmp_path: Path) -> None:
    err = error_for(tmp_path, GOOD.replace('type = "sagemaker"', 'type = "sagemkr"'))
    assert err.key == "backends[1].type" and "did you mean 'sagemaker'" in str(err)
    err = error_for(tmp_path, GOOD.replace('model_dir = "sklesion"\nrate', "rate"))
    assert err.key == "backends[1].model_dir" and "emulate = true needs model_dir" in str(err)
    err = error_for(tmp_path, GOOD.replace('name = "sm"', 'name = "local"'))
    assert "duplicate backend name" in str(err) and err.line == GOOD.splitlines().index('name = "sm"') + 1


def test_other_value_checks(tmp_path: Path) -> None:
    assert "must be one of 'local', 'ray'" in str(error_for(tmp_path, 'executor = "spark"\n' + GOOD))
    err = error_for(tmp_path, GOOD.replace("melanoma_prevalence = 0.05", "melanoma_prevalence = { mell = 0.1 }"))
    assert err.key == "population.melanoma_prevalence" and "unknown class code" in str(err)
    err = error_for(tmp_path, GOOD.replace("concurrency = [4, 1, 2, 2]", "concurrency = [0]"))
    assert err.key == "scenarios.offline.concurrency"
    err = error_for(tmp_path, GOOD.split("[[backends]]")[0])
    assert err.key == "backends" and "at least one [[backends]]" in str(err)


def test_toml_syntax_error_has_line(tmp_path: Path) -> None:
    err = error_for(tmp_path, GOOD.replace("seed = 7", "seed = = 7"))
    assert err.key == "<syntax>" and err.line == 3


def test_yaml_errors_use_node_marks(tmp_path: Path) -> None:
    text = """\
title: yaml run
dataset:
  source: data/dev.csv
scenarios:
  server:
    target_qps: 3
    latency_bund_ms: 100
backends:
  - name: local
    type: local-onnx
"""
    err = error_for(tmp_path, text, "compare.yaml")
    assert err.key == "scenarios.server.latency_bund_ms" and err.line == 7
    assert "did you mean 'latency_bound_ms'" in str(err)
    cfg = load_config(write(tmp_path, text.replace("latency_bund_ms", "latency_bound_ms"), "ok.yml"))
    assert cfg.scenarios["server"]["latency_bound_ms"] == 100.0
    fixed = text.replace("latency_bund_ms", "latency_bound_ms")
    err = error_for(tmp_path, fixed.replace("type: local-onnx", "type: local-onnx\n    burst: many"), "b.yaml")
    assert err.key == "backends[0].burst" and err.line == 11


def test_toml_line_finds_keys_in_blocks() -> None:
    lines = GOOD.splitlines()
    assert toml_line(GOOD, ("population", "monthly_volume")) == lines.index("monthly_volume = 20000") + 1
    assert (
        toml_line(GOOD, ("backends", 0, "options", "model_dir"))
        == lines.index('options = { model_dir = "sklesion" }') + 1
    )
    second = [i for i, ln in enumerate(lines) if ln == "[[backends]]"][1]
    assert toml_line(GOOD, ("backends", 1)) == second + 1
    assert toml_line(GOOD, ("title",)) == 1


def test_embedded_default_config_validates() -> None:
    cfg = parse_config(DEFAULT_CONFIG_TOML)
    types = {b.type for b in cfg.backends}
    assert {"local-onnx", "sagemaker", "azure-ml", "azure-custom-vision", "vertex", "azure-openai"} <= types
    assert all(b.emulate for b in cfg.backends if b.type != "local-onnx")
    assert cfg.dataset.source is None


def test_cli_reports_bad_key_and_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = write(tmp_path, GOOD.replace("limit = 50", "limmit = 50"))
    assert main(["compare", str(path)]) == 1
    err = capsys.readouterr().err
    assert f"{path}:7: dataset.limmit: unknown key (did you mean 'limit'?)" in err
    # --check loads the dataset too: give data/dev.csv two labelled images.
    from derm_cloud.models.sklesion_verify import generated_lesion_images

    images = generated_lesion_images(tmp_path / "data", 2)
    rows = "".join(f"{p.stem},nv,{p.name}\n" for p in images)
    (tmp_path / "data" / "dev.csv").write_text("image_id,dx,file\n" + rows)
    assert main(["compare", str(write(tmp_path, GOOD, "ok.toml")), "--check"]) == 0
    out = capsys.readouterr().out
    assert "config OK: 2 backends" in out and "dataset OK: 2 images, 2 labelled" in out

"""A newcomer's first hour: CLI output (one-line warnings, progress lines, -q), `models fetch` without lesion
images, the default comparison's dataset and summary headline, and the rule for tests that need HAM10000.

Output is tested through the CLI in a subprocess, with stderr a pipe (not a terminal), as in CI logs. HAM10000
images (Tschandl et al. 2018, CC BY-NC 4.0) are read in place, only where a test names them.
"""

from __future__ import annotations

import csv
import os
import subprocess
import sys
from pathlib import Path

import pytest
from tests_helpers import DEV_CSV, ROOT, needs_ham10000

from derm_cloud.compare.analysis.texts import quality_headline
from derm_cloud.compare.run import defaults
from derm_cloud.models import example_image
from derm_cloud.models.sklesion_verify import GENERATED_IMAGES, fallback_verify_set, generated_lesion_images


def _cli(*args: str, env: dict[str, str] | None = None, timeout: float = 600) -> subprocess.CompletedProcess[str]:
    full_env = {**os.environ, "PYTHONPATH": str(ROOT), **(env or {})}
    return subprocess.run(
        [sys.executable, "-m", "derm_cloud.cli", *args],
        capture_output=True,
        text=True,
        env=full_env,
        cwd=ROOT,
        timeout=timeout,
        check=False,
    )


def _labelled_folder(tmp_path: Path, n: int = 6) -> Path:
    """A CSV manifest of generated images (no dataset needed), labelled so the audit has classes to count."""
    images = generated_lesion_images(tmp_path / "images", n)
    manifest = tmp_path / "manifest.csv"
    with manifest.open("w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["image_id", "lesion_id", "file", "dx"])
        for i, p in enumerate(images):
            w.writerow([f"gen_{i}", f"lesion_{i}", f"images/{p.name}", ("nv", "mel", "bkl")[i % 3]])
    return manifest


# --- warnings -------------------------------------------------------------------------------------------------


def test_cli_prints_a_warning_as_one_line_without_python_machinery(tmp_path: Path) -> None:
    code = (
        "import sys, warnings\n"
        "import derm_cloud.cli as cli\n"
        "from derm_cloud.errors import DermCloudDeprecationWarning\n"
        "build = cli.build_parser\n"
        "def noisy():\n"
        "    warnings.warn('Azure AI Custom Vision retires soon;\\n plan the move', DermCloudDeprecationWarning)\n"
        "    return build()\n"
        "cli.build_parser = noisy\n"
        f"sys.exit(cli.main(['models', 'list', '--cache', {str(tmp_path)!r}]))\n"
    )
    proc = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env={**os.environ, "PYTHONPATH": str(ROOT)}
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stderr == "derm-cloud: warning: Azure AI Custom Vision retires soon; plan the move\n"
    assert "no models in" in proc.stdout
    # main() restores Python's own display afterwards (in-process callers keep their warning capture).
    import warnings

    import derm_cloud.cli as cli

    before = warnings.showwarning
    assert cli.main(["models", "list", "--cache", str(tmp_path), "--json"]) == 0
    assert warnings.showwarning is before


# --- models fetch -----------------------------------------------------------------------------------------------


def test_models_fetch_is_a_no_op_when_a_verified_model_is_cached(sklesion_model_dir: Path, tmp_path: Path) -> None:
    cache = tmp_path / "models"
    cache.mkdir()
    (cache / sklesion_model_dir.name).symlink_to(sklesion_model_dir, target_is_directory=True)
    env = {"DERM_CLOUD_DATA": str(tmp_path / "no-data-here")}
    proc = _cli("models", "fetch", "sklesion", "--cache", str(cache), env=env, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert "already in the cache" in proc.stderr and "verifying" not in proc.stderr
    assert proc.stdout.startswith(f"sklesion-0.2.2: {cache / 'sklesion-0.2.2'}")
    quiet = _cli("models", "fetch", "sklesion", "--cache", str(cache), "-q", env=env, timeout=120)
    assert quiet.returncode == 0 and quiet.stderr == ""


def test_models_fetch_without_lesion_images_checks_parity_on_generated_inputs(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from derm_cloud.cli import main
    from derm_cloud.models import sklesion

    def no_pypi(*_a: object, **_k: object) -> Path:
        raise example_image.ExampleImageError("no network in this test")

    seen: dict[str, object] = {}

    def fake_fetch(cache: Path, **kw: object) -> Path:
        images = list(kw["verify_images"])  # type: ignore[call-overload]
        seen.update(kw, n=len(images), exist=all(Path(p).is_file() for p in images))
        raise sklesion.ConversionError("stop here: the conversion itself is tested in test_sklesion_convert")

    monkeypatch.delenv("DERM_CLOUD_DATA", raising=False)
    monkeypatch.setattr(example_image, "example_image_dir", no_pypi)
    monkeypatch.setattr(sklesion, "fetch_sklesion", fake_fetch)
    assert main(["models", "fetch", "sklesion", "--cache", str(tmp_path)]) == 1
    err = capsys.readouterr().err
    assert seen["n"] == GENERATED_IMAGES and seen["exist"] is True
    assert len(seen["verify_metadata"]) == GENERATED_IMAGES  # type: ignore[arg-type]
    assert "generated images" in str(seen["verify_description"])
    assert "no lesion images were given" in err and "--verify-images" in err and "Traceback" not in err


def test_fallback_verify_set_is_seeded_and_exercises_every_resize_path(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from PIL import Image

    monkeypatch.setattr(example_image, "example_image_dir", lambda: tmp_path / "example")
    (tmp_path / "example").mkdir()
    Image.new("RGB", (40, 30), (200, 150, 120)).save(tmp_path / "example" / "dermapred-example.jpg")
    paths, metas, described = fallback_verify_set(tmp_path / "a")
    again, _, _ = fallback_verify_set(tmp_path / "b")
    assert described == f"the dermapred example photo and {GENERATED_IMAGES} generated images"
    assert paths[0].name == "dermapred-example.jpg" and len(paths) == len(metas) == GENERATED_IMAGES + 1
    assert [p.read_bytes() for p in paths[1:]] == [p.read_bytes() for p in again[1:]]
    sizes = {Image.open(p).size for p in paths[1:]}
    assert sizes == {(600, 450), (254, 254), (360, 480), (200, 150)}
    assert len({m.tobytes() for m in metas}) == len(metas)  # every image its own metadata vector


# --- progress ---------------------------------------------------------------------------------------------------


def test_dataset_audit_prints_progress_lines_when_stderr_is_not_a_terminal(tmp_path: Path) -> None:
    manifest = _labelled_folder(tmp_path)
    proc = _cli("dataset", "audit", str(manifest), "--out", str(tmp_path / "audit"), timeout=300)
    assert proc.returncode == 0, proc.stderr
    lines = [ln for ln in proc.stderr.splitlines() if ln.startswith("derm-cloud: dataset audit: ")]
    assert lines[0].endswith("0/6 images ...") and "6/6 images, done in" in lines[-1]
    assert "\r" not in proc.stderr  # no bar redraws in a log
    quiet = _cli("dataset", "audit", str(manifest), "--out", str(tmp_path / "audit2"), "-q", timeout=300)
    assert quiet.returncode == 0 and "dataset audit:" not in quiet.stderr


def test_progress_lines_carry_count_elapsed_and_eta(monkeypatch: pytest.MonkeyPatch) -> None:
    import io

    from derm_cloud.progress import Progress, format_seconds, mode_for

    monkeypatch.setenv("DERM_CLOUD_PROGRESS_INTERVAL", "0")
    out = io.StringIO()
    tick = Progress("lines", prefix="derm-cloud: compare", stream=out)("sagemaker", 4)
    tick(1)
    tick(3)
    lines = out.getvalue().splitlines()
    assert lines[0] == "derm-cloud: compare: sagemaker: 0/4 req ..."
    assert lines[1].startswith("derm-cloud: compare: sagemaker: 1/4 req (25%), ") and "ETA " in lines[1]
    assert lines[2].startswith("derm-cloud: compare: sagemaker: 4/4 req, done in ")
    assert mode_for(quiet=True) == "off" and mode_for(stream=out) == "lines" and mode_for(enabled=True) == "bars"
    assert format_seconds(75.2) == "1m15s" and format_seconds(42) == "42s"


def test_compare_without_labels_opens_with_the_quality_headline_and_shows_progress(
    tiny_model_dir: Path, tmp_path: Path
) -> None:
    images = generated_lesion_images(tmp_path / "photos", 3)
    config = tmp_path / "compare.toml"
    config.write_text(
        f'title = "unlabelled"\noutput = "{tmp_path / "out"}"\n'
        f'[dataset]\nsource = "{images[0].parent}"\n'
        "[scenarios]\nwarmup = 0\nmin_samples = 1\nbootstrap = 0\n"
        "[scenarios.single_stream]\nqueries = 2\n[scenarios.server]\nenabled = false\n"
        "[scenarios.offline]\nenabled = false\n[scenarios.cold_start]\nenabled = false\n"
        f'[[backends]]\nname = "tiny"\ntype = "local-onnx"\noptions = {{ model_dir = "{tiny_model_dir}" }}\n'
    )
    proc = _cli("compare", str(config), timeout=300)
    assert proc.returncode == 0, proc.stderr
    first = proc.stdout.splitlines()[0]
    assert first.startswith("Quality not measured") and "--dataset LABELLED.csv" in first
    assert "derm-cloud: compare: tiny: 0/5 req ..." in proc.stderr and "tiny: 5/5 req, done in" in proc.stderr
    md = (tmp_path / "out" / "report.md").read_text()
    assert md.split("## Summary", 1)[1].lstrip().startswith("**Quality not measured")


# --- the default comparison's data --------------------------------------------------------------------------------


def test_quality_headline_names_the_one_command_that_fixes_a_default_run() -> None:
    assert quality_headline({"available": False}, default_run=True) == (
        "Quality not measured: none of these images has a label. "
        "To measure it, run `derm-cloud data fetch ham10000`, then `derm-cloud compare` again."
    )
    assert quality_headline({"available": True}, default_run=True) is None


def test_no_labelled_data_means_the_unlabelled_example(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    unlabelled = tmp_path / "unlabelled" / "dev.csv"
    unlabelled.parent.mkdir()
    unlabelled.write_text("image_id,file\nx,x.jpg\n")
    monkeypatch.setattr(defaults, "_labelled_candidates", lambda: [tmp_path / "missing", unlabelled.parent])
    assert defaults.find_labelled_data() is None


def test_default_compare_uses_a_stratified_lesion_disjoint_subset_of_labelled_data(
    sklesion_model_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import pandas as pd

    monkeypatch.setenv("DERM_CLOUD_DATA", str(DEV_CSV.parent.parent))
    monkeypatch.setenv("DERM_CLOUD_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(defaults, "ensure_sklesion", lambda: sklesion_model_dir)
    assert defaults.find_labelled_data() == DEV_CSV
    config = defaults.default_config()
    subset = Path(str(config.dataset.source))
    assert subset.is_relative_to(tmp_path / "cache") and config.dataset.limit is None
    frame = pd.read_csv(subset)
    assert len(frame) == defaults.DEFAULT_SUBSET_SIZE and frame["lesion_id"].is_unique
    assert frame["dx"].value_counts().to_dict() == dict.fromkeys(("akiec", "bcc", "bkl", "df", "mel", "nv", "vasc"), 10)
    assert defaults.default_config().dataset.source == str(subset)  # reused: reruns resume the same run


# --- the HAM10000 rule --------------------------------------------------------------------------------------------

_DATA_TEST = "tests/test_metrics.py::test_dev_mix_support_and_input_errors"


def test_data_tests_are_found_from_their_code() -> None:
    path = DEV_CSV

    def helper() -> object:
        return DEV_CSV.parent

    def uses_helper() -> object:
        return helper()

    def uses_closure() -> object:
        return path

    def pure() -> int:
        return len("no data")

    assert needs_ham10000(uses_helper) and needs_ham10000(uses_closure)
    assert not needs_ham10000(pure)


@pytest.mark.parametrize("ci", ["", "true"])
def test_without_the_data_folder_tests_skip_naming_the_fix_or_fail_under_ci(ci: str, tmp_path: Path) -> None:
    env = {**os.environ, "DERM_CLOUD_DATA": str(tmp_path / "absent"), "CI": ci}
    proc = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-rs", "-p", "no:cacheprovider", _DATA_TEST],
        capture_output=True,
        text=True,
        env=env,
        cwd=ROOT,
        timeout=300,
        check=False,
    )
    output = proc.stdout + proc.stderr
    assert "derm-cloud data fetch ham10000" in output
    if ci:
        assert proc.returncode != 0 and "CI=true" in output and "1 skipped" not in output
    else:
        assert proc.returncode == 0 and "1 skipped" in output


# --- set-up scripts -----------------------------------------------------------------------------------------------


def test_setup_stages_print_one_line_each_and_show_the_log_only_on_failure(tmp_path: Path) -> None:
    script = (
        f". {ROOT / 'scripts' / '_stage.sh'}\n"
        "stage 'quiet step' sh -c 'echo chatter; echo more chatter >&2'\n"
        "skip 'create .venv' 'it exists'\n"
        "stage 'broken step' sh -c 'echo pip says why; exit 3'\n"
        "echo not reached\n"
    )
    proc = subprocess.run(
        ["bash", "-e", "-c", script],
        capture_output=True,
        text=True,
        env={**os.environ, "STAGE_LOG_DIR": str(tmp_path)},
        timeout=60,
        check=False,
    )
    assert proc.returncode == 3 and proc.stdout == ""
    lines = proc.stderr.splitlines()
    assert lines[0].startswith("[set-up] quiet step ... done in ") and lines[0].endswith(" s")
    assert lines[1] == "[set-up] create .venv ... skipped (it exists)"
    assert lines[2].startswith("[set-up] broken step ... FAILED after ") and "(exit 3)" in lines[2]
    assert lines[3:] == ["    pip says why"] and "chatter" not in proc.stderr
    assert (tmp_path / "quiet-step.log").read_text() == "chatter\nmore chatter\n"

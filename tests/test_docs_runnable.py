"""The first code block of the quick start and of the router guide runs as copied, after the set-up the page states.

Each page is read as a new user reads it: the `derm-cloud models fetch ...` / `derm-cloud data ...` commands the
prose states above the first code block are run in an empty folder, then the block itself, unchanged, as a script.
The derm-cloud cache is a fresh one holding only the sklesion model (what the set-up of `scripts/compare.sh` leaves);
the example photo is fetched into it from PyPI, as a user's `derm-cloud data example` does. No AWS credentials: the
router's SageMaker primary fails the way it does for a new user and the local deployment answers.
"""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

from derm_cloud.cli import main

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"

_FENCE = re.compile(r"^```(\w*)[^\n]*\n(.*?)^```\s*$", re.MULTILINE | re.DOTALL)
# Commands that prepare files for the block (the model, a sample photo); `derm-cloud compare` or `emulate` stated
# in the same prose are something else to try, not set-up.
_SETUP = re.compile(r"`(derm-cloud (?:models fetch|data) [^`]+)`")


def first_code_block(page: Path) -> tuple[str, str, str]:
    """(prose before it, language, code) of the page's first fenced code block."""
    text = page.read_text()
    match = _FENCE.search(text)
    assert match is not None, f"{page.name} has no code block"
    return text[: match.start()], match.group(1), match.group(2)


def setup_commands(prose: str) -> list[list[str]]:
    return [shlex.split(command) for command in _SETUP.findall(prose)]


def _run_cli(argv: list[str], cwd: Path, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    assert argv[0] == "derm-cloud"
    # This source tree's CLI (not an installed wheel's), exactly as `derm-cloud` runs it.
    return subprocess.run(
        [sys.executable, "-m", "derm_cloud.cli", *argv[1:]],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )


@pytest.fixture(scope="module")
def fresh_user_env(tmp_path_factory: pytest.TempPathFactory, sklesion_model_dir: Path) -> dict[str, str]:
    """A new user's environment after set-up: a cache holding sklesion only, no cloud credentials, no data folder."""
    cache = tmp_path_factory.mktemp("cache")
    (cache / "models").mkdir()
    (cache / "models" / sklesion_model_dir.name).symlink_to(sklesion_model_dir, target_is_directory=True)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "AZURE_", "GOOGLE_", "DERM_CLOUD_"))}
    env.update(
        PYTHONPATH=str(ROOT),
        DERM_CLOUD_CACHE=str(cache),
        # No AWS credentials anywhere, and no probe of the EC2 metadata address for some (network stays local).
        AWS_SHARED_CREDENTIALS_FILE=str(cache / "no-aws-credentials"),
        AWS_CONFIG_FILE=str(cache / "no-aws-config"),
        AWS_EC2_METADATA_DISABLED="true",
    )
    if "AWS_CA_BUNDLE" in os.environ:
        env["AWS_CA_BUNDLE"] = os.environ["AWS_CA_BUNDLE"]
    return env


@pytest.mark.slow  # runs sklesion; the first call downloads the 1 MB dermapred wheel from PyPI
@pytest.mark.parametrize("page", ["quickstart.md", "router.md"])
def test_first_code_block_runs_as_copied(page: str, tmp_path: Path, fresh_user_env: dict[str, str]) -> None:
    prose, language, code = first_code_block(DOCS / page)
    assert language == "python"
    if "lesion.jpg" in code:
        # The page says where its image comes from.
        assert any(argv[:3] == ["derm-cloud", "data", "example"] for argv in setup_commands(prose)), prose[-600:]
    for argv in setup_commands(prose):
        done = _run_cli(argv, tmp_path, fresh_user_env)
        assert done.returncode == 0, f"{shlex.join(argv)}:\n{done.stdout}{done.stderr}"[-3000:]
    script = tmp_path / "snippet.py"
    script.write_text(code)
    proc = subprocess.run(
        [sys.executable, str(script)], cwd=tmp_path, env=fresh_user_env, capture_output=True, text=True, timeout=300
    )
    assert proc.returncode == 0, f"{page}'s first code block failed:\n{proc.stdout}{proc.stderr}"[-4000:]
    assert proc.stdout.strip(), "the block prints its answer"
    assert "Traceback" not in proc.stderr


def test_pages_whose_first_block_reads_lesion_jpg_say_how_to_get_one() -> None:
    missing = []
    for page in sorted(DOCS.rglob("*.md")):
        if "```" not in page.read_text():
            continue
        prose, _, code = first_code_block(page)
        if "lesion.jpg" in code and "derm-cloud data example" not in prose + code:  # stated above it or in it
            missing.append(str(page.relative_to(DOCS)))
    assert missing == []


# --- `derm-cloud data example`: the sample photo the set-up writes ----------------------------------------------


@pytest.fixture
def example_cache(monkeypatch: pytest.MonkeyPatch, fresh_user_env: dict[str, str]) -> Path:
    # The module's fresh cache: the wheel is downloaded once for every test here.
    monkeypatch.setenv("DERM_CLOUD_CACHE", fresh_user_env["DERM_CLOUD_CACHE"])
    return Path(fresh_user_env["DERM_CLOUD_CACHE"])


@pytest.mark.slow  # downloads the 1 MB dermapred wheel from PyPI (once per module)
def test_data_example_writes_the_verified_photo_and_never_overwrites(
    example_cache: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    import hashlib

    from derm_cloud.models.example_image import EXAMPLE_IMAGE_SHA256

    target = tmp_path / "sub" / "lesion.jpg"
    assert main(["data", "example", str(target)]) == 0
    assert hashlib.sha256(target.read_bytes()).hexdigest() == EXAMPLE_IMAGE_SHA256
    out = capsys.readouterr().out
    assert "Apache-2.0" in out and "dermapred" in out and "clinician" in out
    assert main(["data", "example", str(target)]) == 0  # the same photo again: nothing to do
    assert "already" in capsys.readouterr().out
    assert [p.name for p in target.parent.iterdir()] == ["lesion.jpg"]  # no partial file left behind

    own = tmp_path / "mine.jpg"
    own.write_bytes(b"someone's own photo")
    assert main(["data", "example", str(own)]) == 1
    err = capsys.readouterr().err
    assert "mine.jpg exists and is not the example photo" in err and "choose another PATH" in err
    assert own.read_bytes() == b"someone's own photo"
    assert main(["data", "example", str(tmp_path)]) == 1
    assert "is a folder" in capsys.readouterr().err

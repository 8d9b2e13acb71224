#!/usr/bin/env bash
# Set up derm-cloud on a fresh machine: a virtualenv in .venv with the built wheel (not an editable install)
# and every extra, then fetch and convert the sklesion model into the user cache.
# Sourced by scripts/test.sh and scripts/compare.sh; safe to run again (a stage with nothing to do says so).
# Prints one line per stage with what it cost; each stage's own output goes to a log shown only on failure.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
# shellcheck source=scripts/_stage.sh
. scripts/_stage.sh
PY=${PYTHON:-python3}
SETUP_START=$SECONDS
if [ -x .venv/bin/python ]; then
  skip "create .venv" "it exists"
else
  stage "create .venv with $("$PY" --version 2>&1)" "$PY" -m venv .venv
fi
# shellcheck disable=SC1091
. .venv/bin/activate
stage "upgrade pip" python -m pip install -q --upgrade pip
# torch 2.13.0 is a local CPU build on our machines; any other version downloads gigabytes (CUDA).
stage "install torch 2.13.0 (CPU)" python -m pip install -q "torch==2.13.0"
rm -rf dist
stage "build the derm-cloud wheel" python -m pip wheel -q --no-deps -w dist .
WHEEL=$(ls dist/derm_cloud-*.whl)
stage "install $(basename "$WHEEL")" python -m pip install -q --force-reinstall --no-deps "$WHEEL"
# The constraints only spare the resolver a long backtrack (see the file); they change nothing it would pick.
stage "install its dependencies and every extra ([dev])" \
  python -m pip install -q -c scripts/constraints.txt "${WHEEL}[dev]"
# The real skin-lesion model: sklesion 0.2.2 from PyPI (sha256-pinned), converted to ONNX and parity-checked:
# on the HAM10000 dev split beside the project when present, else on the dermapred example photo and generated
# images. A verified model already in the cache makes this a no-op.
if [ -z "${DERM_CLOUD_DATA:-}" ] && [ -f ../shared/data/ham10000/dev.csv ]; then
  DERM_CLOUD_DATA=$(cd ../shared/data && pwd)
  export DERM_CLOUD_DATA
fi
printf '[set-up] fetch the sklesion model (its own progress lines follow)\n' >&2
FETCH_START=$SECONDS
derm-cloud models fetch sklesion >&2
printf '[set-up] fetch the sklesion model ... done in %d s\n' "$((SECONDS - FETCH_START))" >&2
printf '[set-up] ready in %d s (logs of each stage: %s)\n' "$((SECONDS - SETUP_START))" "$STAGE_LOG_DIR" >&2

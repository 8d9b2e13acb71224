#!/usr/bin/env bash
# Set up derm-cloud on a fresh machine: a virtualenv in .venv with the built wheel (not an editable install)
# and every extra, then fetch and convert the sklesion model into the user cache.
# Sourced by scripts/test.sh and scripts/compare.sh; safe to run again (each step is skipped when done).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
PY=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  "$PY" -m venv .venv
fi
# shellcheck disable=SC1091
. .venv/bin/activate
python -m pip install -q --upgrade pip 2>&1 | grep -v '^WARNING: Location' || true
# torch 2.13.0 is a local CPU build on our machines; any other version downloads gigabytes (CUDA).
python -m pip install -q "torch==2.13.0" 2>&1 | grep -v '^WARNING: Location' || true
rm -rf dist
python -m pip wheel -q --no-deps -w dist . 2>&1 | grep -v '^WARNING: Location' || true
WHEEL=$(ls dist/derm_cloud-*.whl)
python -m pip install -q --force-reinstall --no-deps "$WHEEL" 2>&1 | grep -v '^WARNING: Location' || true
python -m pip install -q "${WHEEL}[dev]" 2>&1 | grep -v '^WARNING: Location' || true
# The real skin-lesion model: sklesion 0.2.2 from PyPI (sha256-pinned), converted to ONNX, parity-checked on real
# dermoscopic images (the HAM10000 dev split beside the project when present). Skipped when already in the cache.
export DERM_CLOUD_DATA=${DERM_CLOUD_DATA:-$(cd .. && pwd)/shared/data}
derm-cloud models fetch sklesion

#!/usr/bin/env bash
# Run the whole test suite on a fresh machine: set-up (venv, wheel, model fetch, browser), then pytest.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
# shellcheck disable=SC1091
. scripts/setup.sh
# Test-only tools. Chromium and its driver come from Debian (the browser test drives /usr/bin/chromium through
# Playwright; `playwright install` would download a browser, which this network does not allow).
if ! command -v chromium >/dev/null 2>&1; then
  SUDO=""; [ "$(id -u)" -eq 0 ] || SUDO="sudo"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq chromium chromium-driver >/dev/null
fi
# checkov validates infra/; it pins an older boto3, so it lives in a venv of its own.
if [ ! -x .venv-checkov/bin/checkov ]; then
  python3 -m venv .venv-checkov
  .venv-checkov/bin/pip install -q checkov 2>&1 | grep -v '^WARNING: Location' || true
fi
export DERM_CLOUD_CHECKOV="$PWD/.venv-checkov/bin/checkov"
# The official ISIC challenge scorer re-scores the per-image exports; it needs pandas < 3, so it lives in a venv
# of its own too.
if [ ! -x .venv-isic/bin/isic-challenge-scoring ]; then
  python3 -m venv .venv-isic
  .venv-isic/bin/pip install -q isic-challenge-scoring 'pandas<3' 2>&1 | grep -v '^WARNING: Location' || true
fi
export DERM_CLOUD_ISIC_SCORING="$PWD/.venv-isic/bin/isic-challenge-scoring"
# azureml-inference-server-http (the server Azure ML runs score.py in) pins pydantic 2.12 and opentelemetry 1.33,
# so it too gets a venv of its own; the test puts this checkout on its PYTHONPATH for derm_cloud.
if [ ! -x .venv-azureml/bin/azmlinfsrv ]; then
  python3 -m venv .venv-azureml
  .venv-azureml/bin/pip install -q azureml-inference-server-http onnxruntime numpy pillow simplejpeg 2>&1 \
    | grep -v '^WARNING: Location' || true
fi
export DERM_CLOUD_AZUREML_SERVER="$PWD/.venv-azureml/bin/azmlinfsrv"
# Run from the repo root with plain `pytest` (not `python -m pytest`) so `import derm_cloud` resolves to the
# installed wheel, not the source tree.
exec pytest -q -p no:cacheprovider "$@"

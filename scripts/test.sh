#!/usr/bin/env bash
# Run the whole test suite on a fresh machine: set-up (venv, wheel, model fetch, browser), then pytest.
# Tests that need the HAM10000 images read them from $DERM_CLOUD_DATA or ../shared/data; without either they are
# skipped with the reason (`derm-cloud data fetch ham10000`), except under CI=true, where that is a failure.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
# shellcheck disable=SC1091
. scripts/setup.sh
# Test-only tools. Chromium and its driver come from Debian (the browser test drives /usr/bin/chromium through
# Playwright; `playwright install` would download a browser, which this network does not allow).
install_chromium() {
  local sudo=""
  [ "$(id -u)" -eq 0 ] || sudo="sudo"
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq chromium chromium-driver
}
if command -v chromium >/dev/null 2>&1; then
  skip "install chromium (browser test)" "$(command -v chromium) exists"
else
  stage "install chromium (browser test)" install_chromium
fi
# checkov validates infra/; it pins an older boto3, so it lives in a venv of its own.
install_checkov() {
  python3 -m venv .venv-checkov
  .venv-checkov/bin/pip install -q checkov
}
if [ -x .venv-checkov/bin/checkov ]; then
  skip "install checkov (infra checks)" ".venv-checkov exists"
else
  stage "install checkov (infra checks) into .venv-checkov" install_checkov
fi
export DERM_CLOUD_CHECKOV="$PWD/.venv-checkov/bin/checkov"
# The official ISIC challenge scorer re-scores the per-image exports; it needs pandas < 3, so it lives in a venv
# of its own too.
install_isic() {
  python3 -m venv .venv-isic
  .venv-isic/bin/pip install -q isic-challenge-scoring 'pandas<3'
}
if [ -x .venv-isic/bin/isic-challenge-scoring ]; then
  skip "install isic-challenge-scoring (official ISIC scorer)" ".venv-isic exists"
else
  stage "install isic-challenge-scoring (official ISIC scorer) into .venv-isic" install_isic
fi
export DERM_CLOUD_ISIC_SCORING="$PWD/.venv-isic/bin/isic-challenge-scoring"
# azureml-inference-server-http (the server Azure ML runs score.py in) pins pydantic 2.12 and opentelemetry 1.33,
# so it too gets a venv of its own; the test puts this checkout on its PYTHONPATH for derm_cloud.
install_azureml() {
  python3 -m venv .venv-azureml
  .venv-azureml/bin/pip install -q azureml-inference-server-http onnxruntime numpy pillow simplejpeg
}
if [ -x .venv-azureml/bin/azmlinfsrv ]; then
  skip "install azureml-inference-server-http (score.py under Azure ML's server)" ".venv-azureml exists"
else
  stage "install azureml-inference-server-http into .venv-azureml" install_azureml
fi
export DERM_CLOUD_AZUREML_SERVER="$PWD/.venv-azureml/bin/azmlinfsrv"
printf '[test] pytest, the whole suite (tests needing the HAM10000 images skip without them; CI=true fails instead)\n' >&2
# Run from the repo root with plain `pytest` (not `python -m pytest`) so `import derm_cloud` resolves to the
# installed wheel, not the source tree.
exec pytest -q -p no:cacheprovider "$@"

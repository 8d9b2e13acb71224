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
printf '[test] pytest, the whole suite (tests needing the HAM10000 images skip without them; CI=true fails instead)\n' >&2
# Run from the repo root with plain `pytest` (not `python -m pytest`) so `import derm_cloud` resolves to the
# installed wheel, not the source tree.
exec pytest -q -p no:cacheprovider "$@"

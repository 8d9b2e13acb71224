#!/usr/bin/env bash
# Run the whole test suite on a fresh machine: set-up (venv, wheel, model fetch, browser), then pytest.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
# shellcheck disable=SC1091
. scripts/setup.sh
# Run from the repo root with plain `pytest` (not `python -m pytest`) so `import derm_cloud` resolves to the
# installed wheel, not the source tree.
exec pytest -q -p no:cacheprovider "$@"

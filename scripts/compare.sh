#!/usr/bin/env bash
# The main job on its embedded defaults: sklesion through local-onnx plus every cloud backend against its local
# emulator hosting the same model; writes the comparison report. No credentials needed.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
# shellcheck disable=SC1091
. scripts/setup.sh
exec derm-cloud compare "$@"

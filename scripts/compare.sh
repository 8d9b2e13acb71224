#!/usr/bin/env bash
# The main job on its embedded defaults: sklesion through local-onnx plus every cloud backend against its local
# emulator hosting the same model; writes the comparison report. No credentials needed. With labelled images at
# hand ($DERM_CLOUD_DATA, a fetched dataset, or ../shared/data) the report has quality figures too.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
# shellcheck disable=SC1091
. scripts/setup.sh
printf '[compare] derm-cloud compare %s\n' "$*" >&2
exec derm-cloud compare "$@"

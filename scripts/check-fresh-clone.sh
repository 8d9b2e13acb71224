#!/usr/bin/env bash
# Check the two commands a newcomer runs, on a clone of the committed HEAD in a temporary folder with no
# ../shared beside it: scripts/compare.sh (the main job on its embedded defaults), then scripts/test.sh (the suite).
#
#   scripts/check-fresh-clone.sh [--keep] [--reuse-model-cache] [PYTEST_ARGS ...]
#
# What a bare machine lacks is taken away: no ../shared, DERM_CLOUD_DATA and CI unset (so data-bound tests are
# skipped with their reason, as for any outsider), and a fresh, empty derm-cloud cache (so the sklesion model is
# fetched and converted as on a first run) unless --reuse-model-cache. pip's own cache is reused (the point is the
# project's steps, not re-downloading torch). PYTEST_ARGS go to scripts/test.sh (default: the whole suite).
# The folder is removed after a pass (kept with --keep, and always after a failure, for a look).
set -euo pipefail
SRC=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
KEEP=0
REUSE_MODELS=0
while [ $# -gt 0 ]; do
  case $1 in
    --keep) KEEP=1; shift ;;
    --reuse-model-cache) REUSE_MODELS=1; shift ;;
    *) break ;;
  esac
done
BASE=$(mktemp -d "${TMPDIR:-/tmp}/derm-cloud-fresh.XXXXXX")
CLONE="$BASE/derm-cloud"
START=$SECONDS
say() { printf '[fresh-clone] %s\n' "$*" >&2; }
git clone -q --no-local "$SRC" "$CLONE"
say "cloned $(git -C "$CLONE" rev-parse --short HEAD) ($(git -C "$CLONE" log -1 --format=%s | cut -c1-60)) into $CLONE"
if [ -e "$BASE/shared" ]; then
  say "FAILED: $BASE/shared exists, so this would not be a machine without ../shared"
  exit 1
fi
unset DERM_CLOUD_DATA CI VIRTUAL_ENV
if [ "$REUSE_MODELS" -eq 0 ]; then
  export DERM_CLOUD_CACHE="$BASE/derm-cloud-cache"
  say "empty derm-cloud cache: $DERM_CLOUD_CACHE"
fi
# Outside any activated venv, as a newcomer's shell is: the scripts make and activate the clone's own .venv.
PATH=$(printf '%s' "$PATH" | tr ':' '\n' | grep -v '/\.venv/bin$' | paste -sd: -)
export PATH
status=0
cd "$CLONE"
say "1/2 scripts/compare.sh"
T0=$SECONDS
if scripts/compare.sh; then say "1/2 scripts/compare.sh passed in $((SECONDS - T0)) s"; else status=$?; say "1/2 scripts/compare.sh FAILED (exit $status)"; fi
if [ "$status" -eq 0 ]; then
  say "2/2 scripts/test.sh $*"
  T0=$SECONDS
  if scripts/test.sh "$@"; then say "2/2 scripts/test.sh passed in $((SECONDS - T0)) s"; else status=$?; say "2/2 scripts/test.sh FAILED (exit $status)"; fi
fi
if [ "$status" -eq 0 ] && [ "$KEEP" -eq 0 ]; then
  cd /
  rm -rf "$BASE"
  say "PASSED in $((SECONDS - START)) s (folder removed)"
elif [ "$status" -eq 0 ]; then
  say "PASSED in $((SECONDS - START)) s (kept: $BASE)"
else
  say "FAILED after $((SECONDS - START)) s; the clone is kept for a look: $CLONE"
fi
exit "$status"

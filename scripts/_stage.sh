# shellcheck shell=bash
# stage LABEL COMMAND...: run one set-up stage with its output kept in a log, and print one line saying what
# it did and what it cost, e.g. "[set-up] install torch 2.13.0 (CPU) ... done in 41 s". On failure the line
# says so and the log's last lines follow, so a quiet stage never hides its error.
# Sourced by scripts/setup.sh and scripts/test.sh.
STAGE_LOG_DIR=${STAGE_LOG_DIR:-$(mktemp -d "${TMPDIR:-/tmp}/derm-cloud-setup.XXXXXX")}

stage() {
  local label=$1 log start rc
  shift
  log="$STAGE_LOG_DIR/$(printf '%s' "$label" | tr -c 'A-Za-z0-9' '-').log"
  start=$SECONDS
  printf '[set-up] %s ... ' "$label" >&2
  if "$@" >"$log" 2>&1; then rc=0; else rc=$?; fi
  if [ "$rc" -eq 0 ]; then
    printf 'done in %d s\n' "$((SECONDS - start))" >&2
  else
    printf 'FAILED after %d s (exit %d); last lines of %s:\n' "$((SECONDS - start))" "$rc" "$log" >&2
    tail -n 25 "$log" | sed 's/^/    /' >&2
    return "$rc"
  fi
}

# skip LABEL REASON: the one line of a stage that had nothing to do.
skip() {
  printf '[set-up] %s ... skipped (%s)\n' "$1" "$2" >&2
}

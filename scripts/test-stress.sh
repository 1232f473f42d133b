#!/usr/bin/env bash
# The test suite while CPU hogs keep every core busy: timing assumptions show up as failures here.
#
# Starts one busy-loop process per core (HOGS, default: the number of cores), each ending by itself
# after HOG_SECONDS (default 1800) even if this script is killed; runs `make test`; kills the hogs on
# exit. The exit status is the test run's.
set -euo pipefail
cd "$(dirname "$0")/.."

HOGS=${HOGS:-$(nproc)}
HOG_SECONDS=${HOG_SECONDS:-1800}
PY=${PY:-.venv/bin/python}

hogs=()
stop_hogs() {
    for pid in "${hogs[@]}"; do
        kill "$pid" 2>/dev/null || true
    done
    for pid in "${hogs[@]}"; do
        wait "$pid" 2>/dev/null || true
    done
}
trap stop_hogs EXIT INT TERM

for _ in $(seq "$HOGS"); do
    # `timeout` bounds each hog: it stops by itself even if the trap never runs.
    timeout "$HOG_SECONDS" "$PY" -c "while True: pass" &
    hogs+=("$!")
done
echo "test-stress: ${#hogs[@]} CPU hogs running (at most ${HOG_SECONDS} s each): ${hogs[*]}"

start=$(date +%s)
status=0
make test || status=$?
echo "test-stress: make test exited with $status after $(( $(date +%s) - start )) s under ${#hogs[@]} CPU hogs"
exit "$status"

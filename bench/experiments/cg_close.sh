#!/bin/bash
# User-space instructions per `Connection: close` hello connection (accept, read, answer, close)
# of the flowno-io server, by callgrind at two connection counts (start-up cancels out):
# bench/experiments/cg_close.sh [flowno|flowno_io]. Run from the repository root; PY= picks the
# interpreter (PYTHONPATH= another source tree, for an A/B in one session).
set -euo pipefail
LOOP=${1:-flowno_io}
HERE=$(cd "$(dirname "$0")" && pwd)
PY=${PY:-$PWD/.venv/bin/python}
count() {
    local n=$1 port=$((19600 + RANDOM % 400)) err; err=$(mktemp)
    valgrind --tool=callgrind --callgrind-out-file=/dev/null "$PY" "$HERE/cg_hello_server.py" "$n" "$port" "$LOOP" \
        >/dev/null 2>"$err" &
    local pid=$!
    "$PY" "$HERE/cg_close_client.py" "$n" "$port"
    wait "$pid"
    grep -o "Collected : [0-9]*" "$err" | awk '{print $3}'
    rm -f "$err"
}
a=$(count 500); b=$(count 2500)
echo "hello Connection: close ($LOOP loop): $(( (b - a) / 2000 )) instructions per connection (Ir $a @500, $b @2500)"

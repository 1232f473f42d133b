#!/bin/bash
# User-space instructions per hello request of the flowno-io server, by callgrind at two request
# counts (start-up cancels out): bench/experiments/cg_server.sh [flowno|flowno_io] [observe]
# (the loop: flowno's EventLoop or flowno_io.EventLoop). Run from the repository root; PY= picks
# the interpreter (PYTHONPATH= another source tree, for an A/B in one session); CLIENT= another
# client script and LABEL= its line (cg_close.sh: one connection per request).
set -euo pipefail
LOOP=${1:-flowno_io}
OBSERVE=${2:-}
HERE=$(cd "$(dirname "$0")" && pwd)
PY=${PY:-$PWD/.venv/bin/python}
CLIENT=${CLIENT:-cg_hello_client.py}
LABEL=${LABEL:-hello server}
UNIT=${UNIT:-request}
count() {
    local n=$1 port=$((19100 + RANDOM % 500)) err; err=$(mktemp)
    valgrind --tool=callgrind --callgrind-out-file=/dev/null "$PY" "$HERE/cg_hello_server.py" "$n" "$port" "$LOOP" $OBSERVE \
        >/dev/null 2>"$err" &
    local pid=$!
    "$PY" "$HERE/$CLIENT" "$n" "$port"
    wait "$pid"
    grep -o "Collected : [0-9]*" "$err" | awk '{print $3}'
    rm -f "$err"
}
a=$(count 500); b=$(count 2500)
echo "$LABEL ($LOOP loop${OBSERVE:+, $OBSERVE}): $(( (b - a) / 2000 )) instructions per $UNIT (Ir $a @500, $b @2500)"

#!/bin/bash
# User-space instructions per request of flowno_io.HttpClient (T tasks) against URL, by callgrind
# at two request counts (start-up cancels out): bench/experiments/cg_client.sh URL [tasks]
# PYTHONPATH may point at another tree's packages/flowno-io/src to compare versions.
# URL: an nginx slowed by valgrind (cg_loadgen_nginx.sh PORT slow) counts the path the client takes
# at full speed (waiting on the reactor); a plain one counts the path where the answer is already there.
set -euo pipefail
URL=$1; TASKS=${2:-1}
HERE=$(cd "$(dirname "$0")" && pwd)
PY=${PY:-$PWD/.venv/bin/python}
count() {
    local err; err=$(mktemp)
    valgrind --tool=callgrind --callgrind-out-file=/dev/null "$PY" "$HERE/cg_client_requests.py" "$URL" "$1" "$TASKS" \
        >/dev/null 2>"$err"
    grep -o "Collected : [0-9]*" "$err" | awk '{print $3}'
    rm -f "$err"
}
a=$(count 500); b=$(count 2500)
echo "HttpClient, $TASKS task(s): $(( (b - a) / 2000 )) instructions per request (Ir $a @500, $b @2500)"

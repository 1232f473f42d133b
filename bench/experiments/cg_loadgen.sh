#!/bin/bash
# User-space instructions per request of `python -m loadtest closed` (50 users) against URL,
# counted by callgrind at two request counts so start-up cancels out:
#   bench/experiments/cg_loadgen.sh http://127.0.0.1:PORT/ [small] [large]
# Deterministic, unlike rates on the shared machine. Run from the repository root.
# URL: an nginx slowed by valgrind (cg_loadgen_nginx.sh PORT slow) counts the path the client takes
# at full speed (waiting on the reactor); a plain one counts the path where the answer is already there.
set -euo pipefail
URL=$1; A=${2:-2000}; B=${3:-6000}
PY=${PY:-.venv/bin/python}
count() {
    local out; out=$(mktemp)
    valgrind --tool=callgrind --callgrind-out-file=/dev/null "$PY" -m loadtest closed -c 50 -n "$1" \
        --no-files --no-progress -q "$URL" >/dev/null 2>"$out"
    grep -o "Collected : [0-9]*" "$out" | awk '{print $3}'
    rm -f "$out"
}
a=$(count "$A"); b=$(count "$B")
echo "loadtest closed: $(( (b - a) / (B - A) )) instructions per request (Ir $a @$A, $b @$B)"

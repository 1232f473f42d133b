#!/bin/bash
# User-space instructions per call of pieces of the server's hello path, by callgrind at two
# counts (start-up cancels out): bench/experiments/cg_pieces.sh [piece...] (default: all).
# Run from the repository root; PYTHONPATH=<old tree>/packages/flowno-io/src measures another version.
# SCRIPT=bench/experiments/cg_loadgen_pieces.py counts the load generator's pieces instead (name them).
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
PY=${PY:-$PWD/.venv/bin/python}
SCRIPT=${SCRIPT:-$HERE/cg_pieces.py}
count() {
    valgrind --tool=callgrind --callgrind-out-file=/dev/null "$PY" "$SCRIPT" "$1" "$2" 2>&1 >/dev/null \
        | grep -o "Collected : [0-9]*" | awk '{print $3}'
}
for piece in "${@:-parse request route response frame encode sendrecv}"; do
    for p in $piece; do
        a=$(count "$p" 2000); b=$(count "$p" 12000)
        echo "$p: $(( (b - a) / 10000 )) instructions per call"
    done
done

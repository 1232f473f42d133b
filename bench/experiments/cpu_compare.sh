#!/bin/bash
# CPU µs per request (user + sys, one core) of this tree vs another, interleaved rounds, for
# `loadtest closed` (50 users) or HttpClient GETs from one task. Callgrind slows the client so much
# that the response is already there at the first recv after a send, which hides the cost of
# waiting; this measures the real process instead (noisy on the shared machine: take the min).
#   bench/experiments/cpu_compare.sh {loadgen|client} URL BASE_TREE [N] [ROUNDS]
# BASE_TREE holds packages/flowno-io/src and loadtest/src (e.g. `git archive HEAD~1 ... | tar -x`).
set -euo pipefail
WHAT=$1; URL=$2; BASE=$3; N=${4:-20000}; R=${5:-3}
HERE=$(cd "$(dirname "$0")" && pwd)
PY=${PY:-$PWD/.venv/bin/python}
one() {
    local pp=$1 argv
    if [ "$WHAT" = loadgen ]; then
        argv=(-m loadtest closed -c 50 -n "$N" --no-files --no-progress -q "$URL")
    else
        argv=("$HERE/cg_client_requests.py" "$URL" "$N" 1)
    fi
    /usr/bin/time -f "%U %S" env PYTHONPATH="$pp" taskset -c 1 "$PY" "${argv[@]}" 2>&1 >/dev/null | tail -1 \
        | awk -v n="$N" '{printf "%.1f", ($1 + $2) * 1e6 / n}'
}
for _ in $(seq "$R"); do
    echo "base $(one "$BASE/packages/flowno-io/src:$BASE/loadtest/src") us/request   this $(one "") us/request"
done

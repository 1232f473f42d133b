#!/usr/bin/env bash
# Load-test the services (the `make loadtest` and `make loadtest-distributed` targets).
#
#   bash scripts/loadtest.sh               orchestrator sweeps + a headless Locust run
#   bash scripts/loadtest.sh distributed   Locust only: 1 master + WORKERS local workers
#
# Starts the echo and stream services (on free ports unless ECHO_PORT / STREAM_PORT say which),
# runs the orchestrator (python -m loadtest: a closed-loop concurrency sweep, an open-loop rate
# sweep, an SSE stream sweep, LLM-style chat streams) and a short headless Locust run, writes
# everything to loadtest/reports/<timestamp>/ with an index.html over all of it, prints a summary
# table and the index page's path, and stops the services (and Locust workers) on exit, even on
# Ctrl-C or an error. Traffic stays on 127.0.0.1; every run is bounded in time.
#
# Settings (environment variables):
#   DURATION=5                 seconds per orchestrator phase; Locust runs 4 x DURATION.
#                              The whole run takes about 15 x DURATION + 15 s (90 s by default).
#   CONCURRENCY=1,10,100,1000  closed-loop users, one phase per level
#   RATES=500,2000             open-loop arrivals per second, one phase per rate
#   OPEN_CONCURRENCY=256       open loop: most requests in flight
#   SSE_CONCURRENCY=10,100,1000  concurrent /events streams, one phase per level
#   LLM_CONCURRENCY=10,100     concurrent chat-completion streams
#   LOCUST_USERS=20            Locust users (echo, SSE and LLM users by weight)
#   WORKERS=2                  distributed: Locust worker processes (the master only coordinates)
#   MASTER_PORT=0              distributed: the master's port on 127.0.0.1 (0: a free one)
#   ECHO_PORT=0 STREAM_PORT=0  the services' ports on 127.0.0.1 (0: free ones)
#   REPORTS=loadtest/reports   where the <timestamp>/ directory goes
#   PY=.venv/bin/python        the interpreter with the workspace installed
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."

PY=${PY:-.venv/bin/python}
DURATION=${DURATION:-5}
CONCURRENCY=${CONCURRENCY:-1,10,100,1000}
RATES=${RATES:-500,2000}
OPEN_CONCURRENCY=${OPEN_CONCURRENCY:-256}
SSE_CONCURRENCY=${SSE_CONCURRENCY:-10,100,1000}
LLM_CONCURRENCY=${LLM_CONCURRENCY:-10,100}
LOCUST_USERS=${LOCUST_USERS:-20}
WORKERS=${WORKERS:-2}
MASTER_PORT=${MASTER_PORT:-0}
ECHO_PORT=${ECHO_PORT:-0}
STREAM_PORT=${STREAM_PORT:-0}
REPORTS=${REPORTS:-loadtest/reports}
MODE=${1:-all}
STOP_TIMEOUT=15   # seconds a service gets to exit after SIGTERM before SIGKILL

if [[ ! -x "$PY" ]]; then
    echo "loadtest: $PY not found; run 'make install' first (or set PY=)" >&2
    exit 2
fi
LOCUST=$(dirname "$PY")/locust
if ! [[ "$DURATION" =~ ^[0-9]+([.][0-9]+)?$ ]]; then
    echo "loadtest: DURATION must be a number of seconds, not '$DURATION'" >&2
    exit 2
fi
for setting in ECHO_PORT STREAM_PORT MASTER_PORT WORKERS; do
    if ! [[ "${!setting}" =~ ^[0-9]+$ ]]; then
        echo "loadtest: $setting must be a whole number, not '${!setting}'" >&2
        exit 2
    fi
done
if [[ "$MODE" != all && "$MODE" != distributed ]]; then
    echo "loadtest: unknown mode '$MODE' (expected nothing or 'distributed')" >&2
    exit 2
fi
LOCUST_SECONDS=$("$PY" -c "import sys; print(max(2, round(4 * float(sys.argv[1]))))" "$DURATION")

OUT="$REPORTS/$(date +%Y%m%d-%H%M%S)"
mkdir -p "$OUT/logs"

service_pids=()

stop_services() {
    local pid waited
    for pid in "${service_pids[@]}"; do
        kill -TERM "$pid" 2>/dev/null || true
    done
    for pid in "${service_pids[@]}"; do
        waited=0
        while kill -0 "$pid" 2>/dev/null && ((waited < STOP_TIMEOUT * 10)); do
            sleep 0.1
            waited=$((waited + 1))
        done
        if kill -0 "$pid" 2>/dev/null; then
            echo "loadtest: service $pid did not stop in ${STOP_TIMEOUT}s; killing it" >&2
            kill -KILL "$pid" 2>/dev/null || true
        fi
        wait "$pid" 2>/dev/null || true
    done
    service_pids=()
}
trap stop_services EXIT
trap 'echo "loadtest: interrupted" >&2; exit 130' INT TERM

# start_service NAME MODULE PORT: start `python -m MODULE --port PORT`; once it listens, its URL
# is in $service_url. (Not called in a $(...) subshell, so the trap sees the pid.)
start_service() {
    local name=$1 module=$2 port=$3 log="$OUT/logs/$1" url="" tries=0
    "$PY" -m "$module" --host 127.0.0.1 --port "$port" --log-level warning >"$log.out" 2>"$log.err" &
    service_pids+=($!)
    echo $! >"$log.pid"
    while [[ -z "$url" ]]; do
        if ! kill -0 "${service_pids[-1]}" 2>/dev/null || ((tries > 200)); then
            echo "loadtest: $name did not start; see $log.err" >&2
            tail -n 20 "$log.err" >&2 || true
            return 1
        fi
        sleep 0.1
        tries=$((tries + 1))
        url=$(sed -n 's/^listening on //p' "$log.out" | head -n 1)
    done
    service_url=$url
}

start_service echo echo_service "$ECHO_PORT"
echo_url=$service_url
start_service stream stream_service "$STREAM_PORT"
stream_url=$service_url
echo "services: echo $echo_url, stream $stream_url (logs in $OUT/logs)"
echo "reports:  $OUT  (DURATION=${DURATION}s per phase, Locust ${LOCUST_SECONDS}s)"

# orchestrate NAME SCENARIO TARGET [FLAGS...]: one orchestrator run into $OUT/NAME/.
orchestrate() {
    local name=$1 scenario=$2 target=$3
    shift 3
    echo
    echo "== $name: $scenario"
    "$PY" -m loadtest run "loadtest/scenarios/$scenario" --target "$target" -d "$DURATION" \
        -o "$OUT/$name" --quiet "$@"
}

status=0
locust_status=0
runs=()

# run_locust NAME [FLAGS...]: a headless Locust run into $OUT/NAME/ (bounded by --run-time and,
# should the master hang, by `timeout`).
run_locust() {
    local name=$1
    shift
    mkdir -p "$OUT/$name"
    ECHO_URL="$echo_url" STREAM_URL="$stream_url" timeout --kill-after=10 $((LOCUST_SECONDS + 90)) \
        "$LOCUST" --config loadtest/locust.conf \
        --users "$LOCUST_USERS" --spawn-rate "$LOCUST_USERS" --run-time "${LOCUST_SECONDS}s" \
        --csv "$OUT/$name/locust" --html "$OUT/$name/locust.html" "$@" \
        >"$OUT/$name/locust.log" 2>&1 || locust_status=$?
}

if [[ "$MODE" == all ]]; then
    orchestrate closed echo-mix.toml "$echo_url" -c "$CONCURRENCY" || status=1
    # The rate sweep looks for the generator's and the server's limit, so falling behind schedule
    # is a finding (reported in the summary), not a failure of the script.
    orchestrate open echo-open.toml "$echo_url" -r "$RATES" -c "$OPEN_CONCURRENCY" --no-schedule-check || status=1
    orchestrate sse sse-events.toml "$stream_url" -c "$SSE_CONCURRENCY" || status=1
    orchestrate llm llm-stream.toml "$stream_url" -c "$LLM_CONCURRENCY" || status=1
    runs=(closed open sse llm)

    echo
    echo "== locust: ${LOCUST_USERS} users for ${LOCUST_SECONDS}s (echo, SSE and LLM users)"
    run_locust locust
    locust_dirs=(locust)
else
    if ((MASTER_PORT == 0)); then
        MASTER_PORT=$("$PY" -c "import socket; s = socket.socket(); s.bind(('127.0.0.1', 0)); print(s.getsockname()[1])")
    fi
    echo
    echo "== locust distributed: 1 master on 127.0.0.1:$MASTER_PORT + $WORKERS workers," \
        "${LOCUST_USERS} users for ${LOCUST_SECONDS}s"
    mkdir -p "$OUT/locust-distributed"
    for ((worker = 1; worker <= WORKERS; worker++)); do
        ECHO_URL="$echo_url" STREAM_URL="$stream_url" "$LOCUST" --config loadtest/locust.conf --worker \
            --master-host 127.0.0.1 --master-port "$MASTER_PORT" \
            >"$OUT/locust-distributed/worker-$worker.log" 2>&1 &
        service_pids+=($!)   # stopped with the services (SIGTERM, then SIGKILL) whatever happens
        echo $! >"$OUT/logs/locust-worker-$worker.pid"
    done
    run_locust locust-distributed --master --master-bind-host 127.0.0.1 --master-bind-port "$MASTER_PORT" \
        --expect-workers "$WORKERS" --expect-workers-max-wait 60
    locust_dirs=(locust-distributed)
fi

stop_services

{
    for name in "${runs[@]}"; do
        if [[ -f "$OUT/$name/summary.txt" ]]; then
            cat "$OUT/$name/summary.txt"
            echo
        fi
    done
    for name in "${locust_dirs[@]}"; do
        if [[ -f "$OUT/$name/locust_stats.csv" ]]; then
            if [[ "$name" == locust-distributed ]]; then
                echo "Locust, distributed over $WORKERS workers (${LOCUST_USERS} users, ${LOCUST_SECONDS}s; times in ms)"
            else
                echo "Locust (${LOCUST_USERS} users, ${LOCUST_SECONDS}s; times in ms)"
            fi
            "$PY" -m loadtest locust-summary "$OUT/$name/locust_stats.csv"
        else
            echo "Locust wrote no statistics; see $OUT/$name/locust.log"
        fi
    done
} >"$OUT/summary.txt"

title="make loadtest"
[[ "$MODE" == distributed ]] && title="make loadtest-distributed"
index=$("$PY" -m loadtest index "$OUT" --title "$title")

echo
echo "================================ summary ================================"
cat "$OUT/summary.txt"
echo
echo "reports:"
for name in "${runs[@]}"; do
    [[ -f "$OUT/$name/loadtest.html" ]] && echo "  $name: $OUT/$name/loadtest.html (+ .json, .csv, _timeline.csv)"
done
for name in "${locust_dirs[@]}"; do
    [[ -f "$OUT/$name/locust.html" ]] && echo "  $name: $OUT/$name/locust.html (+ locust_stats.csv, locust.log)"
done
echo "  summary: $OUT/summary.txt"

if ((locust_status != 0)); then
    echo "loadtest: locust exited with status $locust_status (failures or errors; see $OUT/${locust_dirs[0]}/locust.log)" >&2
    status=1
fi
echo
echo "index: $index"
exit "$status"

#!/usr/bin/env bash
# Start the echo and stream services in the foreground; Ctrl-C, SIGTERM or closing the terminal
# (SIGHUP) stops both cleanly, never leaving one running.
#
# Environment (all optional):
#   ECHO_HOST, ECHO_PORT      echo service address   (default 127.0.0.1:8080)
#   STREAM_HOST, STREAM_PORT  stream service address (default 127.0.0.1:8081)
#   ACCESS_LOG=0              no access-log lines (default: one JSON line per request on stdout)
#   PY                        the Python to run them with (default .venv/bin/python; `make install`)
# Extra arguments are passed to both services (e.g. --log-level debug).
set -euo pipefail
cd "$(dirname "$0")/.."

PY=${PY:-.venv/bin/python}
ECHO_HOST=${ECHO_HOST:-127.0.0.1}
ECHO_PORT=${ECHO_PORT:-8080}
STREAM_HOST=${STREAM_HOST:-127.0.0.1}
STREAM_PORT=${STREAM_PORT:-8081}
STARTUP_TIMEOUT=15   # seconds for each service to start listening
STOP_TIMEOUT=15      # seconds for both to finish in-flight requests after a stop, then SIGKILL

if [[ ! -x $PY ]]; then
    echo "run-services: $PY not found; run 'make install' first" >&2
    exit 1
fi
for port in "$ECHO_PORT" "$STREAM_PORT"; do
    if ! [[ $port =~ ^[0-9]+$ ]] || ((port < 1 || port > 65535)); then
        echo "run-services: ports must be within 1-65535, not '$port'" >&2
        exit 1
    fi
done
access_log=--access-log
[[ ${ACCESS_LOG:-1} == 0 ]] && access_log=--no-access-log

pids=()
stopping=0

alive() { kill -0 "$1" 2>/dev/null; }

# say/warn: a message that never fails the stop. Once the terminal is closed (SIGHUP) every write to
# it fails (EIO), and under `set -e` a failing echo would abort the stop and orphan the services.
say() { echo "$@" 2>/dev/null || true; }
warn() { echo "$@" >&2 2>/dev/null || true; }
# A closed pipe (`make run-services | tee log`, then tee dies) must fail a write, not kill the script.
trap '' PIPE

stop() {
    # A second Ctrl-C or SIGTERM sends the services a second SIGTERM: they then exit at once.
    trap 'kill -TERM "${pids[@]}" 2>/dev/null || true' INT TERM
    trap '' HUP  # the terminal is gone or going: nothing more to hear from it
    stopping=1
    say "run-services: stopping (pids ${pids[*]}): in-flight requests get up to ${STOP_TIMEOUT}s;" \
        "press Ctrl-C again to stop them at once"
    for pid in "${pids[@]}"; do
        kill -TERM "$pid" 2>/dev/null || true
    done
    local waited=0
    while ((waited < STOP_TIMEOUT * 10)); do
        local running=0
        for pid in "${pids[@]}"; do
            alive "$pid" && running=1
        done
        ((running)) || break
        sleep 0.1
        waited=$((waited + 1))
    done
    for pid in "${pids[@]}"; do
        if alive "$pid"; then
            warn "run-services: $pid did not stop in ${STOP_TIMEOUT}s; killing it"
            kill -KILL "$pid" 2>/dev/null || true
        fi
    done
    wait 2>/dev/null || true
    say "run-services: stopped"
}

on_signal() {
    stop
    exit 0
}

on_exit() {
    local status=$?
    ((stopping)) || stop
    exit "$status"
}

trap on_signal INT TERM HUP
trap on_exit EXIT

# serves_health HOST PORT PID: true when HOST:PORT answers /health from PID or one of its workers
# (not from some other server that already had the port).
serves_health() {
    "$PY" - "$1" "$2" "$3" 2>/dev/null <<'PYTHON'
import json, sys, urllib.request
host, port, pid = sys.argv[1], sys.argv[2], int(sys.argv[3])
host = f"[{host}]" if ":" in host else host
with urllib.request.urlopen(f"http://{host}:{port}/health", timeout=1) as response:
    served_by = json.load(response).get("pid")
try:
    with open(f"/proc/{served_by}/stat") as stat:
        parent = int(stat.read().rsplit(")", 1)[1].split()[1])
except (OSError, ValueError, IndexError):
    parent = None
sys.exit(0 if pid in (served_by, parent) else 1)
PYTHON
}

# wait_listening NAME PID HOST PORT: until the service answers /health, or PID has exited.
wait_listening() {
    local name=$1 pid=$2 host=$3 port=$4 deadline=$((SECONDS + STARTUP_TIMEOUT))
    while ((SECONDS < deadline)); do
        if ! alive "$pid"; then
            echo "run-services: the $name service exited during startup (is port $port in use?)" >&2
            return 1
        fi
        if serves_health "$host" "$port" "$pid"; then
            return 0
        fi
        sleep 0.2
    done
    echo "run-services: the $name service did not answer on $host:$port within ${STARTUP_TIMEOUT}s" >&2
    return 1
}

# Each service in its own session: a terminal's Ctrl-C reaches only this script, which sends each
# service exactly one SIGTERM (a second signal would make a service exit at once, not gracefully).
setsid "$PY" -m echo_service --host "$ECHO_HOST" --port "$ECHO_PORT" "$access_log" "$@" &
pids+=($!)
setsid "$PY" -m stream_service --host "$STREAM_HOST" --port "$STREAM_PORT" "$access_log" "$@" &
pids+=($!)

wait_listening echo "${pids[0]}" "$ECHO_HOST" "$ECHO_PORT"
wait_listening stream "${pids[1]}" "$STREAM_HOST" "$STREAM_PORT"

echo_url="http://$ECHO_HOST:$ECHO_PORT"
stream_url="http://$STREAM_HOST:$STREAM_PORT"
cat <<EOF

  echo service    $echo_url    (pid ${pids[0]}; routes: curl $echo_url/)
    curl -s '$echo_url/echo?hello=world' -d 'hi there'

  stream service  $stream_url    (pid ${pids[1]}; routes: curl $stream_url/)
    curl -N '$stream_url/events?count=5&interval_ms=500'
    curl -N $stream_url/v1/chat/completions -H 'Content-Type: application/json' \\
         -d '{"stream": true, "messages": [{"role": "user", "content": "hi"}]}'

  Press Ctrl-C to stop both.

EOF

# Until a signal (the trap stops both) or one service exits on its own (then stop the other).
status=0
wait -n "${pids[@]}" || status=$?
warn "run-services: a service exited (status $status); stopping the other"
exit 1

#!/usr/bin/env bash
# Start N instances of the echo and stream services and nginx in front of them, in the foreground.
# Ctrl-C, SIGTERM or SIGHUP stops everything (nginx and every instance, with their workers).
# Loopback only. nginx is Debian's package, installed with apt-get when it is missing.
#
# Environment (all optional):
#   INSTANCES=2           instances of each service (1-8); ECHO_INSTANCES / STREAM_INSTANCES
#                         set one service's count
#   WORKERS=1             worker processes per instance (1-8; `--workers` of the services)
#   FRONT_PORT=8000       the nginx front's port, on FRONT_HOST
#   FRONT_HOST=127.0.0.1  a loopback address (127.x.y.z or ::1)
#   BASE_PORT=0           instance ports: BASE_PORT, BASE_PORT+1, ... (echo first, then stream);
#                         0 lets each instance take a free port
#   NGINX_WORKERS=1       nginx worker processes (1-8)
#   ACCESS_LOG=0          1: the services' JSON access-log lines, in the run directory
#   KEEP_RUN_DIR=0        1: keep the run directory (configs, logs) after the stop
#   PY                    the Python to run the services (default .venv/bin/python; `make install`)
#   NGINX                 the nginx binary (default: nginx on PATH, else /usr/sbin/nginx)
#
# Lines for programs (tests read them): one per instance, then the front once it answers:
#   run-cluster: instance echo 1 pid 1234 http://127.0.0.1:41001
#   run-cluster: front http://127.0.0.1:8000 nginx pid 1240 run dir /tmp/run-cluster.XXXX
set -euo pipefail
cd "$(dirname "$0")/.."
REPO=$PWD

PY=${PY:-.venv/bin/python}
INSTANCES=${INSTANCES:-2}
ECHO_INSTANCES=${ECHO_INSTANCES:-$INSTANCES}
STREAM_INSTANCES=${STREAM_INSTANCES:-$INSTANCES}
WORKERS=${WORKERS:-1}
FRONT_HOST=${FRONT_HOST:-127.0.0.1}
FRONT_PORT=${FRONT_PORT:-8000}
BASE_PORT=${BASE_PORT:-0}
NGINX_WORKERS=${NGINX_WORKERS:-1}
STARTUP_TIMEOUT=20   # seconds for each instance, and nginx, to answer
STOP_TIMEOUT=15      # seconds for everything to stop after a signal, then SIGKILL
MAX_INSTANCES=8

log() { echo "run-cluster: $*"; }
die() {
    echo "run-cluster: $*" >&2
    exit 1
}

# -- checks ---------------------------------------------------------------------------------------
[[ -x $PY ]] || die "$PY not found; run 'make install' first"
in_range() { [[ $1 =~ ^[0-9]+$ ]] && (($1 >= $2 && $1 <= $3)); }
in_range "$ECHO_INSTANCES" 1 $MAX_INSTANCES || die "ECHO_INSTANCES must be within 1-$MAX_INSTANCES"
in_range "$STREAM_INSTANCES" 1 $MAX_INSTANCES || die "STREAM_INSTANCES must be within 1-$MAX_INSTANCES"
in_range "$WORKERS" 1 8 || die "WORKERS must be within 1-8"
in_range "$NGINX_WORKERS" 1 8 || die "NGINX_WORKERS must be within 1-8"
in_range "$FRONT_PORT" 1 65535 || die "FRONT_PORT must be within 1-65535"
in_range "$BASE_PORT" 0 65000 || die "BASE_PORT must be within 0-65000 (0: free ports)"
[[ $FRONT_HOST =~ ^127\.[0-9]+\.[0-9]+\.[0-9]+$ || $FRONT_HOST == ::1 || $FRONT_HOST == localhost ]] ||
    die "FRONT_HOST must be a loopback address (127.x.y.z or ::1), not '$FRONT_HOST'"

# -- nginx and envsubst: Debian packages, installed when missing -----------------------------------
apt_install() {
    local package=$1 output
    ((EUID == 0)) || die "$package is missing; install it: sudo apt-get install -y $package"
    command -v apt-get >/dev/null || die "$package is missing and there is no apt-get to install it"
    log "installing $package (apt-get install -y $package)..."
    local apt=(apt-get -o DPkg::Lock::Timeout=300 -qq)
    # A fresh machine has no package lists yet: update, then try again.
    output=$(DEBIAN_FRONTEND=noninteractive "${apt[@]}" install -y "$package" 2>&1) ||
        output=$({ "${apt[@]}" update && DEBIAN_FRONTEND=noninteractive "${apt[@]}" install -y "$package"; } 2>&1) ||
        die "apt-get could not install $package: $(tail -n 3 <<<"$output")"
}

if [[ -z ${NGINX:-} ]]; then
    NGINX=$(command -v nginx || true)
    [[ -n $NGINX ]] || NGINX=/usr/sbin/nginx
fi
if [[ ! -x $NGINX ]]; then
    apt_install nginx
    NGINX=/usr/sbin/nginx
    [[ -x $NGINX ]] || die "nginx is not at $NGINX after apt-get install nginx"
fi
command -v envsubst >/dev/null || apt_install gettext-base

# -- the run directory ----------------------------------------------------------------------------
RUN_DIR=$(mktemp -d "${TMPDIR:-/tmp}/run-cluster.XXXXXX")
# nginx workers run as an unprivileged user when the master is root: let them reach the run dir.
chmod 755 "$RUN_DIR"

pids=()   # every process this script started (each in its own session)
names=()  # their names, same order
stopping=0

alive() { kill -0 "$1" 2>/dev/null; }

# descendants PID: every process below PID (the services' workers sit in their own process groups).
descendants() {
    local child
    for child in $(ps -o pid= --ppid "$1" 2>/dev/null); do
        echo "$child"
        descendants "$child"
    done
}

stop() {
    # A second signal while stopping kills everything at once.
    trap 'kill -KILL $(descendants $$) 2>/dev/null || true' INT TERM HUP
    stopping=1
    if ((${#pids[@]})); then
        log "stopping (pids ${pids[*]})..."
        local i tree
        tree=$(descendants $$)
        for i in "${!pids[@]}"; do
            if [[ ${names[$i]} == nginx ]]; then
                kill -QUIT "${pids[$i]}" 2>/dev/null || true  # graceful: finish what is in flight
            else
                kill -TERM "${pids[$i]}" 2>/dev/null || true  # graceful: streams end, requests finish
            fi
        done
        local waited=0 running=1 pid
        while ((running && waited < STOP_TIMEOUT * 10)); do
            running=0
            for pid in "${pids[@]}"; do
                alive "$pid" && running=1
            done
            ((running)) && sleep 0.1
            waited=$((waited + 1))
        done
        for i in "${!pids[@]}"; do
            if alive "${pids[$i]}"; then
                echo "run-cluster: ${names[$i]} (pid ${pids[$i]}) did not stop in ${STOP_TIMEOUT}s; killing it" >&2
            fi
        done
        # Whatever is left of the tree, workers included, even if their parent is gone.
        for pid in $tree; do
            kill -KILL "$pid" 2>/dev/null || true
        done
        wait 2>/dev/null || true
    fi
    if [[ ${KEEP_RUN_DIR:-0} == 1 ]]; then
        log "stopped; configs and logs kept in $RUN_DIR"
    else
        rm -rf "$RUN_DIR"
        log "stopped"
    fi
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

# start NAME COMMAND...: COMMAND in its own session (a terminal's Ctrl-C reaches only this script,
# which sends each process exactly one signal), output in the run directory.
start() {
    local name=$1
    shift
    setsid "$@" >"$RUN_DIR/$name.out" 2>"$RUN_DIR/$name.err" </dev/null &
    pids+=($!)
    names+=("$name")
}

# wait_listening NAME PID: the URL from the instance's `listening on URL` line.
wait_listening() {
    local name=$1 pid=$2 deadline=$((SECONDS + STARTUP_TIMEOUT)) url
    while ((SECONDS < deadline)); do
        url=$(sed -n 's/^listening on \(http:[^ ]*\)$/\1/p' "$RUN_DIR/$name.out" | head -n 1)
        if [[ -n $url ]]; then
            echo "$url"
            return 0
        fi
        alive "$pid" || die "$name exited during startup: $(tail -n 3 "$RUN_DIR/$name.err")"
        sleep 0.1
    done
    die "$name did not listen within ${STARTUP_TIMEOUT}s"
}

# -- the instances --------------------------------------------------------------------------------
access_log=--no-access-log
[[ ${ACCESS_LOG:-0} == 1 ]] && access_log=--access-log
export PYTHONUNBUFFERED=1
next_port=$BASE_PORT
echo_servers=""
stream_servers=""
for service in echo stream; do
    count=$ECHO_INSTANCES
    [[ $service == stream ]] && count=$STREAM_INSTANCES
    for ((n = 1; n <= count; n++)); do
        port=$next_port
        ((BASE_PORT)) && next_port=$((next_port + 1))
        start "$service-$n" "$PY" -m "${service}_service" --host 127.0.0.1 --port "$port" \
            --workers "$WORKERS" "$access_log"
    done
done
for i in "${!pids[@]}"; do
    name=${names[$i]}
    url=$(wait_listening "$name" "${pids[$i]}")
    log "instance ${name%-*} ${name##*-} pid ${pids[$i]} $url"
    # Passive health: 2 failures within 5 s take an instance out of rotation for 5 s.
    line="    server ${url#http://} max_fails=2 fail_timeout=5s;"
    if [[ $name == echo-* ]]; then
        echo_servers+="$line"$'\n'
    else
        stream_servers+="$line"$'\n'
    fi
done

# -- nginx ----------------------------------------------------------------------------------------
front_listen="$FRONT_HOST:$FRONT_PORT"
front_url="http://$FRONT_HOST:$FRONT_PORT"
if [[ $FRONT_HOST == ::1 ]]; then
    front_listen="[::1]:$FRONT_PORT"
    front_url="http://[::1]:$FRONT_PORT"
fi
export RUN_DIR NGINX_WORKERS
export FRONT_LISTEN=$front_listen ECHO_SERVERS=$echo_servers STREAM_SERVERS=$stream_servers
# shellcheck disable=SC2016 # envsubst replaces only the names listed, not nginx's own variables
envsubst '${RUN_DIR} ${NGINX_WORKERS}' <deploy/nginx/local-nginx.conf.template >"$RUN_DIR/nginx.conf"
# shellcheck disable=SC2016
envsubst '${FRONT_LISTEN} ${ECHO_SERVERS} ${STREAM_SERVERS}' \
    <deploy/nginx/flowno-io.conf.template >"$RUN_DIR/flowno-io.conf"
cp deploy/nginx/sse.conf "$RUN_DIR/sse.conf"
nginx_args=(-p "$RUN_DIR" -c "$RUN_DIR/nginx.conf" -e "$RUN_DIR/nginx-error.log")
"$NGINX" -t -q "${nginx_args[@]}" 2>"$RUN_DIR/nginx-test.err" ||
    die "nginx rejected the configuration: $(cat "$RUN_DIR/nginx-test.err")"
start nginx "$NGINX" "${nginx_args[@]}"
nginx_pid=${pids[-1]}

deadline=$((SECONDS + STARTUP_TIMEOUT))
until "$PY" -c 'import sys, urllib.request; urllib.request.urlopen(sys.argv[1], timeout=1)' \
    "$front_url/nginx-health" 2>/dev/null; do
    alive "$nginx_pid" || die "nginx exited during startup (is port $FRONT_PORT in use?): \
$(tail -n 3 "$RUN_DIR/nginx-error.log" "$RUN_DIR/nginx.err" 2>/dev/null)"
    ((SECONDS < deadline)) || die "nginx did not answer on $front_url within ${STARTUP_TIMEOUT}s"
    sleep 0.1
done
log "front $front_url nginx pid $nginx_pid run dir $RUN_DIR"
cat <<EOF

  nginx $front_url in front of $ECHO_INSTANCES echo and $STREAM_INSTANCES stream instances
  (configs and logs: $RUN_DIR; $REPO/deploy/README.md explains the config)

    curl -s '$front_url/echo?hello=world' -d 'hi there'
    curl -s $front_url/health                  # an echo instance: its pid changes per request
    curl -s $front_url/stream/health           # a stream instance
    curl -N '$front_url/events?count=5&interval_ms=500'
    curl -N '$front_url/events?count=5&interval_ms=500' -H 'Last-Event-ID: 3'
    curl -N $front_url/v1/chat/completions -H 'Content-Type: application/json' \\
         -d '{"stream": true, "messages": [{"role": "user", "content": "hi"}]}'
    $PY -m loadtest closed $front_url/echo -c 10 -d 5 --no-files

  Press Ctrl-C to stop everything.

EOF

# -- supervise: until a signal, nginx exits, or a service has no instance left ---------------------
waiting=("${pids[@]}")
while true; do
    status=0
    wait -n -p exited "${waiting[@]}" || status=$?
    [[ -n ${exited:-} ]] || continue  # a trapped signal interrupted the wait
    remaining=()
    for i in "${!pids[@]}"; do
        if [[ ${pids[$i]} == "$exited" ]]; then
            name=${names[$i]}
        elif [[ " ${waiting[*]} " == *" ${pids[$i]} "* ]]; then
            remaining+=("${pids[$i]}")
        fi
    done
    waiting=("${remaining[@]}")
    exited=""
    [[ $name == nginx ]] && die "nginx exited (status $status): $(tail -n 3 "$RUN_DIR/nginx-error.log")"
    echo "run-cluster: $name exited (status $status); nginx sends its requests to the others" >&2
    left=0
    for i in "${!pids[@]}"; do
        [[ ${names[$i]} == "${name%-*}"-* && " ${waiting[*]} " == *" ${pids[$i]} "* ]] && left=1
    done
    ((left)) || die "no ${name%-*} instance left; stopping"
done

#!/bin/bash
# An nginx (one worker, `return 200`, as bench/_loadgen.py configures it) pinned to CPU 0, for the
# callgrind counts of cg_loadgen.sh and cg_client.sh:
#   bench/experiments/cg_loadgen_nginx.sh PORT [fast|slow]     (stop it: kill $(cat DIR/nginx.pid))
# `slow` runs it under valgrind's lackey. Under callgrind the client is ~50x slower than for real,
# so a real nginx has always answered by the first look at the socket after a send, while at full
# speed ~99% of requests find nothing there and wait on the reactor (the path that matters). A
# lackey-slowed nginx restores that mix (~94% waits for `loadtest closed`), so the counts measure
# the path the bench runs. Prints the URL and the directory.
set -euo pipefail
PORT=$1; MODE=${2:-slow}
DIR=$(mktemp -d /tmp/cg-nginx-XXXXXX)
mkdir -p "$DIR"/{client_body,proxy,fastcgi,uwsgi,scgi}
cat > "$DIR/nginx.conf" <<CONF
daemon off;
master_process off;
worker_processes 1;
pid $DIR/nginx.pid;
error_log $DIR/error.log warn;
events { worker_connections 4096; }
http {
    access_log off;
    client_body_temp_path $DIR/client_body;
    proxy_temp_path $DIR/proxy;
    fastcgi_temp_path $DIR/fastcgi;
    uwsgi_temp_path $DIR/uwsgi;
    scgi_temp_path $DIR/scgi;
    keepalive_requests 100000000;
    keepalive_timeout 600s;
    server {
        listen 127.0.0.1:$PORT backlog=1024;
        location / { default_type text/plain; return 200 "Hello, world!"; }
    }
}
CONF
NGINX=$(command -v nginx || echo /usr/sbin/nginx)
if [ "$MODE" = slow ]; then
    taskset -c 0 valgrind --tool=lackey "$NGINX" -p "$DIR" -c "$DIR/nginx.conf" -e "$DIR/error.log" \
        >"$DIR/valgrind.log" 2>&1 &
else
    taskset -c 0 "$NGINX" -p "$DIR" -c "$DIR/nginx.conf" -e "$DIR/error.log" >/dev/null 2>&1 &
fi
for _ in $(seq 100); do
    curl -s -o /dev/null "http://127.0.0.1:$PORT/" && break
    sleep 0.2
done
echo "http://127.0.0.1:$PORT/ $DIR"
echo "stop it with: kill $! && rm -rf $DIR"

#!/bin/sh
# The image's entrypoint: run the service named by $SERVICE (echo_service or stream_service; the
# build arg SERVICE sets the default, `-e SERVICE=...` overrides it), or by the first argument when
# that is a service name; every other argument goes to the service (--workers 2, --access-log...).
# `exec`: the service is PID 1 and gets SIGTERM itself (it stops gracefully, workers included).
set -eu
case "${1:-}" in
    echo_service | stream_service)
        SERVICE=$1
        shift
        ;;
esac
case "$SERVICE" in
    echo_service | stream_service) ;;
    *)
        echo "entrypoint: SERVICE must be echo_service or stream_service, not '$SERVICE'" >&2
        exit 2
        ;;
esac
exec python -m "$SERVICE" "$@"

#!/usr/bin/env bash
# Install wrk (the HTTP load generator `make bench` drives the servers with) from the
# distribution's packages when it is missing. Needs root or sudo on Debian/Ubuntu.
set -euo pipefail
if command -v wrk >/dev/null 2>&1; then
    exit 0
fi
SUDO=""
if [ "$(id -u)" -ne 0 ]; then
    if command -v sudo >/dev/null 2>&1; then
        SUDO="sudo"
    else
        echo "wrk is missing and we are not root: install it with your package manager (apt-get install wrk)" >&2
        exit 1
    fi
fi
if ! command -v apt-get >/dev/null 2>&1; then
    echo "wrk is missing and apt-get is not available: install wrk with your package manager" >&2
    exit 1
fi
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get install -y wrk || { $SUDO apt-get update && $SUDO apt-get install -y wrk; }
command -v wrk >/dev/null

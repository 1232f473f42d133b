#!/bin/bash
# User-space instructions per `Connection: close` hello connection (accept, read, answer, close)
# of the flowno-io server, by callgrind at two connection counts (start-up cancels out):
# bench/experiments/cg_close.sh [flowno|flowno_io]. Run from the repository root; PY= picks the
# interpreter (PYTHONPATH= another source tree, for an A/B in one session). cg_server.sh with
# cg_close_client.py, which opens one connection per request.
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
CLIENT=cg_close_client.py LABEL="hello Connection: close" UNIT=connection exec bash "$HERE/cg_server.sh" "${1:-flowno_io}"

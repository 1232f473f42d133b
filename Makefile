# flowno-io monorepo. `make help` lists the targets.
SHELL := /bin/bash
.DEFAULT_GOAL := help

# uv from PATH, else the one `pip install uv` put in this Python (run as a module).
UV ?= $(shell command -v uv 2>/dev/null || echo "python3 -m uv")
PY := .venv/bin/python
# Test parallelism: two workers fit this project's 2-core machines.
PYTEST_WORKERS ?= 2

.PHONY: help install install-runtime test test-stress lint run-services run-cluster loadtest loadtest-distributed fuzz soak bench ceiling
help: ## List the targets
	@if [ -t 1 ]; then on='\033[36m'; off='\033[0m'; else on=; off=; fi; \
	grep -hE '^[a-zA-Z_-]+:.*## ' $(MAKEFILE_LIST) | \
	awk -v on="$$on" -v off="$$off" 'BEGIN {FS = ":.*## "} {printf "  %s%-16s%s %s\n", on, $$1, off, $$2}'

.venv/.synced: pyproject.toml uv.lock packages/flowno-io/pyproject.toml services/echo/pyproject.toml services/stream/pyproject.toml loadtest/pyproject.toml
	@command -v uv >/dev/null 2>&1 || python3 -m uv --version >/dev/null 2>&1 || python3 -m pip install --quiet uv
	$(UV) sync --all-packages --locked --inexact
	@touch $@

install: .venv/.synced ## Install uv if missing, then sync every workspace member into .venv/

# The services and their runtime dependencies only (no dev tools, no load-test or bench extras);
# --inexact keeps whatever `make install` put in .venv/.
.venv/.synced-runtime: pyproject.toml uv.lock packages/flowno-io/pyproject.toml services/echo/pyproject.toml services/stream/pyproject.toml
	@command -v uv >/dev/null 2>&1 || python3 -m uv --version >/dev/null 2>&1 || python3 -m pip install --quiet uv
	$(UV) sync --locked --inexact --no-default-groups --package echo-service --package stream-service
	@touch $@

install-runtime: .venv/.synced-runtime ## Install only what the services need to run (used by run-services)

test: install ## Run the test suite (parallel, real sockets on 127.0.0.1)
	$(PY) -m pytest -n $(PYTEST_WORKERS) -q

test-stress: install ## The test suite while CPU hogs keep every core busy (bounded: the hogs stop by themselves)
	PY=$(PY) bash scripts/test-stress.sh

lint: install ## ruff (lint + format check) and mypy --strict on the library
	$(PY) -m ruff check packages services loadtest tests
	$(PY) -m ruff format --check packages services loadtest tests
	$(PY) -m mypy

run-services: install-runtime ## Start the echo (:8080) and stream (:8081) services; Ctrl-C or closing the terminal stops both
	bash scripts/run-services.sh

INSTANCES ?= 2
run-cluster: install ## nginx on :8000 in front of INSTANCES=2 echo and stream instances; Ctrl-C stops all
	INSTANCES=$(INSTANCES) PY=$(PY) bash scripts/run-cluster.sh

DURATION ?= 5
loadtest: install ## Load-test the services: orchestrator sweeps + headless Locust, reports in loadtest/reports/ (DURATION=5 s per phase, ~90 s)
	DURATION=$(DURATION) PY=$(PY) bash scripts/loadtest.sh

WORKERS ?= 2
loadtest-distributed: install ## Locust on every core: 1 master + WORKERS=2 local workers on 127.0.0.1 for 4 x DURATION s, reports in loadtest/reports/
	DURATION=$(DURATION) WORKERS=$(WORKERS) PY=$(PY) bash scripts/loadtest.sh distributed

FUZZ_EXAMPLES ?= 20000
FUZZ_SECONDS ?= 300
fuzz: install ## Long fuzz: server over sockets, HttpClient vs hostile servers, sans-IO parsers (FUZZ_SECONDS=300)
	$(PY) fuzz/fuzz_long.py --examples $(FUZZ_EXAMPLES) --seconds $(FUZZ_SECONDS)

SOAK_SECONDS ?= 60
soak: install ## Bounded soak: keep-alive at 10k req/s + 1,000 churning SSE streams, leak checks (SOAK_SECONDS=60)
	$(PY) soak/soak.py --duration $(SOAK_SECONDS)

BENCH_ARGS ?=
bench: install ## Benchmarks vs aiohttp, uvicorn+starlette, sse-starlette, httpx (~16 min); writes bench/results/
	$(UV) sync --all-packages --locked --inexact --group bench
	bash bench/ensure_wrk.sh
	$(PY) bench/run.py $(BENCH_ARGS)

CEILING_ARGS ?=
ceiling: install ## Live event streams ramped to 100k (flowno_io, then aiohttp; ~10 min, loopback, stops by itself); writes bench/results/ceiling-<date>.*
	$(UV) sync --all-packages --locked --inexact --group bench
	$(PY) bench/ceiling.py $(CEILING_ARGS)

# bp-monitor: the commands a user runs. See README.md.
SHELL := /bin/bash
VENV := .venv
PY := $(VENV)/bin/python
PYTEST := $(VENV)/bin/pytest
STACK := infra/stack.sh
PYTEST_ARGS ?=
# make test runs on this many pytest-xdist workers; 0 runs everything in one process.
TEST_WORKERS ?= 2

.PHONY: help install system-tools stack-up stack-down stack-status test test-unit demo bench lock clean

help:
	@echo "make install       create/refresh .venv (pinned by requirements.lock)"
	@echo "make stack-up      start the local Kafka + Elasticsearch (no Docker)"
	@echo "make stack-down    stop them"
	@echo "make stack-status  show what runs where"
	@echo "make test          install (system tools too), start the stack if needed, run every test, stop what it started"
	@echo "make test-unit     the fast tests that need no service"
	@echo "make demo          install, start the stack if down, run the DAG chain, stream, print a summary (leaves everything up)"
	@echo "                   DEMO_DRIFT=1: then the drift loop (cuff-offset world, bp drift, retrain, the gate)"
	@echo "make bench         every benchmark against the local stack; rewrites docs/benchmarks.md"

install:
	@infra/install.sh

# docker-compose, unzip, Chromium: apt-get installs what is missing (as root on Debian).
system-tools:
	@infra/system-tools.sh

stack-up:
	@$(STACK) up

stack-down:
	@$(STACK) down

stack-status:
	@$(STACK) status

# Starts the stack only when it is down, and stops only what it started.
test: install system-tools
	@started=0; \
	if ! $(STACK) is-up; then $(STACK) up || exit 1; started=1; fi; \
	$(PYTEST) -n $(TEST_WORKERS) --dist loadscope --no-loadscope-reorder $(PYTEST_ARGS); rc=$$?; \
	if [ $$started = 1 ]; then $(STACK) down; fi; \
	exit $$rc

test-unit: install
	@$(PYTEST) tests/unit $(PYTEST_ARGS)

demo: install
	@infra/demo.sh $(if $(filter 1 yes true,$(DEMO_DRIFT)),--drift)

# Every benchmark, in one run, then docs/benchmarks.md from their sections. The consumer
# runs beside BENCH_BEFORE: the last commit with the patches over kafka-python's internals.
BENCH_BEFORE ?= 9554c91
bench: install
	@$(STACK) is-up || $(STACK) up
	$(PY) bench/checkout.py $(BENCH_BEFORE) .bench/before-removal
	$(PY) bench/bench_consumer.py --messages 100000 --repeat 5 --compare .bench/before-removal --compare-label before-removal
	$(PY) bench/bench_latency.py --rate 1000 --seconds 30 --refresh 1s,200ms,100ms
	$(PY) bench/bench_memory.py --messages 1000000
	$(PY) bench/bench_context.py --patients 10000 --restore-patients 100000 --rounds 3
	$(PY) bench/bench_drift.py --patients 1000 --windows 20 --big 1000000
	$(PY) bench/bench_producer.py --count 200000
	$(PY) bench/bench_fhir_validation.py --n 10000
	$(PY) bench/bench_training.py --rows 1000000
	$(PY) bench/report.py

# Re-pin after changing dependencies in pyproject.toml (run in a working .venv).
lock:
	@$(PY) -m pip freeze --exclude-editable | grep -v '^-e ' > requirements.lock
	@echo "requirements.lock: $$(wc -l < requirements.lock) packages"

clean:
	-git worktree remove --force .bench/before-removal 2>/dev/null
	rm -rf .pytest_cache .hypothesis test-artifacts .bench

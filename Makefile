# The two commands of the README. Both work on a fresh clone: they create the
# venv, install the project, and fetch the Kafka jars with Maven on first use.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
ST_VENV := .venv-st
ST_REQUIREMENTS := tests/gateway/schemathesis-requirements.txt
# `make coverage` is `make test` with branch coverage measured: the tracer made the broker-free
# tests take ~1.5x their wall time and ~1.6x their CPU (2.3x the pure-CPU rules and schema
# tests), so the suite every change runs (CI, `.ci/run`) does without it
COV ?=

.PHONY: demo test coverage check test-heavy test-fleet lint install clean-data

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	@# the API fuzzer's own environment (tests/gateway/test_gateway_schemathesis.py) is
	@# built at the same time: both installs mostly wait on the network
	{ test -x $(ST_VENV)/bin/st || { $(PYTHON) -m venv $(ST_VENV) && \
	  $(ST_VENV)/bin/python -m pip install --quiet -r $(ST_REQUIREMENTS); }; } \
	  > $(ST_VENV).log 2>&1 & st=$$!; \
	$(BIN)/python -m pip install --quiet --upgrade pip && \
	$(BIN)/python -m pip install --quiet -e . --group dev; main=$$?; \
	wait $$st || echo "note: $(ST_VENV) not built (see $(ST_VENV).log); the fuzz test builds it on first use"; \
	exit $$main
	touch $(STAMP)

install: $(STAMP)

## make demo: the whole pipeline on the embedded defaults (Ctrl-C stops it)
demo: $(STAMP)
	$(BIN)/chainwatch demo

## make test: lint, types and the whole suite against a real Kafka it starts itself
test: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy
	@# the layers (pyproject [tool.importlinter]): no library imports chainwatch, streams/sinks/dashboards
	@# side by side, rules below the engine
	$(BIN)/lint-imports
	$(BIN)/python -m schemas.jsonschema --check
	$(BIN)/python -m sinks.clickhouse.cluster --check
	@# two pytest sessions side by side, each with its own broker (tests/conftest.py): the
	@# broker-bound tests mostly wait, so two halve the wall time even on two cores;
	@# the 30 slowest tests listed at the end: where the suite's wall time goes on this machine;
	@# Python's bytecode caches written whatever PYTHONDONTWRITEBYTECODE says: without them every
	@# process the suite starts (hundreds: CLIs, workers, sinks) compiled the project's modules
	@# again (~0.15-0.2 s of CPU each), and pytest rewrote every test module's asserts each run
	env -u PYTHONDONTWRITEBYTECODE $(BIN)/pytest -n 2 --durations=30 $(COV)
	@if [ -n "$(COV)" ]; then echo "coverage: $$($(BIN)/coverage report --format=total)% of lines and branches in streams/, sinks/, schemas/"; fi

## make coverage: `make test` measuring the branch coverage of streams/, sinks/, schemas/
## ([tool.coverage]; `.venv/bin/coverage report` for the table after it)
coverage: $(STAMP)
	$(MAKE) test COV="--cov --cov-report="

## make check: the quick loop - ruff, mypy, the import layers and the tests that need neither Kafka nor ClickHouse
## (tests using the broker fixture are marked `integration` by tests/conftest.py) nor long (`slow`)
check: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy
	$(BIN)/lint-imports
	$(BIN)/pytest -n 2 -q -m "not integration and not slow and not fleet and not heavy"

## make test-heavy: opt-in - long broker runs (bounded state under 15,000 records; minutes)
test-heavy: $(STAMP)
	$(BIN)/pytest -m heavy

## make test-fleet: opt-in - 1, 2 and 4 workers (one killed, one added) on a 50k-record replay (3-5 minutes on a busy 2-core machine)
test-fleet: $(STAMP)
	$(BIN)/pytest -m fleet tests/scale/test_fleet.py

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/mypy
	$(BIN)/lint-imports

## make clean-data: stop the local broker and delete the data dir (CHAINWATCH_DATA_DIR, default .chainwatch)
clean-data:
	-$(BIN)/chainwatch kafka stop
	@dir="$${CHAINWATCH_DATA_DIR:-.chainwatch}"; \
	case "$$(cd "$$dir" 2>/dev/null && pwd -P)" in \
	  /|"$$HOME"|"$$(pwd -P)") echo "refusing to delete $$dir"; exit 1;; \
	esac; \
	rm -rf -- "$$dir" && echo "removed $$dir"

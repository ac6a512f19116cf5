# observe-rt developer commands. Everything runs from the project's own .venv.
VENV   := .venv
PY     := $(VENV)/bin/python
PYTEST := $(PY) -m pytest

.PHONY: setup run test unit integration fuzz lint bench clean

# Idempotent: seconds on a machine that is already set up.
setup:
	bash deploy/setup.sh

# Set up, show what this host can do, then serve the CRI in the foreground with the
# embedded defaults (socket /run/observe-rt/observe-rt.sock; Ctrl-C stops it, pods keep running).
run: setup
	$(VENV)/bin/observe-rt doctor
	$(VENV)/bin/observe-rt daemon

# Lint first (seconds), then the unit tier (no root), a short fuzz run, then the integration
# tier (root).
test: setup
	$(VENV)/bin/ruff check observe_rt tests
	$(VENV)/bin/ruff format --check observe_rt tests
	$(PYTEST) tests/unit -q
	$(PYTEST) tests/fuzz -q
	$(PYTEST) tests/integration -q

unit: setup
	$(PYTEST) tests/unit -q

integration: setup
	$(PYTEST) tests/integration -q

# Every fuzz target (tests/fuzz) for FUZZ_SECONDS each; the short run is part of `make test`.
FUZZ_SECONDS ?= 60
fuzz: setup
	$(PY) -m tests.fuzz.run --seconds $(FUZZ_SECONDS)

lint: setup
	$(VENV)/bin/ruff check observe_rt tests
	$(VENV)/bin/ruff format --check observe_rt tests

bench: setup
	$(VENV)/bin/observe-rt bench

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache

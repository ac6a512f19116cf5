# observe-rt developer commands. Everything runs from the project's own .venv.
VENV   := .venv
PY     := $(VENV)/bin/python
PYTEST := $(PY) -m pytest

.PHONY: setup run test unit integration lint bench clean

# Idempotent: seconds on a machine that is already set up.
setup:
	bash deploy/setup.sh

# Set up, show what this host can do, then serve the CRI in the foreground with the
# embedded defaults (socket /run/observe-rt/observe-rt.sock; Ctrl-C stops it, pods keep running).
run: setup
	$(VENV)/bin/observe-rt doctor
	$(VENV)/bin/observe-rt daemon

# Lint first (seconds), then the unit tier (no root), then the integration tier (root).
test: setup
	$(VENV)/bin/ruff check observe_rt tests
	$(VENV)/bin/ruff format --check observe_rt tests
	$(PYTEST) tests/unit -q
	$(PYTEST) tests/integration -q

unit: setup
	$(PYTEST) tests/unit -q

integration: setup
	$(PYTEST) tests/integration -q

lint: setup
	$(VENV)/bin/ruff check observe_rt tests
	$(VENV)/bin/ruff format --check observe_rt tests

# The CRI benchmark: observe-rt and containerd + runc (its own socket, state, CNI config;
# torn down afterwards, also on Ctrl-C), interleaved, then the eBPF probes' overhead. Prints
# one table and writes bench-results/latest.json. BENCH_ARGS adds options (see --help).
bench: setup
	$(VENV)/bin/observe-rt bench compare --results-dir bench-results $(BENCH_ARGS)

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache

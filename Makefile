# observe-rt developer commands. Everything runs from the project's own .venv.
VENV   := .venv
PY     := $(VENV)/bin/python
PYTEST := $(PY) -m pytest

.PHONY: setup run test unit integration lint bench reliability clean

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

bench: setup
	$(VENV)/bin/observe-rt bench

# The long reliability runs (marker `long`, deselected by `make test`): 500 pods churned, every
# fault; -rP prints the figures each test measured (pods churned, calls, RSS before/after).
reliability: setup
	$(PYTEST) tests/integration/test_churn.py tests/integration/test_concurrency.py \
		tests/integration/test_faults.py tests/integration/test_faults_restart.py \
		tests/integration/test_faults_disk.py -m "long or not long" -q -rP

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache

# observe-rt developer commands. Everything runs from the project's own .venv.
VENV   := .venv
PY     := $(VENV)/bin/python
PYTEST := $(PY) -m pytest

.PHONY: setup run test unit integration fuzz lint bench reliability clean dashboards-check \
	dashboards-pictures

# Idempotent: seconds on a machine that is already set up.
setup:
	bash deploy/setup.sh

# Set up, then the demo (observe_rt/demo.py): a private daemon (its own state dir, socket,
# cgroups and CNI bridge), a demo image built from busybox-static, pods with a CPU burner, an
# OOM-killed memory hog and a TCP client/server pair, and `observe-rt top` in front.
# Ctrl-C (or q) stops it all and leaves nothing behind.
run: setup
	$(PY) -m observe_rt.demo

# Lint first (seconds), then the unit tier (no root), a short fuzz run, then the integration
# tier (root), which includes the dashboards check (tests/integration/test_dashboards.py).
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

# Every Grafana panel query against Debian's prometheus scraping a test daemon with real
# workloads (~1 minute); also part of `make test` through the integration tier.
dashboards-check: setup
	$(PYTEST) tests/integration/test_dashboards.py -q

# The same run, held 90 s, rendering dashboards/pictures/*.png (needs matplotlib).
dashboards-pictures: setup
	$(VENV)/bin/pip install -q -e '.[dev,pictures]'
	OBSERVE_RT_DASHBOARD_PICTURES=dashboards/pictures OBSERVE_RT_DASHBOARD_SECONDS=90 \
		$(PYTEST) tests/integration/test_dashboards.py -q

# The CRI benchmark: observe-rt and containerd + runc (its own socket, state, CNI config;
# torn down afterwards, also on Ctrl-C), interleaved, then the eBPF probes' overhead. Prints
# one table and writes bench-results/latest.json. BENCH_ARGS adds options (see --help).
bench: setup
	$(VENV)/bin/observe-rt bench compare --results-dir bench-results $(BENCH_ARGS)

# The long reliability runs (marker `long`, deselected by `make test`): 500 pods churned, every
# fault; -rP prints the figures each test measured (pods churned, calls, RSS before/after).
reliability: setup
	$(PYTEST) tests/integration/test_churn.py tests/integration/test_concurrency.py \
		tests/integration/test_faults.py tests/integration/test_faults_restart.py \
		tests/integration/test_faults_disk.py -m "long or not long" -q -rP

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache

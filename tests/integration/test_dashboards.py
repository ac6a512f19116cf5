"""The dashboards against a real Prometheus scraping a real daemon with real workloads.

Debian's prometheus runs on 127.0.0.1 with deploy/prometheus/prometheus.yml (target and interval
replaced) and scrapes a test daemon whose pods make syscalls, get OOM-killed, talk TCP, are
CPU-throttled and restarted (tests/support/dashboard_workloads.py). Every panel query of every
dashboard in dashboards/ must then return series. `make dashboards-check` runs this module.

OBSERVE_RT_DASHBOARD_PICTURES=DIR also renders each dashboard as DIR/<name>.png from the same
Prometheus (`make dashboards-pictures`), after OBSERVE_RT_DASHBOARD_SECONDS of data (default:
just enough scrapes for the check).
"""

from __future__ import annotations

import copy
import json
import os
import subprocess
import sys
import time
from dataclasses import dataclass
from urllib.parse import urlsplit

import pytest

from observe_rt.grafana.check import (
    DASHBOARDS_DIR,
    Intervals,
    check_dashboard,
    format_reports,
    resolve_variables,
)
from observe_rt.grafana.dashboard import load_all
from observe_rt.grafana.prometheus import PrometheusAPI, running_prometheus, scrape_config
from tests.integration.test_daemon_stats import metrics_url
from tests.support.dashboard_workloads import (
    kubelet_poller,
    pull_images,
    start_dashboard_workloads,
)

pytestmark = pytest.mark.root

SCRAPE_SECONDS = 2
INTERVALS = Intervals(scrape_seconds=SCRAPE_SECONDS, range_seconds=600)
BOARDS = load_all(DASHBOARDS_DIR)
# cAdvisor exports this one; observe-rt does not (no load average in cgroups).
NOT_EXPORTED = "container_cpu_load_average_10s"


@dataclass
class Scraped:
    """The Prometheus that scraped the test daemon, and when the workloads started."""

    api: PrometheusAPI
    started: float


@pytest.fixture(scope="module")
def scraped(daemon, daemon_registry, tmp_path_factory):
    started = start_dashboard_workloads(daemon)
    target = urlsplit(metrics_url(daemon)).netloc
    config = scrape_config(target, f"{SCRAPE_SECONDS}s")
    workdir = tmp_path_factory.mktemp("prometheus")
    with kubelet_poller(daemon), running_prometheus(workdir, config) as api:
        api.wait_for_scrapes("observe-rt", 3)
        pull_images(daemon, daemon_registry)  # after a few scrapes, so the pull panels move
        api.wait_for_scrapes("observe-rt", 10)
        hold = float(os.environ.get("OBSERVE_RT_DASHBOARD_SECONDS", "0"))
        time.sleep(max(0.0, started + hold - time.time()))
        yield Scraped(api, started)


def _probes_down(api: PrometheusAPI) -> list[str]:
    """Probes that are off; ["all"] when the daemon runs without probes at all."""
    states = api.query("observe_rt_probe_up")
    return [s["metric"]["probe"] for s in states if s["value"][1] != "1"] if states else ["all"]


@pytest.mark.parametrize("name", sorted(BOARDS))
def test_every_panel_query_returns_series(scraped, name):
    if name == "ebpf-insights" and (down := _probes_down(scraped.api)):
        pytest.skip(f"eBPF probes off on this host: {down} (see observe-rt doctor)")
    report = check_dashboard(scraped.api, name, BOARDS[name], INTERVALS)
    assert report.ok, format_reports([report])
    assert report.outcomes, f"{name} has no queries"


# What each workload must have moved by the time the check runs (not just series at zero).
MOVED = {
    "OOM kills": 'sum(container_oom_events_total{container="hog"})',
    "restarts": 'max(observe_rt_container_restarts{container="crasher"})',
    "throttling": 'sum(container_cpu_cfs_throttled_periods_total{container="spinner"})',
    "ENOENT": 'sum(observe_rt_container_syscall_errors_total{container="opener",errno="ENOENT"})',
    "TCP bytes": 'sum(observe_rt_container_tcp_received_bytes_total{container="fetcher"})',
    "TCP resets": 'sum(observe_rt_container_tcp_resets_total{container="fetcher"})',
    "CRI errors": 'sum(observe_rt_cri_request_errors_total{code="NOT_FOUND"})',
    "pull bytes": "sum(observe_rt_image_pull_bytes_total)",
}


def test_the_workloads_moved_what_the_panels_show(scraped):
    skip = {"ENOENT", "TCP bytes", "TCP resets"} if _probes_down(scraped.api) else set()
    values = {name: scraped.api.query(expr) for name, expr in MOVED.items() if name not in skip}
    still = {name: v for name, v in values.items() if not v or float(v[0]["value"][1]) <= 0}
    assert still == {}, still


def _with_panel_on(board: dict, metric: str) -> dict:
    """A copy of `board` with one more panel, below the others, that queries `metric`."""
    board = copy.deepcopy(board)
    bottom = max(p["gridPos"]["y"] + p["gridPos"]["h"] for p in board["panels"])
    datasource = {"type": "prometheus", "uid": "${datasource}"}
    board["panels"].append({
        "id": max(p["id"] for p in board["panels"]) + 1, "type": "timeseries",
        "title": "Load average", "datasource": datasource,
        "gridPos": {"x": 0, "y": bottom, "w": 12, "h": 8},
        "targets": [{"refId": "A", "datasource": datasource,
                     "expr": f'sum by (pod) ({metric}{{namespace=~"$namespace", pod=~"$pod"}})'}],
    })  # fmt: skip
    return board


def test_check_fails_for_a_metric_the_daemon_does_not_export(scraped, tmp_path):
    board = _with_panel_on(BOARDS["pod-detail"], NOT_EXPORTED)
    report = check_dashboard(scraped.api, "pod-detail", board, INTERVALS)
    assert not report.ok
    (failure,) = report.failures
    assert "'Load average'" in failure and "no series" in failure and NOT_EXPORTED in failure
    # The command line too: exit 1 and the panel named, while the real dashboards pass.
    (tmp_path / "pod-detail.json").write_text(json.dumps(board))
    command = [sys.executable, "-m", "observe_rt.grafana", "--prometheus", scraped.api.url,
               "--scrape-interval", f"{SCRAPE_SECONDS}s", "--range", "10m"]  # fmt: skip
    bad = subprocess.run([*command, "--dashboards", str(tmp_path)],
                         capture_output=True, text=True, timeout=120)  # fmt: skip
    assert bad.returncode == 1, bad.stdout + bad.stderr
    assert "FAIL pod-detail" in bad.stdout and NOT_EXPORTED in bad.stdout
    if not _probes_down(scraped.api):
        good = subprocess.run(command, capture_output=True, text=True, timeout=120)
        assert good.returncode == 0, good.stdout + good.stderr


def test_pictures(scraped):
    """Only with OBSERVE_RT_DASHBOARD_PICTURES=DIR (make dashboards-pictures)."""
    out = os.environ.get("OBSERVE_RT_DASHBOARD_PICTURES")
    if not out:
        pytest.skip("set OBSERVE_RT_DASHBOARD_PICTURES=DIR to render the dashboards")
    from observe_rt.grafana.pictures import render

    os.makedirs(out, exist_ok=True)
    end = time.time()
    for name, board in BOARDS.items():
        values, problems = resolve_variables(scraped.api, board, INTERVALS, end)
        assert not problems, problems
        path = os.path.join(out, f"{name}.png")
        render(scraped.api, board, values, scraped.started, end, SCRAPE_SECONDS, path)
        assert os.path.getsize(path) > 10_000

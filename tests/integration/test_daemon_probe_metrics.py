"""The probes' Prometheus series from a running daemon, for a container with known failing opens."""

from __future__ import annotations

import time
import urllib.request

import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.integration.test_daemon_stats import metrics_url
from tests.support.daemon import container_config, pod_config, run_pod, start_container

pytestmark = pytest.mark.root


def scrape(daemon) -> dict[str, list[tuple[dict, float]]]:
    text = urllib.request.urlopen(metrics_url(daemon), timeout=10).read().decode()
    samples: dict[str, list[tuple[dict, float]]] = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            samples.setdefault(s.name, []).append((s.labels, s.value))
    return samples


def value(samples, metric, **labels) -> float:
    return sum(v for lab, v in samples.get(metric, []) if labels.items() <= lab.items())


def test_failing_opens_show_in_probe_metrics(daemon):
    config = pod_config(daemon)
    pod_id = run_pod(daemon, config)
    script = "for i in $(seq 50); do cat /nonexistent 2>/dev/null; done; sleep 30"
    cid = start_container(daemon, pod_id, config, container_config(daemon, "opener", script))
    errors = "observe_rt_container_syscall_errors_total"
    deadline = time.monotonic() + 15
    time.sleep(2)  # a couple of collector ticks
    while True:
        samples = scrape(daemon)
        mine = {"container": "opener", "name": cid}
        enoent = value(samples, errors, syscall="openat", errno="ENOENT", **mine)
        if enoent >= 50 or time.monotonic() > deadline:
            break
        time.sleep(0.5)
    up = samples.get("observe_rt_probe_up", [])
    assert value(samples, "observe_rt_probe_up", probe="syscalls") == 1, up
    assert value(samples, "observe_rt_container_syscalls_total", **mine) > 0
    assert enoent >= 50, [row for row in samples.get(errors, []) if row[0]["name"] == cid]
    labels = next(lab for lab, _ in samples[errors] if lab["name"] == cid)
    assert labels["pod"] == config.metadata.name and labels["namespace"] == "test"
    assert labels["image"] and labels["id"]

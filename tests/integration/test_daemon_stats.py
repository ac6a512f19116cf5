"""Stats from the daemon: CRI stats RPCs and /metrics, from the collector's snapshots."""

from __future__ import annotations

import re
import subprocess
import time
import urllib.request

import pytest

from observe_rt.cri.v1 import api_pb2
from tests.support.daemon import (
    OBSERVE_RT,
    container_config,
    pod_config,
    run_pod,
    start_container,
)

pytestmark = pytest.mark.root


def metrics_url(daemon) -> str:
    found = re.search(
        r"Prometheus metrics on (http://127\.0\.0\.1:\d+/metrics)", daemon.log.read_text()
    )
    assert found, daemon.log.read_text()[-2000:]
    return found.group(1)


def test_cpu_quota_shows_in_cri_stats_and_prometheus(daemon):
    config = pod_config(daemon)
    pod_id = run_pod(daemon, config)
    spec = container_config(daemon, "busy", "while :; do :; done")
    spec.linux.resources.cpu_quota, spec.linux.resources.cpu_period = 50000, 100000
    cid = start_container(daemon, pod_id, config, spec)
    stub = daemon.runtime()
    time.sleep(4)  # a few collector ticks
    request = api_pb2.ListContainerStatsRequest(filter=api_pb2.ContainerStatsFilter(id=cid))
    first = stub.ListContainerStats(request).stats[0]
    time.sleep(2.2)
    second = stub.ListContainerStats(request).stats[0]
    assert second.cpu.timestamp > first.cpu.timestamp > 0
    assert abs(second.cpu.usage_nano_cores.value - 0.5e9) < 0.1 * 0.5e9
    assert second.cpu.usage_core_nano_seconds.value > first.cpu.usage_core_nano_seconds.value
    assert second.memory.working_set_bytes.value > 0
    pods = stub.ListPodSandboxStats(
        api_pb2.ListPodSandboxStatsRequest(filter=api_pb2.PodSandboxStatsFilter(id=pod_id))
    ).stats
    assert pods[0].linux.network.default_interface.name == "eth0"
    assert [c.attributes.id for c in pods[0].linux.containers] == [cid]

    def scrape() -> float:
        text = urllib.request.urlopen(metrics_url(daemon), timeout=10).read().decode()
        line = next(
            row for row in text.splitlines()
            if row.startswith("container_cpu_usage_seconds_total{") and 'container="busy"' in row
        )  # fmt: skip
        return float(line.rsplit(" ", 1)[1])

    before, started = scrape(), time.monotonic()
    time.sleep(3)
    rate = (scrape() - before) / (time.monotonic() - started)
    assert 0.35 < rate < 0.65  # the scrape sees whole-tick steps of the same 0.5 CPU


def test_metric_descriptors_never_change(daemon):
    stub = daemon.runtime()
    first = stub.ListMetricDescriptors(api_pb2.ListMetricDescriptorsRequest()).descriptors
    second = stub.ListMetricDescriptors(api_pb2.ListMetricDescriptorsRequest()).descriptors
    assert [d.name for d in first] == [d.name for d in second]
    assert "container_memory_working_set_bytes" in {d.name for d in first}


def test_stats_command(daemon):
    config = pod_config(daemon)
    pod_id = run_pod(daemon, config)
    start_container(daemon, pod_id, config, container_config(daemon, "idle", "sleep 300"))
    time.sleep(2.5)
    out = subprocess.run([OBSERVE_RT, "stats", "--socket", daemon.socket],
                         capture_output=True, text=True, timeout=60)  # fmt: skip
    assert out.returncode == 0, out.stderr
    header, *rows = out.stdout.splitlines()
    assert header.split()[:3] == ["CONTAINER", "NAME", "CPU"]
    assert any(row.split()[1] == "idle" for row in rows)


def test_runtime_metrics_count_calls_errors_and_pulls(daemon):
    stub = daemon.runtime()
    stub.Version(api_pb2.VersionRequest())
    with pytest.raises(Exception):  # noqa: B017 - any RpcError: we only want it counted
        stub.ContainerStatus(api_pb2.ContainerStatusRequest(container_id="nope"))
    text = urllib.request.urlopen(metrics_url(daemon), timeout=10).read().decode()
    assert re.search(
        r'observe_rt_cri_request_duration_seconds_count\{method="Version"\} [1-9]', text
    )
    assert 'observe_rt_cri_request_errors_total{code="NOT_FOUND",method="ContainerStatus"}' in text
    pulled = re.search(r"^observe_rt_image_pull_bytes_total ([0-9.e+]+)$", text, re.M)
    assert pulled and float(pulled.group(1)) > 0  # the fixture pulled the test image

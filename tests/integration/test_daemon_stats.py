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
    found = re.findall(  # the last: a restarted daemon listens on a new port
        r"Prometheus metrics on (http://127\.0\.0\.1:\d+/metrics)", daemon.log.read_text()
    )
    assert found, daemon.log.read_text()[-2000:]
    return found[-1]


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


def _working_set(daemon, cid) -> int:
    """0 until the collector has sampled the container."""
    request = api_pb2.ListContainerStatsRequest(filter=api_pb2.ContainerStatsFilter(id=cid))
    found = daemon.runtime().ListContainerStats(request).stats
    return found[0].memory.working_set_bytes.value if found else 0


def _scrape(daemon) -> str:
    return urllib.request.urlopen(metrics_url(daemon), timeout=10).read().decode()


def _metric(text: str, name: str, container: str) -> float:
    for row in text.splitlines():
        if row.startswith(name + "{") and f'container="{container}"' in row:
            return float(row.rsplit(" ", 1)[1])
    return 0.0


def test_working_set_and_oom_events_of_real_containers(daemon):
    config = pod_config(daemon)
    pod_id = run_pod(daemon, config)
    # dd fills a 64 MiB buffer from /dev/zero, then blocks writing it to a pipe nobody reads:
    # 64 MiB of anonymous memory, touched and held.
    fill = "dd if=/dev/zero bs=64M count=1 2>/dev/null | sleep 300"
    holder = start_container(daemon, pod_id, config, container_config(daemon, "holder", fill))
    limit = api_pb2.LinuxContainerConfig(
        resources=api_pb2.LinuxContainerResources(memory_limit_in_bytes=48 << 20)
    )
    survivor = container_config(daemon, "survivor", "tail /dev/zero; sleep 300", linux=limit)
    start_container(daemon, pod_id, config, survivor)  # tail is OOM-killed, the shell lives on
    deadline = time.monotonic() + 30
    while _working_set(daemon, holder) < 64 << 20:
        assert time.monotonic() < deadline, _working_set(daemon, holder)
        time.sleep(0.5)
    while _metric(_scrape(daemon), "container_oom_events_total", "survivor") < 1:
        assert time.monotonic() < deadline, "container_oom_events_total did not move"
        time.sleep(0.5)


def test_pod_network_counters_count_bytes_between_pods(daemon):
    """A client pod downloads 1 MB from a server pod: its eth0 receives at least that."""
    stub = daemon.runtime()
    server_config, client_config = pod_config(daemon), pod_config(daemon)
    server_pod = run_pod(daemon, server_config)
    serve = "mkdir /www; head -c 1000000 /dev/zero > /www/f; httpd -f -p 8080 -h /www"
    start_container(daemon, server_pod, server_config,
                    container_config(daemon, "web", serve))  # fmt: skip
    status = stub.PodSandboxStatus(api_pb2.PodSandboxStatusRequest(pod_sandbox_id=server_pod))
    server_ip = status.status.network.ip
    client_pod = run_pod(daemon, client_config)

    def received() -> int | None:
        """eth0's received bytes, or None until the collector has sampled the new pod."""
        request = api_pb2.ListPodSandboxStatsRequest(
            filter=api_pb2.PodSandboxStatsFilter(id=client_pod)
        )
        found = stub.ListPodSandboxStats(request).stats
        return found[0].linux.network.default_interface.rx_bytes.value if found else None

    deadline = time.monotonic() + 30
    while (before := received()) is None:
        assert time.monotonic() < deadline, "the new pod never showed up in stats"
        time.sleep(0.3)
    fetch = f"sleep 2; wget -O /dev/null http://{server_ip}:8080/f; sleep 300"
    start_container(daemon, client_pod, client_config, container_config(daemon, "get", fetch))
    while (received() or 0) - before < 1_000_000:
        assert time.monotonic() < deadline, (before, received())
        time.sleep(0.5)

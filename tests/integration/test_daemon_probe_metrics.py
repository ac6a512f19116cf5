"""The probes' Prometheus series from a running daemon: known failing opens, and restarts."""

from __future__ import annotations

import json
import time
import urllib.request

import pytest
from prometheus_client.parser import text_string_to_metric_families

from observe_rt.cri.v1 import api_pb2
from tests.integration.test_daemon_stats import metrics_url
from tests.support.daemon import container_config, pin_dir, pod_config, run_pod, start_container

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


def test_probe_counters_resume_after_a_daemon_restart(daemon, tmp_path):
    """Pinned maps: after kill -9 and a restart the counters go on from where they were,
    neither reset to zero nor counted twice."""
    trigger = tmp_path / "trigger"
    trigger.mkdir()
    config = pod_config(daemon)
    pod_id = run_pod(daemon, config)
    batch = "for i in $(seq 50); do cat /nonexistent 2>/dev/null; done"
    script = f"{batch}; while [ ! -e /trigger/go ]; do sleep 0.2; done; {batch}; sleep 300"
    mount = api_pb2.Mount(container_path="/trigger", host_path=str(trigger))
    spec = container_config(daemon, "opener", script, mounts=[mount])
    cid = start_container(daemon, pod_id, config, spec)
    mine = {"container": "opener", "name": cid, "syscall": "openat", "errno": "ENOENT"}

    def enoent() -> float:
        return value(scrape(daemon), "observe_rt_container_syscall_errors_total", **mine)

    assert _settles(enoent, 50) == 50
    daemon.kill9()
    daemon.start()
    assert pin_dir(daemon.root).joinpath("sc_errors").exists()
    assert _settles(enoent, 50) == 50  # resumed: not 0, not 100
    (trigger / "go").touch()
    assert _settles(enoent, 100) == 100


def _settles(read, expected: float, timeout: float = 20.0) -> float:
    """Poll until `read()` reaches `expected` (or time runs out), then confirm it stays."""
    deadline = time.monotonic() + timeout
    while read() < expected and time.monotonic() < deadline:
        time.sleep(0.5)
    time.sleep(1.5)  # a couple more ticks: a double count would show now
    return read()


def test_tcp_exchange_between_two_pods(daemon):
    """A client pod fetches 1 MB from a server pod: one connection each way, the bytes within
    a few percent of the payload, charged to the right container on each side."""
    stub = daemon.runtime()
    server_config, client_config = pod_config(daemon), pod_config(daemon)
    server_pod = run_pod(daemon, server_config)
    serve = "mkdir /www; head -c 1000000 /dev/zero > /www/f; httpd -f -p 8080 -h /www"
    server = start_container(daemon, server_pod, server_config,
                             container_config(daemon, "web", serve))  # fmt: skip
    status = stub.PodSandboxStatus(api_pb2.PodSandboxStatusRequest(pod_sandbox_id=server_pod))
    client_pod = run_pod(daemon, client_config)
    fetch = f"sleep 1; wget -q -O /dev/null http://{status.status.network.ip}:8080/f; sleep 300"
    client = start_container(daemon, client_pod, client_config,
                             container_config(daemon, "get", fetch))  # fmt: skip

    def tcp(cid: str, what: str, **labels) -> float:
        return value(scrape(daemon), f"observe_rt_container_tcp_{what}", name=cid, **labels)

    assert _settles(lambda: tcp(client, "received_bytes_total"), 1_000_000) == pytest.approx(
        1_000_000, rel=0.02
    )
    assert tcp(client, "connections_total", direction="active") == 1
    assert tcp(client, "connections_total", direction="passive") == 0
    assert tcp(server, "connections_total", direction="passive") == 1
    assert tcp(server, "connections_total", direction="active") == 0
    assert tcp(server, "sent_bytes_total") == pytest.approx(1_000_000, rel=0.02)
    assert tcp(client, "sent_bytes_total") == pytest.approx(tcp(server, "received_bytes_total"))
    assert tcp(client, "sent_bytes_total") < 1000  # the request only
    # The closed flow, each way, in the live view's read API (with its duration).
    view_url = metrics_url(daemon).replace("/metrics", "/api/v1/view")

    def flows(cid: str) -> list[dict]:
        view = json.loads(urllib.request.urlopen(view_url, timeout=10).read())
        return next((c["flows"] for c in view["containers"] if c["id"] == cid), [])

    deadline = time.monotonic() + 20
    while not (flows(client) and flows(server)):
        assert time.monotonic() < deadline, "no closed flow in the view"
        time.sleep(0.5)
    (out,), (into,) = flows(client), flows(server)
    server_ip = status.status.network.ip
    assert out["direction"] == "active" and out["peer"] == f"{server_ip}:8080"
    assert into["direction"] == "passive" and into["local"] == f"{server_ip}:8080"
    assert out["bytes_received"] == pytest.approx(1_000_000, rel=0.02)
    assert into["bytes_sent"] == pytest.approx(1_000_000, rel=0.02)
    assert out["duration_ns"] > 0 and into["duration_ns"] > 0


def test_a_container_that_exits_between_ticks_keeps_its_counts(daemon):
    """23 failing opens and exit, well inside one collector tick: the counts are still its own
    (and stay exported while the container exists, as cAdvisor keeps a dead container's)."""
    config = pod_config(daemon)
    pod_id = run_pod(daemon, config)
    script = "for i in $(seq 23); do cat /nonexistent 2>/dev/null; done"
    cid = start_container(daemon, pod_id, config, container_config(daemon, "brief", script))
    mine = {"name": cid, "syscall": "openat", "errno": "ENOENT"}

    def enoent() -> float:
        return value(scrape(daemon), "observe_rt_container_syscall_errors_total", **mine)

    assert _settles(enoent, 23) == 23

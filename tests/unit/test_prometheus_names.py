"""The Prometheus endpoint emits exactly the cAdvisor names and labels issue 7 lists.

EXPECTED is the issue's list, written out by hand: a rename in model/series.py fails here.
"""

from __future__ import annotations

import urllib.request

import pytest
from prometheus_client.parser import text_string_to_metric_families

from observe_rt.cri import stats as cri
from observe_rt.export import DEFAULT_ADDRESS, PrometheusExporter, parse_address
from observe_rt.model import (
    CgroupStats,
    ContainerInfo,
    ContainerMetrics,
    CpuStats,
    FsStats,
    Limits,
    MemoryStats,
    NetworkStats,
    PodInfo,
    PodMetrics,
    ProcessStats,
    Snapshot,
)
from observe_rt.network.counters import InterfaceCounters

BASE = ["id", "name", "image", "pod", "namespace", "container"]
NETWORK = [
    f"container_network_{d}_{w}_total"
    for d in ("receive", "transmit")
    for w in ("bytes", "packets", "errors", "packets_dropped")
]
#: metric name -> its extra labels (beyond BASE), as issue 7 and the kubelet have them.
EXPECTED = {
    "container_cpu_usage_seconds_total": ["cpu"],
    "container_cpu_cfs_periods_total": [],
    "container_cpu_cfs_throttled_periods_total": [],
    "container_cpu_cfs_throttled_seconds_total": [],
    "container_memory_usage_bytes": [],
    "container_memory_working_set_bytes": [],
    "container_memory_rss": [],
    "container_memory_cache": [],
    "container_memory_swap": [],
    "container_memory_failcnt": [],
    "container_spec_memory_limit_bytes": [],
    "container_spec_cpu_quota": [],
    "container_spec_cpu_period": [],
    "container_spec_cpu_shares": [],
    **{name: ["interface"] for name in NETWORK},
    "container_fs_usage_bytes": ["device"],
    "container_processes": [],
    "container_threads": [],
    "container_start_time_seconds": [],
    "container_last_seen": [],
    "container_oom_events_total": [],
}
RUNTIME = [
    "observe_rt_cri_request_duration_seconds",
    "observe_rt_cri_request_errors_total",
    "observe_rt_image_pull_bytes_total",
    "observe_rt_image_pull_duration_seconds",
    "observe_rt_pods",
    "observe_rt_containers",
    "observe_rt_collector_tick_duration_seconds",
    "observe_rt_collector_skipped_series_total",
]
NOW = 1_700_000_000 * 10**9


def _cgroup(usage_ns: int) -> CgroupStats:
    return CgroupStats(
        timestamp_ns=NOW,
        cpu=CpuStats(usage_ns=usage_ns, periods=10, throttled_periods=4, throttled_ns=2 * 10**9),
        memory=MemoryStats(
            usage_bytes=100,
            working_set_bytes=80,
            rss_bytes=60,
            cache_bytes=20,
            swap_bytes=5,
            failcnt=1,
            limit_bytes=1 << 30,
        ),  # fmt: skip
        processes=ProcessStats(processes=2, threads=7),
        oom_kills=1,
        limits=Limits(
            cpu_quota_us=50000, cpu_period_us=100000, cpu_shares=1024, memory_limit_bytes=1 << 30
        ),  # fmt: skip
    )


def sample_snapshot() -> Snapshot:
    pod = PodInfo(id="p1", name="web", namespace="shop", uid="u1", cgroup_path="/kp/p1",
                  created_at_ns=NOW - 10**9)  # fmt: skip
    ctr = ContainerInfo(id="c1", pod_id="p1", name="app", image="busybox:1",
                        cgroup_path="/kp/p1/c1", started_at_ns=NOW - 5 * 10**9)  # fmt: skip
    eth0 = InterfaceCounters("eth0", 1000, 10, 1, 2, 3000, 30, 3, 4)
    network = NetworkStats(NOW, (eth0,), "eth0")
    fs = FsStats(NOW, 4096, 3, "/dev/vda1")
    return Snapshot(
        seq=1,
        timestamp_ns=NOW,
        pods={"p1": PodMetrics(pod, NOW, _cgroup(2 * 10**9), network, ("c1",))},
        containers={"c1": ContainerMetrics(ctr, _cgroup(1_500_000_000), fs, 77, oom_events=2)},
        pod_states={"READY": 1},
        container_states={"RUNNING": 1, "EXITED": 2},
        skipped={"vanished": 3},
    )


def _samples(text: str) -> dict[str, list]:
    out: dict[str, list] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            out.setdefault(sample.name, []).append(sample)
    return out


@pytest.fixture
def exposition() -> dict[str, list]:
    exporter = PrometheusExporter(sample_snapshot)
    return _samples(exporter.render().decode())


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_name_and_labels_exactly_as_issue_7(exposition, name):
    assert name in exposition, f"{name} missing from /metrics"
    for sample in exposition[name]:
        assert sorted(sample.labels) == sorted(BASE + EXPECTED[name])


def test_container_and_pod_label_values(exposition):
    (cpu,) = [s for s in exposition["container_cpu_usage_seconds_total"]
              if s.labels["container"] == "app"]  # fmt: skip
    assert cpu.labels == {"id": "/kp/p1/c1", "name": "c1", "image": "busybox:1", "pod": "web",
                          "namespace": "shop", "container": "app", "cpu": "total"}  # fmt: skip
    assert cpu.value == 1.5
    pod_level = [s for s in exposition["container_memory_working_set_bytes"]
                 if s.labels["container"] == ""]  # fmt: skip
    assert pod_level[0].labels["id"] == "/kp/p1" and pod_level[0].labels["pod"] == "web"
    (rx,) = exposition["container_network_receive_bytes_total"]
    assert rx.labels["interface"] == "eth0" and rx.labels["container"] == "" and rx.value == 1000
    (dropped,) = exposition["container_network_transmit_packets_dropped_total"]
    assert dropped.value == 4
    (fs,) = exposition["container_fs_usage_bytes"]
    assert fs.labels["device"] == "/dev/vda1" and fs.value == 4096
    oom = {s.labels["container"]: s.value for s in exposition["container_oom_events_total"]}
    assert oom == {"app": 2, "": 1}
    start = [s for s in exposition["container_start_time_seconds"] if s.labels["container"]]
    assert start[0].value == (NOW - 5 * 10**9) / 1e9


def test_types_in_the_text_format():
    text = PrometheusExporter(sample_snapshot).render().decode()
    assert "# TYPE container_cpu_usage_seconds_total counter" in text
    assert "# TYPE container_memory_working_set_bytes gauge" in text
    assert "# TYPE container_memory_failcnt untyped" in text  # no _total suffix, as cAdvisor
    assert "\ncontainer_memory_failcnt{" in text


def test_runtime_metrics(exposition):
    exporter = PrometheusExporter(sample_snapshot)
    exporter.runtime.observe_rpc("ListContainerStats", 0.003)
    exporter.runtime.observe_rpc("ContainerStats", 0.001, code="NOT_FOUND")
    exporter.runtime.observe_pull("busybox:1", 4096, 1.5)
    exporter.runtime.observe_tick(sample_snapshot())
    got = _samples(exporter.render().decode())
    families = {n.removesuffix("_bucket").removesuffix("_count").removesuffix("_sum") for n in got}
    assert set(RUNTIME) <= families
    errors = got["observe_rt_cri_request_errors_total"]
    assert [(s.labels, s.value) for s in errors] == [
        ({"method": "ContainerStats", "code": "NOT_FOUND"}, 1.0)
    ]
    assert got["observe_rt_image_pull_bytes_total"][0].value == 4096
    states = {s.labels["state"]: s.value for s in got["observe_rt_containers"]}
    assert states == {"RUNNING": 1, "EXITED": 2}
    assert got["observe_rt_collector_skipped_series_total"][0].labels == {"reason": "vanished"}


def test_cri_descriptors_carry_the_same_names_and_labels():
    descriptors = {d.name: list(d.label_keys) for d in cri.metric_descriptors()}
    for name, extra in EXPECTED.items():
        assert descriptors[name] == BASE + extra


def test_empty_snapshot_renders():
    text = PrometheusExporter(Snapshot).render().decode()
    assert "# TYPE container_cpu_usage_seconds_total counter" in text


def test_parse_address():
    assert parse_address(DEFAULT_ADDRESS) == ("127.0.0.1", 9464)
    assert parse_address("[::1]:0") == ("::1", 0)
    for bad in ("9464", "host:", "host:99999", ":80"):
        with pytest.raises(ValueError):
            parse_address(bad)


def test_http_endpoint_on_loopback():
    exporter = PrometheusExporter(sample_snapshot, address="127.0.0.1:0")
    host, port = exporter.start()
    try:
        assert port != 0 and exporter.url == f"http://127.0.0.1:{port}/metrics"
        with urllib.request.urlopen(exporter.url, timeout=5) as response:
            body = response.read().decode()
        assert set(EXPECTED) <= set(_samples(body))
    finally:
        exporter.stop()

"""ProbeMetrics: names, identity labels, the top-10 histogram bound, caching (fake manager)."""

from __future__ import annotations

import errno
import math
from dataclasses import replace

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from observe_rt.export.probes import ProbeMetrics
from observe_rt.model.snapshot import (
    CgroupStats,
    ContainerInfo,
    ContainerMetrics,
    PodInfo,
    PodMetrics,
    Snapshot,
)
from observe_rt.probes import histogram
from observe_rt.probes.events import (
    ContainerCounters,
    OomKill,
    ProbeState,
    ProbeStatus,
    SyscallStats,
    TcpCounters,
)
from observe_rt.probes.syscall_names import numbers, syscall_name

OPENAT = numbers().get("openat", 257)
KNOWN, UNKNOWN = 4242, 9999
IDENTITY = {
    "id": "/observe-rt/pod-p1/c1",
    "name": "c1",
    "image": "busybox:1",
    "pod": "web",
    "namespace": "prod",
    "container": "app",
}


def _hist(**slots: int) -> tuple[int, ...]:
    counts = [0] * histogram.SLOTS
    for slot, n in slots.items():
        counts[int(slot.removeprefix("s"))] = n
    return tuple(counts)


class FakeProbes:
    def __init__(self, counters, lost=None, status=None) -> None:
        self.counters = counters
        self.lost = lost or {"syscalls": 3, "tcp": 0}
        self.status_value = status or ProbeStatus(
            True,
            probes=(
                ProbeState("syscalls", True),
                ProbeState("oom", True),
                ProbeState("tcp", True),
                ProbeState("process", False, "no sched tracepoints"),
            ),
        )
        self.drains = 0

    def drain_counters(self):
        self.drains += 1
        return dict(self.counters)

    def lost_events(self):
        return dict(self.lost)

    def status(self):
        return self.status_value


def _snapshot() -> Snapshot:
    pod = PodMetrics(info=PodInfo(id="p1", name="web", namespace="prod", uid="u1"), timestamp_ns=1)
    info = ContainerInfo(
        id="c1", pod_id="p1", name="app", image="busybox:1", cgroup_path=IDENTITY["id"]
    )
    container = ContainerMetrics(info=info, cgroup=CgroupStats(timestamp_ns=1), cgroup_id=KNOWN)
    return Snapshot(seq=1, timestamp_ns=1, containers={"c1": container}, pods={"p1": pod})


def _counters(cgroup_id: int, n_syscalls: int = 3) -> ContainerCounters:
    syscalls = {
        nr: SyscallStats(nr, calls=100 - nr, total_ns=1000 * nr, histogram=_hist(s3=100 - nr))
        for nr in range(n_syscalls)
    }
    syscalls[OPENAT] = SyscallStats(
        OPENAT, calls=150, errors=50, total_ns=60_000, histogram=_hist(s5=10, s10=140)
    )
    return ContainerCounters(
        cgroup_id,
        syscalls=syscalls,
        syscall_errors={(OPENAT, errno.ENOENT): 50},
        tcp=TcpCounters(
            bytes_sent=10,
            bytes_received=20,
            retransmits=1,
            resets_sent=2,
            resets_received=3,
            connections_active=4,
            connections_passive=5,
        ),
    )


def _scrape(metrics: ProbeMetrics) -> dict:
    registry = CollectorRegistry()
    registry.register(metrics)
    text = generate_latest(registry).decode()
    samples = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            samples.setdefault(s.name, []).append((s.labels, s.value))
    return samples


def _only(samples, metric, /, **labels):
    found = [v for lab, v in samples.get(metric, []) if labels.items() <= lab.items()]
    assert len(found) == 1, (metric, labels, samples.get(metric))
    return found[0]


def test_names_and_identity_labels():
    probes = FakeProbes({KNOWN: _counters(KNOWN), UNKNOWN: _counters(UNKNOWN)})
    metrics = ProbeMetrics(probes)
    metrics.note_event(OomKill(1, KNOWN, 7, "hog", KNOWN, 7, 0, 100, 0, 0, "victim"))
    metrics.refresh(_snapshot())
    samples = _scrape(metrics)

    assert (
        _only(samples, "observe_rt_container_syscalls_total", syscall="openat", **IDENTITY) == 150
    )
    assert _only(samples, "observe_rt_container_syscall_errors_total",
                 syscall="openat", errno="ENOENT", **IDENTITY) == 50  # fmt: skip
    assert _only(samples, "observe_rt_container_oom_kills_total", **IDENTITY) == 1
    conns = "observe_rt_container_tcp_connections_total"
    assert _only(samples, conns, direction="active", **IDENTITY) == 4
    assert _only(samples, conns, direction="passive", **IDENTITY) == 5
    assert _only(samples, "observe_rt_container_tcp_sent_bytes_total", **IDENTITY) == 10
    assert _only(samples, "observe_rt_container_tcp_received_bytes_total", **IDENTITY) == 20
    assert _only(samples, "observe_rt_container_tcp_retransmits_total", **IDENTITY) == 1
    assert _only(samples, "observe_rt_container_tcp_resets_total", **IDENTITY) == 5
    assert _only(samples, "observe_rt_probe_events_lost_total", probe="syscalls") == 3
    assert _only(samples, "observe_rt_probe_up", probe="syscalls") == 1
    assert _only(samples, "observe_rt_probe_up", probe="process") == 0
    # Every container sample names the known container; the unknown cgroup id is skipped.
    for name, rows in samples.items():
        if name.startswith("observe_rt_container_"):
            assert all(lab["id"] == IDENTITY["id"] for lab, _ in rows), name


def test_histogram_only_for_top_syscalls_and_cumulative():
    probes = FakeProbes({KNOWN: _counters(KNOWN, n_syscalls=30)})
    metrics = ProbeMetrics(probes)
    metrics.refresh(_snapshot())
    samples = _scrape(metrics)

    assert len(samples["observe_rt_container_syscalls_total"]) == 31
    counts = samples["observe_rt_container_syscall_duration_seconds_count"]
    assert len(counts) == 10
    top = {lab["syscall"] for lab, _ in counts}
    assert top == {"openat"} | {syscall_name(nr) for nr in range(9)}  # calls 100-nr, openat 150

    buckets = [
        (float(lab["le"]), v)
        for lab, v in samples["observe_rt_container_syscall_duration_seconds_bucket"]
        if lab["syscall"] == "openat"
    ]
    assert len(buckets) == len(histogram.EXPORT_SLOTS) == 12  # 1 us .. 1 s, 4x apart, +Inf
    values = [v for _, v in buckets]
    assert values == sorted(values)  # cumulative
    assert buckets[0] == (2**10 / 1e9, 150) and dict(buckets)[2**30 / 1e9] == 150
    assert buckets[-1] == (math.inf, 150)
    total = _only(samples, "observe_rt_container_syscall_duration_seconds_sum", syscall="openat")
    assert total == 60_000 / 1e9


def test_refresh_at_most_once_per_interval_and_scrape_never_drains():
    now = [100.0]
    probes = FakeProbes({KNOWN: _counters(KNOWN)})
    metrics = ProbeMetrics(probes, clock=lambda: now[0])
    snapshot = _snapshot()
    metrics.observe_tick(snapshot)
    metrics.observe_tick(snapshot)
    assert probes.drains == 1
    _scrape(metrics), _scrape(metrics)
    assert probes.drains == 1
    now[0] += 1.0
    metrics.observe_tick(snapshot)
    assert probes.drains == 2


def test_before_first_refresh_and_with_probes_down():
    down = ProbeStatus(False, "no bcc", probes=(ProbeState("syscalls", False, "no bcc"),))
    probes = FakeProbes({}, lost={"syscalls": 0}, status=down)
    metrics = ProbeMetrics(probes)
    assert "observe_rt_probe_up" not in _scrape(metrics)  # nothing read yet: no samples
    metrics.refresh(_snapshot())
    samples = _scrape(metrics)
    assert _only(samples, "observe_rt_probe_up", probe="syscalls") == 0
    assert "observe_rt_container_syscalls_total" not in samples


def test_wrap_tick_runs_previous_hook_and_survives_a_failed_drain():
    seen = []

    class Broken(FakeProbes):
        def drain_counters(self):
            raise OSError("map gone")

    metrics = ProbeMetrics(Broken({}))
    hook = metrics.wrap_tick(seen.append)
    snapshot = _snapshot()
    hook(snapshot)
    assert seen == [snapshot]
    assert metrics.view.taken_at == 0.0


def test_an_exited_container_keeps_its_series_until_removed():
    exited = ContainerInfo(id="c2", pod_id="p1", name="job", state="EXITED", cgroup_id=77,
                           cgroup_path="/observe-rt/pod-p1/c2")  # fmt: skip
    snapshot = replace(_snapshot(), unsampled={"c2": exited})
    assert snapshot.info_by_cgroup_id(77) is exited and snapshot.info_by_cgroup_id(78) is None
    metrics = ProbeMetrics(FakeProbes({77: _counters(77), 78: _counters(78)}))
    metrics.refresh(snapshot)
    calls = _scrape(metrics)["observe_rt_container_syscalls_total"]
    assert {lab["name"] for lab, _ in calls} == {"c2"}  # 78: nobody's, skipped
    assert {lab["pod"] for lab, _ in calls} == {"web"}

"""cAdvisor-compatible series, named once for the Prometheus endpoint and CRI ListPodSandboxMetrics.

Each Series turns a Subject (one pod-level or container-level cgroup with its identity) into
(extra label values, value) pairs. Names, types and label sets follow cAdvisor's
metrics/prometheus.go as the kubelet exposes them:

    every series      id (cgroup path), name (container id), image, pod, namespace, container
    pod-level cgroup  container="" name="" image=""; carries the pod's network series
    extra labels      cpu="total" on container_cpu_usage_seconds_total, interface on network
                      series, device on container_fs_usage_bytes

container_memory_failcnt has no _total suffix in cAdvisor, so it is typed "unknown" here: a
counter type would make the Prometheus client rename it.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass

from .snapshot import (
    CgroupStats,
    ContainerInfo,
    ContainerMetrics,
    FsStats,
    NetworkStats,
    PodMetrics,
    Snapshot,
)

BASE_LABELS = ("id", "name", "image", "pod", "namespace", "container")
NS = 1e9

Value = tuple[tuple[str, ...], float]


@dataclass(frozen=True)
class Subject:
    """One cgroup's metrics plus the label values (in BASE_LABELS order) that identify it."""

    labels: tuple[str, ...]
    timestamp_ns: int
    last_seen_ns: int
    cgroup: CgroupStats | None
    network: NetworkStats | None = None
    fs: FsStats | None = None
    start_time_ns: int = 0
    oom_events: int | None = None


@dataclass(frozen=True)
class Series:
    name: str
    help: str
    kind: str  # "counter" | "gauge" | "unknown"
    values: Callable[[Subject], list[Value]]
    extra_labels: tuple[str, ...] = ()

    @property
    def label_names(self) -> tuple[str, ...]:
        return BASE_LABELS + self.extra_labels


def _from(part: str, get: Callable, extra: tuple[str, ...] = ()) -> Callable[[Subject], list]:
    """Values from one part of the cgroup stats ("cpu", "memory", ...) when it was read."""

    def values(s: Subject) -> list[Value]:
        obj = getattr(s.cgroup, part, None) if s.cgroup else None
        value = get(obj) if obj is not None else None
        return [] if value is None else [(extra, float(value))]

    return values


def _net(field: str) -> Callable[[Subject], list[Value]]:
    def values(s: Subject) -> list[Value]:
        if s.network is None:
            return []
        return [((i.name,), float(getattr(i, field))) for i in s.network.interfaces]

    return values


def _positive(value: int | None) -> int | None:
    return value if value is not None and value > 0 else None


def _fs_usage(s: Subject) -> list[Value]:
    return [((s.fs.fs_id,), float(s.fs.used_bytes))] if s.fs else []


def _memory_limit(s: Subject) -> list[Value]:
    limits = s.cgroup.limits if s.cgroup else None
    if limits is None:
        return []
    return [((), float(limits.memory_limit_bytes or 0))]  # 0: unlimited, as cAdvisor


def _start_time(s: Subject) -> list[Value]:
    return [((), s.start_time_ns / NS)] if s.start_time_ns > 0 else []


def _oom(s: Subject) -> list[Value]:
    return [] if s.oom_events is None else [((), float(s.oom_events))]


def _network_series() -> list[Series]:
    out = []
    for direction, prefix, done, doing in (
        ("receive", "rx", "received", "receiving"),
        ("transmit", "tx", "transmitted", "transmitting"),
    ):
        for what, field, text in (
            ("bytes", "bytes", f"bytes {done}"),
            ("packets", "packets", f"packets {done}"),
            ("errors", "errors", f"errors encountered while {doing}"),
            ("packets_dropped", "dropped", f"packets dropped while {doing}"),
        ):
            name = f"container_network_{direction}_{what}_total"
            help_text = f"Cumulative count of {text}"
            out.append(
                Series(name, help_text, "counter", _net(f"{prefix}_{field}"), ("interface",))
            )
    return out


SERIES: tuple[Series, ...] = (
    Series(
        "container_cpu_usage_seconds_total",
        "Cumulative cpu time consumed in seconds.",
        "counter",
        _from("cpu", lambda c: c.usage_ns / NS, ("total",)),
        ("cpu",),
    ),
    Series(
        "container_cpu_cfs_periods_total",
        "Number of elapsed enforcement period intervals.",
        "counter",
        _from("cpu", lambda c: c.periods),
    ),
    Series(
        "container_cpu_cfs_throttled_periods_total",
        "Number of throttled period intervals.",
        "counter",
        _from("cpu", lambda c: c.throttled_periods),
    ),
    Series(
        "container_cpu_cfs_throttled_seconds_total",
        "Total time duration the container has been throttled.",
        "counter",
        _from("cpu", lambda c: c.throttled_ns / NS),
    ),
    Series(
        "container_memory_usage_bytes",
        "Current memory usage in bytes, including all memory regardless of when it was accessed",
        "gauge",
        _from("memory", lambda m: m.usage_bytes),
    ),
    Series(
        "container_memory_working_set_bytes",
        "Current working set in bytes.",
        "gauge",
        _from("memory", lambda m: m.working_set_bytes),
    ),
    Series(
        "container_memory_rss",
        "Size of RSS in bytes.",
        "gauge",
        _from("memory", lambda m: m.rss_bytes),
    ),
    Series(
        "container_memory_cache",
        "Number of bytes of page cache memory.",
        "gauge",
        _from("memory", lambda m: m.cache_bytes),
    ),
    Series(
        "container_memory_swap",
        "Container swap usage in bytes.",
        "gauge",
        _from("memory", lambda m: m.swap_bytes),
    ),
    Series(
        "container_memory_failcnt",
        "Number of memory usage hits limits",
        "unknown",
        _from("memory", lambda m: m.failcnt),
    ),
    Series(
        "container_spec_memory_limit_bytes",
        "Memory limit for the container.",
        "gauge",
        _memory_limit,
    ),  # fmt: skip
    Series(
        "container_spec_cpu_quota",
        "CPU quota of the container.",
        "gauge",
        _from("limits", lambda li: _positive(li.cpu_quota_us)),
    ),
    Series(
        "container_spec_cpu_period",
        "CPU period of the container.",
        "gauge",
        _from("limits", lambda li: _positive(li.cpu_period_us)),
    ),
    Series(
        "container_spec_cpu_shares",
        "CPU share of the container.",
        "gauge",
        _from("limits", lambda li: li.cpu_shares),
    ),
    *_network_series(),
    Series(
        "container_fs_usage_bytes",
        "Number of bytes that are consumed by the container on this filesystem.",
        "gauge",
        _fs_usage,
        ("device",),
    ),
    Series(
        "container_processes",
        "Number of processes running inside the container.",
        "gauge",
        _from("processes", lambda p: p.processes),
    ),
    Series(
        "container_threads",
        "Number of threads running inside the container",
        "gauge",
        _from("processes", lambda p: p.threads),
    ),
    Series(
        "container_start_time_seconds",
        "Start time of the container since unix epoch in seconds.",
        "gauge",
        _start_time,
    ),
    Series(
        "container_last_seen",
        "Last time a container was seen by the exporter",
        "gauge",
        lambda s: [((), float(s.last_seen_ns // 1_000_000_000))],
    ),
    Series(
        "container_oom_events_total",
        "Count of out of memory events observed for the container",
        "counter",
        _oom,
    ),
)


def container_labels(snapshot: Snapshot, info: ContainerInfo) -> tuple[str, ...]:
    """BASE_LABELS values of a container: id, name, image, pod, namespace, container."""
    pod = snapshot.pods.get(info.pod_id)
    pod_name, namespace = (pod.info.name, pod.info.namespace) if pod else ("", "")
    return (info.cgroup_path, info.id, info.image, pod_name, namespace, info.name)


def container_subject(snapshot: Snapshot, m: ContainerMetrics) -> Subject:
    info = m.info
    return Subject(
        labels=container_labels(snapshot, info),
        timestamp_ns=m.timestamp_ns,
        last_seen_ns=snapshot.timestamp_ns,
        cgroup=m.cgroup,
        fs=m.fs,
        start_time_ns=info.started_at_ns or info.created_at_ns,
        oom_events=m.oom_events,
    )


def pod_subject(snapshot: Snapshot, p: PodMetrics) -> Subject:
    info = p.info
    oom = p.cgroup.oom_kills if p.cgroup else None
    return Subject(
        labels=(info.cgroup_path, "", "", info.name, info.namespace, ""),
        timestamp_ns=p.timestamp_ns,
        last_seen_ns=snapshot.timestamp_ns,
        cgroup=p.cgroup,
        network=p.network,
        start_time_ns=info.created_at_ns,
        oom_events=oom,
    )


def subjects(snapshot: Snapshot) -> Iterator[Subject]:
    """Pod-level subjects first, then containers, each in id order (stable output)."""
    for pod_id in sorted(snapshot.pods):
        yield pod_subject(snapshot, snapshot.pods[pod_id])
    for cid in sorted(snapshot.containers):
        yield container_subject(snapshot, snapshot.containers[cid])

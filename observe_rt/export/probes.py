"""Prometheus series of the eBPF probes, per container, from a cached view (never the kernel).

    metrics = ProbeMetrics(probe_manager)
    exporter.registry.register(metrics)
    collector.on_tick = metrics.wrap_tick(collector.on_tick)   # refresh at most once a second
    containers.on_probe_event = metrics.note_event            # counts OomKill events

A scrape only reads the last ProbeView: the collector tick drains the kernel counters (at most
once per `min_interval` seconds) and resolves cgroup ids to the container's cAdvisor identity
labels (id, name, image, pod, namespace, container) with that tick's Snapshot. Cgroup ids the
snapshot does not know (untracked, removed, host) are skipped; an exited container keeps its
series until it is removed.

    observe_rt_container_syscalls_total{syscall}                 counter
    observe_rt_container_syscall_errors_total{syscall,errno}     counter
    observe_rt_container_syscall_duration_seconds{syscall}       histogram, top 10 syscalls only
    observe_rt_container_oom_kills_total                         counter (OomKill events seen)
    observe_rt_container_tcp_connections_total{direction}        counter (active, passive)
    observe_rt_container_tcp_{sent,received}_bytes_total         counter
    observe_rt_container_tcp_retransmits_total                   counter
    observe_rt_container_tcp_resets_total                        counter (sent + received)
    observe_rt_probe_events_lost_total{probe}                    counter
    observe_rt_probe_up{probe}                                   gauge

Container series carry the BASE_LABELS of model/series.py first, then their own labels.
Counters restart from zero with the probes (daemon restart): Prometheus treats that as a reset.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType

from prometheus_client.metrics_core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.utils import floatToGoString

from observe_rt.model.series import BASE_LABELS, container_labels
from observe_rt.model.snapshot import Snapshot
from observe_rt.probes.events import ContainerCounters, OomKill, ProbeStatus
from observe_rt.probes.syscall_names import syscall_name

log = logging.getLogger("observe_rt.export.probes")

TOP_SYSCALLS = 10  # histograms per container: bounded cardinality
MIN_INTERVAL = 1.0  # seconds between two drains of the kernel maps


@dataclass(frozen=True)
class ProbeView:
    """What one refresh read: counters and OOM kills of known containers, with their labels."""

    labels: Mapping[int, tuple[str, ...]] = field(default_factory=dict)  # cgroup id -> BASE_LABELS
    counters: Mapping[int, ContainerCounters] = field(default_factory=dict)
    oom_kills: Mapping[int, int] = field(default_factory=dict)
    lost: Mapping[str, int] = field(default_factory=dict)
    status: ProbeStatus = ProbeStatus(False, "not read yet")
    taken_at: float = 0.0  # monotonic seconds; 0: never refreshed

    def __post_init__(self) -> None:
        for name in ("labels", "counters", "oom_kills", "lost"):
            object.__setattr__(self, name, MappingProxyType(dict(getattr(self, name))))


class ProbeMetrics:
    """A prometheus_client collector over a ProbeManager (drain_counters, lost_events, status)."""

    def __init__(
        self,
        probes,
        *,
        min_interval: float = MIN_INTERVAL,
        top: int = TOP_SYSCALLS,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._probes = probes
        self._min_interval = min_interval
        self._top = top
        self._clock = clock
        self._oom_lock = threading.Lock()
        self._oom_kills: dict[int, int] = {}
        self._refresh_lock = threading.Lock()
        self.view = ProbeView()

    # --- feeding ------------------------------------------------------------------------

    def note_event(self, event) -> None:
        """A probe event (Containers.watch_probes): OOM kills are counted per cgroup id."""
        if isinstance(event, OomKill):
            with self._oom_lock:
                self._oom_kills[event.cgroup_id] = self._oom_kills.get(event.cgroup_id, 0) + 1

    def refresh(self, snapshot: Snapshot, force: bool = False) -> ProbeView:
        """Drain the kernel counters into a new view, unless the last drain is too recent."""
        with self._refresh_lock:
            now = self._clock()
            view = self.view
            if not force and view.taken_at and now - view.taken_at < self._min_interval:
                return view
            counters = self._probes.drain_counters()
            lost = self._probes.lost_events()
            status = self._probes.status()
            with self._oom_lock:
                ooms = dict(self._oom_kills)
            labels = {}
            for cgroup_id in set(counters) | set(ooms):
                info = snapshot.info_by_cgroup_id(cgroup_id)
                if info is not None:
                    labels[cgroup_id] = container_labels(snapshot, info)
            self.view = ProbeView(
                labels=labels,
                counters={c: n for c, n in counters.items() if c in labels},
                oom_kills={c: n for c, n in ooms.items() if c in labels},
                lost=lost,
                status=status,
                taken_at=now,
            )
            return self.view

    def observe_tick(self, snapshot: Snapshot) -> None:
        """Fits Collector(on_tick=...); a failed drain keeps the previous view."""
        try:
            self.refresh(snapshot)
        except Exception:
            log.exception("probe counters could not be drained")

    def wrap_tick(self, previous: Callable[[Snapshot], None] | None):
        """An on_tick hook running `previous` (if any), then observe_tick."""

        def on_tick(snapshot: Snapshot) -> None:
            if previous is not None:
                previous(snapshot)
            self.observe_tick(snapshot)

        return on_tick

    # --- prometheus_client collector ----------------------------------------------------

    def describe(self) -> list[Metric]:
        return list(self._families(ProbeView()))

    def collect(self) -> Iterator[Metric]:
        yield from self._families(self.view)

    def _families(self, view: ProbeView) -> Iterator[Metric]:
        base = list(BASE_LABELS)
        calls = CounterMetricFamily(
            "observe_rt_container_syscalls",
            "Syscalls made by the container's tasks, by syscall (eBPF).",
            labels=[*base, "syscall"],
        )
        errors = CounterMetricFamily(
            "observe_rt_container_syscall_errors",
            "Syscalls that returned an error, by syscall and errno (eBPF).",
            labels=[*base, "syscall", "errno"],
        )
        duration = HistogramMetricFamily(
            "observe_rt_container_syscall_duration_seconds",
            f"Syscall latency (buckets 4x apart, 1 us to 1 s), for the container's top "
            f"{self._top} syscalls.",
            labels=[*base, "syscall"],
        )
        ooms = CounterMetricFamily(
            "observe_rt_container_oom_kills",
            "Processes of the container killed by the kernel OOM killer (eBPF).",
            labels=base,
        )
        connections = CounterMetricFamily(
            "observe_rt_container_tcp_connections",
            "TCP connections the container opened (active) or accepted (passive).",
            labels=[*base, "direction"],
        )
        sent = CounterMetricFamily(
            "observe_rt_container_tcp_sent_bytes",
            "TCP payload bytes the container's tasks sent.",
            labels=base,
        )
        received = CounterMetricFamily(
            "observe_rt_container_tcp_received_bytes",
            "TCP payload bytes the container's tasks received.",
            labels=base,
        )
        retransmits = CounterMetricFamily(
            "observe_rt_container_tcp_retransmits",
            "TCP segments of the container retransmitted.",
            labels=base,
        )
        resets = CounterMetricFamily(
            "observe_rt_container_tcp_resets",
            "TCP resets sent or received by the container's connections.",
            labels=base,
        )
        tcp_up = view.status.up("tcp")
        for cgroup_id in sorted(view.counters, key=lambda c: view.labels[c]):
            identity = list(view.labels[cgroup_id])
            counters = view.counters[cgroup_id]
            for nr in sorted(counters.syscalls):
                stats = counters.syscalls[nr]
                calls.add_metric([*identity, syscall_name(nr)], stats.calls)
            for (name, err), count in sorted(counters.named_errors().items()):
                errors.add_metric([*identity, name, err], count)
            for stats in counters.top_syscalls(self._top):
                buckets = [(floatToGoString(le), n) for le, n in stats.latency_buckets()]
                duration.add_metric([*identity, stats.name], buckets, stats.total_ns / 1e9)
            if tcp_up:
                tcp = counters.tcp
                connections.add_metric([*identity, "active"], tcp.connections_active)
                connections.add_metric([*identity, "passive"], tcp.connections_passive)
                sent.add_metric(identity, tcp.bytes_sent)
                received.add_metric(identity, tcp.bytes_received)
                retransmits.add_metric(identity, tcp.retransmits)
                resets.add_metric(identity, tcp.resets_sent + tcp.resets_received)
        oom_up = view.status.up("oom")
        for cgroup_id in sorted(view.labels, key=lambda c: view.labels[c]):
            count = view.oom_kills.get(cgroup_id, 0)
            if oom_up or count:
                ooms.add_metric(list(view.labels[cgroup_id]), count)
        lost = CounterMetricFamily(
            "observe_rt_probe_events_lost",
            "Probe records lost: full kernel buffers or maps, undecodable records.",
            labels=["probe"],
        )
        for probe, count in sorted(view.lost.items()):
            lost.add_metric([probe], count)
        up = GaugeMetricFamily(
            "observe_rt_probe_up",
            "1 when the eBPF probe is loaded and attached, 0 when it is off (see doctor).",
            labels=["probe"],
        )
        for state in view.status.probes:
            up.add_metric([state.name], 1 if state.up else 0)
        yield from (calls, errors, duration, ooms, connections, sent, received, retransmits)
        yield from (resets, lost, up)

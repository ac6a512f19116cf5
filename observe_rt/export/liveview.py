"""The read API behind `observe-rt top`: GET /api/v1/view, one JSON document per request.

    live = LiveView(collector.snapshot, probe_metrics, records=containers.store.items.get)
    collector.on_tick = live.wrap_tick(collector.on_tick)    # bookkeeping, once per tick
    containers.on_probe_event = live.wrap_event(...)         # OOM kills, flows, execs, exits
    exporter.routes[VIEW_PATH] = live.wsgi_app               # beside /metrics, same server

Cheap by design: a request never reads the kernel, a cgroup or the probes. The collector tick
does the bookkeeping (node CPU and memory from /proc, exits and restarts by comparing two
snapshots, probe status changes, lost events) and keeps the last two snapshots and the last
two probe views; a request turns that pair into rates and JSON, once per tick (cached).
Rare events (OOM kills, exits, restarts, probe errors) go to a bounded ring for the ticker;
flows, execs and OOM kills are also kept per container (bounded) for the detail pane.

Document (version 1):
    node        cpus, cpu_percent, memory_total_bytes, memory_used_bytes
    pods, container_states    {state: count}
    probes      available, reason, up {name: bool}, events_lost
    containers  [{id, pod_id, pod, namespace, name, attempt, state, image, cpu_cores,
                  cpu_limit_cores, memory_working_set_bytes, memory_limit_bytes, oom_kills,
                  syscalls_per_s, syscall_errors_per_s, top_syscall, tcp {...},
                  rx_bytes_per_s, tx_bytes_per_s, syscalls [...], flows, execs, ooms}]
    events      [{time_ns, kind: oom|exit|restart|probe, container_id, pod, namespace, name,
                  text}]  newest last
"""

from __future__ import annotations

import collections
import contextlib
import ipaddress
import json
import math
import os
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from observe_rt.model.snapshot import ContainerMetrics, Snapshot

VIEW_PATH = "/api/v1/view"
VERSION = 1
RING_EVENTS = 200  # events ticker: OOM kills, exits, restarts, probe errors
PER_CONTAINER = 10  # flows, execs and OOM kills kept per container for the detail pane
TOP_SYSCALLS = 8  # syscalls per container in the detail pane
KNOWN_CGROUPS = 4096  # cgroup id -> identity, kept after a container is gone (late events)


@dataclass(frozen=True)
class Identity:
    container_id: str
    pod: str
    namespace: str
    name: str


# --- node counters (read once per tick, by the collector thread) -----------------------------


def read_cpu_jiffies(proc: Path = Path("/proc")) -> tuple[int, int]:
    """(busy, total) jiffies of all CPUs from the first line of /proc/stat."""
    fields = [int(v) for v in (proc / "stat").read_text().split("\n", 1)[0].split()[1:]]
    idle = fields[3] + (fields[4] if len(fields) > 4 else 0)  # idle + iowait
    return sum(fields) - idle, sum(fields)


def read_memory(proc: Path = Path("/proc")) -> tuple[int, int]:
    """(total, used) bytes: used is MemTotal - MemAvailable, as `free` reports it."""
    values = {}
    for line in (proc / "meminfo").read_text().splitlines():
        key, _, rest = line.partition(":")
        if key in ("MemTotal", "MemAvailable"):
            values[key] = int(rest.split()[0]) * 1024
    total = values.get("MemTotal", 0)
    return total, total - values.get("MemAvailable", total)


# --- the view --------------------------------------------------------------------------------


class LiveView:
    def __init__(
        self,
        snapshot: Callable[[], Snapshot],
        probe_metrics=None,
        *,
        records: Callable[[str], object] | None = None,
        proc: Path = Path("/proc"),
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._snapshot = snapshot
        self._probe_metrics = probe_metrics  # export/probes.py ProbeMetrics, or None
        self._records = records  # container id -> ContainerRecord (exit code and reason)
        self._proc = proc
        self._clock = clock
        self._started = clock()
        self._lock = threading.Lock()
        self.events: collections.deque[dict] = collections.deque(maxlen=RING_EVENTS)
        self._details: dict[int, dict[str, collections.deque]] = {}
        self._identities: collections.OrderedDict[int, Identity] = collections.OrderedDict()
        self._snapshots: tuple[Snapshot | None, Snapshot | None] = (None, None)
        self._views: tuple = (None, None)  # the last two distinct ProbeViews
        self._node: dict = {"cpus": os.cpu_count() or 1}
        self._cpu: tuple[int, int] | None = None
        self._probe_state: tuple = ()
        self._lost = 0
        self._added = 0  # events ever added: a new one invalidates the cached body
        self._cache: tuple[int, int, bytes] = (-1, -1, b"")

    # --- feeding (collector thread, probe-event thread) ----------------------------------

    def wrap_tick(self, previous: Callable[[Snapshot], None] | None):
        def on_tick(snapshot: Snapshot) -> None:
            if previous is not None:
                previous(snapshot)
            self.observe_tick(snapshot)

        return on_tick

    def wrap_event(self, previous: Callable[[object], None] | None):
        def on_event(event) -> None:
            if previous is not None:
                previous(event)
            self.note_event(event)

        return on_event

    def observe_tick(self, snapshot: Snapshot) -> None:
        """Bookkeeping for one collector tick; never raises into the collector."""
        try:
            node = self._read_node()
        except (OSError, ValueError, IndexError):
            node = {k: v for k, v in self._node.items() if k != "cpu_percent"}
        with self._lock:
            self._node = node  # replaced whole: a request never sees half of an update
            previous = self._snapshots[1]
            self._snapshots = (previous, snapshot)
            self._remember(snapshot)
            if previous is not None:
                self._note_changes(previous, snapshot)
            self._note_probes()

    def note_event(self, event) -> None:
        """A probe event (Containers.watch_probes): OOM kills, flows, execs."""
        from observe_rt.probes.events import FlowClosed, OomKill, ProcessExec

        with self._lock:
            who = self._identities.get(event.cgroup_id)
            if who is None:
                return  # not a container we know (yet): nothing to name it by
            if isinstance(event, OomKill):
                text = f"OOM killer stopped pid {event.victim_pid} ({event.victim_comm}), "
                text += f"rss {event.rss_kb // 1024} MiB"
                self._add_event(event.time_ns, "oom", who, text)
                self._detail(event.cgroup_id, "ooms").append(
                    {"time_ns": event.time_ns, "pid": event.victim_pid,
                     "comm": event.victim_comm, "rss_kb": event.rss_kb}
                )  # fmt: skip
            elif isinstance(event, FlowClosed):
                self._detail(event.cgroup_id, "flows").append(_flow(event))
            elif isinstance(event, ProcessExec):
                self._detail(event.cgroup_id, "execs").append(
                    {"time_ns": event.time_ns, "pid": event.pid, "comm": event.comm,
                     "filename": event.filename}
                )  # fmt: skip

    def _read_node(self) -> dict:
        node = dict(self._node)
        busy, total = read_cpu_jiffies(self._proc)
        if self._cpu is not None and total > self._cpu[1]:
            share = (busy - self._cpu[0]) / (total - self._cpu[1])
            node["cpu_percent"] = round(100.0 * share, 1)
        self._cpu = (busy, total)
        node["memory_total_bytes"], node["memory_used_bytes"] = read_memory(self._proc)
        return node

    def _remember(self, snapshot: Snapshot) -> None:
        for metrics in snapshot.containers.values():
            if metrics.cgroup_id:
                self._identities[metrics.cgroup_id] = _identity(snapshot, metrics)
                self._identities.move_to_end(metrics.cgroup_id)
        while len(self._identities) > KNOWN_CGROUPS:
            gone, _ = self._identities.popitem(last=False)
            self._details.pop(gone, None)

    def _note_changes(self, before: Snapshot, after: Snapshot) -> None:
        """Containers that left the sampled set exited; a new attempt of a name restarted."""
        for cid in before.containers.keys() - after.containers.keys():
            metrics = before.containers[cid]
            record = self._records(cid) if self._records else None
            if record is None or getattr(record, "state", "") != "EXITED":
                continue  # removed while running, or not known to have exited yet
            reason = getattr(record, "reason", "") or "exited"
            text = f"exited: {reason}, code {getattr(record, 'exit_code', 0)}"
            self._add_event(after.timestamp_ns, "exit", _identity(before, metrics), text)
        for cid in after.containers.keys() - before.containers.keys():
            metrics = after.containers[cid]
            missed = before.unsampled.get(cid)  # running, but unreadable for a tick: no restart
            if metrics.info.attempt > 0 and not (missed and missed.state == "RUNNING"):
                text = f"restarted (attempt {metrics.info.attempt})"
                self._add_event(after.timestamp_ns, "restart", _identity(after, metrics), text)

    def _note_probes(self) -> None:
        view = self._probe_metrics.view if self._probe_metrics is not None else None
        if view is None or not view.taken_at:
            return
        if view is not self._views[1]:
            self._views = (self._views[1], view)
        state = tuple((p.name, p.up, p.reason) for p in view.status.probes)
        if state != self._probe_state:
            for name, up, reason in state:
                if not up and (name, up, reason) not in self._probe_state:
                    self._add_event(time.time_ns(), "probe", None, f"probe {name} down: {reason}")
            self._probe_state = state
        lost = sum(view.lost.values())
        if lost > self._lost:
            text = f"{lost - self._lost} probe events lost (full buffers or maps)"
            self._add_event(time.time_ns(), "probe", None, text)
        self._lost = lost

    def _add_event(self, time_ns: int, kind: str, who: Identity | None, text: str) -> None:
        entry = {"time_ns": time_ns, "kind": kind, "text": text, "container_id": "", "pod": "",
                 "namespace": "", "name": ""}  # fmt: skip
        if who is not None:
            entry.update(container_id=who.container_id, pod=who.pod, namespace=who.namespace,
                         name=who.name)  # fmt: skip
        self.events.append(entry)
        self._added += 1

    def _detail(self, cgroup_id: int, kind: str) -> collections.deque:
        kinds = self._details.setdefault(cgroup_id, {})
        return kinds.setdefault(kind, collections.deque(maxlen=PER_CONTAINER))

    # --- reading (HTTP threads) ----------------------------------------------------------

    def document(self) -> dict:
        """The whole view as plain data (what GET /api/v1/view returns)."""
        with self._lock:
            before, after = self._snapshots
            views = self._views
            events = list(self.events)
            details = {c: {k: list(v) for k, v in d.items()} for c, d in self._details.items()}
            node = dict(self._node)
        snapshot = after or self._snapshot()
        view = views[1]
        status = view.status if view is not None else None
        return {
            "version": VERSION,
            "seq": snapshot.seq,
            "timestamp_ns": snapshot.timestamp_ns,
            "uptime_s": round(self._clock() - self._started, 1),
            "node": node,
            "pods": dict(snapshot.pod_states),
            "container_states": dict(snapshot.container_states),
            "probes": {
                "available": bool(status and status.available),
                "reason": status.reason if status else "probes not running",
                "up": {p.name: p.up for p in status.probes} if status else {},
                "events_lost": sum(view.lost.values()) if view is not None else 0,
            },
            "containers": [
                _container(snapshot, before, m, views, details.get(m.cgroup_id, {}))
                for m in snapshot.containers.values()
            ],
            "events": events,
        }

    def render(self) -> bytes:
        """The JSON body; built once per snapshot, then served from the cache."""
        snapshot, added = self._snapshots[1], self._added
        seq = snapshot.seq if snapshot is not None else -1
        if self._cache[:2] == (seq, added) and seq >= 0:
            return self._cache[2]
        body = json.dumps(self.document(), separators=(",", ":")).encode()
        self._cache = (seq, added, body)
        return body

    def wsgi_app(self, environ, start_response):
        if environ.get("REQUEST_METHOD", "GET") not in ("GET", "HEAD"):
            start_response("405 Method Not Allowed", [("Allow", "GET, HEAD")])
            return [b"only GET\n"]
        body = self.render()
        start_response("200 OK", [("Content-Type", "application/json"),
                                  ("Content-Length", str(len(body)))])  # fmt: skip
        return [] if environ.get("REQUEST_METHOD") == "HEAD" else [body]


# --- conversion to plain data ------------------------------------------------------------------


def _identity(snapshot: Snapshot, metrics: ContainerMetrics) -> Identity:
    pod = snapshot.pods.get(metrics.info.pod_id)
    return Identity(metrics.info.id, pod.info.name if pod else "",
                    pod.info.namespace if pod else "", metrics.info.name)  # fmt: skip


def _address(text: str) -> str:
    """IPv4-mapped IPv6 (a dual-stack socket's view of an IPv4 peer) as plain IPv4."""
    with contextlib.suppress(ValueError):
        mapped = ipaddress.IPv6Address(text).ipv4_mapped
        if mapped is not None:
            return str(mapped)
    return text


def _flow(event) -> dict:
    return {"time_ns": event.time_ns, "direction": event.direction,
            "local": f"{_address(event.saddr)}:{event.sport}",
            "peer": f"{_address(event.daddr)}:{event.dport}",
            "bytes_sent": event.bytes_sent, "bytes_received": event.bytes_received,
            "duration_ns": event.duration_ns, "retransmits": event.retransmits}  # fmt: skip


def _container(snapshot, before, metrics: ContainerMetrics, views, details: dict) -> dict:
    info, cgroup = metrics.info, metrics.cgroup
    who = _identity(snapshot, metrics)
    limits = cgroup.limits or info.limits
    cpu_limit = None
    if limits and limits.cpu_quota_us and limits.cpu_period_us:
        cpu_limit = limits.cpu_quota_us / limits.cpu_period_us
    memory = cgroup.memory
    entry = {
        "id": info.id, "pod_id": info.pod_id, "pod": who.pod, "namespace": who.namespace,
        "name": info.name, "attempt": info.attempt, "state": info.state, "image": info.image,
        "cgroup_id": metrics.cgroup_id,
        "cpu_cores": (cgroup.cpu.usage_nano_cores or 0) / 1e9 if cgroup.cpu else None,
        "cpu_limit_cores": cpu_limit,
        "memory_working_set_bytes": memory.working_set_bytes if memory else None,
        "memory_limit_bytes": memory.limit_bytes if memory else None,
        "processes": cgroup.processes.processes if cgroup.processes else None,
        "flows": details.get("flows", []), "execs": details.get("execs", []),
        "ooms": details.get("ooms", []),
    }  # fmt: skip
    entry.update(_network_rates(snapshot, before, info.pod_id))
    entry.update(_probe_part(metrics, views, len(entry["ooms"])))
    return entry


def _network_rates(snapshot: Snapshot, before: Snapshot | None, pod_id: str) -> dict:
    """The pod's default interface, bytes per second between the two snapshots."""
    rates = {"rx_bytes_per_s": None, "tx_bytes_per_s": None}
    now = snapshot.pod(pod_id)
    then = before.pod(pod_id) if before is not None else None
    if not (now and then and now.network and then.network):
        return rates
    name = now.network.default_interface
    a, b = then.network.interface(name), now.network.interface(name)
    seconds = (now.network.timestamp_ns - then.network.timestamp_ns) / 1e9
    if a and b and seconds > 0:
        rates["rx_bytes_per_s"] = max(b.rx_bytes - a.rx_bytes, 0) / seconds
        rates["tx_bytes_per_s"] = max(b.tx_bytes - a.tx_bytes, 0) / seconds
    return rates


def _probe_part(metrics: ContainerMetrics, views, seen_ooms: int) -> dict:
    """Syscall rates (two probe views apart), totals, latency and TCP counters."""
    old, new = views
    counters = new.counters.get(metrics.cgroup_id) if new is not None else None
    ooms = max(metrics.oom_events, new.oom_kills.get(metrics.cgroup_id, 0) if new else 0)
    part = {"oom_kills": max(ooms, seen_ooms), "syscalls_per_s": None, "top_syscall": "",
            "syscall_errors_per_s": None, "tcp": None, "syscalls": []}  # fmt: skip
    if counters is None:
        return part
    previous = old.counters.get(metrics.cgroup_id) if old is not None else None
    seconds = new.taken_at - old.taken_at if old is not None else 0.0
    rates: dict[int, float] = {}
    if previous is not None and seconds > 0:
        for nr, stats in counters.syscalls.items():
            was = previous.syscalls.get(nr)
            rates[nr] = max(stats.calls - (was.calls if was else 0), 0) / seconds
        errors_now = sum(s.errors for s in counters.syscalls.values())
        errors_then = sum(s.errors for s in previous.syscalls.values())
        part["syscalls_per_s"] = sum(rates.values())
        part["syscall_errors_per_s"] = max(errors_now - errors_then, 0) / seconds
    ranked = sorted(counters.syscalls.values(), key=lambda s: (-rates.get(s.nr, 0), -s.calls))
    part["top_syscall"] = ranked[0].name if ranked else ""
    part["syscalls"] = _syscall_entries(ranked[:TOP_SYSCALLS], rates, counters.syscall_errors)
    tcp = counters.tcp
    part["tcp"] = {"connections_active": tcp.connections_active,
                   "connections_passive": tcp.connections_passive,
                   "bytes_sent": tcp.bytes_sent, "bytes_received": tcp.bytes_received,
                   "retransmits": tcp.retransmits,
                   "resets": tcp.resets_sent + tcp.resets_received}  # fmt: skip
    return part


def _syscall_entries(syscalls, rates: dict[int, float], errors: dict) -> list[dict]:
    """The detail pane's syscalls: calls, rate, errors by errno name, mean and p99 latency."""
    from observe_rt.probes import histogram
    from observe_rt.probes.syscall_names import errno_name

    errnos: dict[int, dict[str, int]] = {}
    for (nr, err), count in errors.items():
        errnos.setdefault(nr, {})[errno_name(err)] = count
    entries = []
    for stats in syscalls:
        returned = stats.returned
        entries.append({
            "name": stats.name, "calls": stats.calls, "per_s": rates.get(stats.nr),
            "errors": stats.errors, "errnos": errnos.get(stats.nr, {}),
            "mean_ns": stats.total_ns / returned if returned else None,
            "p99_ns": _finite(histogram.quantile_ns(stats.histogram, 0.99)) if returned else None,
        })  # fmt: skip
    return entries


def _finite(value: float) -> float | None:
    return value if math.isfinite(value) else None  # the overflow slot has no upper bound

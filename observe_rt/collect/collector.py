"""The collector loop: one thread that turns the daemon's inventory into a new Snapshot each tick.

    every `interval` seconds:
        sources() ─> Inventory(pods, containers)           (the daemon's records, no I/O)
          for each CREATED/RUNNING container: read its cgroup (cgroup_reader), rate vs last tick,
                                              writable layer from the background cache
          for each READY pod: its pod cgroup, its netns interface counters (/proc/<pid>/net/dev)
        ─> Snapshot (immutable) replaces the previous one; on_tick(snapshot) is called

Nothing here raises to a caller. A container whose cgroup vanished mid-sample, an unreadable
file, a dead network namespace: that series is left out of this tick and `skipped[reason]`
grows ("vanished", "unreadable", "network", "error", "sources").

usage_nano_cores is Δusage / Δtime between this tick and the last one for the same id, from
the monotonic clock (containerd and CRI-O do the same); timestamps are wall-clock ns and
strictly advance per pod and container. container_oom_events_total comes from each cgroup's
oom_kill counter, summed over every attempt of a container name in its pod (OomLedger), so a
restart does not reset it.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import replace

from observe_rt.model.snapshot import (
    SAMPLED_CONTAINER_STATES,
    SAMPLED_POD_STATES,
    CgroupStats,
    ContainerInfo,
    ContainerMetrics,
    FsStats,
    Inventory,
    NetworkStats,
    PodInfo,
    PodMetrics,
    Snapshot,
)
from observe_rt.network.counters import default_interface, read_netns_counters, read_pid_counters

from .cgroup_reader import CgroupGone, read_cgroup
from .layer_usage import LayerUsage

log = logging.getLogger("observe_rt.collect")


class OomLedger:
    """OOM kills per (pod id, container name), summed over the cgroups of every attempt."""

    def __init__(self) -> None:
        self._counts: dict[tuple[str, str], dict[str, int]] = {}

    def update(self, pod_id: str, name: str, container_id: str, kills: int | None) -> int:
        attempts = self._counts.setdefault((pod_id, name), {})
        if kills is not None:
            attempts[container_id] = max(kills, attempts.get(container_id, 0))
        return sum(attempts.values())

    def keep_pods(self, pod_ids: set[str]) -> None:
        for key in [k for k in self._counts if k[0] not in pod_ids]:
            del self._counts[key]


class Collector:
    """Samples every pod and container each `interval` seconds into an immutable Snapshot.

    sources: returns the current Inventory (or a (pods, containers) pair); called once a tick
    on the collector thread, so it should only copy the daemon's in-memory records.
    """

    def __init__(
        self,
        sources: Callable[[], Inventory | tuple],
        interval: float = 1.0,
        *,
        layer_rescan: float = 10.0,
        on_tick: Callable[[Snapshot], None] | None = None,
        proc_root: str = "/proc",
    ) -> None:
        self._sources = sources
        self.interval = interval
        self.on_tick = on_tick
        self.layers = LayerUsage(rescan=layer_rescan)
        self._proc_root = proc_root
        self._snapshot = Snapshot()
        self._published = threading.Condition()
        self._tick_lock = threading.Lock()  # one tick at a time: the thread or tick()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._prev_cpu: dict[str, tuple[int, int]] = {}  # key -> (monotonic ns, usage ns)
        self._last_ts: dict[str, int] = {}  # key -> last timestamp handed out
        self._seen: set[str] = set()
        self._oom = OomLedger()
        self._skipped: Counter[str] = Counter()

    # -- public --------------------------------------------------------------------------------

    def snapshot(self) -> Snapshot:
        """The latest Snapshot (seq 0 and empty before the first tick). Never blocks on I/O."""
        return self._snapshot

    def tick(self) -> Snapshot:
        """Sample everything once, publish and return the new Snapshot."""
        with self._tick_lock:
            started = time.monotonic()
            try:
                snapshot = self._build(started)
            except Exception:  # a bug must not kill the loop or reach a caller
                log.exception("collector tick failed")
                self._skipped["error"] += 1
                snapshot = replace(self._snapshot, skipped=dict(self._skipped))
            self._publish(snapshot)
        if self.on_tick is not None:
            try:
                self.on_tick(snapshot)
            except Exception:
                log.exception("collector on_tick hook failed")
        return snapshot

    def wait_for(self, seq: int, timeout: float = 10.0) -> Snapshot:
        """Block until a Snapshot newer than `seq` is published (or timeout); return latest."""
        with self._published:
            self._published.wait_for(lambda: self._snapshot.seq > seq, timeout)
            return self._snapshot

    def start(self) -> None:
        if self._thread is not None:
            return
        self._stop.clear()
        self.layers.start()
        self._thread = threading.Thread(target=self._run, name="collector", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 5.0) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout)
            self._thread = None
        self.layers.stop(timeout)

    # -- loop ----------------------------------------------------------------------------------

    def _run(self) -> None:
        next_at = time.monotonic()
        while not self._stop.is_set():
            self.tick()
            next_at += self.interval
            delay = next_at - time.monotonic()
            if delay < 0:  # fell behind: start again from now, no burst of catch-up ticks
                next_at, delay = time.monotonic(), 0.0
            if self._stop.wait(delay):
                break

    def _publish(self, snapshot: Snapshot) -> None:
        with self._published:
            self._snapshot = snapshot
            self._published.notify_all()

    def _inventory(self) -> Inventory | None:
        try:
            got = self._sources()
        except Exception:
            log.exception("collector: sources() failed")
            self._skipped["sources"] += 1
            return None
        return got if isinstance(got, Inventory) else Inventory(*got)

    def _build(self, started: float) -> Snapshot:
        inventory = self._inventory()
        if inventory is None:
            return replace(self._snapshot, skipped=dict(self._skipped))
        self._seen = set()
        containers = {}
        for info in inventory.containers:
            if info.state in SAMPLED_CONTAINER_STATES:
                metrics = self._safely(self._sample_container, info)
                if metrics is not None:
                    containers[info.id] = metrics
        pods = {}
        for pod in inventory.pods:
            if pod.state in SAMPLED_POD_STATES:
                ids = tuple(sorted(c for c, m in containers.items() if m.info.pod_id == pod.id))
                metrics = self._safely(self._sample_pod, pod, ids)
                if metrics is not None:
                    pods[pod.id] = metrics
        self._forget_unseen({p.id for p in inventory.pods})
        self.layers.track(c.info.writable_layer for c in containers.values())
        return Snapshot(
            seq=self._snapshot.seq + 1,
            timestamp_ns=self._advance("", time.time_ns()),
            containers=containers,
            pods=pods,
            pod_states=Counter(p.state for p in inventory.pods),
            container_states=Counter(c.state for c in inventory.containers),
            skipped=dict(self._skipped),
            tick_seconds=time.monotonic() - started,
            unsampled={c.id: c for c in inventory.containers if c.id not in containers},
        )

    # -- sampling ------------------------------------------------------------------------------

    def _safely(self, sample: Callable, *args):
        """sample(*args), or None when it fails in a way nobody foresaw (counted as "error")."""
        try:
            return sample(*args)
        except Exception:
            log.exception("collector: sampling %s failed", getattr(args[0], "id", args[0]))
            self._skipped["error"] += 1
            return None

    def _advance(self, key: str, now_ns: int) -> int:
        """A timestamp for `key` strictly after the one it got last tick."""
        ts = max(now_ns, self._last_ts.get(key, 0) + 1)
        self._last_ts[key] = ts
        self._seen.add(key)
        return ts

    def _sample_cgroup(self, key: str, paths, ts: int) -> CgroupStats | None:
        mono = time.monotonic_ns()
        try:
            stats, errors = read_cgroup(paths, ts)
        except CgroupGone as err:
            log.debug("collector: %s skipped: %s", key, err)
            self._skipped["vanished"] += 1
            return None
        for error in errors:
            log.debug("collector: %s: %s", key, error)
            self._skipped["unreadable"] += 1
        if stats.cpu is not None:
            rate = self._rate(key, mono, stats.cpu.usage_ns)
            stats = replace(stats, cpu=replace(stats.cpu, usage_nano_cores=rate))
        return stats

    def _rate(self, key: str, mono_ns: int, usage_ns: int) -> int | None:
        prev = self._prev_cpu.get(key)
        self._prev_cpu[key] = (mono_ns, usage_ns)
        if prev is None or mono_ns <= prev[0] or usage_ns < prev[1]:
            return None
        return (usage_ns - prev[1]) * 1_000_000_000 // (mono_ns - prev[0])

    def _sample_container(self, info: ContainerInfo) -> ContainerMetrics | None:
        ts = self._advance(info.id, time.time_ns())
        stats = self._sample_cgroup(info.id, info.cgroup_paths, ts)
        if stats is None:
            return None
        if info.limits is not None:
            stats = replace(stats, limits=info.limits)
        oom = self._oom.update(info.pod_id, info.name, info.id, stats.oom_kills)
        return ContainerMetrics(
            info=info,
            cgroup=stats,
            fs=self._fs(info),
            cgroup_id=info.cgroup_id or _cgroup_id(info.cgroup_paths),  # the runtime's record
            oom_events=oom,
        )

    def _fs(self, info: ContainerInfo) -> FsStats | None:
        figure = self.layers.get(info.writable_layer) if info.writable_layer else None
        if figure is None:
            return None
        used, inodes, scanned_ns = figure
        return FsStats(scanned_ns, used, inodes, info.fs_id or info.writable_layer)

    def _sample_pod(self, info: PodInfo, container_ids: tuple[str, ...]) -> PodMetrics:
        key = f"pod/{info.id}"
        ts = self._advance(key, time.time_ns())
        cgroup = self._sample_cgroup(key, info.cgroup_paths, ts) if info.cgroup_paths else None
        return PodMetrics(
            info=info,
            timestamp_ns=ts,
            cgroup=cgroup,
            network=self._network(info, ts),
            container_ids=container_ids,
        )

    def _network(self, info: PodInfo, ts: int) -> NetworkStats | None:
        if not info.netns_pid and not info.netns_path:
            return None  # host network: the node's counters are not the pod's
        try:
            if info.netns_pid:
                counters = read_pid_counters(info.netns_pid, self._proc_root)
            else:
                counters = read_netns_counters(info.netns_path)
        except Exception as err:  # a dead shim, an unmounted netns file
            log.debug("collector: pod %s network skipped: %s", info.id, err)
            self._skipped["network"] += 1
            return None
        interfaces = tuple(c for name, c in sorted(counters.items()) if name != "lo")
        return NetworkStats(ts, interfaces, default_interface(counters))

    def _forget_unseen(self, pod_ids: set[str]) -> None:
        """Drop rate and timestamp state of everything not sampled this tick."""
        self._seen.add("")
        for table in (self._prev_cpu, self._last_ts):
            for key in [k for k in table if k not in self._seen]:
                del table[key]
        self._oom.keep_pods(pod_ids)


def _cgroup_id(paths) -> int:
    unified = paths.get("unified")
    if not unified:
        return 0
    try:
        return os.stat(unified).st_ino
    except OSError:
        return 0

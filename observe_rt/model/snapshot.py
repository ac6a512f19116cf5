"""The immutable picture of every pod and container at one collector tick.

    Collector tick ──> Snapshot ──> CRI stats (cri/stats.py)
                                └─> Prometheus (export/prometheus.py), live view, ...

Exporters read the latest Snapshot and never touch the kernel, so a stats RPC or a scrape costs
the same however many callers there are. Everything here is frozen: mappings are read-only
views, sequences are tuples, so a Snapshot can be handed to any thread.

PodInfo and ContainerInfo are what the daemon tells the collector (identity, cgroup directories,
network namespace, writable layer, limits); the *Stats classes are what the collector measured.
Units: bytes, nanoseconds (timestamps are wall-clock ns since the epoch), microseconds for PSI
totals as the kernel reports them.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType

from observe_rt.network.counters import InterfaceCounters

#: Container states whose cgroups the collector reads (others have no live cgroup).
SAMPLED_CONTAINER_STATES = frozenset({"CREATED", "RUNNING"})
#: Pod states whose cgroup and network namespace the collector reads.
SAMPLED_POD_STATES = frozenset({"READY"})


def _frozen_map(obj, name: str) -> None:
    """Replace a dict field of a frozen dataclass by a read-only copy."""
    object.__setattr__(obj, name, MappingProxyType(dict(getattr(obj, name))))


# --- what the daemon supplies -----------------------------------------------------------------


@dataclass(frozen=True)
class Limits:
    """Resource limits as cAdvisor reports them; None means unlimited or unset."""

    cpu_quota_us: int | None = None
    cpu_period_us: int | None = None
    cpu_shares: int | None = None
    memory_limit_bytes: int | None = None


@dataclass(frozen=True)
class PodInfo:
    """One pod sandbox. `cgroup_paths` maps hierarchy -> directory (CgroupManager.paths())."""

    id: str
    name: str
    namespace: str
    uid: str
    attempt: int = 0
    state: str = "READY"  # READY | NOTREADY
    created_at_ns: int = 0
    cgroup_path: str = ""  # the cgroup as seen from each hierarchy root, e.g. /observe-rt/pod-ab
    cgroup_paths: Mapping[str, str] = field(default_factory=dict)
    netns_pid: int = 0  # a process in the pod's network namespace (cheapest to read), or
    netns_path: str = ""  # the pinned namespace file; neither for host-network pods
    labels: Mapping[str, str] = field(default_factory=dict)
    annotations: Mapping[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        for name in ("cgroup_paths", "labels", "annotations"):
            _frozen_map(self, name)


@dataclass(frozen=True)
class ContainerInfo:
    """One container. `limits`, when given, wins over the limits read from the cgroup."""

    id: str
    pod_id: str
    name: str
    image: str = ""  # as the kubelet named it (the `image` label)
    attempt: int = 0
    state: str = "RUNNING"  # CREATED | RUNNING | EXITED | UNKNOWN
    created_at_ns: int = 0
    started_at_ns: int = 0
    cgroup_path: str = ""  # the `id` label, e.g. /observe-rt/pod-ab/c0ffee
    cgroup_id: int = 0  # its v2 cgroup's id as the runtime recorded it (what BPF events carry)
    cgroup_paths: Mapping[str, str] = field(default_factory=dict)
    writable_layer: str = ""  # the overlay upper directory, measured in the background
    fs_id: str = ""  # filesystem of the writable layer: CRI fs_id mountpoint, `device` label
    limits: Limits | None = None
    labels: Mapping[str, str] = field(default_factory=dict)
    annotations: Mapping[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        for name in ("cgroup_paths", "labels", "annotations"):
            _frozen_map(self, name)


@dataclass(frozen=True)
class Inventory:
    """What `sources()` returns each tick: every pod and container the daemon knows."""

    pods: tuple[PodInfo, ...] = ()
    containers: tuple[ContainerInfo, ...] = ()

    def __post_init__(self) -> None:
        object.__setattr__(self, "pods", tuple(self.pods))
        object.__setattr__(self, "containers", tuple(self.containers))


# --- what the collector measured ---------------------------------------------------------------


@dataclass(frozen=True)
class PsiData:
    total_us: int
    avg10: float
    avg60: float
    avg300: float


@dataclass(frozen=True)
class Psi:
    some: PsiData | None = None
    full: PsiData | None = None


@dataclass(frozen=True)
class CpuStats:
    usage_ns: int
    user_ns: int | None = None
    system_ns: int | None = None
    periods: int = 0
    throttled_periods: int = 0
    throttled_ns: int = 0
    usage_nano_cores: int | None = None  # None until there are two samples
    psi: Psi | None = None


@dataclass(frozen=True)
class MemoryStats:
    usage_bytes: int
    working_set_bytes: int  # usage - inactive_file, floored at 0
    rss_bytes: int = 0
    cache_bytes: int = 0
    swap_bytes: int = 0
    page_faults: int = 0
    major_page_faults: int = 0
    failcnt: int = 0
    limit_bytes: int | None = None  # None: unlimited
    psi: Psi | None = None

    @property
    def available_bytes(self) -> int:
        """limit - working set, or 0 when there is no limit (as containerd and CRI-O)."""
        if self.limit_bytes is None:
            return 0
        return max(self.limit_bytes - self.working_set_bytes, 0)


@dataclass(frozen=True)
class ProcessStats:
    processes: int
    threads: int


@dataclass(frozen=True)
class CgroupStats:
    """One cgroup at one moment. A part is None when its files could not be read."""

    timestamp_ns: int
    cpu: CpuStats | None = None
    memory: MemoryStats | None = None
    processes: ProcessStats | None = None
    io_psi: Psi | None = None
    oom_kills: int | None = None  # this cgroup's own oom_kill counter
    limits: Limits | None = None


@dataclass(frozen=True)
class FsStats:
    timestamp_ns: int  # when the layer was last scanned
    used_bytes: int
    inodes_used: int
    fs_id: str


@dataclass(frozen=True)
class NetworkStats:
    timestamp_ns: int
    interfaces: tuple[InterfaceCounters, ...]
    default_interface: str | None = None

    def interface(self, name: str | None) -> InterfaceCounters | None:
        return next((i for i in self.interfaces if i.name == name), None)


@dataclass(frozen=True)
class ContainerMetrics:
    info: ContainerInfo
    cgroup: CgroupStats
    fs: FsStats | None = None
    cgroup_id: int = 0  # the cgroup v2 id BPF sees (0 on pure v1)
    oom_events: int = 0  # OOM kills over every attempt of this container name in its pod

    @property
    def timestamp_ns(self) -> int:
        return self.cgroup.timestamp_ns


@dataclass(frozen=True)
class PodMetrics:
    info: PodInfo
    timestamp_ns: int
    cgroup: CgroupStats | None = None
    network: NetworkStats | None = None
    container_ids: tuple[str, ...] = ()


@dataclass(frozen=True)
class Snapshot:
    """Every sampled pod and container at tick `seq` (0: nothing sampled yet)."""

    seq: int = 0
    timestamp_ns: int = 0
    containers: Mapping[str, ContainerMetrics] = field(default_factory=dict)
    pods: Mapping[str, PodMetrics] = field(default_factory=dict)
    pod_states: Mapping[str, int] = field(
        default_factory=dict
    )  # state -> count, every pod the daemon knows
    container_states: Mapping[str, int] = field(default_factory=dict)
    skipped: Mapping[str, int] = field(default_factory=dict)  # reason -> skipped series, cumulative
    tick_seconds: float = 0.0  # how long building this snapshot took
    # Containers known but not sampled (exited, or unreadable this tick): their probe counters
    # stay exported until they are removed, as cAdvisor keeps a dead container's series.
    unsampled: Mapping[str, ContainerInfo] = field(default_factory=dict)
    _by_cgroup_id: Mapping[int, str] = field(default_factory=dict, repr=False)
    _info_by_cgroup_id: Mapping[int, ContainerInfo] = field(default_factory=dict, repr=False)

    def __post_init__(self) -> None:
        for name in ("containers", "pods", "pod_states", "container_states", "skipped",
                     "unsampled"):  # fmt: skip
            _frozen_map(self, name)
        ids = {m.cgroup_id: cid for cid, m in self.containers.items() if m.cgroup_id}
        object.__setattr__(self, "_by_cgroup_id", MappingProxyType(ids))
        infos = {i.cgroup_id: i for i in self.unsampled.values() if i.cgroup_id}
        infos.update((m.cgroup_id, m.info) for m in self.containers.values() if m.cgroup_id)
        object.__setattr__(self, "_info_by_cgroup_id", MappingProxyType(infos))

    def container(self, container_id: str) -> ContainerMetrics | None:
        return self.containers.get(container_id)

    def pod(self, pod_id: str) -> PodMetrics | None:
        return self.pods.get(pod_id)

    def by_cgroup_id(self, cgroup_id: int) -> ContainerMetrics | None:
        """The container whose v2 cgroup has this id (what BPF events carry)."""
        cid = self._by_cgroup_id.get(cgroup_id)
        return self.containers.get(cid) if cid else None

    def info_by_cgroup_id(self, cgroup_id: int) -> ContainerInfo | None:
        """Who a cgroup id belongs to, sampled this tick or not (exited containers too)."""
        return self._info_by_cgroup_id.get(cgroup_id)

    def containers_of(self, pod_id: str) -> Iterator[ContainerMetrics]:
        return (m for m in self.containers.values() if m.info.pod_id == pod_id)

    @property
    def skipped_total(self) -> int:
        return sum(self.skipped.values())

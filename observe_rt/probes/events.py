"""Typed records the probes hand to the rest of the runtime, all keyed by cgroup v2 id.

Events (rare, streamed through ring buffers): OomKill, FlowClosed, ProcessExec, ProcessExit.
Counters (cumulative since the container was tracked, read from kernel maps each tick, so a
reader diffs two drains to get rates): ContainerCounters with SyscallStats and TcpCounters.
Status: ProbeStatus for doctor, the probe_up metric and logs.

Times: `time_ns` is wall-clock nanoseconds (for traces and logs), converted from the kernel's
monotonic clock at decode time; durations are plain nanoseconds.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from observe_rt.probes import histogram
from observe_rt.probes.syscall_names import errno_name, syscall_name

# --- events -----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class OomKill:
    """The kernel OOM killer killed `victim_pid`.

    cgroup_id is the container charged with the kill: the victim's own cgroup, taken in its
    exit path (`attribution="victim"`), or, when the victim was never seen exiting, the cgroup
    of the task that hit the limit (`attribution="trigger"`). Memory sizes are in kB, as the
    kernel reports them (0 on kernels whose tracepoint lacks them).
    """

    time_ns: int
    cgroup_id: int
    victim_pid: int
    victim_comm: str
    trigger_cgroup_id: int
    trigger_pid: int
    total_vm_kb: int
    anon_rss_kb: int
    file_rss_kb: int
    shmem_rss_kb: int
    attribution: str  # "victim" or "trigger"

    @property
    def rss_kb(self) -> int:
        return self.anon_rss_kb + self.file_rss_kb + self.shmem_rss_kb


@dataclass(frozen=True, slots=True)
class FlowClosed:
    """A TCP connection of the container closed. Addresses are text (IPv4 or IPv6).

    direction: "active" (the container connected), "passive" (it accepted) or "unknown"
    (the socket predates tracking). bytes_* are payload bytes the container's tasks passed to
    send/recv calls; duration_ns runs from connect/accept to close.
    """

    time_ns: int
    cgroup_id: int
    family: int
    saddr: str
    sport: int
    daddr: str
    dport: int
    direction: str
    bytes_sent: int
    bytes_received: int
    duration_ns: int
    retransmits: int
    resets: int
    states: tuple[str, ...]  # TCP states the socket went through, in state-number order


@dataclass(frozen=True, slots=True)
class ProcessExec:
    time_ns: int
    cgroup_id: int
    pid: int
    old_pid: int
    comm: str
    filename: str


@dataclass(frozen=True, slots=True)
class ProcessExit:
    """A whole process (thread group) ended. exit_code/signal as from waitpid, when known."""

    time_ns: int
    cgroup_id: int
    pid: int
    comm: str
    exit_code: int | None
    signal: int | None


Event = OomKill | FlowClosed | ProcessExec | ProcessExit

# --- counters ---------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class SyscallStats:
    """One syscall in one container: calls, failed returns, and a log2 latency histogram."""

    nr: int
    calls: int = 0
    errors: int = 0
    total_ns: int = 0
    histogram: tuple[int, ...] = ()  # histogram.SLOTS log2 buckets, see histogram.py

    @property
    def name(self) -> str:
        return syscall_name(self.nr)

    @property
    def returned(self) -> int:
        """Calls that came back (exit_group and friends never do)."""
        return sum(self.histogram)

    def latency_buckets(self) -> list[tuple[float, int]]:
        """Cumulative (upper bound in seconds, count) pairs, Prometheus style (EXPORT_SLOTS)."""
        return histogram.cumulative_buckets(self.histogram, histogram.EXPORT_SLOTS)


@dataclass(frozen=True, slots=True)
class TcpCounters:
    bytes_sent: int = 0
    bytes_received: int = 0
    retransmits: int = 0
    resets_sent: int = 0
    resets_received: int = 0
    connections_active: int = 0
    connections_passive: int = 0


@dataclass(frozen=True)
class ContainerCounters:
    """Everything counted in the kernel for one container, cumulative."""

    cgroup_id: int
    syscalls: dict[int, SyscallStats] = field(default_factory=dict)
    syscall_errors: dict[tuple[int, int], int] = field(default_factory=dict)  # (nr, errno)
    tcp: TcpCounters = TcpCounters()

    def calls(self, nr: int) -> int:
        stats = self.syscalls.get(nr)
        return stats.calls if stats else 0

    def errors(self, nr: int, err: int) -> int:
        return self.syscall_errors.get((nr, err), 0)

    def named_errors(self) -> dict[tuple[str, str], int]:
        """{(syscall name, errno name): count}, for labels."""
        return {
            (syscall_name(nr), errno_name(err)): n for (nr, err), n in self.syscall_errors.items()
        }

    def top_syscalls(self, n: int) -> list[SyscallStats]:
        """The n most called syscalls: histograms are exported for these only (cardinality)."""
        return sorted(self.syscalls.values(), key=lambda s: (-s.calls, s.nr))[:n]


# --- status -----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ProbeState:
    name: str
    up: bool
    reason: str = ""  # why it is down
    notes: tuple[str, ...] = ()  # optional parts that are off, and why


@dataclass(frozen=True, slots=True)
class ProbeStatus:
    """Whether BPF works here at all, how long loading took, and each probe's state."""

    available: bool
    reason: str = ""
    compile_ms: float = 0.0
    attach_ms: float = 0.0
    output: str = ""  # "ringbuf" or "perf"
    probes: tuple[ProbeState, ...] = ()

    def up(self, name: str) -> bool:
        return any(p.name == name and p.up for p in self.probes)

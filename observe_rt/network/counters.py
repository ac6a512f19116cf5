"""Interface counters of a pod's network namespace, for CRI NetworkUsage and cAdvisor series.

/proc/<pid>/net/dev shows the namespace of that process, so the counters of a pod come from its
shim's pid with one file read: no setns, no netlink socket. The parser takes text, so it is
unit-tested on fixtures.
"""

from __future__ import annotations

from dataclasses import dataclass

from observe_rt.network.netns import run_in_netns


@dataclass(frozen=True)
class InterfaceCounters:
    name: str
    rx_bytes: int
    rx_packets: int
    rx_errors: int
    rx_dropped: int
    tx_bytes: int
    tx_packets: int
    tx_errors: int
    tx_dropped: int


def parse_net_dev(text: str) -> dict[str, InterfaceCounters]:
    """Parse /proc/net/dev: two header lines, then `name: 8 rx fields 8 tx fields`."""
    counters: dict[str, InterfaceCounters] = {}
    for line in text.splitlines()[2:]:
        name, sep, rest = line.partition(":")
        fields = rest.split()
        if not sep or len(fields) < 16:
            continue
        v = [int(f) for f in fields[:16]]
        name = name.strip()
        counters[name] = InterfaceCounters(name, v[0], v[1], v[2], v[3], v[8], v[9], v[10], v[11])
    return counters


def read_pid_counters(pid: int, proc_root: str = "/proc") -> dict[str, InterfaceCounters]:
    """Counters of the namespace process `pid` lives in."""
    with open(f"{proc_root}/{pid}/net/dev") as f:
        return parse_net_dev(f.read())


def read_netns_counters(netns_path: str) -> dict[str, InterfaceCounters]:
    """Counters of a pinned namespace with no process to read through (a setns'd thread)."""

    def read() -> str:
        with open("/proc/thread-self/net/dev") as f:
            return f.read()

    return parse_net_dev(run_in_netns(netns_path, read))


def default_interface(counters: dict[str, InterfaceCounters]) -> str | None:
    """eth0 when present, else the first interface other than lo (as the kubelet picks)."""
    if "eth0" in counters:
        return "eth0"
    return next((name for name in counters if name != "lo"), None)

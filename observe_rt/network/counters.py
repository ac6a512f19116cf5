"""Interface counters of a pod's network namespace, for CRI NetworkUsage and cAdvisor series.

/proc/<pid>/net/dev shows the namespace of that process, so the counters of a pod come from its
shim's pid with one file read: no setns, no netlink socket (the collector's path each tick). A
pinned namespace without a process is read over netlink with pyroute2 from a thread that has
joined it (netlink sockets answer for the namespace they were opened in; nothing forks).
The parser takes text, so it is unit-tested on fixtures.
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
    """Counters of a pinned namespace with no process to read through: netlink, via pyroute2."""
    return run_in_netns(netns_path, _netlink_counters)


def _netlink_counters() -> dict[str, InterfaceCounters]:
    from pyroute2 import IPRoute

    counters = {}
    with IPRoute() as ipr:
        for link in ipr.get_links():
            name, stats = link.get_attr("IFLA_IFNAME"), link.get_attr("IFLA_STATS64") or {}
            counters[name] = InterfaceCounters(
                name, stats.get("rx_bytes", 0), stats.get("rx_packets", 0),
                stats.get("rx_errors", 0), stats.get("rx_dropped", 0), stats.get("tx_bytes", 0),
                stats.get("tx_packets", 0), stats.get("tx_errors", 0), stats.get("tx_dropped", 0),
            )  # fmt: skip
    return counters


def default_interface(counters: dict[str, InterfaceCounters]) -> str | None:
    """eth0 when present, else the first interface other than lo (as the kubelet picks)."""
    if "eth0" in counters:
        return "eth0"
    return next((name for name in counters if name != "lo"), None)

"""What a test daemon leaves on the host, counted thing by thing, to prove nothing leaks.

    before = footprint.measure(daemon)   # after a warm-up
    ... churn, faults ...
    assert footprint.leftovers(daemon) == {}          # no pod or container remains anywhere
    after = footprint.measure(daemon)                 # the daemon's own fds, threads, RSS

`leftovers` looks where the runtime puts things, not at what the runtime says: mounts under
the daemon's root, cgroups below its cgroup parent (every hierarchy), pinned netns files,
veths on its bridge, processes (shims, container inits and workloads, CNI plugins), state
and run files, host-local IP allocations, and entries in the eBPF maps keyed by cgroup id
(read from the daemon's own map fds with the bpf(2) syscall: no bpftool on these hosts).
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import struct
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

from tests.support.bundles import cgroup_dirs
from tests.support.watchdog import dump_stacks, idle_pool_workers

# eBPF maps whose keys start with a container's cgroup id (bpf/common.h, syscalls.c, tcpflow.c).
CGROUP_KEYED_MAPS = ("tracked", "sc_stats", "sc_errors", "tcp_totals")
# Files the runtime keeps per pod or container, relative to the daemon's root.
STATE_DIRS = ("state/pods", "state/containers", "state/cni", "state/rootfs", "run/pods",
              "run/containers", "run/oci", "run/oci-runc", "run/s", "run/netns")  # fmt: skip
_IPAM_BOOKKEEPING = ("lock", "last_reserved_ip")


@dataclass(frozen=True)
class DaemonUsage:
    """The daemon process's own resources."""

    rss_kib: int
    anon_kib: int  # the private part of RSS (heap): file pages may be dropped and read again
    fds: int
    threads: int  # OS threads, idle gRPC pool workers not counted (the pool is bounded)
    pool_workers: int

    def __str__(self) -> str:
        return (f"RSS {self.rss_kib / 1024:.1f} MiB (anon {self.anon_kib / 1024:.1f}), "
                f"{self.fds} fds, {self.threads} threads "
                f"+ {self.pool_workers} idle gRPC workers")  # fmt: skip


def measure(daemon) -> DaemonUsage:
    pid = daemon.process.pid
    pool = idle_pool_workers(dump_stacks(daemon))
    status = dict(
        line.split(":", 1) for line in Path(f"/proc/{pid}/status").read_text().splitlines()
    )
    rss, anon = (int(status[key].split()[0]) for key in ("VmRSS", "RssAnon"))
    tasks = len(os.listdir(f"/proc/{pid}/task"))
    return DaemonUsage(rss, anon, len(os.listdir(f"/proc/{pid}/fd")), tasks - pool, pool)


def settle(daemon, seconds: float = 3.0) -> DaemonUsage:
    """Usage once the collector and exit watcher had a few ticks to drop what they cached."""
    time.sleep(seconds)
    return measure(daemon)


def leftovers(daemon) -> dict[str, list]:
    """Every trace of a pod or container still on the host, by kind; {} when there is none."""
    return {kind: items for kind, items in inventory(daemon).items() if items}


def inventory(daemon, counters: bool = True) -> dict[str, list]:
    """What exists on the host for the daemon's pods and containers, by kind. Without
    `counters`, the eBPF counter maps are left out (they restart empty with a new daemon,
    and fill as workloads run); the tracked-containers map is always in."""
    maps = CGROUP_KEYED_MAPS if counters else ("tracked",)
    return {
        "mounts": [m for m in daemon.mounts() if m != str(daemon.run_dir / "netns")],
        "cgroups": _cgroups(daemon.cgroup_parent),
        "veths": _veths(daemon.bridge),
        "processes": [f"{pid} {cmd}" for pid, cmd in _processes(daemon)],
        "files": _state_files(daemon.root),
        "ip_allocations": _ip_allocations(daemon.root / "ipam"),
        "bpf_entries": [
            f"{name}: {n}" for name, n in bpf_entries(daemon.process.pid, maps).items() if n
        ],  # fmt: skip
    }


def _cgroups(parent: str) -> list[str]:
    """Cgroup directories below the daemon's parent (the parent itself may stay, empty)."""
    found = []
    for top in cgroup_dirs(parent):
        for dirpath, dirnames, _files in os.walk(top):
            found += [os.path.join(dirpath, d) for d in dirnames]
    return sorted(found)


def _veths(bridge: str) -> list[str]:
    out = subprocess.run(["ip", "-o", "link", "show", "master", bridge],
                         capture_output=True, text=True).stdout  # fmt: skip
    return [line.split(":")[1].strip() for line in out.splitlines() if line.strip()]


def _processes(daemon) -> list[tuple[int, str]]:
    """Processes that belong to the daemon's pods: in its cgroups, or naming its root."""
    daemon_pid, markers = daemon.process.pid, (str(daemon.root).encode(),)
    cgroup_marker = daemon.cgroup_parent.encode()
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit() or int(entry) in (daemon_pid, os.getpid()):
            continue
        with contextlib.suppress(OSError):
            cmdline = Path(f"/proc/{entry}/cmdline").read_bytes()
            cgroup = Path(f"/proc/{entry}/cgroup").read_bytes()
            environ = Path(f"/proc/{entry}/environ").read_bytes()
            if cgroup_marker in cgroup or any(m in cmdline or m in environ for m in markers):
                found.append((int(entry), cmdline.replace(b"\0", b" ").decode(errors="replace")))
    return found


def _state_files(root: Path) -> list[str]:
    found = []
    for relative in STATE_DIRS:
        for dirpath, dirs, files in os.walk(root / relative):
            found += [os.path.relpath(os.path.join(dirpath, f), root) for f in files]
            mounted = [d for d in dirs if os.path.ismount(os.path.join(dirpath, d))]
            found += [os.path.relpath(os.path.join(dirpath, d), root) for d in mounted]
            dirs[:] = [d for d in dirs if d not in mounted]  # a rootfs: counted as one
    return sorted(found)


def _ip_allocations(ipam: Path) -> list[str]:
    """host-local keeps one file per allocated address (plus a lock and a cursor)."""
    found = []
    for _dirpath, _dirs, files in os.walk(ipam):
        found += [f for f in files if not f.startswith(_IPAM_BOOKKEEPING)]
    return sorted(found)


# --- eBPF maps of a running daemon, through bpf(2) ------------------------------------------

_SYS_BPF = 321  # x86_64
_BPF_MAP_GET_NEXT_KEY, _BPF_MAP_GET_FD_BY_ID, _BPF_OBJ_GET_INFO_BY_FD = 4, 14, 15
_libc = ctypes.CDLL(None, use_errno=True)


def bpf_entries(pid: int, names=CGROUP_KEYED_MAPS) -> dict[str, int]:
    """{map name: entries} for the named eBPF maps that process `pid` holds open."""
    counts: dict[str, int] = {}
    for map_id in _map_ids(pid):
        fd = _bpf(_BPF_MAP_GET_FD_BY_ID, struct.pack("=III", map_id, 0, 0))
        if fd < 0:
            continue
        try:
            name, key_size = _map_info(fd)
            if name in names:
                counts[name] = _count_keys(fd, key_size)
        finally:
            os.close(fd)
    return counts


def _map_ids(pid: int) -> list[int]:
    ids = []
    for fd in os.listdir(f"/proc/{pid}/fdinfo"):
        with contextlib.suppress(OSError):
            for line in Path(f"/proc/{pid}/fdinfo/{fd}").read_text().splitlines():
                if line.startswith("map_id:"):
                    ids.append(int(line.split()[1]))
    return sorted(set(ids))


def _bpf(cmd: int, attr: bytes) -> int:
    buffer = ctypes.create_string_buffer(attr, 128)
    return _libc.syscall(_SYS_BPF, cmd, buffer, 128)


def _map_info(fd: int) -> tuple[str, int]:
    info = ctypes.create_string_buffer(88)  # struct bpf_map_info up to name[16]
    attr = struct.pack("=IIQ", fd, len(info), ctypes.addressof(info))
    if _bpf(_BPF_OBJ_GET_INFO_BY_FD, attr) < 0:
        return "", 0
    _type, _id, key_size = struct.unpack_from("=III", info.raw)
    name = info.raw[24:40].split(b"\0")[0].decode()
    return name, key_size


def _count_keys(fd: int, key_size: int) -> int:
    key = ctypes.create_string_buffer(key_size)
    next_key = ctypes.create_string_buffer(key_size)
    count, first = 0, True
    while True:
        key_ptr = 0 if first else ctypes.addressof(key)
        attr = struct.pack("=IIQQQ", fd, 0, key_ptr, ctypes.addressof(next_key), 0)
        if _bpf(_BPF_MAP_GET_NEXT_KEY, attr) < 0:
            return count
        count, first = count + 1, False
        ctypes.memmove(key, next_key, key_size)


def difference(before: dict[str, list], after: dict[str, list]) -> dict[str, dict]:
    """{kind: {"added": [...], "gone": [...]}} between two inventories; {} when equal."""
    changes = {}
    for kind in sorted(set(before) | set(after)):
        old, new = set(before.get(kind, ())), set(after.get(kind, ()))
        if old != new:
            changes[kind] = {"added": sorted(new - old), "gone": sorted(old - new)}
    return changes

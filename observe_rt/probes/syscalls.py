"""Syscall counters (bpf/syscalls.c): spec, map decoding and per-container purge.

Map layouts mirror the C structs byte for byte (native order, natural alignment):
  sc_stats   key {u64 cgroup_id; u32 nr; u32 pad}  value {u64 calls, errors, total_ns;
             u64 hist[SLOTS]}
  sc_errors  key {u64 cgroup_id; u32 nr; u32 err}  value u64
"""

from __future__ import annotations

import struct
from collections.abc import Iterable

from observe_rt.probes import histogram
from observe_rt.probes.events import SyscallStats
from observe_rt.probes.spec import Hook, ProbeSpec

STATS_KEY = struct.Struct("=QII")
STATS_VALUE = struct.Struct(f"=QQQ{histogram.SLOTS}Q")
ERROR_KEY = struct.Struct("=QII")
COUNT = struct.Struct("=Q")

SPEC = ProbeSpec(
    name="syscalls",
    source="syscalls.c",
    hooks=(
        # Raw: args[1] is the number at enter, the return value at exit (see syscalls.c).
        Hook("raw_syscalls:sys_enter", "sc_enter", raw=True),
        Hook("raw_syscalls:sys_exit", "sc_exit", raw=True),
    ),
    defines=(f"SC_SLOTS={histogram.SLOTS}",),
)

# Map name -> (key size, value size) the decoders expect; checked after loading.
LAYOUT = {"sc_stats": (STATS_KEY.size, STATS_VALUE.size), "sc_errors": (ERROR_KEY.size, 8)}


def decode_stats(key: bytes, value: bytes) -> tuple[int, SyscallStats]:
    """(cgroup id, stats) from one sc_stats entry."""
    cgroup_id, nr, _ = STATS_KEY.unpack_from(key)
    calls, errors, total_ns, *hist = STATS_VALUE.unpack_from(value)
    return cgroup_id, SyscallStats(nr, calls, errors, total_ns, tuple(hist))


def decode_error(key: bytes, value: bytes) -> tuple[int, int, int, int]:
    """(cgroup id, nr, errno, count) from one sc_errors entry."""
    cgroup_id, nr, err = ERROR_KEY.unpack_from(key)
    return cgroup_id, nr, err, COUNT.unpack_from(value)[0]


def collect(program, into: dict[int, dict]) -> None:
    """Add every container's syscall stats and errors to into[cgroup_id] (see manager)."""
    for key, value in program.map("sc_stats").items():
        cgroup_id, stats = decode_stats(key, value)
        if cgroup_id in into:
            into[cgroup_id]["syscalls"][stats.nr] = stats
    for key, value in program.map("sc_errors").items():
        cgroup_id, nr, err, count = decode_error(key, value)
        if cgroup_id in into:
            into[cgroup_id]["syscall_errors"][(nr, err)] = count


def cgroups(program) -> set[int]:
    """Every cgroup id with an entry in sc_stats or sc_errors."""
    return {
        STATS_KEY.unpack_from(key)[0]
        for name in ("sc_stats", "sc_errors")
        for key in program.map(name)
    }


def purge(program, cgroup_ids: Iterable[int]) -> int:
    """Delete the entries of these containers from both maps; returns how many went."""
    gone = set(cgroup_ids)
    removed = 0
    for name in ("sc_stats", "sc_errors"):
        view = program.map(name)
        for key in view:
            if STATS_KEY.unpack_from(key)[0] in gone and view.delete(key):
                removed += 1
    return removed

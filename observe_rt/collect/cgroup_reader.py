"""Read one cgroup's cpu, memory, process, PSI and OOM figures on v1, hybrid and v2 hosts.

Input is the cgroup's directory per hierarchy, as CgroupManager.paths() gives it:

    v1 / hybrid  {"cpu": .../cpu/<path>, "cpuacct": ..., "memory": ..., "pids": ...,
                  "unified": .../unified/<path>}        (hybrid: unified has no controllers)
    v2           {"unified": /sys/fs/cgroup/<path>}

A controller's v1 directory is used when present, else the v2 files in "unified". PSI
(cpu/memory/io.pressure) lives only in cgroup2 directories, so hybrid hosts get it from
"unified". Files (kernel Documentation/admin-guide/cgroup-v1 and cgroup-v2):

    cpu     v1 cpuacct.usage (ns), cpuacct.stat (USER_HZ ticks), cpu.stat (throttled_time ns)
            v2 cpu.stat usage_usec, user_usec, system_usec, nr_periods, throttled_usec
    memory  v1 memory.usage_in_bytes, memory.stat total_*, memory.failcnt, memory.oom_control
            v2 memory.current, memory.stat, memory.swap.current, memory.events (max, oom_kill)
    procs   cgroup.procs of the cgroup and its children; threads from pids.current

Only paths are read, so unit tests run on fixture trees. `read_cgroup` raises CgroupGone when
the cgroup's directory disappeared (a container removed mid-sample); any other unreadable file
leaves its part None and is named in the returned error list.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from dataclasses import replace

from observe_rt.model.snapshot import (
    CgroupStats,
    CpuStats,
    Limits,
    MemoryStats,
    ProcessStats,
    Psi,
    PsiData,
)

#: Limits at or above this are "unlimited" (v1 reports PAGE_COUNTER_MAX in bytes).
UNLIMITED = 1 << 62
_CLK_TCK = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100


class CgroupGone(Exception):
    """The cgroup's directory no longer exists."""


def _read(path: str) -> str:
    """One cgroupfs file (raw os calls: about twice as fast as open() for tiny files)."""
    fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    try:
        chunks = [os.read(fd, 65536)]
        while chunks[-1]:
            chunks.append(os.read(fd, 65536))
    finally:
        os.close(fd)
    return b"".join(chunks).decode()


def _read_int(path: str) -> int:
    return int(_read(path).strip())


def parse_keyed(text: str) -> dict[str, int]:
    """A flat-keyed file ("key value" per line) as ints; other lines are ignored."""
    out = {}
    for line in text.splitlines():
        key, _, value = line.partition(" ")
        value = value.strip()
        if value.lstrip("-").isdigit():
            out[key] = int(value)
    return out


def parse_psi(text: str) -> Psi:
    """A pressure file: "some avg10=0.00 avg60=0.00 avg300=0.00 total=123" (+ "full ...")."""
    parts: dict[str, PsiData] = {}
    for line in text.splitlines():
        kind, _, rest = line.partition(" ")
        fields = dict(item.split("=", 1) for item in rest.split() if "=" in item)
        try:
            parts[kind] = PsiData(
                total_us=int(fields["total"]),
                avg10=float(fields["avg10"]),
                avg60=float(fields["avg60"]),
                avg300=float(fields["avg300"]),
            )
        except (KeyError, ValueError):
            continue
    return Psi(some=parts.get("some"), full=parts.get("full"))


def _limit(text: str) -> int | None:
    text = text.strip()
    if text in ("max", "-1", ""):
        return None
    value = int(text)
    return None if value >= UNLIMITED else value


def shares_from_weight(weight: int) -> int:
    """v1 cpu.shares for a v2 cpu.weight (inverse of runc's shares -> weight map)."""
    return 2 + ((weight - 1) * 262142) // 9999


# --- parts --------------------------------------------------------------------------------


def _psi(paths: Mapping[str, str], resource: str) -> Psi | None:
    unified = paths.get("unified")
    if not unified:
        return None
    try:
        return parse_psi(_read(os.path.join(unified, f"{resource}.pressure")))
    except (OSError, ValueError):
        return None  # no PSI in this kernel (or psi=0): not an error


def read_cpu(paths: Mapping[str, str]) -> CpuStats:
    if "cpuacct" in paths:
        usage = _read_int(os.path.join(paths["cpuacct"], "cpuacct.usage"))
        ticks = parse_keyed(_read(os.path.join(paths["cpuacct"], "cpuacct.stat")))
        tick_ns = 1_000_000_000 // _CLK_TCK
        user, system = ticks.get("user", 0) * tick_ns, ticks.get("system", 0) * tick_ns
        stat = parse_keyed(_read(os.path.join(paths["cpu"], "cpu.stat"))) if "cpu" in paths else {}
        throttled_ns = stat.get("throttled_time", 0)
    else:
        stat = parse_keyed(_read(os.path.join(paths["unified"], "cpu.stat")))
        usage = stat["usage_usec"] * 1000
        user, system = stat.get("user_usec", 0) * 1000, stat.get("system_usec", 0) * 1000
        throttled_ns = stat.get("throttled_usec", 0) * 1000
    return CpuStats(
        usage_ns=usage,
        user_ns=user,
        system_ns=system,
        periods=stat.get("nr_periods", 0),
        throttled_periods=stat.get("nr_throttled", 0),
        throttled_ns=throttled_ns,
        psi=_psi(paths, "cpu"),
    )


def _memory_v1(directory: str) -> tuple[MemoryStats, int]:
    usage = _read_int(os.path.join(directory, "memory.usage_in_bytes"))
    stat = parse_keyed(_read(os.path.join(directory, "memory.stat")))
    oom = parse_keyed(_read(os.path.join(directory, "memory.oom_control"))).get("oom_kill", 0)
    memory = MemoryStats(
        usage_bytes=usage,
        working_set_bytes=max(usage - stat.get("total_inactive_file", 0), 0),
        rss_bytes=stat.get("total_rss", 0),
        cache_bytes=stat.get("total_cache", 0),
        swap_bytes=stat.get("total_swap", 0),
        page_faults=stat.get("total_pgfault", 0),
        major_page_faults=stat.get("total_pgmajfault", 0),
        failcnt=_read_int(os.path.join(directory, "memory.failcnt")),
        limit_bytes=_limit(_read(os.path.join(directory, "memory.limit_in_bytes"))),
    )
    return memory, oom


def _memory_v2(directory: str) -> tuple[MemoryStats, int]:
    usage = _read_int(os.path.join(directory, "memory.current"))
    stat = parse_keyed(_read(os.path.join(directory, "memory.stat")))
    events = parse_keyed(_read(os.path.join(directory, "memory.events")))
    try:
        swap = _read_int(os.path.join(directory, "memory.swap.current"))
    except FileNotFoundError:
        swap = 0  # kernel without swap accounting
    memory = MemoryStats(
        usage_bytes=usage,
        working_set_bytes=max(usage - stat.get("inactive_file", 0), 0),
        rss_bytes=stat.get("anon", 0),
        cache_bytes=stat.get("file", 0),
        swap_bytes=swap,
        page_faults=stat.get("pgfault", 0),
        major_page_faults=stat.get("pgmajfault", 0),
        failcnt=events.get("max", 0),
        limit_bytes=_limit(_read(os.path.join(directory, "memory.max"))),
    )
    return memory, events.get("oom_kill", 0)


def read_memory(paths: Mapping[str, str]) -> tuple[MemoryStats, int]:
    """Memory figures and the cgroup's oom_kill count."""
    if "memory" in paths:
        memory, oom = _memory_v1(paths["memory"])
    else:
        memory, oom = _memory_v2(paths["unified"])
    psi = _psi(paths, "memory")
    if psi is not None:
        memory = replace(memory, psi=psi)
    return memory, oom


def _count_lines(directory: str, name: str) -> int:
    """Entries of `name` in `directory` and every cgroup below it."""
    total = 0
    for current, _dirs, _files in os.walk(directory):
        try:
            total += len(_read(os.path.join(current, name)).split())
        except FileNotFoundError:
            if current == directory:
                raise
    return total


def read_processes(paths: Mapping[str, str]) -> ProcessStats:
    pids_dir = paths.get("pids")
    directory = pids_dir or paths.get("unified") or next(iter(paths.values()))
    processes = _count_lines(directory, "cgroup.procs")
    try:
        threads = _read_int(os.path.join(directory, "pids.current"))
    except FileNotFoundError:  # no pids controller here: count tasks
        threads = _count_lines(directory, "tasks" if pids_dir else "cgroup.threads")
    return ProcessStats(processes=processes, threads=threads)


def read_limits(paths: Mapping[str, str]) -> Limits:
    if "cpu" in paths:
        quota = _limit(_read(os.path.join(paths["cpu"], "cpu.cfs_quota_us")))
        period = _read_int(os.path.join(paths["cpu"], "cpu.cfs_period_us"))
        shares = _read_int(os.path.join(paths["cpu"], "cpu.shares"))
    else:
        unified = paths["unified"]
        quota_text, _, period_text = _read(os.path.join(unified, "cpu.max")).partition(" ")
        quota, period = _limit(quota_text), int(period_text)
        shares = shares_from_weight(_read_int(os.path.join(unified, "cpu.weight")))
    if "memory" in paths:
        memory = _limit(_read(os.path.join(paths["memory"], "memory.limit_in_bytes")))
    else:
        memory = _limit(_read(os.path.join(paths["unified"], "memory.max")))
    return Limits(
        cpu_quota_us=quota, cpu_period_us=period, cpu_shares=shares, memory_limit_bytes=memory
    )


# --- one cgroup ---------------------------------------------------------------------------


def _guard(paths: Mapping[str, str], what: str, errors: list[str], fn: Callable):
    """fn(paths), or None with the failure noted; CgroupGone when the cgroup vanished."""
    try:
        return fn(paths)
    except (OSError, ValueError, KeyError, StopIteration) as err:
        if not all(os.path.isdir(d) for d in paths.values()):
            raise CgroupGone(f"cgroup {next(iter(paths.values()), '?')} is gone") from err
        errors.append(f"{what}: {err}")
        return None


def read_cgroup(paths: Mapping[str, str], timestamp_ns: int) -> tuple[CgroupStats, list[str]]:
    """Every part of one cgroup at `timestamp_ns`, and what could not be read."""
    if not paths or not all(os.path.isdir(d) for d in paths.values()):
        raise CgroupGone(f"cgroup {dict(paths)} is gone")
    errors: list[str] = []
    cpu = _guard(paths, "cpu", errors, read_cpu)
    memory_oom = _guard(paths, "memory", errors, read_memory)
    processes = _guard(paths, "processes", errors, read_processes)
    limits = _guard(paths, "limits", errors, read_limits)
    memory, oom = memory_oom if memory_oom else (None, None)
    stats = CgroupStats(
        timestamp_ns=timestamp_ns,
        cpu=cpu,
        memory=memory,
        processes=processes,
        io_psi=_psi(paths, "io"),
        oom_kills=oom,
        limits=limits,
    )
    return stats, errors

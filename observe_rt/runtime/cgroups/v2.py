"""cgroup v2 files for checked resources (see the kernel's Documentation/admin-guide/cgroup-v2).

One hierarchy: every write goes to the container's directory in it. OCI values are v1
shaped, so some are converted as runc converts them:

    cpu.shares            -> cpu.weight       1 + (shares - 2) * 9999 / 262142
    cpu.quota, cpu.period -> cpu.max          "<quota|max> [<period>]"
    memory.swap (mem+swap) -> memory.swap.max  swap - limit, -1 -> "max"
    -1 anywhere           -> "max"

`unified` entries are raw "file name -> value" writes, applied last so they override.
"""

from __future__ import annotations

import re

from .resources import Resources, cpu_weight, swap_limit_v2

#: Controllers we turn on for containers (when the host offers them).
WANTED_CONTROLLERS = ("cpu", "cpuset", "io", "memory", "pids")
#: Controller names a unified key's prefix can refer to.
V2_CONTROLLERS = frozenset({"cpu", "cpuset", "io", "memory", "pids", "hugetlb", "rdma", "misc"})
#: Core files that would move processes or break the tree if set from a spec.
_FORBIDDEN = frozenset(
    {"cgroup.procs", "cgroup.threads", "cgroup.kill", "cgroup.subtree_control", "cgroup.type"}
)
_FILE_NAME = re.compile(r"^[a-z0-9_]+(\.[A-Za-z0-9_]+)+$")
_MEM = "linux.resources.memory"
_CPU = "linux.resources.cpu"


def _max(value: int) -> str:
    return "max" if value == -1 else str(value)


def _memory(res: Resources) -> list[tuple[str, str, str, bool]]:
    out = []
    swap = swap_limit_v2(res)
    if swap is not None:
        # memory.swap.max is missing when the kernel has no swap support; runc then skips
        # "unlimited" and "none" silently, and so do we (the write is optional).
        value = _max(swap)
        out.append(("memory.swap.max", value, f"{_MEM}.swap", value in ("max", "0")))
    if res.mem_limit is not None:
        out.append(("memory.max", _max(res.mem_limit), f"{_MEM}.limit", False))
    if res.mem_reservation is not None:
        out.append(("memory.low", _max(res.mem_reservation), f"{_MEM}.reservation", False))
    if res.swappiness is not None:
        res.warnings.append(f"{_MEM}.swappiness: cgroup v2 has no per-cgroup swappiness, ignored")
    if res.disable_oom_killer:
        res.warnings.append(f"{_MEM}.disableOOMKiller: not available on cgroup v2, ignored")
    return out


def _cpu(res: Resources) -> list[tuple[str, str, str, bool]]:
    out = []
    if res.cpu_shares is not None:
        out.append(("cpu.weight", str(cpu_weight(res.cpu_shares)), f"{_CPU}.shares", False))
    if res.cpu_quota is not None or res.cpu_period is not None:
        value = _max(res.cpu_quota) if res.cpu_quota is not None else "max"
        if res.cpu_period is not None:
            value += f" {res.cpu_period}"
        out.append(("cpu.max", value, f"{_CPU}.quota", False))
    if res.cpus is not None:
        out.append(("cpuset.cpus", res.cpus, f"{_CPU}.cpus", False))
    if res.mems is not None:
        out.append(("cpuset.mems", res.mems, f"{_CPU}.mems", False))
    return out


def check_unified_key(key: str, value: str, controllers: frozenset[str]) -> None:
    """Raise ValueError unless `key` is a plain cgroup v2 file name we may write."""
    where = f"linux.resources.unified[{key!r}]"
    if "/" in key or "\0" in key or ".." in key or not _FILE_NAME.match(key):
        raise ValueError(f"{where}: must be a plain cgroup file name like 'memory.high'")
    if key in _FORBIDDEN:
        raise ValueError(f"{where}: may not be set from a container spec")
    if "\n" in value.rstrip("\n") or "\0" in value:
        raise ValueError(f"{where}: value must be a single line, got {value!r}")
    prefix = key.split(".", 1)[0]
    if prefix in V2_CONTROLLERS and prefix not in controllers:
        have = " ".join(sorted(controllers)) or "none"
        raise ValueError(
            f"{where}: needs the {prefix!r} controller, which this host does not offer "
            f"(cgroup.controllers: {have})"
        )


def v2_writes(res: Resources, controllers: frozenset[str]) -> list[tuple[str, str, str, bool]]:
    """(file, value, OCI field, optional) for each v2 file to write, in order."""
    out = _memory(res) + _cpu(res)
    if res.pids_limit is not None:
        value = "max" if res.pids_limit in (0, -1) else str(res.pids_limit)
        out.append(("pids.max", value, "linux.resources.pids.limit", False))
    for key, value in res.unified.items():
        check_unified_key(key, value, controllers)
        out.append((key, value.rstrip("\n"), f"linux.resources.unified[{key!r}]", False))
    return out


def controller_of(file: str) -> str:
    """The controller a v2 interface file belongs to ("memory.max" -> "memory")."""
    return file.split(".", 1)[0]


def controllers_to_enable(available: frozenset[str]) -> list[str]:
    """The wanted controllers this host offers, in a stable order."""
    return [c for c in WANTED_CONTROLLERS if c in available]

"""cgroup v1 files for checked resources (see the kernel's Documentation/admin-guide/cgroup-v1).

Each v1 controller is its own hierarchy, so every write names the hierarchy it goes to.
Writes are ordered for a fresh cgroup: memory.limit_in_bytes before memsw (memsw must stay
>= the memory limit, and a new cgroup starts with both unlimited), cfs_period before
cfs_quota.
"""

from __future__ import annotations

from .resources import Resources

_MEM = "linux.resources.memory"
_CPU = "linux.resources.cpu"


def _memory(res: Resources, swap_accounting: bool) -> list[tuple[str, str, str, str]]:
    out = []
    if res.mem_limit is not None:
        out.append(("memory", "memory.limit_in_bytes", str(res.mem_limit), f"{_MEM}.limit"))
    if res.mem_reservation is not None:
        out.append(
            (
                "memory",
                "memory.soft_limit_in_bytes",
                str(res.mem_reservation),
                f"{_MEM}.reservation",
            )
        )
    swap = res.mem_swap
    if swap is None and res.mem_limit == -1:
        swap = -1  # unlimited memory with swap unset: unlimited memory+swap too (as runc)
    if swap is not None:
        if swap_accounting:
            out.append(("memory", "memory.memsw.limit_in_bytes", str(swap), f"{_MEM}.swap"))
        elif res.mem_swap is not None:
            res.warnings.append(
                f"{_MEM}.swap: swap accounting is off on this host "
                "(no memory.memsw.limit_in_bytes), the memory+swap limit is not applied"
            )
    if res.swappiness is not None:
        out.append(("memory", "memory.swappiness", str(res.swappiness), f"{_MEM}.swappiness"))
    if res.disable_oom_killer:
        out.append(("memory", "memory.oom_control", "1", f"{_MEM}.disableOOMKiller"))
    return out


def _cpu(res: Resources) -> list[tuple[str, str, str, str]]:
    out = []
    if res.cpu_shares is not None:
        out.append(("cpu", "cpu.shares", str(res.cpu_shares), f"{_CPU}.shares"))
    if res.cpu_period is not None:
        out.append(("cpu", "cpu.cfs_period_us", str(res.cpu_period), f"{_CPU}.period"))
    if res.cpu_quota is not None:
        out.append(("cpu", "cpu.cfs_quota_us", str(res.cpu_quota), f"{_CPU}.quota"))
    if res.cpus is not None:
        out.append(("cpuset", "cpuset.cpus", res.cpus, f"{_CPU}.cpus"))
    if res.mems is not None:
        out.append(("cpuset", "cpuset.mems", res.mems, f"{_CPU}.mems"))
    return out


def v1_writes(res: Resources, swap_accounting: bool) -> list[tuple[str, str, str, str]]:
    """(hierarchy, file, value, OCI field) for each v1 file to write, in order."""
    out = _memory(res, swap_accounting) + _cpu(res)
    if res.pids_limit is not None:
        value = "max" if res.pids_limit in (0, -1) else str(res.pids_limit)
        out.append(("pids", "pids.max", value, "linux.resources.pids.limit"))
    # Device rules apply in order: typically "deny everything", then the allowed nodes.
    for i, (allow, rule) in enumerate(res.device_rules):
        file = "devices.allow" if allow else "devices.deny"
        out.append(("devices", file, rule, f"linux.resources.devices[{i}]"))
    return out

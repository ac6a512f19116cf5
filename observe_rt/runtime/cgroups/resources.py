"""Validate an OCI `linux.resources` object into plain, checked values.

The OCI runtime spec (config-linux.md) models resources on cgroup v1; v1.py and v2.py turn
the checked values into file writes for each cgroup version. Every error is a ValueError
whose message starts with the field at fault, e.g.
"linux.resources.memory.limit: must be positive (or -1 for unlimited), got -5".

Conventions kept from runc: 0 means "not set" for memory and cpu numbers, -1 means
"unlimited"; pids.limit 0 or -1 means unlimited.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

_CPU_LIST = re.compile(r"^\d+(-\d+)?(,\d+(-\d+)?)*$")
#: CFS bandwidth bounds the kernel enforces (kernel/sched/core.c): 1 ms .. 1 s period.
MIN_CFS_US = 1000
MAX_CFS_PERIOD_US = 1_000_000
#: OCI fields we read but do not apply; a non-empty value yields a warning.
_UNSUPPORTED = {
    "memory": ("kernel", "kernelTCP", "useHierarchy", "checkBeforeUpdate"),
    "cpu": ("realtimeRuntime", "realtimePeriod", "burst", "idle"),
    "": ("blockIO", "hugepageLimits", "network", "rdma"),
}
_PREFIX = "linux.resources"


@dataclass
class Resources:
    """Checked resource values; None means "leave the kernel's default"."""

    mem_limit: int | None = None
    mem_reservation: int | None = None
    mem_swap: int | None = None
    swappiness: int | None = None
    disable_oom_killer: bool = False
    cpu_shares: int | None = None
    cpu_quota: int | None = None
    cpu_period: int | None = None
    cpus: str | None = None
    mems: str | None = None
    pids_limit: int | None = None
    # Device rules in order, as (allow?, "type major:minor access"), e.g. (False, "a *:* rwm").
    device_rules: list[tuple[bool, str]] = field(default_factory=list)
    unified: dict[str, str] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)


def _int(obj: dict, key: str, where: str) -> int | None:
    value = obj.get(key)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValueError(f"{where}.{key}: must be an integer, got {value!r}")
    return value


def _limit(obj: dict, key: str, where: str) -> int | None:
    """A byte or count limit: positive, or -1 for unlimited; 0 means unset."""
    value = _int(obj, key, where)
    if value is None or value == 0:
        return None
    if value < -1:
        raise ValueError(f"{where}.{key}: must be positive (or -1 for unlimited), got {value}")
    return value


def _section(resources: dict, key: str) -> dict:
    value = resources.get(key)
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise ValueError(f"{_PREFIX}.{key}: must be an object, got {value!r}")
    return value


def _parse_memory(mem: dict, res: Resources) -> None:
    where = f"{_PREFIX}.memory"
    res.mem_limit = _limit(mem, "limit", where)
    res.mem_reservation = _limit(mem, "reservation", where)
    res.mem_swap = _limit(mem, "swap", where)
    swappiness = _int(mem, "swappiness", where)
    if swappiness is not None and not 0 <= swappiness <= 100:
        raise ValueError(f"{where}.swappiness: must be between 0 and 100, got {swappiness}")
    res.swappiness = swappiness
    disable = mem.get("disableOOMKiller", False)
    if not isinstance(disable, bool):
        raise ValueError(f"{where}.disableOOMKiller: must be true or false, got {disable!r}")
    res.disable_oom_killer = disable
    if res.mem_swap is not None:
        swap_limit_v2(res)  # validates swap against limit


def _cpu_list(cpu: dict, key: str, where: str) -> str | None:
    value = cpu.get(key)
    if value is None or value == "":
        return None
    if not isinstance(value, str) or not _CPU_LIST.match(value):
        raise ValueError(f"{where}.{key}: must be a list like '0-3,5', got {value!r}")
    return value


def _parse_cpu(cpu: dict, res: Resources) -> None:
    where = f"{_PREFIX}.cpu"
    shares = _int(cpu, "shares", where)
    if shares is not None and shares < 0:
        raise ValueError(f"{where}.shares: must not be negative, got {shares}")
    res.cpu_shares = shares or None
    quota = _limit(cpu, "quota", where)
    if quota is not None and quota != -1 and quota < MIN_CFS_US:
        raise ValueError(f"{where}.quota: must be at least {MIN_CFS_US} (µs) or -1, got {quota}")
    res.cpu_quota = quota
    period = _int(cpu, "period", where)
    if period:
        if not MIN_CFS_US <= period <= MAX_CFS_PERIOD_US:
            raise ValueError(
                f"{where}.period: must be between {MIN_CFS_US} and {MAX_CFS_PERIOD_US} (µs), "
                f"got {period}"
            )
        res.cpu_period = period
    res.cpus = _cpu_list(cpu, "cpus", where)
    res.mems = _cpu_list(cpu, "mems", where)


def _parse_pids(pids: dict, res: Resources) -> None:
    limit = _int(pids, "limit", f"{_PREFIX}.pids")
    if limit is not None and limit < -1:
        raise ValueError(
            f"{_PREFIX}.pids.limit: must be positive (or 0/-1 for unlimited), got {limit}"
        )
    res.pids_limit = limit


def _parse_unified(resources: dict, res: Resources) -> None:
    unified = resources.get("unified")
    if unified is None:
        return
    if not isinstance(unified, dict):
        raise ValueError(f"{_PREFIX}.unified: must be an object, got {unified!r}")
    for key, value in unified.items():
        if not isinstance(value, str):
            raise ValueError(f"{_PREFIX}.unified[{key!r}]: value must be a string, got {value!r}")
    res.unified = dict(unified)


# What runc allows after a spec's own device rules: creating any node (m), and the usual
# character devices (null, zero, full, random, urandom, tty, console pts, ptmx, tun).
RUNTIME_ALLOWED_DEVICES = (
    "c *:* m", "b *:* m", "c 1:3 rwm", "c 1:5 rwm", "c 1:7 rwm", "c 1:8 rwm", "c 1:9 rwm",
    "c 5:0 rwm", "c 136:* rwm", "c 5:2 rwm", "c 10:200 rwm",
)  # fmt: skip


def _parse_devices(rules: list, res: Resources) -> None:
    """The device cgroup rules (runc's format: type a/c/b, major/minor or wildcard, rwm)."""
    if not isinstance(rules, list):
        raise ValueError(f"{_PREFIX}.devices: must be a list")
    for i, rule in enumerate(rules):
        where = f"{_PREFIX}.devices[{i}]"
        if not isinstance(rule, dict) or not isinstance(rule.get("allow"), bool):
            raise ValueError(f'{where}: needs a boolean "allow"')
        kind = rule.get("type") or "a"
        access = rule.get("access") or "rwm"
        if kind not in ("a", "c", "b") or not set(access) <= set("rwm"):
            raise ValueError(f"{where}: type must be a, c or b and access from rwm")
        numbers = []
        for key in ("major", "minor"):
            value = rule.get(key)
            if value is not None and (not isinstance(value, int) or value < 0):
                raise ValueError(f"{where}.{key}: must be a non-negative integer")
            numbers.append("*" if value is None or value == -1 else str(value))
        res.device_rules.append((rule["allow"], f"{kind} {numbers[0]}:{numbers[1]} {access}"))
    if res.device_rules:
        res.device_rules += [(True, rule) for rule in RUNTIME_ALLOWED_DEVICES]


def _warn_unsupported(resources: dict, res: Resources) -> None:
    for section, keys in _UNSUPPORTED.items():
        obj = _section(resources, section) if section else resources
        for key in keys:
            if obj.get(key):
                name = f"{_PREFIX}.{section}.{key}" if section else f"{_PREFIX}.{key}"
                res.warnings.append(f"{name}: not supported by observe-rt, ignored")


def parse_resources(resources: dict | None) -> Resources:
    """Check an OCI `linux.resources` object (None or {} means no limits)."""
    res = Resources()
    if not resources:
        return res
    if not isinstance(resources, dict):
        raise ValueError(f"{_PREFIX}: must be an object, got {resources!r}")
    _parse_memory(_section(resources, "memory"), res)
    _parse_cpu(_section(resources, "cpu"), res)
    _parse_pids(_section(resources, "pids"), res)
    _parse_devices(resources.get("devices") or [], res)
    _parse_unified(resources, res)
    _warn_unsupported(resources, res)
    return res


def swap_limit_v2(res: Resources) -> int | None:
    """memory.swap.max from OCI's memory+swap total, as runc converts it.

    OCI `swap` is memory+swap (the v1 memsw meaning); cgroup v2 limits swap alone, so the
    v2 value is swap - limit. -1 stays -1 (unlimited); an unlimited memory limit with no
    swap set means unlimited swap too. None means "leave memory.swap.max alone".
    """
    swap, limit = res.mem_swap, res.mem_limit
    where = f"{_PREFIX}.memory.swap"
    if swap is None:
        return -1 if limit == -1 else None
    if swap == -1 or limit == -1:
        return swap
    if limit is None:
        raise ValueError(f"{where}: cannot limit swap without a memory limit")
    if swap < limit:
        raise ValueError(f"{where}: memory+swap ({swap}) must be >= memory.limit ({limit})")
    return swap - limit


def cpu_weight(shares: int) -> int:
    """cgroup v2 cpu.weight [1, 10000] for v1 cpu.shares [2, 262144] (runc's linear map)."""
    shares = min(max(shares, 2), 262144)
    return 1 + ((shares - 2) * 9999) // 262142

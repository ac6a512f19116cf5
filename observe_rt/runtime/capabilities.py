"""Linux capability names and numbers (linux/capability.h), and the containerd default set.

Stdlib only: the container init helper imports this.
"""

from __future__ import annotations

CAPABILITIES = (
    "CAP_CHOWN", "CAP_DAC_OVERRIDE", "CAP_DAC_READ_SEARCH", "CAP_FOWNER", "CAP_FSETID",
    "CAP_KILL", "CAP_SETGID", "CAP_SETUID", "CAP_SETPCAP", "CAP_LINUX_IMMUTABLE",
    "CAP_NET_BIND_SERVICE", "CAP_NET_BROADCAST", "CAP_NET_ADMIN", "CAP_NET_RAW",
    "CAP_IPC_LOCK", "CAP_IPC_OWNER", "CAP_SYS_MODULE", "CAP_SYS_RAWIO", "CAP_SYS_CHROOT",
    "CAP_SYS_PTRACE", "CAP_SYS_PACCT", "CAP_SYS_ADMIN", "CAP_SYS_BOOT", "CAP_SYS_NICE",
    "CAP_SYS_RESOURCE", "CAP_SYS_TIME", "CAP_SYS_TTY_CONFIG", "CAP_MKNOD", "CAP_LEASE",
    "CAP_AUDIT_WRITE", "CAP_AUDIT_CONTROL", "CAP_SETFCAP", "CAP_MAC_OVERRIDE",
    "CAP_MAC_ADMIN", "CAP_SYSLOG", "CAP_WAKE_ALARM", "CAP_BLOCK_SUSPEND", "CAP_AUDIT_READ",
    "CAP_PERFMON", "CAP_BPF", "CAP_CHECKPOINT_RESTORE",
)  # fmt: skip
CAP_NUMBER = {name: number for number, name in enumerate(CAPABILITIES)}

# containerd's and moby's default set for unprivileged containers.
DEFAULT_CAPABILITIES = (
    "CAP_CHOWN", "CAP_DAC_OVERRIDE", "CAP_FSETID", "CAP_FOWNER", "CAP_MKNOD", "CAP_NET_RAW",
    "CAP_SETGID", "CAP_SETUID", "CAP_SETFCAP", "CAP_SETPCAP", "CAP_NET_BIND_SERVICE",
    "CAP_SYS_CHROOT", "CAP_KILL", "CAP_AUDIT_WRITE",
)  # fmt: skip

CAP_SETS = ("bounding", "effective", "inheritable", "permitted", "ambient")


def last_cap(proc: str = "/proc") -> int:
    """The highest capability number the running kernel knows."""
    try:
        with open(f"{proc}/sys/kernel/cap_last_cap") as f:
            return int(f.read())
    except OSError:
        return len(CAPABILITIES) - 1


def held(proc: str = "/proc") -> tuple[str, ...]:
    """The capabilities this process holds (CapEff): what a privileged container can get.

    containerd gives privileged containers the runtime's own set, not every known name: a
    runtime confined by its own bounding set (as in some VMs and nested containers) cannot
    grant more, and asking for it fails the capset(2) in the container's init.
    """
    try:
        with open(f"{proc}/self/status") as f:
            line = next(line for line in f if line.startswith("CapEff:"))
    except (OSError, StopIteration):
        return CAPABILITIES
    mask = int(line.split(":", 1)[1], 16)
    return tuple(name for number, name in enumerate(CAPABILITIES) if mask >> number & 1)


def to_mask(names: list[str], kernel_last_cap: int) -> int:
    """Bit mask of known capability names; ones newer than the kernel are dropped, as runc does."""
    mask = 0
    for name in names:
        number = CAP_NUMBER[name]
        if number <= kernel_last_cap:
            mask |= 1 << number
    return mask

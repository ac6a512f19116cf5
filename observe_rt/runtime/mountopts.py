"""OCI mount options -> mount(2) flags, propagation flags and filesystem data.

Stdlib only: the container init helper imports this.
"""

from __future__ import annotations

from observe_rt.host import libc

# option -> (clear this flag?, flag). Mirrors mount(8) and runc.
_FLAGS: dict[str, tuple[bool, int]] = {
    "ro": (False, libc.MS_RDONLY), "rw": (True, libc.MS_RDONLY),
    "nosuid": (False, libc.MS_NOSUID), "suid": (True, libc.MS_NOSUID),
    "nodev": (False, libc.MS_NODEV), "dev": (True, libc.MS_NODEV),
    "noexec": (False, libc.MS_NOEXEC), "exec": (True, libc.MS_NOEXEC),
    "sync": (False, libc.MS_SYNCHRONOUS), "async": (True, libc.MS_SYNCHRONOUS),
    "dirsync": (False, libc.MS_DIRSYNC),
    "remount": (False, libc.MS_REMOUNT),
    "mand": (False, libc.MS_MANDLOCK), "nomand": (True, libc.MS_MANDLOCK),
    "noatime": (False, libc.MS_NOATIME), "atime": (True, libc.MS_NOATIME),
    "nodiratime": (False, libc.MS_NODIRATIME), "diratime": (True, libc.MS_NODIRATIME),
    "relatime": (False, libc.MS_RELATIME), "norelatime": (True, libc.MS_RELATIME),
    "strictatime": (False, libc.MS_STRICTATIME), "nostrictatime": (True, libc.MS_STRICTATIME),
    "nosymfollow": (False, libc.MS_NOSYMFOLLOW),
    "bind": (False, libc.MS_BIND), "rbind": (False, libc.MS_BIND | libc.MS_REC),
}  # fmt: skip

_PROPAGATION: dict[str, int] = {
    "private": libc.MS_PRIVATE, "rprivate": libc.MS_PRIVATE | libc.MS_REC,
    "shared": libc.MS_SHARED, "rshared": libc.MS_SHARED | libc.MS_REC,
    "slave": libc.MS_SLAVE, "rslave": libc.MS_SLAVE | libc.MS_REC,
    "unbindable": libc.MS_UNBINDABLE, "runbindable": libc.MS_UNBINDABLE | libc.MS_REC,
}  # fmt: skip

# Options that only matter to other tools (containerd's tmpcopyup, idmap helpers ...).
_IGNORED = {"tmpcopyup", "defaults"}


def parse(options: list[str]) -> tuple[int, list[int], str]:
    """Return (flags, propagation flags in order, data) for a list of OCI mount options."""
    flags = 0
    propagation: list[int] = []
    data: list[str] = []
    for option in options:
        if option in _FLAGS:
            clear, flag = _FLAGS[option]
            flags = flags & ~flag if clear else flags | flag
        elif option in _PROPAGATION:
            propagation.append(_PROPAGATION[option])
        elif option not in _IGNORED:
            data.append(option)
    return flags, propagation, ",".join(data)

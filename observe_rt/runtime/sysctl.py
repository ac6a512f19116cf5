"""Which sysctls a container may set, and where each one is written.

Only namespaced sysctls are allowed (the kernel applies them to the container's own IPC, UTS or
network namespace); anything else would change the host. Each key is written to its own file
under /proc/sys, so a value can never smuggle in a second key (the CVE-2022-0811 class), and
values carrying separators are refused outright.
"""

from __future__ import annotations

_IPC_KEYS = {
    "kernel.msgmax", "kernel.msgmnb", "kernel.msgmni", "kernel.sem", "kernel.shmall",
    "kernel.shmmax", "kernel.shmmni", "kernel.shm_rmid_forced",
}  # fmt: skip
_UTS_KEYS = {"kernel.hostname", "kernel.domainname"}
_FORBIDDEN_VALUE_CHARS = ("\n", "\r", "\0", "=", "+", ",")


def required_namespace(key: str) -> str | None:
    """The namespace type that makes `key` safe to set, or None when it is not namespaced."""
    if key in _IPC_KEYS or key.startswith("fs.mqueue."):
        return "ipc"
    if key in _UTS_KEYS:
        return "uts"
    if key.startswith("net."):
        return "network"
    return None


def proc_path(key: str) -> str:
    """kernel.shm_rmid_forced -> kernel/shm_rmid_forced.

    Kubernetes also accepts '/' as the separator, and then a '.' is literal
    (net/ipv4/conf/eth0.100/rp_filter), as in sysctl(8).
    """
    return key if "/" in key else key.replace(".", "/")


def validate(sysctls: dict, new_namespaces: set[str]) -> None:
    """Raise ValueError naming the key when a sysctl is not allowed."""
    for key, value in sysctls.items():
        where = f"linux.sysctl[{key!r}]"
        if not isinstance(value, str):
            raise ValueError(f"{where}: value must be a string")
        components = proc_path(key).split("/")
        if not key or any(part in ("", ".", "..") for part in components):
            raise ValueError(f"{where}: malformed key")
        namespace = required_namespace(".".join(components))
        if namespace is None:
            raise ValueError(f"{where}: not a namespaced sysctl; it would change the host")
        if namespace not in new_namespaces:
            raise ValueError(
                f"{where}: needs a new {namespace} namespace, but the container shares the host's"
            )
        if any(char in value for char in _FORBIDDEN_VALUE_CHARS):
            raise ValueError(f"{where}: value {value!r} contains a separator character")

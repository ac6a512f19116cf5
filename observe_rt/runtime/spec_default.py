"""A default OCI runtime spec with containerd's defaults (what `observe-rt oci spec` writes).

Capabilities, masked and read-only paths, mounts and namespaces follow containerd's
oci/spec.go and moby's defaults, so a bundle made here behaves as one made by containerd.
"""

from __future__ import annotations

from observe_rt.runtime.capabilities import DEFAULT_CAPABILITIES

MASKED_PATHS = (
    "/proc/acpi", "/proc/asound", "/proc/kcore", "/proc/keys", "/proc/latency_stats",
    "/proc/timer_list", "/proc/timer_stats", "/proc/sched_debug", "/proc/scsi",
    "/sys/firmware", "/sys/devices/virtual/powercap",
)  # fmt: skip
READONLY_PATHS = ("/proc/bus", "/proc/fs", "/proc/irq", "/proc/sys", "/proc/sysrq-trigger")
DEFAULT_PATH_ENV = "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"


def default_mounts() -> list[dict]:
    nosuid_noexec_nodev = ["nosuid", "noexec", "nodev"]
    return [
        {"destination": "/proc", "type": "proc", "source": "proc",
         "options": nosuid_noexec_nodev},
        {"destination": "/dev", "type": "tmpfs", "source": "tmpfs",
         "options": ["nosuid", "strictatime", "mode=755", "size=65536k"]},
        {"destination": "/dev/pts", "type": "devpts", "source": "devpts",
         "options": ["nosuid", "noexec", "newinstance", "ptmxmode=0666", "mode=0620", "gid=5"]},
        {"destination": "/dev/shm", "type": "tmpfs", "source": "shm",
         "options": [*nosuid_noexec_nodev, "mode=1777", "size=65536k"]},
        {"destination": "/dev/mqueue", "type": "mqueue", "source": "mqueue",
         "options": nosuid_noexec_nodev},
        {"destination": "/sys", "type": "sysfs", "source": "sysfs",
         "options": [*nosuid_noexec_nodev, "ro"]},
        {"destination": "/sys/fs/cgroup", "type": "cgroup", "source": "cgroup",
         "options": [*nosuid_noexec_nodev, "relatime", "ro"]},
    ]  # fmt: skip


def default_spec(
    args: list[str] | None = None, rootfs: str = "rootfs", seccomp: dict | None = None
) -> dict:
    """A complete config.json dict; pass a seccomp profile to confine syscalls."""
    caps = list(DEFAULT_CAPABILITIES)
    linux: dict = {
        "namespaces": [{"type": t} for t in ("pid", "network", "ipc", "uts", "mount", "cgroup")],
        "maskedPaths": list(MASKED_PATHS),
        "readonlyPaths": list(READONLY_PATHS),
        "resources": {},
    }
    if seccomp is not None:
        linux["seccomp"] = seccomp
    return {
        "ociVersion": "1.2.0",
        "process": {
            "terminal": False,
            "user": {"uid": 0, "gid": 0},
            "args": args or ["sh"],
            "env": [DEFAULT_PATH_ENV, "TERM=xterm"],
            "cwd": "/",
            "capabilities": {"bounding": caps, "effective": caps, "permitted": caps},
            "rlimits": [{"type": "RLIMIT_NOFILE", "hard": 1024, "soft": 1024}],
            "noNewPrivileges": True,
        },
        "root": {"path": rootfs, "readonly": False},
        "hostname": "observe-rt",
        "mounts": default_mounts(),
        "linux": linux,
    }

"""AppArmor and SELinux: which are active, and labelling the workload's exec.

A profile or label the spec asks for is applied when its LSM is active, and refused with a
clear error when it is not: silently running unconfined would hide a security gap.
Stdlib only: the container init helper imports this.
"""

from __future__ import annotations

import os


def active(sys_root: str = "/sys") -> set[str]:
    found = set()
    try:
        with open(os.path.join(sys_root, "module/apparmor/parameters/enabled")) as f:
            if f.read().strip() == "Y":
                found.add("apparmor")
    except OSError:
        pass
    if os.path.exists(os.path.join(sys_root, "fs/selinux/enforce")):
        found.add("selinux")
    return found


def validate(apparmor_profile: str, selinux_label: str, mount_label: str, lsms: set[str]) -> None:
    """Raise ValueError naming the field when a requested LSM is not active."""
    if apparmor_profile and "apparmor" not in lsms:
        raise ValueError(
            f"process.apparmorProfile: AppArmor is not enabled on this host "
            f"(profile {apparmor_profile!r} requested)"
        )
    for field, label in (("process.selinuxLabel", selinux_label),
                         ("linux.mountLabel", mount_label)):  # fmt: skip
        if label and "selinux" not in lsms:
            raise ValueError(f"{field}: SELinux is not enabled on this host ({label!r} requested)")


def set_exec_labels(apparmor_profile: str, selinux_label: str) -> None:
    """Ask the kernel to switch profile/label at our next execve (the workload's)."""
    if apparmor_profile:
        path = "/proc/thread-self/attr/apparmor/exec"
        if not os.path.exists(path):
            path = "/proc/thread-self/attr/exec"
        with open(path, "w") as f:
            f.write(f"exec {apparmor_profile}")
    if selinux_label:
        with open("/proc/thread-self/attr/exec", "w") as f:
            f.write(selinux_label)

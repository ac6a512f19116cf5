"""Decisions about what running containers needs: kernel, cgroups, overlayfs, namespaces,
seccomp, plus the optional extras (CNI plugins, oom_score_adj, ip_forward, LSMs).

Each function reads files under a Tree and takes active-probe outcomes as arguments (None =
not probed), and returns Checks. Nothing here calls the kernel.
"""

from __future__ import annotations

import gzip
import os
import re

from observe_rt.doctor import cgroup_layout
from observe_rt.doctor.model import Check, Outcome, Status, Tree, verdict

# openat2 (5.6) resolves rootfs paths safely in host/libc; the BPF ring buffer needs 5.8.
MIN_KERNEL = (5, 6)
MIN_KERNEL_PROBES = (5, 8)

# name -> (file in /proc/self/ns, CLONE_* flag name, required to run containers)
NAMESPACES = {
    "pid": ("pid", "CLONE_NEWPID", True),
    "net": ("net", "CLONE_NEWNET", True),
    "mount": ("mnt", "CLONE_NEWNS", True),
    "ipc": ("ipc", "CLONE_NEWIPC", True),
    "uts": ("uts", "CLONE_NEWUTS", True),
    "cgroup": ("cgroup", "CLONE_NEWCGROUP", True),
    # User namespaces serve only userns pods, which observe-rt does not run by default.
    "user": ("user", "CLONE_NEWUSER", False),
}

CNI_DIRS = ("/opt/cni/bin", "/usr/lib/cni")
CNI_NEEDED = ("bridge", "host-local", "loopback")


def kernel_release(tree: Tree) -> str:
    return (tree.read("proc/sys/kernel/osrelease") or "").strip() or "unknown"


def parse_version(release: str) -> tuple[int, int]:
    match = re.match(r"(\d+)\.(\d+)", release)
    return (int(match[1]), int(match[2])) if match else (0, 0)


def check_kernel(tree: Tree) -> Check:
    release = kernel_release(tree)
    version = parse_version(release)
    if version < MIN_KERNEL:
        return Check(
            "kernel",
            Status.FAIL,
            True,
            f"{release}: older than 5.6 (openat2)",
            "boot a kernel >= 5.6 (>= 5.8 for probes)",
        )
    if version < MIN_KERNEL_PROBES:
        return Check(
            "kernel",
            Status.WARN,
            True,
            f"{release}: no BPF ring buffer (needs 5.8)",
            "boot a kernel >= 5.8 for eBPF probes",
        )
    return Check("kernel", Status.OK, True, release)


def check_cgroups(tree: Tree) -> list[Check]:
    layout = cgroup_layout.detect(tree)
    return [_cgroup_mode(layout), _cgroup_controllers(layout)]


def _cgroup_mode(layout: cgroup_layout.CgroupView) -> Check:
    controllers = " ".join(layout.v2_controllers) or "none"
    v2 = f"cgroup2 at {layout.v2_mount} (controllers: {controllers})"
    if layout.mode == "v2":
        return Check("cgroup mode", Status.OK, True, f"v2: {v2}")
    if layout.mode == "hybrid":
        points = {os.path.dirname(p) for p in layout.v1.values()}
        return Check(
            "cgroup mode",
            Status.OK,
            True,
            f"hybrid: v1 controllers under {', '.join(sorted(points))}, {v2}",
        )
    if layout.mode == "v1":
        # Containers run, but probes key every event by cgroup2 id.
        return Check(
            "cgroup mode",
            Status.WARN,
            True,
            "v1: no cgroup2 mounted",
            "mkdir -p /sys/fs/cgroup/unified && mount -t cgroup2 cgroup2 /sys/fs/cgroup/unified",
        )
    return Check(
        "cgroup mode",
        Status.FAIL,
        True,
        "none: no cgroup filesystem mounted",
        "mount -t cgroup2 cgroup2 /sys/fs/cgroup (or boot with systemd)",
    )


def _cgroup_controllers(layout: cgroup_layout.CgroupView) -> Check:
    usable = layout.usable()
    parts = []
    if layout.v1:
        parts.append(f"v1: {' '.join(sorted(layout.v1))}")
    if layout.v2_controllers:
        parts.append(f"v2: {' '.join(layout.v2_controllers)}")
    detail = "; ".join(parts) or "none"
    missing = [c for c in cgroup_layout.NEEDED if c not in usable]
    if missing:
        return Check(
            "cgroup controllers",
            Status.FAIL,
            True,
            f"missing {' '.join(missing)} ({detail})",
            f"enable the {' '.join(missing)} controller(s) (kernel config or "
            "cgroup_enable= on the kernel command line)",
        )
    optional = cgroup_layout.OPTIONAL_V1 if layout.mode in ("v1", "hybrid") else ()
    optional = optional or cgroup_layout.OPTIONAL_V2
    absent = [c for c in optional if c not in usable]
    if absent:
        return Check(
            "cgroup controllers",
            Status.WARN,
            True,
            f"{detail}; no {' '.join(absent)}",
            f"mount/enable {' '.join(absent)} to apply those limits",
        )
    return Check("cgroup controllers", Status.OK, True, detail)


def check_overlayfs(tree: Tree) -> Check:
    filesystems = tree.read("proc/filesystems") or ""
    present = any(line.split()[-1:] == ["overlay"] for line in filesystems.splitlines())
    return verdict(
        "overlayfs",
        present,
        True,
        "overlay in /proc/filesystems" if present else "overlay not in /proc/filesystems",
        "modprobe overlay (kernel needs CONFIG_OVERLAY_FS)",
    )


def check_namespaces(tree: Tree, probed: dict[str, Outcome] | None) -> list[Check]:
    checks = []
    for name, (ns_file, flag, required) in NAMESPACES.items():
        kernel_has = tree.exists(f"proc/self/ns/{ns_file}")
        outcome = probed.get(name) if probed is not None else None
        if not kernel_has:
            ok, detail = False, f"no /proc/self/ns/{ns_file}: kernel lacks it"
        elif outcome is None:
            ok, detail = True, f"/proc/self/ns/{ns_file} present (unshare not probed)"
        else:
            ok = outcome.ok
            detail = f"unshare({flag}) {'works' if ok else 'failed: ' + outcome.detail}"
        fix = (
            f"enable CONFIG_{name.upper()}_NS"
            if not kernel_has
            else "run as root outside a restricting container/LSM policy"
        )
        if name == "user" and kernel_has:
            fix = "sysctl -w user.max_user_namespaces=15000"
        checks.append(verdict(f"namespace {name}", ok, required, detail, fix))
    return checks


def check_seccomp(tree: Tree, probed: Outcome | None) -> Check:
    status = tree.read("proc/self/status") or ""
    has_mode = re.search(r"^Seccomp:", status, re.M) is not None
    has_filter = tree.exists("proc/sys/kernel/seccomp/actions_avail")
    if not (has_mode and has_filter):
        return verdict(
            "seccomp",
            False,
            True,
            "kernel lacks seccomp filters",
            "boot a kernel with CONFIG_SECCOMP_FILTER=y",
        )
    if probed is None:
        return verdict("seccomp", True, True, "seccomp filter mode present (not probed)", "")
    detail = "a filter installs" if probed.ok else f"installing a filter failed: {probed.detail}"
    return verdict(
        "seccomp",
        probed.ok,
        True,
        detail,
        "run as root (or with no_new_privs) outside a seccomp-restricted parent",
    )


def check_cni(tree: Tree) -> Check:
    found = {}
    for directory in CNI_DIRS:
        for plugin in CNI_NEEDED:
            if plugin not in found and tree.is_executable(f"{directory}/{plugin}"):
                found[plugin] = directory
    missing = [p for p in CNI_NEEDED if p not in found]
    where = sorted(set(found.values()))
    detail = (
        f"{' '.join(CNI_NEEDED)} in {', '.join(where)}"
        if not missing
        else f"missing {' '.join(missing)} in {' and '.join(CNI_DIRS)}"
    )
    # Pods on the host network and `observe-rt oci` run without CNI: a warning only.
    return verdict(
        "cni plugins", not missing, False, detail, "apt-get install containernetworking-plugins"
    )


def check_oom_score_adj(probed: Outcome | None) -> Check:
    if probed is None:
        return Check(
            "oom_score_adj", Status.WARN, False, "not probed", "run doctor without --root to probe"
        )
    detail = (
        "a negative value can be written"
        if probed.ok
        else f"writing -500 failed: {probed.detail}; containers keep a score >= 0"
    )
    return verdict(
        "oom_score_adj",
        probed.ok,
        False,
        detail,
        "grant CAP_SYS_RESOURCE (not fatal: the runtime only warns)",
    )


def check_ip_forward(tree: Tree) -> Check:
    value = (tree.read("proc/sys/net/ipv4/ip_forward") or "").strip()
    return verdict(
        "ip_forward",
        value == "1",
        False,
        f"net.ipv4.ip_forward = {value or '?'}",
        "sysctl -w net.ipv4.ip_forward=1 (pods need it to reach other hosts)",
    )


def check_lsm(tree: Tree, probed: Outcome | None) -> Check:
    """Active LSMs: securityfs if mounted, else the probe's private mount, else CONFIG_LSM."""
    text = tree.read("sys/kernel/security/lsm")
    if text is not None:
        return Check("lsm", Status.OK, False, f"{text.strip()} (/sys/kernel/security/lsm)")
    if probed is not None and probed.ok:
        return Check(
            "lsm",
            Status.OK,
            False,
            f"{probed.detail.strip()} (securityfs mounted in a private namespace)",
        )
    configured = _config_lsm(tree)
    if configured:
        return Check(
            "lsm",
            Status.WARN,
            False,
            f"configured {configured} (active list unknown)",
            "mount -t securityfs securityfs /sys/kernel/security",
        )
    reason = f": {probed.detail}" if probed is not None else ""
    return Check(
        "lsm",
        Status.WARN,
        False,
        f"unknown, securityfs not mounted{reason}",
        "mount -t securityfs securityfs /sys/kernel/security",
    )


def _config_lsm(tree: Tree) -> str | None:
    raw = tree.read_bytes("proc/config.gz")
    if raw is None:
        return None
    try:
        config = gzip.decompress(raw).decode(errors="replace")
    except (OSError, EOFError):
        return None
    match = re.search(r'^CONFIG_LSM="([^"]*)"', config, re.M)
    return match[1] if match else None

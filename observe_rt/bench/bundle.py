"""OCI bundles built from Debian's busybox-static, and removal of the cgroups they leave.

Shared by the benchmarks and the integration tests (tests/support/bundles.py re-exports these),
so both run containers on the same rootfs.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

from observe_rt.runtime.spec_default import default_spec

BUSYBOX = shutil.which("busybox") or "/bin/busybox"
CGROUP_MOUNT = "/sys/fs/cgroup"
# A version every compared runtime accepts: crun 1.8 rejects "1.2.0" before looking at anything
# else. The default spec uses only fields that exist since 1.0.
BENCH_OCI_VERSION = "1.0.2"


def make_busybox_rootfs(root: Path) -> Path:
    """A minimal rootfs: static busybox with every applet linked, /etc/passwd and /etc/group."""
    for d in ("bin", "etc", "proc", "sys", "dev", "tmp", "root"):
        (root / d).mkdir(parents=True, exist_ok=True)
    shutil.copy2(BUSYBOX, root / "bin" / "busybox")
    applets = subprocess.run([BUSYBOX, "--list"], capture_output=True, text=True, check=True)
    for applet in applets.stdout.split():
        link = root / "bin" / applet
        if not link.exists():
            link.symlink_to("busybox")
    (root / "etc" / "passwd").write_text(
        "root:x:0:0:root:/root:/bin/sh\nuser:x:1000:1000:user:/tmp:/bin/sh\n"
    )
    (root / "etc" / "group").write_text("root:x:0:\nuser:x:1000:\nextra:x:2000:\n")
    (root / "tmp").chmod(0o1777)
    return root


def write_bench_bundle(bundle: Path, rootfs: Path, args: list[str], cgroups_path: str) -> Path:
    """A bundle dir whose config.json is the default spec running `args` on the shared rootfs."""
    spec = default_spec(args, rootfs=str(rootfs.resolve()))
    spec["ociVersion"] = BENCH_OCI_VERSION
    spec["linux"]["cgroupsPath"] = cgroups_path
    bundle.mkdir(parents=True)
    (bundle / "config.json").write_text(json.dumps(spec, indent=1))
    return bundle


def cgroup_dirs(cgroup_path: str, mount: str = CGROUP_MOUNT) -> list[str]:
    """Every existing directory for `cgroup_path` across the host's cgroup hierarchies."""
    found = []
    for hierarchy in os.listdir(mount):
        path = os.path.join(mount, hierarchy, cgroup_path.lstrip("/"))
        if os.path.isdir(path):
            found.append(path)
    if os.path.exists(os.path.join(mount, "cgroup.controllers")):  # pure v2
        path = os.path.join(mount, cgroup_path.lstrip("/"))
        if os.path.isdir(path):
            found.append(path)
    return found


def remove_cgroup_tree(cgroup_path: str, mount: str = CGROUP_MOUNT) -> None:
    """Best-effort removal of a cgroup parent in every hierarchy: leaf first, stragglers killed."""
    for top in cgroup_dirs(cgroup_path, mount):
        for dirpath, _dirs, _files in sorted(os.walk(top), key=lambda w: -len(w[0])):
            procs = os.path.join(dirpath, "cgroup.procs")
            try:
                for pid in Path(procs).read_text().split():
                    os.kill(int(pid), 9)
            except (OSError, ValueError):
                pass
            try:
                os.rmdir(dirpath)
            except OSError:
                pass

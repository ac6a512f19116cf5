"""Build OCI bundles from Debian's busybox-static for the integration tests."""

from __future__ import annotations

import copy
import json
import os
import shutil
import subprocess
import uuid
from pathlib import Path

from observe_rt.runtime.spec_default import default_spec

BUSYBOX = shutil.which("busybox") or "/bin/busybox"


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


class BundleFactory:
    """Writes bundles that share one rootfs, each with its own cgroup under a test parent."""

    def __init__(self, base: Path, rootfs: Path, cgroup_parent: str) -> None:
        self.base = base
        self.rootfs = rootfs
        self.cgroup_parent = cgroup_parent

    def spec(self, args: list[str], seccomp: dict | None = None) -> dict:
        spec = default_spec(args, rootfs=str(self.rootfs), seccomp=seccomp)
        spec["process"]["env"].append("HOME=/root")
        return spec

    def write(self, spec: dict, name: str | None = None) -> tuple[str, Path]:
        """Write `spec` as a bundle; returns (container id, bundle dir)."""
        container_id = name or f"t-{uuid.uuid4().hex[:10]}"
        bundle = self.base / container_id
        bundle.mkdir(parents=True)
        spec = copy.deepcopy(spec)
        linux = spec.setdefault("linux", {})
        linux.setdefault("cgroupsPath", f"{self.cgroup_parent}/{container_id}")
        (bundle / "config.json").write_text(json.dumps(spec, indent=1))
        return container_id, bundle


def cgroup_dirs(cgroup_path: str) -> list[str]:
    """Every existing directory for `cgroup_path` across the host's cgroup hierarchies."""
    found = []
    for hierarchy in os.listdir("/sys/fs/cgroup"):
        path = os.path.join("/sys/fs/cgroup", hierarchy, cgroup_path.lstrip("/"))
        if os.path.isdir(path):
            found.append(path)
    if os.path.exists("/sys/fs/cgroup/cgroup.controllers"):  # pure v2
        path = os.path.join("/sys/fs/cgroup", cgroup_path.lstrip("/"))
        if os.path.isdir(path):
            found.append(path)
    return found


def remove_cgroup_tree(cgroup_path: str) -> None:
    """Best-effort removal of a test cgroup parent from every hierarchy (leaf first)."""
    for top in cgroup_dirs(cgroup_path):
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

"""Build OCI bundles from Debian's busybox-static for the integration tests."""

from __future__ import annotations

import copy
import json
import uuid
from pathlib import Path

# The rootfs builder and cgroup clean-up live in the package so the benchmarks share them.
from observe_rt.bench.bundle import BUSYBOX, cgroup_dirs, make_busybox_rootfs, remove_cgroup_tree
from observe_rt.runtime.spec_default import default_spec

__all__ = [
    "BUSYBOX", "BundleFactory", "cgroup_dirs", "make_busybox_rootfs", "remove_cgroup_tree",
]  # fmt: skip


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

"""Which cgroup hierarchies a host mounts (v1, hybrid, v2 or none) and which controllers they
offer, as the runtime sees them.

The mounts are parsed and the mode decided by observe_rt.runtime.cgroups.layout, the code that
places containers; doctor adds only what proc/cgroups says is enabled, and names mount points
as the host does (a fixture tree's root stripped off).
"""

from __future__ import annotations

from dataclasses import dataclass

from observe_rt.doctor.model import Tree
from observe_rt.runtime.cgroups.layout import (
    layout_from_mounts,
    parse_mountinfo,
    parse_proc_mounts,
)

# Controllers a container needs limits from, and those it can live without.
NEEDED = ("cpu", "memory", "pids")
OPTIONAL_V1 = ("cpuset", "blkio", "hugetlb", "devices", "freezer")
OPTIONAL_V2 = ("cpuset", "io", "hugetlb")


@dataclass(frozen=True)
class CgroupView:
    """mode is the runtime's ("v2", "hybrid", "v1" or "none"); v1 maps each enabled v1
    controller to its mount point; v2_controllers is sorted. Paths are as the host names them.
    """

    mode: str
    v1: dict[str, str]
    v2_mount: str | None
    v2_controllers: tuple[str, ...]

    def usable(self) -> set[str]:
        return set(self.v1) | set(self.v2_controllers)


def enabled_v1_controllers(tree: Tree) -> set[str]:
    """Controllers the kernel has compiled in and enabled (proc/cgroups, column 4 == 1)."""
    enabled = set()
    for line in (tree.read("proc/cgroups") or "").splitlines():
        fields = line.split()
        if len(fields) == 4 and not line.startswith("#") and fields[3] == "1":
            enabled.add(fields[0])
    return enabled


def detect(tree: Tree) -> CgroupView:
    """From proc/self/mountinfo, else proc/mounts (both exist on real hosts), under `tree`."""
    info = tree.read("proc/self/mountinfo")
    if info is not None:
        mounts = parse_mountinfo(info)
    else:
        mounts = parse_proc_mounts(tree.read("proc/mounts") or "")
    layout = layout_from_mounts(mounts, str(tree.root))
    enabled = enabled_v1_controllers(tree)
    return CgroupView(
        mode=layout.mode,
        v1={c: tree.host_path(p) for c, p in layout.v1_mounts.items() if c in enabled},
        v2_mount=tree.host_path(layout.unified) if layout.unified else None,
        v2_controllers=tuple(sorted(layout.v2_controllers)),
    )

"""Which cgroup hierarchies a host mounts (v1, hybrid, v2) and which controllers they offer.

Decided from proc/self/mountinfo (or proc/mounts), proc/cgroups and cgroup.controllers under
a root path, so fixture trees can stand in for every layout.
"""

from __future__ import annotations

from dataclasses import dataclass

from observe_rt.doctor.model import Tree

# Controllers a container needs limits from, and those it can live without.
NEEDED = ("cpu", "memory", "pids")
OPTIONAL_V1 = ("cpuset", "blkio", "hugetlb", "devices", "freezer")
OPTIONAL_V2 = ("cpuset", "io", "hugetlb")


@dataclass(frozen=True)
class Mount:
    point: str
    fstype: str
    options: tuple[str, ...]


@dataclass(frozen=True)
class CgroupLayout:
    """mode is "v2", "hybrid", "v1" or "none"; v1 maps controller -> mount point."""

    mode: str
    v1: dict[str, str]
    v2_mount: str | None
    v2_controllers: tuple[str, ...]

    def usable(self) -> set[str]:
        return set(self.v1) | set(self.v2_controllers)


def read_mounts(tree: Tree) -> list[Mount]:
    """Mounts from proc/self/mountinfo, else proc/mounts (both exist on real hosts)."""
    info = tree.read("proc/self/mountinfo")
    if info is not None:
        return [m for m in map(_parse_mountinfo_line, info.splitlines()) if m]
    mounts = []
    for line in (tree.read("proc/mounts") or "").splitlines():
        fields = line.split()
        if len(fields) >= 4:
            mounts.append(Mount(_unescape(fields[1]), fields[2], tuple(fields[3].split(","))))
    return mounts


def _parse_mountinfo_line(line: str) -> Mount | None:
    # "36 25 0:31 / /sys/fs/cgroup/cpu rw,relatime - cgroup cgroup rw,cpu"
    before, sep, after = line.partition(" - ")
    fields, tail = before.split(), after.split()
    if not sep or len(fields) < 5 or len(tail) < 2:
        return None
    options = tail[2].split(",") if len(tail) > 2 else []
    return Mount(_unescape(fields[4]), tail[0], tuple(options))


def _unescape(path: str) -> str:
    # The kernel escapes space, tab, newline and backslash as octal (\040 ...).
    return path.replace("\\040", " ").replace("\\011", "\t").replace("\\012", "\n")


def enabled_v1_controllers(tree: Tree) -> set[str]:
    """Controllers the kernel has compiled in and enabled (proc/cgroups, column 4 == 1)."""
    enabled = set()
    for line in (tree.read("proc/cgroups") or "").splitlines():
        fields = line.split()
        if len(fields) == 4 and not line.startswith("#") and fields[3] == "1":
            enabled.add(fields[0])
    return enabled


def detect(tree: Tree) -> CgroupLayout:
    mounts = read_mounts(tree)
    enabled = enabled_v1_controllers(tree)
    v1: dict[str, str] = {}
    v2_mount = None
    for mount in mounts:
        if mount.fstype == "cgroup":
            for option in mount.options:
                if option in enabled:
                    v1.setdefault(option, mount.point)
        elif mount.fstype == "cgroup2" and v2_mount is None:
            v2_mount = mount.point
    v2_controllers: tuple[str, ...] = ()
    if v2_mount is not None:
        v2_controllers = tuple((tree.read(f"{v2_mount}/cgroup.controllers") or "").split())
    if v1 and v2_mount:
        mode = "hybrid"
    elif v1:
        mode = "v1"
    elif v2_mount:
        mode = "v2"
    else:
        mode = "none"
    return CgroupLayout(mode, v1, v2_mount, v2_controllers)

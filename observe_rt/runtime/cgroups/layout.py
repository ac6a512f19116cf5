"""Which cgroup hierarchies this host has, and where they are mounted.

A host runs one of three cgroup set-ups:

    v1       each controller (or group of co-mounted controllers) is its own hierarchy,
             e.g. /sys/fs/cgroup/memory, /sys/fs/cgroup/cpu,cpuacct; no cgroup2 mount.
    hybrid   the v1 hierarchies, plus a cgroup2 mount (usually /sys/fs/cgroup/unified) that
             holds few or no controllers. We still place every container there, because its
             inode number is the cgroup id that BPF programs see (bpf_get_current_cgroup_id).
    v2       one cgroup2 hierarchy (usually /sys/fs/cgroup) with the controllers listed in
             its cgroup.controllers.

`detect_layout` reads a mountinfo file (proc(5)) rather than asking the kernel, and prefixes
every mount point with `root`, so unit tests describe a host with a text file and a tmp tree.
`layout_from_mounts` decides from mounts already parsed (by `parse_mountinfo`, or by
`parse_proc_mounts` from /proc/mounts text) and says mode "none" where `detect_layout` raises.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field

from observe_rt.host.mountinfo import unescape

#: Controllers a v1 cgroup mount may carry in its super options (linux/cgroup_subsys.h).
V1_CONTROLLERS = frozenset(
    {
        "cpu",
        "cpuacct",
        "cpuset",
        "memory",
        "devices",
        "freezer",
        "net_cls",
        "net_prio",
        "blkio",
        "perf_event",
        "hugetlb",
        "pids",
        "rdma",
        "misc",
    }
)


@dataclass(frozen=True)
class CgroupLayout:
    """The cgroup hierarchies of a host, as absolute directories (already joined to `root`).

    `v1_mounts` maps each v1 controller name, and each named hierarchy as "name=<n>" (for
    example "name=systemd"), to its mount point; co-mounted controllers ("cpu,cpuacct")
    map to the same directory. `unified` is the cgroup2 mount point or None.
    `mode` is "v1", "hybrid" or "v2"; "none" (nothing mounted) only from `layout_from_mounts`.
    `v2_controllers` lists the controllers in the cgroup2 root's cgroup.controllers.
    `v1_swap_accounting` says whether the v1 memory hierarchy has memory.memsw.* files.
    """

    mode: str
    v1_mounts: dict[str, str] = field(default_factory=dict)
    unified: str | None = None
    v2_controllers: frozenset[str] = frozenset()
    v1_swap_accounting: bool = False

    def hierarchy_roots(self) -> dict[str, str]:
        """Hierarchy name to mount point for every hierarchy a container is placed in."""
        roots = dict(self.v1_mounts) if self.mode != "v2" else {}
        if self.unified is not None:
            roots["unified"] = self.unified
        return roots


@dataclass(frozen=True)
class _Mount:
    mount_point: str
    mount_root: str
    fstype: str
    super_options: tuple[str, ...]


def parse_mountinfo(text: str) -> list[_Mount]:
    """The cgroup and cgroup2 mounts listed in mountinfo text, in file order."""
    mounts = []
    for line in text.splitlines():
        fields = line.split()
        if "-" not in fields:
            continue
        sep = fields.index("-")
        if sep < 5 or len(fields) < sep + 4:
            continue
        fstype = fields[sep + 1]
        if fstype not in ("cgroup", "cgroup2"):
            continue
        mounts.append(
            _Mount(
                mount_point=unescape(fields[4]),
                mount_root=unescape(fields[3]),
                fstype=fstype,
                super_options=tuple(fields[sep + 3].split(",")),
            )
        )
    return mounts


def parse_proc_mounts(text: str) -> list[_Mount]:
    """The cgroup and cgroup2 mounts listed in /proc/mounts text (fstab(5) fields), in order.

    /proc/mounts does not say which directory of a hierarchy is mounted: each counts as its root.
    """
    mounts = []
    for line in text.splitlines():
        fields = line.split()
        if len(fields) < 4 or fields[2] not in ("cgroup", "cgroup2"):
            continue
        mounts.append(
            _Mount(
                mount_point=unescape(fields[1]),
                mount_root="/",
                fstype=fields[2],
                super_options=tuple(fields[3].split(",")),
            )
        )
    return mounts


def _v1_names(options: tuple[str, ...]) -> list[str]:
    """Controller names and "name=<n>" named hierarchies among v1 super options."""
    return [o for o in options if o in V1_CONTROLLERS or o.startswith("name=")]


def _join_root(root: str, mount_point: str) -> str:
    return os.path.join(root, mount_point.lstrip("/")) if root != "/" else mount_point


def _read_controllers(unified: str) -> frozenset[str]:
    try:
        with open(os.path.join(unified, "cgroup.controllers")) as f:
            return frozenset(f.read().split())
    except OSError:
        return frozenset()


def _pick_mounts(mounts: list[_Mount]) -> tuple[dict[str, _Mount], _Mount | None]:
    """First mount of each hierarchy; a mount of the hierarchy's root ("/") wins."""
    v1: dict[str, _Mount] = {}
    unified = None
    for m in mounts:
        if m.fstype == "cgroup2":
            if unified is None or (unified.mount_root != "/" and m.mount_root == "/"):
                unified = m
            continue
        for name in _v1_names(m.super_options):
            old = v1.get(name)
            if old is None or (old.mount_root != "/" and m.mount_root == "/"):
                v1[name] = m
    return v1, unified


def layout_from_mounts(mounts: list[_Mount], root: str = "/") -> CgroupLayout:
    """Describe the cgroup hierarchies of `mounts` under `root`; mode "none" if there are none."""
    v1, unified = _pick_mounts(mounts)
    v1_mounts = {name: _join_root(root, m.mount_point) for name, m in v1.items()}
    unified_dir = _join_root(root, unified.mount_point) if unified else None
    has_v1_controllers = any(not name.startswith("name=") for name in v1_mounts)
    if has_v1_controllers:
        mode = "hybrid" if unified_dir else "v1"
    elif unified_dir:
        mode = "v2"
    else:
        return CgroupLayout(mode="none")
    memory = v1_mounts.get("memory")
    swap = bool(memory) and os.path.exists(os.path.join(memory, "memory.memsw.limit_in_bytes"))
    return CgroupLayout(
        mode=mode,
        v1_mounts=v1_mounts if mode != "v2" else {},
        unified=unified_dir,
        v2_controllers=_read_controllers(unified_dir) if unified_dir else frozenset(),
        v1_swap_accounting=swap and mode != "v2",
    )


def detect_layout(mountinfo_path: str = "/proc/self/mountinfo", root: str = "/") -> CgroupLayout:
    """Read `mountinfo_path` and describe the host's cgroup hierarchies under `root`.

    Raises RuntimeError when no cgroup filesystem is mounted at all.
    """
    with open(mountinfo_path) as f:
        layout = layout_from_mounts(parse_mountinfo(f.read()), root)
    if layout.mode == "none":
        raise RuntimeError(f"no cgroup or cgroup2 filesystem is mounted (read {mountinfo_path})")
    return layout

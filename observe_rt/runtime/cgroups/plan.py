"""Turn an OCI `linux.resources` object and cgroupsPath into a plan: plain data, no I/O.

A plan lists, per hierarchy, the directory the container gets and the files to write there.
CgroupManager.create() applies it; unit tests check it without any cgroupfs.

    plan(resources, cgroups_path, layout, container_id)
      -> CgroupPlan(dirs={"memory": "/sys/fs/cgroup/memory/observe-rt/ab12", ...,
                          "unified": "/sys/fs/cgroup/unified/observe-rt/ab12"},
                    enable=(...),    # v2 only: cgroup.subtree_control writes, root first
                    writes=(...),    # resource files, in order
                    warnings=(...))

Path rules (OCI cgroupsPath): absolute and relative paths are both placed under each
hierarchy's root; an empty path becomes /observe-rt/<container id>; ".." is refused.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

from .layout import CgroupLayout
from .resources import parse_resources
from .v1 import v1_writes
from .v2 import V2_CONTROLLERS, controller_of, controllers_to_enable, v2_writes

DEFAULT_PARENT = "/observe-rt"


@dataclass(frozen=True)
class Write:
    """One value written to one cgroup file; `field` names its OCI origin for errors."""

    hierarchy: str
    path: str
    value: str
    field: str
    optional: bool = False  # skip silently when the file does not exist

    @property
    def after_init(self) -> bool:
        """Device rules wait until the init has made /dev (mknod needs them), as in runc."""
        return self.hierarchy == "devices"


@dataclass(frozen=True)
class CgroupPlan:
    mode: str
    cgroup_path: str  # normalised, e.g. "/observe-rt/ab12"
    roots: dict[str, str]  # hierarchy -> mount point
    dirs: dict[str, str]  # hierarchy -> the container's directory
    enable: tuple[Write, ...] = ()
    writes: tuple[Write, ...] = ()
    cpuset_inherit: bool = False  # v1: copy cpuset.cpus/mems down new levels
    warnings: tuple[str, ...] = ()
    # (allow, "c 1:3 rwm") rules for the BPF device filter of the container's v2 cgroup: the
    # only enforcement on pure v2, a second one beside devices.allow/deny on hybrid hosts.
    device_rules: tuple[tuple[bool, str], ...] = ()


def normalize_cgroups_path(cgroups_path: str | None, container_id: str = "") -> str:
    """The OCI cgroupsPath as "/a/b", relative to every hierarchy root."""
    where = "linux.cgroupsPath"
    if not cgroups_path:
        if not container_id or "/" in container_id or container_id in (".", ".."):
            raise ValueError(f"{where}: empty, and no usable container id to default to")
        return f"{DEFAULT_PARENT}/{container_id}"
    if not isinstance(cgroups_path, str) or "\0" in cgroups_path:
        raise ValueError(f"{where}: must be a path string, got {cgroups_path!r}")
    if ":" in cgroups_path and not cgroups_path.startswith("/"):
        raise ValueError(
            f"{where}: {cgroups_path!r} looks like the systemd cgroup driver's "
            "'slice:prefix:name' form, which observe-rt does not support (use cgroupfs)"
        )
    parts = [p for p in cgroups_path.split("/") if p not in ("", ".")]
    if ".." in parts:
        raise ValueError(f"{where}: must not contain '..', got {cgroups_path!r}")
    if not parts:
        raise ValueError(f"{where}: must name a cgroup below the root, got {cgroups_path!r}")
    return "/" + "/".join(parts)


def _missing(where: str, what: str, layout: CgroupLayout) -> ValueError:
    return ValueError(f"{where}: needs the {what}, which this host does not have ({layout.mode})")


def _plan_v1(res, dirs: dict[str, str], layout: CgroupLayout) -> list[Write]:
    if res.unified:
        raise ValueError(
            "linux.resources.unified: cgroup v2 settings cannot be applied on this host, its "
            f"controllers are cgroup v1 ({layout.mode} layout)"
        )
    writes = []
    for hierarchy, file, value, where in v1_writes(res, layout.v1_swap_accounting):
        if hierarchy not in dirs:
            raise _missing(where, f"cgroup v1 {hierarchy!r} hierarchy", layout)
        writes.append(Write(hierarchy, os.path.join(dirs[hierarchy], file), value, where))
    return writes


def _enable_writes(path: str, layout: CgroupLayout, wanted: list[str]) -> list[Write]:
    """cgroup.subtree_control "+c ..." for the root and every ancestor below it."""
    if not wanted:
        return []
    value = " ".join(f"+{c}" for c in wanted)
    parts = path.strip("/").split("/")
    out = []
    for depth in range(len(parts)):  # root, then each ancestor; never the leaf
        directory = os.path.join(layout.unified, *parts[:depth])
        target = os.path.join(directory, "cgroup.subtree_control")
        out.append(Write("unified", target, value, f"enabling controllers in {directory}"))
    return out


def _plan_v2(res, path: str, leaf: str, layout: CgroupLayout) -> tuple[list, list]:
    writes = []
    wanted = controllers_to_enable(layout.v2_controllers)
    for file, value, where, optional in v2_writes(res, layout.v2_controllers):
        controller = controller_of(file)
        if controller in V2_CONTROLLERS and controller not in layout.v2_controllers:
            raise _missing(where, f"cgroup v2 {controller!r} controller", layout)
        if controller in V2_CONTROLLERS and controller not in wanted:
            wanted.append(controller)
        writes.append(Write("unified", os.path.join(leaf, file), value, where, optional))
    return _enable_writes(path, layout, wanted), writes


def plan(
    resources: dict | None, cgroups_path: str | None, layout: CgroupLayout, container_id: str = ""
) -> CgroupPlan:
    """Check `resources` and compute where the container's cgroups go and what to write."""
    res = parse_resources(resources)
    path = normalize_cgroups_path(cgroups_path, container_id)
    roots = layout.hierarchy_roots()
    dirs = {h: os.path.join(root, path.lstrip("/")) for h, root in roots.items()}
    enable: list[Write] = []
    if layout.mode == "v2":
        enable, writes = _plan_v2(res, path, dirs["unified"], layout)
    else:
        writes = _plan_v1(res, dirs, layout)
    return CgroupPlan(
        mode=layout.mode,
        cgroup_path=path,
        roots=roots,
        dirs=dirs,
        enable=tuple(enable),
        writes=tuple(writes),
        cpuset_inherit=layout.mode != "v2" and "cpuset" in dirs,
        warnings=tuple(res.warnings),
        device_rules=tuple(res.device_rules) if "unified" in dirs else (),
    )

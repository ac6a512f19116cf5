"""The security and resource parts of a CRI container's OCI spec.

Pure functions from CRI messages to OCI runtime-spec fragments, used by container_spec.py.
Semantics follow containerd's CRI plugin (internal/cri/opts, sputil) unless noted:

- capabilities: containerd's 14 defaults; "ALL" in add starts from every capability and "ALL"
  in drop from none, then single adds, then single drops; names with or without "CAP_", any
  case. Inheritable holds only the ambient ones (CVE-2022-24769: never a non-empty inheritable
  set by default). Privileged means every capability.
- seccomp: RuntimeDefault -> runtime_default_profile(the bounding set); Unconfined -> none;
  Localhost -> the JSON file at localhost_ref (absolute path), in OCI `linux.seccomp` form
  (a Docker-style `archMap` is turned into `architectures`). Privileged -> none. When neither
  `seccomp` nor the deprecated `seccomp_profile_path` says anything we use RuntimeDefault
  (containerd's default is unconfined; the kubelet always sends the field).
- AppArmor: Localhost -> the profile name (a "localhost/" prefix is trimmed), refused when
  AppArmor is off; RuntimeDefault and Unconfined -> no profile (observe-rt loads no default
  AppArmor profile: seccomp and capabilities still confine the container).
- masked / read-only paths: the CRI lists when non-empty, else the containerd defaults (proto3
  cannot tell an empty list from an absent one; we keep masking rather than drop it).
- devices: `linux.devices` entries from stat(2) of the host node (a directory adds every device
  under it) and a device-cgroup allow list that starts with deny-all; privileged containers get
  every host device and allow-all.
- resources: CRI numbers -> `linux.resources` (0 means unset); a memory limit without a swap
  limit sets swap = limit (no swap), as containerd; hugepage limits are skipped.
- mount targets: "/", /proc and below (bar the files lxcfs overlays) and, unless privileged,
  /sys and below are refused, also when an image symlink leads there; rshared needs a shared
  host mount under the source, rslave a shared or slave one (containerd's ensureShared).
"""

from __future__ import annotations

import json
import os
import posixpath
import re
import stat

from observe_rt.cri.passwd import resolve_in_rootfs
from observe_rt.cri.v1 import api_pb2
from observe_rt.runtime import capabilities, seccomp
from observe_rt.runtime.capabilities import CAP_NUMBER, CAPABILITIES, DEFAULT_CAPABILITIES
from observe_rt.runtime.cgroups.resources import parse_resources
from observe_rt.runtime.seccomp_default import runtime_default_profile
from observe_rt.runtime.spec_default import MASKED_PATHS, READONLY_PATHS

SC = "linux.security_context"
_PROFILE = api_pb2.SecurityProfile
MAX_PROFILE_BYTES = 1024 * 1024
_SECCOMP_KEYS = ("defaultAction", "defaultErrnoRet", "architectures", "flags", "syscalls")
_SYSCALL_KEYS = ("names", "action", "errnoRet", "args")
# Nodes every container gets (the executor creates them): allowed in the device cgroup too.
_DEFAULT_DEVICE_RULES = (
    ("c", 1, 3), ("c", 1, 5), ("c", 1, 7), ("c", 1, 8), ("c", 1, 9), ("c", 5, 0),
    ("c", 5, 2), ("c", 136, None),  # /dev/ptmx and /dev/pts/*
)  # fmt: skip
# Host /dev entries a privileged container does not get as nodes (mounted separately).
_HOST_DEV_SKIP = {"pts", "shm", "fd", "mqueue", ".lxc", ".lxd-mounts", ".udev", "console"}


# --- capabilities ------------------------------------------------------------------------------


def _cap_name(raw: str, where: str) -> str:
    name = raw.strip().upper()
    if not name.startswith("CAP_"):
        name = "CAP_" + name
    if name not in CAP_NUMBER:
        raise ValueError(f"{where}: unknown capability {raw!r}")
    return name


def _ordered(names: set[str]) -> list[str]:
    return sorted(names, key=CAP_NUMBER.__getitem__)


def capability_sets(sc: api_pb2.LinuxContainerSecurityContext, privileged: bool) -> dict:
    """The OCI `process.capabilities` object."""
    caps = sc.capabilities
    where = f"{SC}.capabilities"
    add, drop = list(caps.add_capabilities), list(caps.drop_capabilities)
    current = set(DEFAULT_CAPABILITIES)
    if any(c.upper() == "ALL" for c in add):
        current = set(CAPABILITIES)
    if any(c.upper() == "ALL" for c in drop):
        current = set()
    for i, raw in enumerate(add):
        if raw.upper() != "ALL":
            current.add(_cap_name(raw, f"{where}.add_capabilities[{i}]"))
    for i, raw in enumerate(drop):
        if raw.upper() != "ALL":
            current.discard(_cap_name(raw, f"{where}.drop_capabilities[{i}]"))
    if privileged:
        current = set(capabilities.held())
    ambient = {
        _cap_name(raw, f"{where}.add_ambient_capabilities[{i}]")
        for i, raw in enumerate(caps.add_ambient_capabilities)
    }
    current |= ambient  # an ambient capability must be permitted and in the bounding set
    full, amb = _ordered(current), _ordered(ambient)
    return {"bounding": full, "effective": full, "permitted": full,
            "inheritable": amb, "ambient": amb}  # fmt: skip


# --- seccomp -----------------------------------------------------------------------------------


def _seccomp_choice(sc: api_pb2.LinuxContainerSecurityContext) -> tuple[int, str, str]:
    """(profile type, localhost ref, field name) from `seccomp` or the deprecated string."""
    if sc.HasField("seccomp"):
        return sc.seccomp.profile_type, sc.seccomp.localhost_ref, f"{SC}.seccomp.localhost_ref"
    where = f"{SC}.seccomp_profile_path"
    path = sc.seccomp_profile_path
    if path in ("", "runtime/default", "docker/default"):
        return _PROFILE.RuntimeDefault, "", where
    if path == "unconfined":
        return _PROFILE.Unconfined, "", where
    if path.startswith("localhost/"):
        return _PROFILE.Localhost, path.removeprefix("localhost/"), where
    raise ValueError(f"{where}: unknown profile {path!r} (want runtime/default, unconfined "
                     f"or localhost/<path>)")  # fmt: skip


def seccomp_profile(
    sc: api_pb2.LinuxContainerSecurityContext, privileged: bool, bounding: list[str]
) -> dict | None:
    """The OCI `linux.seccomp` object, or None for no filter."""
    kind, ref, where = _seccomp_choice(sc)
    if privileged or kind == _PROFILE.Unconfined:
        return None
    if kind == _PROFILE.Localhost:
        return load_localhost_profile(ref, where)
    return runtime_default_profile(bounding)


def load_localhost_profile(path: str, where: str) -> dict:
    """Read and check a Localhost seccomp profile; every problem names `where` and the file."""
    if not os.path.isabs(path):
        raise ValueError(f"{where}: must be an absolute path to a seccomp profile, got {path!r}")
    try:
        with open(path, "rb") as f:
            data = f.read(MAX_PROFILE_BYTES + 1)
    except FileNotFoundError:
        raise ValueError(f"{where}: seccomp profile {path} does not exist") from None
    except OSError as err:
        raise ValueError(f"{where}: cannot read seccomp profile {path}: {err.strerror}") from None
    if len(data) > MAX_PROFILE_BYTES:
        raise ValueError(f"{where}: seccomp profile {path} is larger than {MAX_PROFILE_BYTES} B")
    try:
        raw = json.loads(data)
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise ValueError(f"{where}: seccomp profile {path} is not valid JSON: {err}") from None
    profile = _oci_seccomp(raw)
    try:
        seccomp.validate(profile)
    except ValueError as err:
        raise ValueError(f"{where}: seccomp profile {path}: {err}") from None
    return profile


def _oci_seccomp(raw: object) -> dict:
    """Keep the OCI fields of a profile; Docker's `archMap` becomes `architectures`."""
    if not isinstance(raw, dict):
        return raw  # type: ignore[return-value]  # validate() reports it
    profile = {k: raw[k] for k in _SECCOMP_KEYS if k in raw}
    if "architectures" not in profile and isinstance(raw.get("archMap"), list):
        arches: list[str] = []
        for entry in raw["archMap"]:
            if isinstance(entry, dict):
                arches += [entry.get("architecture"), *(entry.get("subArchitectures") or [])]
        profile["architectures"] = [a for a in arches if a]
    if isinstance(profile.get("syscalls"), list):
        profile["syscalls"] = [
            {k: s[k] for k in _SYSCALL_KEYS if k in s} if isinstance(s, dict) else s
            for s in profile["syscalls"]
        ]
    return profile


# --- AppArmor, masked and read-only paths ------------------------------------------------------


def apparmor_profile(sc: api_pb2.LinuxContainerSecurityContext, lsms: set[str]) -> str:
    """The AppArmor profile name for `process.apparmorProfile`, or "" for none."""
    if sc.HasField("apparmor"):
        kind, ref, where = sc.apparmor.profile_type, sc.apparmor.localhost_ref, f"{SC}.apparmor"
    else:
        where, value = f"{SC}.apparmor_profile", sc.apparmor_profile
        if value in ("", "runtime/default", "unconfined"):
            return ""
        if not value.startswith("localhost/"):
            raise ValueError(f"{where}: unknown profile {value!r} (want runtime/default, "
                             f"unconfined or localhost/<name>)")  # fmt: skip
        kind, ref = _PROFILE.Localhost, value
    if kind != _PROFILE.Localhost:
        return ""
    name = ref.removeprefix("localhost/")
    if not name:
        raise ValueError(f"{where}: a Localhost profile needs a profile name")
    if "apparmor" not in lsms:
        raise ValueError(f"{where}: AppArmor is not enabled on this host (profile {name!r})")
    return name


def proc_paths(
    sc: api_pb2.LinuxContainerSecurityContext, privileged: bool
) -> tuple[list[str], list[str]]:
    """(maskedPaths, readonlyPaths): none when privileged, else CRI's lists or the defaults."""
    if privileged:
        return [], []
    result = []
    for field, default in (("masked_paths", MASKED_PATHS), ("readonly_paths", READONLY_PATHS)):
        paths = list(getattr(sc, field)) or list(default)
        for i, path in enumerate(paths):
            if not path.startswith("/"):
                raise ValueError(f"{SC}.{field}[{i}]: must be an absolute path, got {path!r}")
        result.append([os.path.normpath(p) for p in paths])
    return result[0], result[1]


# --- devices -----------------------------------------------------------------------------------


def _device(path: str, st: os.stat_result) -> dict:
    return {"path": path, "type": "b" if stat.S_ISBLK(st.st_mode) else "c",
            "major": os.major(st.st_rdev), "minor": os.minor(st.st_rdev),
            "fileMode": stat.S_IMODE(st.st_mode), "uid": st.st_uid, "gid": st.st_gid}  # fmt: skip


def _is_device(st: os.stat_result) -> bool:
    return stat.S_ISCHR(st.st_mode) or stat.S_ISBLK(st.st_mode)


def walk_devices(host_dir: str, container_dir: str, skip: frozenset[str] = frozenset()) -> list:
    """Every device node under `host_dir` (symlinks not followed), mapped under container_dir."""
    found = []
    try:
        entries = sorted(os.scandir(host_dir), key=lambda e: e.name)
    except PermissionError:
        return found
    for entry in entries:
        if entry.name in skip or entry.is_symlink():
            continue
        target = os.path.join(container_dir, entry.name)
        if entry.is_dir(follow_symlinks=False):
            found += walk_devices(entry.path, target)
            continue
        st = entry.stat(follow_symlinks=False)
        if _is_device(st):
            found.append(_device(target, st))
    return found


def _cri_device(dev: api_pb2.Device, where: str) -> list[dict]:
    if not dev.container_path.startswith("/"):
        raise ValueError(f"{where}.container_path: must be absolute, got {dev.container_path!r}")
    if not dev.host_path.startswith("/"):
        raise ValueError(f"{where}.host_path: must be absolute, got {dev.host_path!r}")
    try:
        st = os.stat(dev.host_path)
    except FileNotFoundError:
        raise ValueError(f"{where}.host_path: {dev.host_path} does not exist") from None
    target = os.path.normpath(dev.container_path)
    if stat.S_ISDIR(st.st_mode):
        return walk_devices(os.path.realpath(dev.host_path), target)
    if not _is_device(st):
        raise ValueError(f"{where}.host_path: {dev.host_path} is not a device node")
    return [_device(target, st)]


def _access(permissions: str, where: str) -> str:
    perms = permissions or "rwm"
    if not set(perms) <= set("rwm"):
        raise ValueError(f"{where}.permissions: must be made of r, w and m, got {permissions!r}")
    return "".join(p for p in "rwm" if p in perms)


def _rule(kind: str, major: int | None, minor: int | None, access: str) -> dict:
    rule = {"allow": True, "type": kind, "access": access}
    for key, value in (("major", major), ("minor", minor)):
        if value is not None:
            rule[key] = value
    return rule


def devices(
    config: api_pb2.ContainerConfig, privileged: bool, dev_root: str = "/dev"
) -> tuple[list[dict], list[dict]]:
    """(`linux.devices`, `linux.resources.devices`) for the container."""
    nodes: dict[str, dict] = {}
    if privileged:
        for node in walk_devices(dev_root, "/dev", frozenset(_HOST_DEV_SKIP)):
            nodes[node["path"]] = node
        rules = [{"allow": True, "access": "rwm"}]
    else:
        rules = [{"allow": False, "access": "rwm"}]
        rules += [_rule(kind, major, minor, "rwm") for kind, major, minor in _DEFAULT_DEVICE_RULES]
    for i, dev in enumerate(config.devices):
        where = f"devices[{i}]"
        access = _access(dev.permissions, where)
        for node in _cri_device(dev, where):
            nodes[node["path"]] = node
            if not privileged:
                rules.append(_rule(node["type"], node["major"], node["minor"], access))
    return list(nodes.values()), rules


# --- resources ---------------------------------------------------------------------------------

_RES = "linux.resources"
# OCI names in parse_resources' messages -> the CRI field a person wrote.
_OCI_TO_CRI = {
    f"{_RES}.cpu.period": f"{_RES}.cpu_period", f"{_RES}.cpu.quota": f"{_RES}.cpu_quota",
    f"{_RES}.cpu.shares": f"{_RES}.cpu_shares", f"{_RES}.cpu.cpus": f"{_RES}.cpuset_cpus",
    f"{_RES}.cpu.mems": f"{_RES}.cpuset_mems",
    f"{_RES}.memory.limit": f"{_RES}.memory_limit_in_bytes",
    f"{_RES}.memory.swap": f"{_RES}.memory_swap_limit_in_bytes",
}  # fmt: skip


def _non_negative(res: api_pb2.LinuxContainerResources, field: str, unlimited_ok: bool) -> int:
    value = getattr(res, field)
    if value < 0 and not (unlimited_ok and value == -1):
        allowed = "positive, 0 (unset) or -1 (unlimited)" if unlimited_ok else "positive or 0"
        raise ValueError(f"{_RES}.{field}: must be {allowed}, got {value}")
    return value


def resources(res: api_pb2.LinuxContainerResources) -> dict:
    """The OCI `linux.resources` object (without devices) for CRI's container resources."""
    cpu: dict = {}
    for field, key, unlimited in (("cpu_period", "period", False), ("cpu_quota", "quota", True),
                                  ("cpu_shares", "shares", False)):  # fmt: skip
        if value := _non_negative(res, field, unlimited):
            cpu[key] = value
    for field, key in (("cpuset_cpus", "cpus"), ("cpuset_mems", "mems")):
        if value := getattr(res, field).strip():
            cpu[key] = value
    memory: dict = {}
    if limit := _non_negative(res, "memory_limit_in_bytes", True):
        memory["limit"] = memory["swap"] = limit
    if swap := _non_negative(res, "memory_swap_limit_in_bytes", True):
        memory["swap"] = swap
    out: dict = {}
    if cpu:
        out["cpu"] = cpu
    if memory:
        out["memory"] = memory
    if res.unified:
        out["unified"] = dict(res.unified)
    _check_resources(out)
    return out


def _check_resources(oci: dict) -> None:
    try:
        parse_resources(oci)
    except ValueError as err:
        message = str(err)
        for oci_name, cri_name in _OCI_TO_CRI.items():
            if message.startswith(oci_name + ":"):
                message = cri_name + message[len(oci_name) :]
        raise ValueError(message) from None


def oom_score_adj(res: api_pb2.LinuxContainerResources) -> int:
    value = res.oom_score_adj
    if not -1000 <= value <= 1000:
        raise ValueError(f"{_RES}.oom_score_adj: must be between -1000 and 1000, got {value}")
    return value


# --- mounts ------------------------------------------------------------------------------------

_PROPAGATION = {
    api_pb2.PROPAGATION_PRIVATE: "rprivate",
    api_pb2.PROPAGATION_HOST_TO_CONTAINER: "rslave",
    api_pb2.PROPAGATION_BIDIRECTIONAL: "rshared",
}

# /proc files lxcfs overlays with per-container views (runc allows these, too).
_PROC_ALLOWED = {
    "/proc/cpuinfo", "/proc/diskstats", "/proc/meminfo", "/proc/stat", "/proc/swaps",
    "/proc/uptime", "/proc/loadavg", "/proc/slabinfo", "/proc/net/dev",
}  # fmt: skip


def _check_target(dest: str, where: str, privileged: bool) -> None:
    def inside(top: str) -> bool:
        return dest == top or dest.startswith(top + "/")

    if dest == "/" or (inside("/proc") and dest not in _PROC_ALLOWED):
        raise ValueError(f"{where}: mounting over {dest} is not allowed")
    if inside("/sys") and not privileged:
        raise ValueError(f"{where}: mounting over {dest} needs a privileged container")


def cri_mount(m: api_pb2.Mount, where: str, privileged: bool, host: dict) -> dict:
    """One CRI mount as an OCI bind mount; `host` has "rootfs" and "mountinfo" paths."""
    if not m.container_path.startswith("/"):
        raise ValueError(f"{where}.container_path: must be absolute, got {m.container_path!r}")
    dest = posixpath.normpath(m.container_path)
    _check_target(dest, f"{where}.container_path", privileged)
    real = resolve_in_rootfs(host["rootfs"], dest)
    if real != dest:
        _check_target(real, f"{where}.container_path ({dest} is {real} in the image)", privileged)
    if m.HasField("image") and m.image.image:
        raise ValueError(f"{where}.image: image volume mounts are not supported")
    if m.recursive_read_only:
        raise ValueError(f"{where}.recursive_read_only: not supported by observe-rt")
    if m.uidMappings or m.gidMappings:
        raise ValueError(f"{where}: id-mapped mounts are not supported")
    if not m.host_path.startswith("/"):
        raise ValueError(f"{where}.host_path: must be absolute, got {m.host_path!r}")
    if not os.path.exists(m.host_path):
        raise ValueError(f"{where}.host_path: {m.host_path} does not exist")
    if m.propagation not in _PROPAGATION:
        raise ValueError(f"{where}.propagation: unknown mode {m.propagation}")
    source = os.path.realpath(m.host_path)
    propagation = _PROPAGATION[m.propagation]
    if propagation != "rprivate":
        _check_source_propagation(source, propagation, f"{where}.propagation", host["mountinfo"])
    options = ["rbind", propagation, "ro" if m.readonly else "rw"]
    return {"destination": dest, "type": "bind", "source": source, "options": options}


def _unescape(field: str) -> str:
    """mountinfo escapes space, tab, newline and backslash as \\ooo."""
    return re.sub(r"\\([0-7]{3})", lambda m: chr(int(m.group(1), 8)), field)


def _check_source_propagation(source: str, wanted: str, where: str, mountinfo: str) -> None:
    """rshared needs the host mount under `source` shared; rslave needs shared or slave."""
    best, tags = "", []
    with open(mountinfo) as f:
        for line in f:
            fields = line.split()
            point = _unescape(fields[4])
            under = source == point or source.startswith(point.rstrip("/") + "/")
            if under and len(point) >= len(best):
                best, tags = point, fields[6 : fields.index("-")]
    ok = ("shared:",) if wanted == "rshared" else ("shared:", "master:")
    if not any(tag.startswith(ok) for tag in tags):
        kind = "shared" if wanted == "rshared" else "shared or slave"
        raise ValueError(f"{where}: {source} is on mount {best or '?'}, which is not {kind}")

"""Read an OCI runtime bundle's config.json, validate it, and turn it into an init plan.

The plan is plain JSON-serialisable data: everything the container init helper needs, already
checked, with names resolved to numbers. Every validation error names the field at fault
(e.g. `linux.namespaces[2].type: unknown namespace type "foo"`), so `create` fails before it
has made anything.
"""

from __future__ import annotations

import json
import os
import resource
from typing import Any

from observe_rt.errors import InvalidArgument
from observe_rt.runtime import capabilities, lsm, mountopts, seccomp, sysctl

NAMESPACE_TYPES = ("pid", "network", "mount", "ipc", "uts", "user", "cgroup")
_DEFAULT_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"


def load_bundle(bundle: str) -> dict[str, Any]:
    """Parse <bundle>/config.json; a missing or malformed file is an InvalidArgument."""
    path = os.path.join(bundle, "config.json")
    try:
        with open(path, "rb") as f:
            spec = json.load(f)
    except FileNotFoundError:
        raise InvalidArgument(f"bundle {bundle}: no config.json") from None
    except (ValueError, RecursionError) as err:  # bad JSON or UTF-8, or nested beyond reason
        raise InvalidArgument(f"{path}: not valid JSON: {err}") from None
    if not isinstance(spec, dict):
        raise InvalidArgument(f"{path}: top level must be an object")
    return spec


def build_plan(spec: dict[str, Any], bundle: str, container_id: str) -> dict[str, Any]:
    """Validate `spec` and return the init plan. Raises InvalidArgument naming the field."""
    try:
        return _build_plan(spec, os.path.abspath(bundle), container_id)
    except ValueError as err:
        raise InvalidArgument(str(err)) from None


def _build_plan(spec: dict, bundle: str, container_id: str) -> dict:
    linux = _obj(spec, "linux", "linux")
    namespaces = _namespaces(linux.get("namespaces", []))
    process = _obj(spec, "process", "process", required=True)
    plan = {
        "id": container_id,
        "namespaces": namespaces,
        "rootfs": _rootfs(spec, bundle),
        "mounts": [_mount(m, i) for i, m in enumerate(_list(spec, "mounts", "mounts"))],
        "masked_paths": _abs_paths(linux.get("maskedPaths", []), "linux.maskedPaths"),
        "readonly_paths": _abs_paths(linux.get("readonlyPaths", []), "linux.readonlyPaths"),
        "rootfs_propagation": _propagation(
            _str(linux, "rootfsPropagation", "linux.rootfsPropagation")
        ),
        "hostname": _str(spec, "hostname", "hostname"),
        "domainname": _str(spec, "domainname", "domainname"),
        "sysctl": _sysctl(linux.get("sysctl") or {}, namespaces),
        "uid_mappings": _id_mappings(linux.get("uidMappings", []), "linux.uidMappings"),
        "gid_mappings": _id_mappings(linux.get("gidMappings", []), "linux.gidMappings"),
        "process": _process(process),
        "seccomp": _seccomp(linux.get("seccomp")),
        "mount_label": _str(linux, "mountLabel", "linux.mountLabel"),
        "devices": _devices(_list(linux, "devices", "linux.devices")),
    }
    proc = plan["process"]
    lsm.validate(proc["apparmor_profile"], proc["selinux_label"], plan["mount_label"], lsm.active())
    if (plan["hostname"] or plan["domainname"]) and not _new_ns(namespaces, "uts"):
        raise ValueError("hostname: setting a hostname needs a new uts namespace")
    if _new_ns(namespaces, "user") and not plan["uid_mappings"]:
        raise ValueError("linux.uidMappings: a new user namespace needs uid and gid mappings")
    return plan


# --- small typed accessors -------------------------------------------------------------------


def _obj(parent: dict, key: str, where: str, required: bool = False) -> dict:
    value = parent.get(key)
    if value is None:
        if required:
            raise ValueError(f"{where}: required")
        return {}
    if not isinstance(value, dict):
        raise ValueError(f"{where}: must be an object")
    return value


def _list(parent: dict, key: str, where: str) -> list:
    value = parent.get(key) or []
    if not isinstance(value, list):
        raise ValueError(f"{where}: must be a list")
    return value


def _str_list(parent: dict, key: str, where: str) -> list[str]:
    value = _list(parent, key, where)
    if not all(isinstance(item, str) for item in value):
        raise ValueError(f"{where}: must be a list of strings")
    return value


def _str(parent: dict, key: str, where: str) -> str:
    value = parent.get(key) or ""
    if not isinstance(value, str):
        raise ValueError(f"{where}: must be a string")
    return value


def _int(value: Any, where: str, minimum: int | None = None) -> int:
    if not isinstance(value, int) or isinstance(value, bool):
        raise ValueError(f"{where}: must be an integer, got {value!r}")
    if minimum is not None and value < minimum:
        raise ValueError(f"{where}: must be >= {minimum}, got {value}")
    return value


def _new_ns(namespaces: list[dict], ns_type: str) -> bool:
    return any(ns["type"] == ns_type and not ns["path"] for ns in namespaces)


# --- sections --------------------------------------------------------------------------------


def _namespaces(raw: list) -> list[dict]:
    if not isinstance(raw, list):
        raise ValueError("linux.namespaces: must be a list")
    seen: set[str] = set()
    result = []
    for i, ns in enumerate(raw):
        where = f"linux.namespaces[{i}]"
        ns_type = ns.get("type") if isinstance(ns, dict) else None
        if ns_type not in NAMESPACE_TYPES:
            raise ValueError(f"{where}.type: unknown namespace type {ns_type!r}")
        if ns_type in seen:
            raise ValueError(f"{where}.type: namespace {ns_type} listed twice")
        seen.add(ns_type)
        path = _str(ns, "path", f"{where}.path")
        if path and not os.path.isabs(path):
            raise ValueError(f"{where}.path: must be absolute, got {path!r}")
        if path and not os.path.exists(path):
            raise ValueError(f"{where}.path: {path} does not exist")
        result.append({"type": ns_type, "path": path})
    return result


def _rootfs(spec: dict, bundle: str) -> dict:
    root = _obj(spec, "root", "root", required=True)
    path = _str(root, "path", "root.path")
    if not path:
        raise ValueError("root.path: required")
    full = path if os.path.isabs(path) else os.path.join(bundle, path)
    if not os.path.isdir(full):
        raise ValueError(f"root.path: rootfs {full} does not exist or is not a directory")
    return {"path": os.path.realpath(full), "readonly": bool(root.get("readonly", False))}


def _mount(raw: Any, index: int) -> dict:
    where = f"mounts[{index}]"
    if not isinstance(raw, dict):
        raise ValueError(f"{where}: must be an object")
    destination = _str(raw, "destination", f"{where}.destination")
    if not os.path.isabs(destination):
        raise ValueError(f"{where}.destination: must be an absolute path, got {destination!r}")
    options = _str_list(raw, "options", f"{where}.options")
    flags, propagation, data = mountopts.parse(options)
    fs_type = _str(raw, "type", f"{where}.type")
    source = _str(raw, "source", f"{where}.source")
    is_bind = fs_type == "bind" or "bind" in options or "rbind" in options
    if is_bind and not os.path.isabs(source):
        raise ValueError(f"{where}.source: a bind mount needs an absolute source, got {source!r}")
    if is_bind and not os.path.exists(source):
        raise ValueError(f"{where}.source: {source} does not exist")
    return {
        "destination": os.path.normpath(destination),
        "type": fs_type,
        "source": source,
        "flags": flags,
        "propagation": propagation,
        "data": data,
        "bind": is_bind,
    }


def _abs_paths(raw: list, where: str) -> list[str]:
    if not isinstance(raw, list):
        raise ValueError(f"{where}: must be a list")
    for i, path in enumerate(raw):
        if not isinstance(path, str) or not os.path.isabs(path):
            raise ValueError(f"{where}[{i}]: must be an absolute path, got {path!r}")
    return [os.path.normpath(p) for p in raw]


def _propagation(value: str) -> int:
    if not value:
        return 0
    flags, propagation, data = mountopts.parse([value])
    if flags or data or len(propagation) != 1:
        raise ValueError(f"linux.rootfsPropagation: unknown propagation {value!r}")
    return propagation[0]


def _sysctl(raw: dict, namespaces: list[dict]) -> dict[str, str]:
    if not isinstance(raw, dict):
        raise ValueError("linux.sysctl: must be an object")
    new = {ns["type"] for ns in namespaces if not ns["path"]}
    sysctl.validate(raw, new)
    return {sysctl.proc_path(key): value for key, value in raw.items()}


def _id_mappings(raw: list, where: str) -> list[dict]:
    if not isinstance(raw, list):
        raise ValueError(f"{where}: must be a list")
    mappings = []
    for i, m in enumerate(raw):
        if not isinstance(m, dict):
            raise ValueError(f"{where}[{i}]: must be an object")
        mappings.append({
            key: _int(m.get(key), f"{where}[{i}].{key}", minimum=0)
            for key in ("containerID", "hostID", "size")
        })  # fmt: skip
    return mappings


def _seccomp(raw: Any) -> dict | None:
    if raw is None:
        return None
    if not isinstance(raw, dict):
        raise ValueError("linux.seccomp: must be an object")
    seccomp.validate(raw)
    return raw


# --- process ---------------------------------------------------------------------------------


def _process(process: dict) -> dict:
    args = process.get("args")
    if not isinstance(args, list) or not args or not all(isinstance(a, str) for a in args):
        raise ValueError("process.args: must be a non-empty list of strings")
    cwd = _str(process, "cwd", "process.cwd") or "/"
    if not os.path.isabs(cwd):
        raise ValueError(f"process.cwd: must be an absolute path, got {cwd!r}")
    user = _obj(process, "user", "process.user")
    env = _list(process, "env", "process.env")
    for i, entry in enumerate(env):
        if not isinstance(entry, str) or "=" not in entry:
            raise ValueError(f"process.env[{i}]: must be KEY=VALUE, got {entry!r}")
    umask = user.get("umask")
    return {
        "args": args,
        "terminal": bool(process.get("terminal", False)),
        "env": env,
        "cwd": cwd,
        "uid": _int(user.get("uid", 0), "process.user.uid", minimum=0),
        "gid": _int(user.get("gid", 0), "process.user.gid", minimum=0),
        "additional_gids": [
            _int(g, f"process.user.additionalGids[{i}]", minimum=0)
            for i, g in enumerate(_list(user, "additionalGids", "process.user.additionalGids"))
        ],
        "umask": None if umask is None else _int(umask, "process.user.umask", minimum=0),
        "capabilities": _capabilities(_obj(process, "capabilities", "process.capabilities")),
        "no_new_privileges": bool(process.get("noNewPrivileges", False)),
        "rlimits": [_rlimit(r, i) for i, r in enumerate(_list(process, "rlimits", "rlimits"))],
        "oom_score_adj": _oom_score_adj(process.get("oomScoreAdj")),
        "apparmor_profile": _str(process, "apparmorProfile", "process.apparmorProfile"),
        "selinux_label": _str(process, "selinuxLabel", "process.selinuxLabel"),
        "path": _env_path(env),
    }


def _env_path(env: list[str]) -> str:
    for entry in env:
        if entry.startswith("PATH="):
            return entry[5:]
    return _DEFAULT_PATH


def _capabilities(raw: dict) -> dict[str, int]:
    kernel_last = capabilities.last_cap()
    masks = {}
    for cap_set in capabilities.CAP_SETS:
        names = _str_list(raw, cap_set, f"process.capabilities.{cap_set}")
        for i, name in enumerate(names):
            if name not in capabilities.CAP_NUMBER:
                raise ValueError(
                    f"process.capabilities.{cap_set}[{i}]: unknown capability {name!r}"
                )
        masks[cap_set] = capabilities.to_mask(names, kernel_last)
    return masks


def _rlimit(raw: dict, index: int) -> list[int]:
    where = f"process.rlimits[{index}]"
    if not isinstance(raw, dict):
        raise ValueError(f"{where}: must be an object")
    name = _str(raw, "type", f"{where}.type")
    number = getattr(resource, name, None) if name.startswith("RLIMIT_") else None
    if number is None:
        raise ValueError(f"{where}.type: unknown rlimit {name!r}")
    soft = _int(raw.get("soft"), f"{where}.soft", minimum=0)
    hard = _int(raw.get("hard"), f"{where}.hard", minimum=0)
    if soft > hard:
        raise ValueError(f"{where}: soft limit {soft} is above hard limit {hard}")
    return [number, soft, hard]


def _oom_score_adj(value: Any) -> int | None:
    if value is None:
        return None
    _int(value, "process.oomScoreAdj", minimum=-1000)
    if value > 1000:
        raise ValueError(f"process.oomScoreAdj: must be <= 1000, got {value}")
    return value


_DEVICE_TYPES = ("c", "u", "b", "p")
# Each number's largest value: what makedev, mknod's permission bits and chown accept.
_DEVICE_NUMBERS = {"major": 2**32 - 1, "minor": 2**32 - 1, "fileMode": 0o7777,
                   "uid": 2**32 - 2, "gid": 2**32 - 2}  # fmt: skip


def _devices(raw: list) -> list[dict]:
    """linux.devices, checked here rather than failing in the init after create."""
    for i, device in enumerate(raw):
        where = f"linux.devices[{i}]"
        if not isinstance(device, dict):
            raise ValueError(f"{where}: must be an object")
        path = _str(device, "path", f"{where}.path")
        if not os.path.isabs(path) or os.path.normpath(path) in ("/", "/dev"):
            raise ValueError(f"{where}.path: must be an absolute path of a node, got {path!r}")
        if device.get("type", "c") not in _DEVICE_TYPES:
            raise ValueError(f"{where}.type: must be one of {', '.join(_DEVICE_TYPES)}")
        for key, most in _DEVICE_NUMBERS.items():
            if device.get(key) is not None and _int(device[key], f"{where}.{key}", 0) > most:
                raise ValueError(f"{where}.{key}: must be <= {most:#o}, got {device[key]}")
    return raw

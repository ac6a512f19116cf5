"""CreateContainer's OCI runtime spec: CRI ContainerConfig + PodSandboxConfig + image config.

    build_container_spec(config, sandbox, image_config, rootfs=..., namespaces=..., ...)
      -> config.json dict for the executor (or runc / crun as another handler)

A plan, not an action: the function reads the image's /etc/passwd and /etc/group (inside the
rootfs, see passwd.py), stats mount sources and device nodes, and reads /proc/self/mountinfo for
propagation checks, but changes nothing. Bad input raises InvalidArgument naming the CRI field,
e.g. "mounts[0].container_path: must be absolute, got 'data'".

Rules (containerd's CRI plugin unless noted; security and resources in container_security.py):

- args: CRI command replaces the image Entrypoint and CRI args replace Cmd; args alone run
  Entrypoint + args; command alone runs just the command (Kubernetes semantics).
- env: default PATH, HOSTNAME, then image Env, then CRI envs, later keys replacing earlier
  ones in place; HOME from the image's /etc/passwd when nobody set it (as runc and CRI-O do).
- cwd: CRI working_dir, else image WorkingDir, else "/".
- user: run_as_username, else run_as_user, else the image User; run_as_group sets the primary
  group (and needs a CRI user). Additional gids: the primary gid, groups listing the user in
  /etc/group (policy Merge), and CRI supplemental_groups; sorted, unique.
- namespaces: network, ipc and pid follow NamespaceOption (the container's, else the pod's);
  uts follows network. NODE leaves the namespace out (host's); POD and TARGET join the path
  given in `namespaces` (none given: a new one, except TARGET, which needs a path); CONTAINER
  makes a new one. mount is always new; cgroup is new unless privileged.
- hostname: set only when the container makes its own uts namespace; a pod-shared uts already
  carries the pod's hostname.
- sysctls (the sandbox's): only those for namespaces the container makes itself go in the
  spec; those for pod-shared namespaces were applied by the pod; node namespaces are refused.
- mounts: bind mounts with rprivate/rslave/rshared (rootfsPropagation follows: rshared for a
  bidirectional mount, else rslave), "ro"/"rw"; sorted parents first; they replace the default
  mounts and `hosts_files` at the same path (all of /dev's defaults for a /dev mount). Targets
  are checked in container_security.py; selinux_relabel is ignored (no SELinux labelling here).
- cgroupsPath: "<cgroup_parent>/<container_id>" (cgroupfs style), "/observe-rt/<id>" without a
  parent.
- image Volumes get no mount: the path stays whatever the image has there (as CRI-O's
  image_volumes=ignore), so no volume can reach host files (CVE-2022-23648).
"""

from __future__ import annotations

import os
import posixpath
import signal
from dataclasses import dataclass

from observe_rt.cri import container_security as security
from observe_rt.cri.passwd import process_user
from observe_rt.cri.v1 import api_pb2
from observe_rt.errors import InvalidArgument
from observe_rt.runtime import lsm, sysctl
from observe_rt.runtime.cgroups.plan import DEFAULT_PARENT
from observe_rt.runtime.spec_default import DEFAULT_PATH_ENV, default_mounts

SC = security.SC
NS = api_pb2.NamespaceMode
_NS_ORDER = ("pid", "network", "ipc", "uts", "mount", "cgroup")
_IMAGE_KEYS = ("User", "Env", "Entrypoint", "Cmd", "WorkingDir", "StopSignal")
_POD_FILE_OPTIONS = ["rbind", "rprivate", "nosuid", "nodev", "noexec"]


def build_container_spec(
    config: api_pb2.ContainerConfig,
    sandbox: api_pb2.PodSandboxConfig,
    image_config: dict,
    *,
    rootfs: str,
    namespaces: dict[str, str],
    cgroup_parent: str,
    container_id: str,
    sandbox_id: str,
    hosts_files: dict[str, str],
    lsms: set[str] | None = None,
    mountinfo: str = "/proc/self/mountinfo",
    dev_root: str = "/dev",
) -> dict:
    """The OCI config.json dict for a CRI container; raises InvalidArgument naming the field.

    `lsms` (active LSMs), `mountinfo` and `dev_root` default to this host; tests pass fixtures.
    """
    where = _Where(rootfs, namespaces, cgroup_parent, container_id, sandbox_id, hosts_files,
                   lsm.active() if lsms is None else lsms, mountinfo, dev_root)  # fmt: skip
    try:
        return _build(config, sandbox, image_section(image_config), where)
    except ValueError as err:
        raise InvalidArgument(str(err)) from None


@dataclass(frozen=True)
class _Where:
    """Where the container runs: the build_container_spec keyword arguments, resolved."""

    rootfs: str
    namespaces: dict[str, str]
    cgroup_parent: str
    container_id: str
    sandbox_id: str
    hosts_files: dict[str, str]
    lsms: set[str]
    mountinfo: str
    dev_root: str


def _build(config, sandbox, image: dict, at: _Where) -> dict:
    sc = config.linux.security_context
    privileged = _privileged(sc, sandbox)
    ns_list, ns_state = namespace_plan(config, sandbox, at.namespaces, privileged)
    host = {"rootfs": at.rootfs, "mountinfo": at.mountinfo}
    mounts, propagation = build_mounts(config, at.hosts_files, privileged, host)
    dev_nodes, dev_rules = security.devices(config, privileged, at.dev_root)
    masked, readonly = security.proc_paths(sc, privileged)
    linux: dict = {
        "namespaces": ns_list,
        "maskedPaths": masked,
        "readonlyPaths": readonly,
        "devices": dev_nodes,
        "resources": {**security.resources(config.linux.resources), "devices": dev_rules},
        "cgroupsPath": cgroups_path(at.cgroup_parent, at.container_id),
        "sysctl": pod_sysctls(sandbox, ns_state),
    }
    process = build_process(config, sandbox, image, at.rootfs, privileged, at.lsms)
    seccomp = security.seccomp_profile(sc, privileged, process["capabilities"]["bounding"])
    if seccomp is not None:
        linux["seccomp"] = seccomp
    if propagation:
        linux["rootfsPropagation"] = propagation
    spec = {
        "ociVersion": "1.2.0",
        "process": process,
        "root": {"path": at.rootfs, "readonly": sc.readonly_rootfs},
        "mounts": mounts,
        "linux": linux,
        "annotations": annotations(config, sandbox, at.sandbox_id),
    }
    if ns_state["uts"] == "new" and sandbox.hostname:
        spec["hostname"] = sandbox.hostname
    return spec


def _privileged(sc: api_pb2.LinuxContainerSecurityContext, sandbox) -> bool:
    if sc.privileged and not sandbox.linux.security_context.privileged:
        raise ValueError(f"{SC}.privileged: the pod sandbox is not privileged")
    return sc.privileged


# --- process -----------------------------------------------------------------------------------


def image_section(image_config: dict) -> dict:
    """The `config` object of an OCI image config (also accepted: that object itself)."""
    if not isinstance(image_config, dict):
        raise InvalidArgument("image config: must be a JSON object")
    inner = image_config.get("config")
    if isinstance(inner, dict):
        return inner
    if inner is None and any(k in image_config for k in _IMAGE_KEYS):
        return image_config
    return {}


def _string_list(image: dict, key: str) -> list[str] | None:
    value = image.get(key)
    if value is None:
        return None
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise ValueError(f"image config {key}: must be a list of strings, got {value!r}")
    return value


def process_args(config: api_pb2.ContainerConfig, image: dict) -> list[str]:
    command, args = list(config.command), list(config.args)
    if not command:
        if not args:
            args = _string_list(image, "Cmd") or []
        entrypoint = _string_list(image, "Entrypoint") or []
        command = [] if entrypoint == [""] else entrypoint
    argv = command + args
    if not argv:
        raise ValueError("command: no command given and the image has no Entrypoint or Cmd")
    return argv


def process_env(config, image: dict, hostname: str, home: str, tty: bool) -> list[str]:
    env: dict[str, str] = {}
    for entry in [DEFAULT_PATH_ENV, f"HOSTNAME={hostname}"] + (_string_list(image, "Env") or []):
        key, _, value = entry.partition("=")
        if key:
            env[key] = value
    for i, kv in enumerate(config.envs):
        if not kv.key or "=" in kv.key or "\0" in kv.key + kv.value:
            raise ValueError(f"envs[{i}].key: invalid environment variable name {kv.key!r}")
        env[kv.key] = kv.value
    env.setdefault("HOME", home)
    if tty:
        env.setdefault("TERM", "xterm")
    return [f"{k}={v}" for k, v in env.items()]


def working_dir(config: api_pb2.ContainerConfig, image: dict) -> str:
    if config.working_dir:
        if not config.working_dir.startswith("/"):
            raise ValueError(f"working_dir: must be absolute, got {config.working_dir!r}")
        return posixpath.normpath(config.working_dir)
    image_dir = image.get("WorkingDir") or "/"
    if not isinstance(image_dir, str):
        raise ValueError(f"image config WorkingDir: must be a string, got {image_dir!r}")
    return posixpath.normpath(posixpath.join("/", image_dir))


def build_process(config, sandbox, image, rootfs, privileged, lsms) -> dict:
    sc = config.linux.security_context
    user, home = process_user(sc, image, rootfs)
    hostname = sandbox.hostname or os.uname().nodename
    process = {
        "terminal": config.tty,
        "user": user,
        "args": process_args(config, image),
        "env": process_env(config, image, hostname, home, config.tty),
        "cwd": working_dir(config, image),
        "capabilities": security.capability_sets(sc, privileged),
        "noNewPrivileges": sc.no_new_privs,
    }
    if profile := security.apparmor_profile(sc, lsms):
        process["apparmorProfile"] = profile
    if config.linux.HasField("resources"):
        process["oomScoreAdj"] = security.oom_score_adj(config.linux.resources)
    return process


# --- namespaces, sysctls, cgroup, annotations --------------------------------------------------


def namespace_modes(config, sandbox) -> dict[str, int]:
    sc = config.linux.security_context
    opts = (sc.namespace_options if sc.HasField("namespace_options")
            else sandbox.linux.security_context.namespace_options)  # fmt: skip
    where = f"{SC}.namespace_options"
    userns = opts.userns_options
    if opts.HasField("userns_options") and userns.mode == NS.POD and (userns.uids or userns.gids):
        raise ValueError(f"{where}.userns_options: user namespaces are not supported yet")
    for field in ("network", "ipc"):
        if getattr(opts, field) == NS.TARGET:
            raise ValueError(f"{where}.{field}: TARGET is only valid for the pid namespace")
    modes = {"network": opts.network, "ipc": opts.ipc, "pid": opts.pid, "uts": opts.network}
    return {t: modes.get(t, NS.CONTAINER) for t in _NS_ORDER}


def namespace_plan(config, sandbox, namespaces: dict[str, str], privileged: bool):
    """(`linux.namespaces`, {type: "new" | "pod" | "node"})."""
    entries, state = [], {}
    for ns_type, mode in namespace_modes(config, sandbox).items():
        if mode == NS.NODE or (ns_type == "cgroup" and privileged):
            state[ns_type] = "node"
            continue
        path = namespaces.get(ns_type, "") if mode in (NS.POD, NS.TARGET) else ""
        if mode == NS.TARGET and not path:
            target = config.linux.security_context.namespace_options.target_id
            raise ValueError(f"{SC}.namespace_options.target_id: no pid namespace for {target!r}")
        if path and not path.startswith("/"):
            raise ValueError(f"namespaces[{ns_type!r}]: must be an absolute path, got {path!r}")
        entries.append({"type": ns_type, "path": path} if path else {"type": ns_type})
        state[ns_type] = "pod" if path else "new"
    return entries, state


def pod_sysctls(sandbox: api_pb2.PodSandboxConfig, ns_state: dict[str, str]) -> dict[str, str]:
    sysctls = dict(sandbox.linux.sysctls)
    try:
        sysctl.validate(sysctls, {"ipc", "uts", "network"})  # names and values only
    except ValueError as err:
        message = str(err).replace("linux.sysctl", "linux.sysctls")
        raise ValueError(f"sandbox_config.{message}") from None
    chosen = {}
    for key, value in sysctls.items():
        ns_type = sysctl.required_namespace(".".join(sysctl.proc_path(key).split("/")))
        if ns_state[ns_type] == "node":
            raise ValueError(f"sandbox_config.linux.sysctls[{key!r}]: the pod uses the node's "
                             f"{ns_type} namespace; setting it would change the host")  # fmt: skip
        if ns_state[ns_type] == "new":
            chosen[key] = value
    return chosen


def cgroups_path(cgroup_parent: str, container_id: str) -> str:
    if not container_id or "/" in container_id or container_id in (".", ".."):
        raise ValueError(f"container id: invalid {container_id!r}")
    parent = cgroup_parent or DEFAULT_PARENT
    if ".." in parent.split("/"):
        raise ValueError(f"sandbox_config.linux.cgroup_parent: must not contain '..': {parent!r}")
    return posixpath.join("/", parent.strip("/"), container_id)


def annotations(config, sandbox, sandbox_id: str) -> dict[str, str]:
    meta = sandbox.metadata
    prefix = "io.kubernetes.cri."
    return {
        prefix + "container-type": "container",
        prefix + "sandbox-id": sandbox_id,
        prefix + "sandbox-name": meta.name,
        prefix + "sandbox-namespace": meta.namespace,
        prefix + "sandbox-uid": meta.uid,
        prefix + "container-name": config.metadata.name,
        prefix + "image-name": config.image.user_specified_image or config.image.image,
    }


# --- mounts ------------------------------------------------------------------------------------


def _root_propagation(mounts: list[dict]) -> str:
    options = {opt for m in mounts for opt in m["options"]}
    return next((p for p in ("rshared", "rslave") if p in options), "")


def build_mounts(config, hosts_files: dict[str, str], privileged: bool, host: dict):
    """(OCI `mounts`, rootfsPropagation or ""); `host` has "rootfs" and "mountinfo" paths."""
    cri = [security.cri_mount(m, f"mounts[{i}]", privileged, host)
           for i, m in enumerate(config.mounts)]  # fmt: skip
    taken = {m["destination"] for m in cri}
    readonly = config.linux.security_context.readonly_rootfs
    for dest, source in sorted(hosts_files.items()):
        if dest in taken:
            continue
        if not dest.startswith("/") or not source.startswith("/"):
            raise ValueError(f"hosts_files[{dest!r}]: paths must be absolute, got {source!r}")
        ro = "ro" if readonly and dest != "/dev/shm" else "rw"
        cri.append({"destination": dest, "type": "bind", "source": source,
                    "options": [*_POD_FILE_OPTIONS, ro]})  # fmt: skip
    cri.sort(key=lambda m: m["destination"].count("/"))  # stable: parents before children
    taken = {m["destination"] for m in cri}
    mounts = []
    for m in default_mounts():
        dest = m["destination"]
        if dest in taken or ("/dev" in taken and dest.startswith("/dev/")):
            continue
        if privileged and m["type"] in ("sysfs", "cgroup"):
            m = dict(m, options=[o for o in m["options"] if o != "ro"] + ["rw"])
        mounts.append(m)
    return mounts + cri, _root_propagation(cri)


# --- stop signal -------------------------------------------------------------------------------


def _parse_signal(value: str, where: str) -> int:
    """ "TERM", "SIGTERM", "15", "SIGRTMIN+3" -> a signal number."""
    text = value.strip().upper()
    if text.isdigit():
        number: int | None = int(text)
    else:
        number = _signal_by_name(text if text.startswith("SIG") else "SIG" + text)
    if number is None or not 1 <= number <= signal.SIGRTMAX:
        raise ValueError(f"{where}: unknown signal {value!r}")
    return number


def _signal_by_name(name: str) -> int | None:
    for base in ("SIGRTMIN", "SIGRTMAX"):
        if name.startswith(base) and name != base:
            offset = name[len(base) :]
            if offset[0] in "+-" and offset[1:].isdigit():
                return int(getattr(signal, base)) + int(offset)
            return None
    sig = getattr(signal, name, None)
    return int(sig) if isinstance(sig, signal.Signals) else None


def _cri_signal(value: int) -> int:
    name = api_pb2.Signal.Name(value)
    name = name.replace("SIGRTMINPLUS", "SIGRTMIN+").replace("SIGRTMAXMINUS", "SIGRTMAX-")
    return _parse_signal(name, "stop_signal")


def stop_signal(image_config: dict, config: api_pb2.ContainerConfig | None = None) -> int:
    """The signal StopContainer sends first: CRI stop_signal, else image StopSignal, else TERM."""
    try:
        if config is not None and config.stop_signal != api_pb2.RUNTIME_DEFAULT:
            return _cri_signal(config.stop_signal)
        value = image_section(image_config).get("StopSignal")
        if not value:
            return int(signal.SIGTERM)
        if not isinstance(value, str):
            raise ValueError(f"image config StopSignal: must be a string, got {value!r}")
        return _parse_signal(value, "image config StopSignal")
    except ValueError as err:
        raise InvalidArgument(str(err)) from None

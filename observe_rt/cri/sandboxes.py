"""Pod sandboxes: run, stop, remove, and recover them after a daemon restart.

    RunPodSandbox                                   StopPodSandbox          RemovePodSandbox
    ─────────────                                   ──────────────          ────────────────
    check metadata, name, handler                   containers killed       stop first
    record saved: CREATING
    pod dir: hostname, hosts, resolv.conf, /dev/shm CNI DEL (idempotent)    containers removed
    pod cgroup                                      netns file unbound      shim shut down
    shim (holds net/ipc/uts/pid namespaces)         state NOTREADY          /dev/shm, cgroup, dirs
    netns file + CNI ADD                                                    record deleted
    record saved: READY

Every step of RunPodSandbox registers its undo; a failure leaves nothing behind. A daemon
killed halfway leaves a CREATING record, and the next one undoes the pod at start. A READY pod
whose shim died reads as NOTREADY.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import time
import uuid
from pathlib import Path

from observe_rt import errors, trace
from observe_rt.config import DaemonConfig
from observe_rt.cri.records import RecordStore, SandboxRecord, encode
from observe_rt.cri.v1 import api_pb2
from observe_rt.host import libc
from observe_rt.pod.shim_client import ShimClient, ShimGone
from observe_rt.runtime import cgroups, sysctl

NODE, POD, CONTAINER = api_pb2.NODE, api_pb2.POD, api_pb2.CONTAINER
_SHM_SIZE = 64 * 1024 * 1024


class Sandboxes:
    def __init__(self, config: DaemonConfig, store: RecordStore, network) -> None:
        self.config = config
        self.store = store
        self.network = network  # observe_rt.network.cni.CniManager
        self.pods_dir = Path(config.run_dir) / "pods"
        self.netns_dir = Path(config.run_dir) / "netns"

    # --- lookups ------------------------------------------------------------------------------

    def get(self, sandbox_id: str) -> SandboxRecord:
        record = self.store.find_prefix(sandbox_id) if sandbox_id else None
        if record is None:
            raise errors.NotFound(f"pod sandbox {sandbox_id!r} not found")
        return self.refresh(record)

    def shim(self, record: SandboxRecord) -> ShimClient:
        return ShimClient(Path(record.shim_dir))

    def _runtime_location(self, record: SandboxRecord) -> tuple[str, str]:
        """(OCI runtime binary or "" for the built-in executor, its state root) for the pod."""
        binary = self.config.runtime_handlers.get(record.runtime_handler, "")
        if not binary:
            return "", self.config.oci_root
        return binary, os.path.join(self.config.run_dir, f"oci-{record.runtime_handler}")

    def runtime(self, record: SandboxRecord):
        """The pod's OCI runtime as the daemon drives it directly (ExecSync, clean-up)."""
        binary, root = self._runtime_location(record)
        if binary:
            from observe_rt.runtime.external import ExternalRuntime

            return ExternalRuntime(binary, root)
        from observe_rt.runtime.executor import Executor

        return Executor(root)

    # --- run ----------------------------------------------------------------------------------

    def run(self, config: api_pb2.PodSandboxConfig, handler: str) -> SandboxRecord:
        name = _unique_name(config.metadata)
        if handler and handler not in self.config.runtime_handlers:
            known = ", ".join(sorted(["(default)", *self.config.runtime_handlers]))
            raise errors.InvalidArgument(f"runtime_handler {handler!r} is unknown; known: {known}")
        with self.store.lock:
            clash = next((s for s in self.store.all() if s.name == name), None)
            if clash:
                raise errors.AlreadyExists(f"pod sandbox name {name!r} is used by {clash.id}")
            record = SandboxRecord(id=uuid.uuid4().hex + uuid.uuid4().hex, name=name,
                                   config_b64=encode(config), created_at=time.time_ns(),
                                   runtime_handler=handler, state="CREATING")  # fmt: skip
            self.store.items[record.id] = record  # reserves the name while we work
        try:
            with contextlib.ExitStack() as undo:
                undo.callback(self.store.delete, record.id)
                # On disk before anything is made: a daemon killed halfway finds it at start
                # and undoes it (recover_unfinished).
                self.store.save(record)
                self._build(record, config, undo)
                record.state = "READY"
                self.store.save(record)
                undo.pop_all()
        except OSError as err:
            raise errors.ObserveRtError(f"RunPodSandbox {config.metadata.name}: {err}") from err
        return record

    def _build(self, record: SandboxRecord, config, undo: contextlib.ExitStack) -> None:
        pod_dir = self.pods_dir / record.id
        pod_dir.mkdir(parents=True)
        undo.callback(shutil.rmtree, pod_dir, ignore_errors=True)
        options = config.linux.security_context.namespace_options
        host_network = options.network == NODE
        record.pod_files = _write_pod_files(pod_dir, config, host_network)
        if options.ipc != NODE:
            record.shm_mount = str(pod_dir / "shm")
            _mount_shm(record.shm_mount)
            undo.callback(_unmount, record.shm_mount)
        with trace.span("sandbox.cgroup"):
            record.cgroup_parent = self._create_cgroup(record, config)
        undo.callback(self._remove_cgroup, record)
        new = _new_namespaces(options)
        hostname = config.hostname or (os.uname().nodename if host_network else "")
        runtime, oci_root = self._runtime_location(record)
        # Sockets live in a short directory: unix socket paths end at 107 bytes.
        socket_path = Path(self.config.run_dir) / "s" / f"{record.id[:32]}.sock"
        undo.callback(socket_path.unlink, missing_ok=True)  # the shim leaves it behind
        with trace.span("sandbox.namespaces", {"observe_rt.namespaces": sorted(new)}):
            shim, info = ShimClient.start(pod_dir / "shim", oci_root, new, hostname,
                                          pod_dir / "shim.log", runtime,
                                          _pod_sysctls(config, new), socket_path)  # fmt: skip
        undo.callback(_stop_shim, shim)
        record.shim_dir = str(shim.dir)
        record.namespaces = info["namespaces"]
        if not host_network:
            with trace.span("sandbox.network"):
                self._setup_network(record, config, info["pid"], undo)

    def _setup_network(self, record, config, shim_pid: int, undo) -> None:
        from observe_rt.network import netns

        path = str(self.netns_dir / record.id)
        netns.bind_netns(shim_pid, path)  # a file CNI plugins and later tools can enter
        undo.callback(netns.remove_netns, path)
        record.netns_path = path
        meta = config.metadata
        ports = [{"hostPort": p.host_port, "containerPort": p.container_port,
                  "protocol": api_pb2.Protocol.Name(p.protocol).lower(), "hostIP": p.host_ip}
                 for p in config.port_mappings if p.host_port]  # fmt: skip
        result = self.network.setup(record.id, path, meta.namespace, meta.name, meta.uid, ports)
        undo.callback(self.network.teardown, record.id, path)
        record.ips = list(result.ips)

    def _cgroup_parent(self, record: SandboxRecord, config) -> str:
        return config.linux.cgroup_parent or f"{self.config.cgroup_parent}/pod-{record.id[:12]}"

    def _create_cgroup(self, record: SandboxRecord, config) -> str:
        parent = self._cgroup_parent(record, config)
        layout = cgroups.detect_layout()
        manager = cgroups.CgroupManager(cgroups.plan(None, parent, layout, record.id))
        with contextlib.suppress(errors.ObserveRtError):  # the kubelet may have made it already
            manager.create()
        return parent

    def _remove_cgroup(self, record: SandboxRecord) -> None:
        if not record.cgroup_parent:
            return
        layout = cgroups.detect_layout()
        plan = cgroups.plan(None, record.cgroup_parent, layout, record.id)
        for path in plan.dirs.values():
            with contextlib.suppress(OSError):
                os.rmdir(path)

    def update_resources(self, record: SandboxRecord, cri_resources) -> None:
        """New limits on the pod's cgroup (the sum its containers share)."""
        from observe_rt.cri import resources

        if record.state != "READY":
            state = record.state.lower()
            raise errors.FailedPrecondition(
                f"pod sandbox {record.id} is {state}: its cgroup is gone, nothing to update"
            )
        resources.apply(record.cgroup_parent, record.id, cri_resources)

    # --- state --------------------------------------------------------------------------------

    def refresh(self, record: SandboxRecord) -> SandboxRecord:
        """A ready pod whose shim died is NOTREADY: its namespaces and containers went with it."""
        if record.state == "READY" and not self.shim(record).alive():
            with self.store.lock:
                if record.state == "READY" and record.id in self.store.items:
                    record.state = "NOTREADY"
                    self.store.save(record)
        return record

    def recover_unfinished(self) -> int:
        """Undo every pod a killed daemon left half-made (state CREATING); returns how many.

        Its record holds only the id and config, so every place the build may have reached is
        derived from them, and each undo step is a no-op where the build did not get to.
        """
        unfinished = [r for r in self.store.all() if r.state == "CREATING"]
        for record in unfinished:
            config = record.config
            pod_dir = self.pods_dir / record.id
            record.shim_dir = str(pod_dir / "shim")
            record.shm_mount = str(pod_dir / "shm")
            record.cgroup_parent = self._cgroup_parent(record, config)
            if config.linux.security_context.namespace_options.network != NODE:
                record.netns_path = str(self.netns_dir / record.id)
            self.remove(record)
        return len(unfinished)

    # --- stop and remove ----------------------------------------------------------------------

    def stop(self, record: SandboxRecord) -> None:
        """Containers are stopped by the caller first; this releases the network."""
        if record.netns_path:
            self.network.teardown(record.id, record.netns_path)
            from observe_rt.network import netns

            netns.remove_netns(record.netns_path)
        if record.state != "NOTREADY":
            record.state = "NOTREADY"
            self.store.save(record)

    def remove(self, record: SandboxRecord) -> None:
        self.stop(record)
        shim = self.shim(record)
        socket_path = shim.socket_path
        _stop_shim(shim)
        if socket_path.parent.name == "s":
            socket_path.unlink(missing_ok=True)
        if record.shm_mount:
            _unmount(record.shm_mount)
        self._remove_cgroup(record)
        shutil.rmtree(self.pods_dir / record.id, ignore_errors=True)
        self.store.delete(record.id)


def _unique_name(meta: api_pb2.PodSandboxMetadata) -> str:
    for field_name in ("name", "namespace", "uid"):
        if not getattr(meta, field_name):
            raise errors.InvalidArgument(f"PodSandboxConfig.metadata.{field_name} is required")
    return f"{meta.name}_{meta.namespace}_{meta.uid}_{meta.attempt}"


def _pod_sysctls(config, new: set[str]) -> dict[str, str]:
    """The pod's sysctls as /proc/sys paths, refused unless its own namespaces make them safe."""
    raw = dict(config.linux.sysctls)
    try:
        sysctl.validate(raw, new)
    except ValueError as err:
        raise errors.InvalidArgument(str(err).replace("linux.sysctl", "linux.sysctls")) from None
    return {sysctl.proc_path(key): value for key, value in raw.items()}


def _new_namespaces(options) -> set[str]:
    """Which namespaces the shim creates: NODE means the host's, anything else the pod's."""
    new = set()
    if options.network != NODE:
        new |= {"network", "uts"}  # a host-network pod also keeps the host's hostname
    if options.ipc != NODE:
        new.add("ipc")
    if options.pid == POD:
        new.add("pid")
    return new


def _write_pod_files(pod_dir: Path, config, host_network: bool) -> dict[str, str]:
    """hostname, hosts and resolv.conf for the pod's containers to bind-mount."""
    files = {}
    hostname = config.hostname or os.uname().nodename
    (pod_dir / "hostname").write_text(hostname + "\n")
    files["/etc/hostname"] = str(pod_dir / "hostname")
    if host_network:
        shutil.copyfile("/etc/hosts", pod_dir / "hosts")
    else:
        (pod_dir / "hosts").write_text(
            "127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n"
            f"127.0.1.1\t{hostname}\n"
        )
    files["/etc/hosts"] = str(pod_dir / "hosts")
    dns = config.dns_config
    if dns.servers or dns.searches or dns.options:
        lines = [f"nameserver {s}" for s in dns.servers]
        lines += [f"search {' '.join(dns.searches)}"] if dns.searches else []
        lines += [f"options {' '.join(dns.options)}"] if dns.options else []
        (pod_dir / "resolv.conf").write_text("\n".join(lines) + "\n")
    elif os.path.exists("/etc/resolv.conf"):
        shutil.copyfile("/etc/resolv.conf", pod_dir / "resolv.conf")
    if (pod_dir / "resolv.conf").exists():
        files["/etc/resolv.conf"] = str(pod_dir / "resolv.conf")
    return files


def _mount_shm(path: str) -> None:
    os.makedirs(path, exist_ok=True)
    flags = libc.MS_NOSUID | libc.MS_NODEV | libc.MS_NOEXEC
    libc.mount("shm", path, "tmpfs", flags, f"mode=1777,size={_SHM_SIZE}")


def _unmount(path: str) -> None:
    with contextlib.suppress(OSError):
        libc.umount2(path, libc.MNT_DETACH)


def _stop_shim(shim: ShimClient) -> None:
    with contextlib.suppress(ShimGone, errors.ObserveRtError):
        shim.call("shutdown", timeout=15)
    if not shim.wait_gone(15):
        shim.kill()

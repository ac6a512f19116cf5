"""Containers of a pod: create, start, stop, remove, and their live state.

    CREATING ──made──> CREATED ──start──> RUNNING ──exit / stop──> EXITED ──remove──> (gone)
       │                  └──────────────────remove (forced)────────────────────────────┘
       └── the daemon was killed: undone by the next daemon at start (recover_unfinished)

The rootfs is an overlay of the image's layer snapshots with a per-container upper dir,
mounted by the daemon; the pod shim creates and starts the container from the OCI bundle and
records its exit. State is refreshed from the shim's files on every read, so exits that
happened while the daemon was down are seen exactly as they were.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import threading
import time
import uuid
from pathlib import Path

from observe_rt import errors, trace
from observe_rt.config import DaemonConfig
from observe_rt.cri.events import EventBus, LifecycleEvent
from observe_rt.cri.records import ContainerRecord, RecordStore, SandboxRecord, encode
from observe_rt.cri.v1 import api_pb2
from observe_rt.oci.images import ImageService
from observe_rt.oci.snapshots import mount_overlay, unmount
from observe_rt.pod.shim_client import ShimGone


class Containers:
    def __init__(self, config: DaemonConfig, store: RecordStore, sandboxes, images: ImageService,
                 bus: EventBus | None = None, probes=None):  # fmt: skip
        self.config = config
        self.store = store
        self.sandboxes = sandboxes
        self.images = images
        self.bus = bus or EventBus()
        self.probes = probes  # observe_rt.probes.manager.ProbeManager, when the daemon runs one
        self.on_probe_event = None  # also gets every probe event (export/probes.py counts OOMs)
        self.run_dir = Path(config.run_dir) / "containers"
        self.data_dir = Path(config.state_dir) / "rootfs"

    def get(self, container_id: str) -> ContainerRecord:
        record = self.store.find_prefix(container_id) if container_id else None
        if record is None:
            raise errors.NotFound(f"container {container_id!r} not found")
        return self.refresh(record)

    def of_sandbox(self, sandbox_id: str) -> list[ContainerRecord]:
        return [self.refresh(r) for r in self.store.all() if r.sandbox_id == sandbox_id]

    # --- create -------------------------------------------------------------------------------

    def create(self, sandbox: SandboxRecord, config: api_pb2.ContainerConfig,
               sandbox_config: api_pb2.PodSandboxConfig) -> ContainerRecord:  # fmt: skip
        if sandbox.state != "READY":
            raise errors.FailedPrecondition(f"pod sandbox {sandbox.id} is not ready")
        name = _unique_name(config.metadata, sandbox.id)
        image = self.images.find(config.image.image) if config.image.image else None
        if image is None:
            raise errors.NotFound(f"image {config.image.image!r} is not present; pull it first")
        with self.store.lock:
            clash = next((c for c in self.store.all() if c.name == name), None)
            if clash:
                raise errors.AlreadyExists(f"container name {name!r} is used by {clash.id}")
            record = ContainerRecord(
                id=uuid.uuid4().hex + uuid.uuid4().hex, sandbox_id=sandbox.id, name=name,
                config_b64=encode(config), created_at=time.time_ns(), image=config.image.image,
                image_ref=image.id, chain=self.images.rootfs_chain(image), state="CREATING",
            )  # fmt: skip
            self.store.items[record.id] = record  # reserves the name while we work
        with contextlib.ExitStack() as undo:
            undo.callback(self.store.delete, record.id)
            # On disk before anything is made: a daemon killed halfway finds it at start and
            # undoes it (recover_unfinished).
            self.store.save(record)
            self._build(record, sandbox, config, sandbox_config, image, undo)
            record.state = "CREATED"
            self.store.save(record)
            undo.pop_all()
        self._publish(record, "CREATED")
        return record

    def recover_unfinished(self) -> int:
        """Undo every container a killed daemon left half-made (state CREATING): its rootfs
        mount and directories, and whatever the shim made of it. Returns how many."""
        unfinished = [r for r in self.store.all() if r.state == "CREATING"]
        for record in unfinished:
            record.rootfs = str(self.run_dir / record.id / "rootfs")
            self.remove(record)
        return len(unfinished)

    def _publish(self, record: ContainerRecord, kind: str) -> None:
        self.bus.publish(LifecycleEvent(record.id, record.sandbox_id, kind, time.time_ns()))

    def _build(self, record, sandbox, config, sandbox_config, image, undo) -> None:
        from observe_rt.cri.container_spec import build_container_spec, stop_signal

        run = self.run_dir / record.id
        data = self.data_dir / record.id
        for d in (run / "rootfs", run / "bundle", data / "upper", data / "work"):
            d.mkdir(parents=True)
        undo.callback(shutil.rmtree, run, ignore_errors=True)
        undo.callback(shutil.rmtree, data, ignore_errors=True)
        with trace.span("container.rootfs", {"observe_rt.rootfs.layers": len(record.chain)}):
            lower = self.images.snapshots.lowerdirs(record.chain)
            mount_overlay(lower, str(data / "upper"), str(data / "work"), str(run / "rootfs"))
        undo.callback(unmount, str(run / "rootfs"), True)
        record.rootfs, record.bundle, record.container_dir = (
            str(run / "rootfs"),
            str(run / "bundle"),
            str(data),
        )
        with trace.span("container.bundle"):
            image_config = self.images.config(image)
            spec = build_container_spec(
                config, sandbox_config, image_config, rootfs=record.rootfs,
                namespaces=sandbox.namespaces, cgroup_parent=sandbox.cgroup_parent,
                container_id=record.id, sandbox_id=sandbox.id,
                hosts_files=dict(sandbox.pod_files, **({"/dev/shm": sandbox.shm_mount}
                                                       if sandbox.shm_mount else {})),
            )  # fmt: skip
            record.stop_signal = stop_signal(image_config, config)
            (run / "bundle" / "config.json").write_text(json.dumps(spec))
        record.log_path = _log_path(sandbox_config.log_directory, config.log_path)
        with trace.span("executor.create", {"container.id": record.id}):
            reply = self.sandboxes.shim(sandbox).call(
                "create", id=record.id, bundle=record.bundle, log_path=record.log_path,
                stdin=config.stdin, stdin_once=config.stdin_once, tty=config.tty,
            )  # fmt: skip
            undo.callback(self._delete_in_shim, sandbox, record.id)
            if trace.enabled():  # the executor timed its steps in the shim: steps.json
                trace.executor_steps(self._executor_steps_path(sandbox, record.id))
        record.pid = reply["pid"]
        record.cgroup_id = _cgroup_id(spec["linux"]["cgroupsPath"], record.id)

    def _executor_steps_path(self, sandbox: SandboxRecord, container_id: str) -> str:
        runtime = self.sandboxes.runtime(sandbox)  # the built-in executor keeps states there
        states = getattr(runtime, "states", None)
        return os.path.join(states.dir(container_id), "steps.json") if states else ""

    # --- start, stop, remove ------------------------------------------------------------------

    def start(self, record: ContainerRecord) -> None:
        record = self.refresh(record)
        if record.state != "CREATED":
            raise errors.FailedPrecondition(
                f"container {record.id} is {record.state.lower()}, only a created one can start"
            )
        sandbox = self.sandboxes.get(record.sandbox_id)
        if self.probes is not None and record.cgroup_id:
            self.probes.track(record.cgroup_id)  # before the workload's first instruction
        with trace.span("executor.start", {"container.id": record.id}):
            reply = self.sandboxes.shim(sandbox).call("start", id=record.id)
        record.started_at, record.state = reply["started_at"], "RUNNING"
        self.store.save(record)
        self._publish(record, "STARTED")

    def stop(self, record: ContainerRecord, timeout: int) -> None:
        """The stop signal, `timeout` seconds, then SIGKILL to every process in its cgroup."""
        record = self.refresh(record)
        if record.state not in ("RUNNING", "CREATED"):
            return
        attributes = {"container.id": record.id, "observe_rt.stop.timeout_s": timeout}
        with trace.span("container.stop", attributes) as span:
            started = time.monotonic()
            sent = self._send_stop(record, timeout)
            span.set_attributes({"observe_rt.stop.signal": sent,
                                 "observe_rt.stop.exit_s": time.monotonic() - started})  # fmt: skip

    def _send_stop(self, record: ContainerRecord, timeout: int) -> str:
        """Signal until the container exits; returns the name of the last signal sent."""
        shim = self.sandboxes.shim(self.sandboxes.get(record.sandbox_id))
        with contextlib.suppress(errors.ObserveRtError):
            if record.state == "RUNNING" and timeout > 0:
                shim.call("kill", id=record.id, signal=record.stop_signal)
                if self._wait_exit(record, timeout):
                    return _signal_name(record.stop_signal)
            shim.call("kill", id=record.id, signal=signal.SIGKILL, all=True)
        self._wait_exit(record, 10)
        return "SIGKILL"

    def _wait_exit(self, record: ContainerRecord, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while self.refresh(record).state not in ("EXITED", "UNKNOWN"):
            if time.monotonic() > deadline:
                return False
            time.sleep(0.02)
        return True

    def remove(self, record: ContainerRecord) -> None:
        record = self.refresh(record)
        if record.state in ("RUNNING", "CREATED"):
            self.stop(record, 0)
        with contextlib.suppress(errors.NotFound):
            self._delete_in_shim(self.sandboxes.get(record.sandbox_id), record.id)
        with contextlib.suppress(OSError):
            unmount(record.rootfs, True)
        shutil.rmtree(self.run_dir / record.id, ignore_errors=True)
        shutil.rmtree(self.data_dir / record.id, ignore_errors=True)
        if self.probes is not None and record.cgroup_id:
            self.probes.untrack(record.cgroup_id)
        self.store.delete(record.id)
        self._publish(record, "DELETED")

    def _delete_in_shim(self, sandbox: SandboxRecord, container_id: str) -> None:
        try:
            self.sandboxes.shim(sandbox).call("delete", id=container_id)
        except ShimGone:
            # No shim: clean the runtime's state and cgroup from here.
            with contextlib.suppress(errors.NotFound):
                self.sandboxes.runtime(sandbox).delete(container_id, force=True)

    def reopen_log(self, record: ContainerRecord) -> None:
        record = self.refresh(record)
        if record.state != "RUNNING":
            raise errors.FailedPrecondition(f"container {record.id} is not running")
        self.sandboxes.shim(self.sandboxes.get(record.sandbox_id)).call("reopen_log", id=record.id)

    # --- state --------------------------------------------------------------------------------

    def refresh(self, record: ContainerRecord) -> ContainerRecord:
        """Merge what the shim recorded (start, exit) into the record, and persist changes."""
        with self.store.lock:  # the exit watcher and RPCs refresh concurrently
            return self._refresh(record)

    def _refresh(self, record: ContainerRecord) -> ContainerRecord:
        if record.state in ("EXITED", "UNKNOWN", "CREATING"):
            return record
        sandbox = self.sandboxes.store.get(record.sandbox_id)
        shim_dir = Path(sandbox.shim_dir) / "containers" / record.id if sandbox else None
        exit_info = _read_json(shim_dir / "exit.json") if shim_dir else None
        started = None
        if shim_dir and not record.started_at:  # read once: it never changes after the start
            started = _read_json(shim_dir / "started.json")
        if started:
            record.started_at, record.state = started["started_at"], "RUNNING"
        if exit_info:
            record.state, record.finished_at = "EXITED", exit_info["finished_at"]
            record.exit_code, record.reason = exit_info["exit_code"], exit_info["reason"]
            trace.container_event(record.id, "container.exit", {
                "observe_rt.exit.code": record.exit_code, "observe_rt.exit.reason": record.reason,
            }, error="" if record.reason == "Completed" else record.reason)  # fmt: skip
        elif sandbox is None or not self.sandboxes.shim(sandbox).alive():
            self._kill_orphans(record)
            record.state, record.reason, record.exit_code = "EXITED", "ShimDied", 255
            record.finished_at = record.finished_at or time.time_ns()
            record.message = "the pod shim exited; the container's processes were lost with it"
            trace.container_event(record.id, "container.shim_died", {}, error=record.message)
        else:
            return record
        self.store.save(record)
        self._publish(record, "STOPPED")
        return record

    def note_oom_kill(self, event) -> None:
        """An OOM kill the probes saw: the container's status names the victim."""
        with self.store.lock:
            record = next((r for r in self.store.all() if r.cgroup_id == event.cgroup_id), None)
            if record is None:
                return
            record.message = (
                f"OOM killer stopped pid {event.victim_pid} ({event.victim_comm}), "
                f"rss {event.rss_kb} kB"
            )
            self.store.save(record)
        trace.container_event(record.id, "container.oom_kill", {
            "process.pid": event.victim_pid, "process.command": event.victim_comm,
            "observe_rt.oom.rss_kb": event.rss_kb,
        }, error=record.message)  # fmt: skip

    def watch_probes(self, stop: threading.Event) -> None:
        """Drain the probes' rare events (OOM kills today) into container status."""
        from observe_rt.probes.events import OomKill

        while not stop.is_set():
            for event in self.probes.poll_events(timeout_ms=500):
                if self.on_probe_event is not None:
                    with contextlib.suppress(Exception):
                        self.on_probe_event(event)
                if isinstance(event, OomKill):
                    with contextlib.suppress(Exception):
                        self.note_oom_kill(event)

    def watch_exits(self, stop: threading.Event, interval: float = 0.5) -> None:
        """Notice exits (and pods whose shim died) without waiting for a status call, so
        STOPPED events flow and the List RPCs can answer from memory."""
        while not stop.wait(interval):
            for sandbox in self.sandboxes.store.all():
                if sandbox.state == "READY":
                    with contextlib.suppress(Exception):
                        self.sandboxes.refresh(sandbox)
            for record in self.store.all():
                if record.state in ("RUNNING", "CREATED") and record.bundle:
                    with contextlib.suppress(Exception):
                        self.refresh(record)

    # --- exec and resources -------------------------------------------------------------------

    def exec_sync(self, record: ContainerRecord, cmd: list[str], timeout: float):
        record = self.refresh(record)
        if record.state != "RUNNING":
            raise errors.FailedPrecondition(
                f"container {record.id} is {record.state.lower()}: exec needs a running container"
            )
        if not cmd:
            raise errors.InvalidArgument("ExecSyncRequest.cmd: a command is required")
        runtime = self.sandboxes.runtime(self.sandboxes.get(record.sandbox_id))
        if hasattr(runtime, "exec_sync"):
            return runtime.exec_sync(record.id, cmd, timeout)
        from observe_rt.runtime.exec import exec_sync

        return exec_sync(runtime, record.id, cmd, timeout)

    def update_resources(self, record: ContainerRecord, cri_resources) -> None:
        """New cgroup limits for a running container (validated as at create)."""
        from observe_rt.cri import resources

        record = self.refresh(record)
        if record.state not in ("RUNNING", "CREATED"):
            raise errors.FailedPrecondition(f"container {record.id} is {record.state.lower()}")
        spec = json.loads((Path(record.bundle) / "config.json").read_text())
        resources.apply(spec["linux"]["cgroupsPath"], record.id, cri_resources)

    def _kill_orphans(self, record: ContainerRecord) -> None:
        """Without its shim a container may still run, reparented to init: end it."""
        with contextlib.suppress(errors.ObserveRtError, OSError):
            runtime = self.sandboxes.runtime(self.sandboxes.get(record.sandbox_id))
            runtime.kill(record.id, signal.SIGKILL, all_processes=True)


def _cgroup_id(cgroups_path: str, container_id: str) -> int:
    """The inode of the container's v2 cgroup directory (0 on hosts without cgroup v2)."""
    from observe_rt.runtime import cgroups

    with contextlib.suppress(OSError, ValueError, RuntimeError, errors.ObserveRtError):
        plan = cgroups.plan(None, cgroups_path, cgroups.detect_layout(), container_id)
        return cgroups.CgroupManager(plan).cgroup_id()
    return 0


def _signal_name(number: int) -> str:
    try:
        return signal.Signals(number).name
    except ValueError:
        return str(number)


def _unique_name(meta: api_pb2.ContainerMetadata, sandbox_id: str) -> str:
    if not meta.name:
        raise errors.InvalidArgument("ContainerConfig.metadata.name is required")
    return f"{meta.name}_{sandbox_id}_{meta.attempt}"


def _log_path(directory: str, relative: str) -> str:
    if not directory or not relative:
        return ""
    if os.path.isabs(relative) or ".." in Path(relative).parts:
        raise errors.InvalidArgument(f"ContainerConfig.log_path {relative!r}: must stay inside "
                                     "the pod's log_directory")  # fmt: skip
    return os.path.join(directory, relative)


def _read_json(path: Path) -> dict | None:
    try:
        return json.loads(path.read_text())
    except (FileNotFoundError, ValueError):
        return None

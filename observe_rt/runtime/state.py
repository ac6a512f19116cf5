"""On-disk state of containers under a state root (`--root`), one directory per container.

    <root>/<id>/state.json   what `create` recorded (written atomically: temp, fsync, rename)
    <root>/<id>/exec.fifo    exists from `create` until `start`; its presence means "created"
    <root>/<id>/lock         flock'ed by every command that changes the container

The status is never stored: it is derived from the process (alive, same start time, not a
zombie) and the fifo, so a crashed runtime can never leave a stale "running" behind.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from observe_rt.errors import InvalidArgument, NotFound
from observe_rt.host.files import write_json_atomic

OCI_VERSION = "1.2.0"
DEFAULT_ROOT = "/run/observe-rt/oci"
_ID_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.+-]{0,127}$")
STATE_FILE = "state.json"
FIFO = "exec.fifo"


def check_id(container_id: str) -> None:
    if not _ID_PATTERN.match(container_id):
        raise InvalidArgument(
            f"container id {container_id!r}: use 1-128 letters, digits, '_', '.', '+', '-'"
        )


@dataclass
class ContainerState:
    id: str
    bundle: str
    pid: int = 0
    pid_start_time: int = 0
    annotations: dict[str, str] = field(default_factory=dict)
    created: str = ""
    rootfs: str = ""
    cgroup: dict[str, Any] = field(default_factory=dict)
    cgroup_id: int = 0

    def to_oci(self, status: str) -> dict[str, Any]:
        """The runtime-spec `state` object (what `observe-rt oci state` prints)."""
        return {
            "ociVersion": OCI_VERSION,
            "id": self.id,
            "status": status,
            "pid": self.pid if status != "stopped" else 0,
            "bundle": self.bundle,
            "annotations": self.annotations,
            "created": self.created,
            "rootfs": self.rootfs,
            "cgroupId": self.cgroup_id,
        }


class StateRoot:
    def __init__(self, root: str) -> None:
        self.root = root

    def dir(self, container_id: str) -> str:
        check_id(container_id)
        return os.path.join(self.root, container_id)

    def ids(self) -> list[str]:
        try:
            return sorted(
                e for e in os.listdir(self.root)
                if os.path.exists(os.path.join(self.root, e, STATE_FILE))
            )  # fmt: skip
        except FileNotFoundError:
            return []

    def load(self, container_id: str) -> ContainerState:
        path = os.path.join(self.dir(container_id), STATE_FILE)
        try:
            with open(path) as f:
                return ContainerState(**json.load(f))
        except FileNotFoundError:
            raise NotFound(f"container {container_id} does not exist") from None

    def save(self, state: ContainerState) -> None:
        write_json_atomic(os.path.join(self.dir(state.id), STATE_FILE), state.__dict__)

    @contextlib.contextmanager
    def locked(self, container_id: str) -> Iterator[None]:
        lock_path = os.path.join(self.dir(container_id), "lock")
        try:
            fd = os.open(lock_path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        except FileNotFoundError:
            raise NotFound(f"container {container_id} does not exist") from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            os.close(fd)

    def status(self, state: ContainerState) -> str:
        if not process_alive(state.pid, state.pid_start_time):
            return "stopped"
        if os.path.exists(os.path.join(self.dir(state.id), FIFO)):
            return "created"
        return "running"


def process_start_time(pid: int, proc: str = "/proc") -> int | None:
    """Start time (clock ticks since boot) of `pid`, or None when gone or a zombie."""
    try:
        with open(f"{proc}/{pid}/stat") as f:
            raw = f.read()
    except (FileNotFoundError, ProcessLookupError):
        return None
    # The command name may hold spaces and parentheses: split after the last ')'.
    fields = raw[raw.rindex(")") + 2 :].split()
    if fields[0] in ("Z", "X"):
        return None
    return int(fields[19])


def process_alive(pid: int, start_time: int, proc: str = "/proc") -> bool:
    """True when `pid` still runs and is the same process (not a reused pid)."""
    return pid > 0 and process_start_time(pid, proc) == start_time

"""What the daemon remembers about pods and containers, on disk, so a restart loses nothing.

    <state_dir>/pods/<id>.json          SandboxRecord
    <state_dir>/containers/<id>.json    ContainerRecord

Each file is replaced atomically (temp, fsync, rename). The CRI configs are kept as the
serialized protobuf, so status answers repeat exactly what the kubelet sent. Facts that only
the pod shim learns (start, exit) live in the shim's files and are merged in when read.
"""

from __future__ import annotations

import base64
import json
import threading
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path

from observe_rt.cri.v1 import api_pb2
from observe_rt.host.files import write_json_atomic


@dataclass
class SandboxRecord:
    id: str
    name: str  # <name>_<namespace>_<uid>_<attempt>, unique among pods
    config_b64: str
    created_at: int
    runtime_handler: str = ""
    state: str = "READY"  # CREATING (being made) | READY | NOTREADY
    shim_dir: str = ""
    netns_path: str = ""  # empty for host-network pods
    namespaces: dict[str, str] = field(default_factory=dict)  # type -> path containers join
    ips: list[str] = field(default_factory=list)
    cgroup_parent: str = ""
    pod_files: dict[str, str] = field(default_factory=dict)  # /etc/hosts ... -> host path
    shm_mount: str = ""

    @property
    def config(self) -> api_pb2.PodSandboxConfig:
        return api_pb2.PodSandboxConfig.FromString(base64.b64decode(self.config_b64))


@dataclass
class ContainerRecord:
    id: str
    sandbox_id: str
    name: str  # <name>_<sandbox id>_<attempt>, unique within the pod
    config_b64: str
    created_at: int
    image: str  # the image as the kubelet named it
    image_ref: str  # the image id
    log_path: str = ""
    bundle: str = ""
    rootfs: str = ""
    container_dir: str = ""  # upper and work dirs of the overlay
    chain: list[str] = field(default_factory=list)  # image layers the rootfs stands on
    stop_signal: int = 15
    cgroup_id: int = 0  # the v2 cgroup's id: how the eBPF probes name this container
    pid: int = 0
    started_at: int = 0
    finished_at: int = 0
    exit_code: int = 0
    reason: str = ""
    message: str = ""
    state: str = "CREATED"  # CREATING (being made) | CREATED | RUNNING | EXITED | UNKNOWN

    @property
    def config(self) -> api_pb2.ContainerConfig:
        return api_pb2.ContainerConfig.FromString(base64.b64decode(self.config_b64))


def encode(message) -> str:
    return base64.b64encode(message.SerializeToString()).decode()


class RecordStore:
    """Records of one kind in one directory, cached in memory, written through to disk."""

    def __init__(self, directory: Path, kind: type) -> None:
        self.dir = Path(directory)
        self.dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        self.kind = kind
        self.lock = threading.RLock()
        self.items: dict[str, object] = {}
        known = {f.name for f in fields(kind)}
        for path in sorted(self.dir.glob("*.json")):
            data = json.loads(path.read_text())
            self.items[data["id"]] = kind(**{k: v for k, v in data.items() if k in known})

    def save(self, record) -> None:
        with self.lock:
            write_json_atomic(self.dir / f"{record.id}.json", asdict(record), mode=0o600)
            self.items[record.id] = record

    def delete(self, record_id: str) -> None:
        with self.lock:
            (self.dir / f"{record_id}.json").unlink(missing_ok=True)
            self.items.pop(record_id, None)

    def get(self, record_id: str):
        with self.lock:
            return self.items.get(record_id)

    def all(self) -> list:
        with self.lock:
            return list(self.items.values())

    def find_prefix(self, prefix: str):
        """A record by full id or unique id prefix (as crictl lets people type them)."""
        with self.lock:
            if prefix in self.items:
                return self.items[prefix]
            matches = [r for i, r in self.items.items() if prefix and i.startswith(prefix)]
            return matches[0] if len(matches) == 1 else None

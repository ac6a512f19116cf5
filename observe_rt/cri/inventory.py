"""What the stats collector samples each tick, built from the daemon's records.

Only in-memory records are copied here (the collector calls this once per tick); cgroup
directories are worked out once per pod or container and cached.
"""

from __future__ import annotations

import contextlib
import json
import os

from observe_rt.errors import ObserveRtError
from observe_rt.model.snapshot import ContainerInfo, Inventory, PodInfo
from observe_rt.runtime import cgroups


class InventorySource:
    def __init__(self, sandboxes, containers, oci_root: str) -> None:
        self.sandboxes = sandboxes
        self.containers = containers
        self.oci_root = oci_root
        self._cgroups: dict[str, tuple[str, dict[str, str]]] = {}  # id -> (path, dirs)

    def __call__(self) -> Inventory:
        pods = [
            self._pod(r) for r in self.sandboxes.store.all() if r.state in ("READY", "NOTREADY")
        ]
        containers = [self._container(r) for r in self.containers.store.all()
                      if r.bundle and r.state != "CREATING"]  # fmt: skip
        live = {p.id for p in pods} | {c.id for c in containers}
        for stale in set(self._cgroups) - live:
            del self._cgroups[stale]
        return Inventory(pods=pods, containers=containers)

    def _pod(self, record) -> PodInfo:
        config = record.config
        meta = config.metadata
        if record.id not in self._cgroups:
            self._cgroups[record.id] = (
                record.cgroup_parent,
                _dirs(record.cgroup_parent, record.id),
            )
        shim_pid = 0
        with contextlib.suppress(OSError, ValueError, KeyError):
            shim_pid = self.sandboxes.shim(record).info()["pid"]
        return PodInfo(
            id=record.id, name=meta.name, namespace=meta.namespace, uid=meta.uid,
            attempt=meta.attempt, state=record.state, created_at_ns=record.created_at,
            cgroup_path=record.cgroup_parent, cgroup_paths=self._cgroups[record.id][1],
            netns_pid=shim_pid if record.netns_path else 0, labels=dict(config.labels),
            annotations=dict(config.annotations),
        )  # fmt: skip

    def _container(self, record) -> ContainerInfo:
        config = record.config
        cgroup_path, paths = self._container_cgroup(record)
        return ContainerInfo(
            id=record.id, pod_id=record.sandbox_id, name=config.metadata.name,
            image=record.image, attempt=config.metadata.attempt, state=record.state,
            created_at_ns=record.created_at, started_at_ns=record.started_at,
            cgroup_path=cgroup_path, cgroup_id=record.cgroup_id, cgroup_paths=paths,
            writable_layer=os.path.join(record.container_dir, "upper"),
            fs_id=record.container_dir, labels=dict(config.labels),
            annotations=dict(config.annotations),
        )  # fmt: skip

    def _container_cgroup(self, record) -> tuple[str, dict[str, str]]:
        """The container's cgroupsPath (from its bundle) and directories per hierarchy."""
        if record.id not in self._cgroups:
            path = ""
            with (
                contextlib.suppress(OSError, ValueError, KeyError),
                open(os.path.join(record.bundle, "config.json")) as f,
            ):
                path = json.load(f)["linux"]["cgroupsPath"]
            self._cgroups[record.id] = (path, _dirs(path, record.id) if path else {})
        return self._cgroups[record.id]


def _dirs(cgroup_path: str, owner: str) -> dict[str, str]:
    try:
        plan = cgroups.plan(None, cgroup_path, cgroups.detect_layout(), owner)
    except (ObserveRtError, ValueError, RuntimeError):
        return {}
    return cgroups.CgroupManager(plan).paths()

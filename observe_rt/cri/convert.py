"""Records -> CRI messages, and the List filters. Pure functions of records."""

from __future__ import annotations

import json
import os

from observe_rt.cri.records import ContainerRecord, SandboxRecord
from observe_rt.cri.v1 import api_pb2

_SANDBOX_STATES = {"READY": api_pb2.SANDBOX_READY, "NOTREADY": api_pb2.SANDBOX_NOTREADY}
_CONTAINER_STATES = {
    "CREATED": api_pb2.CONTAINER_CREATED, "RUNNING": api_pb2.CONTAINER_RUNNING,
    "EXITED": api_pb2.CONTAINER_EXITED, "UNKNOWN": api_pb2.CONTAINER_UNKNOWN,
    "CREATING": api_pb2.CONTAINER_UNKNOWN,  # still being made: not yet in any List answer
}  # fmt: skip


def sandbox(record: SandboxRecord) -> api_pb2.PodSandbox:
    config = record.config
    return api_pb2.PodSandbox(
        id=record.id, metadata=config.metadata, state=_SANDBOX_STATES.get(record.state, 1),
        created_at=record.created_at, labels=config.labels, annotations=config.annotations,
        runtime_handler=record.runtime_handler,
    )  # fmt: skip


def sandbox_status(record: SandboxRecord) -> api_pb2.PodSandboxStatus:
    config = record.config
    network = api_pb2.PodSandboxNetworkStatus()
    if record.ips and record.state == "READY":
        network.ip = record.ips[0]
        network.additional_ips.extend(api_pb2.PodIP(ip=ip) for ip in record.ips[1:])
    options = config.linux.security_context.namespace_options
    linux = api_pb2.LinuxPodSandboxStatus(namespaces=api_pb2.Namespace(options=options))
    return api_pb2.PodSandboxStatus(
        id=record.id, metadata=config.metadata, state=_SANDBOX_STATES.get(record.state, 1),
        created_at=record.created_at, network=network, linux=linux, labels=config.labels,
        annotations=config.annotations, runtime_handler=record.runtime_handler,
    )  # fmt: skip


def sandbox_info(record: SandboxRecord, shim) -> dict:
    try:
        shim_info = shim.info()
    except (OSError, ValueError):
        shim_info = {}
    return {
        "id": record.id, "netnsPath": record.netns_path, "namespaces": record.namespaces,
        "cgroupParent": record.cgroup_parent, "shim": shim_info, "ips": record.ips,
        "runtimeHandler": record.runtime_handler,
    }  # fmt: skip


def container(record: ContainerRecord) -> api_pb2.Container:
    config = record.config
    return api_pb2.Container(
        id=record.id, pod_sandbox_id=record.sandbox_id, metadata=config.metadata,
        image=api_pb2.ImageSpec(image=record.image), image_ref=record.image_ref,
        image_id=record.image_ref, state=_CONTAINER_STATES[record.state],
        created_at=record.created_at, labels=config.labels, annotations=config.annotations,
    )  # fmt: skip


def container_status(record: ContainerRecord) -> api_pb2.ContainerStatus:
    config = record.config
    return api_pb2.ContainerStatus(
        id=record.id, metadata=config.metadata, state=_CONTAINER_STATES[record.state],
        created_at=record.created_at, started_at=record.started_at,
        finished_at=record.finished_at, exit_code=record.exit_code,
        image=api_pb2.ImageSpec(image=record.image), image_ref=record.image_ref,
        image_id=record.image_ref, reason=record.reason, message=record.message,
        labels=config.labels, annotations=config.annotations, mounts=config.mounts,
        log_path=record.log_path,
    )  # fmt: skip


def container_info(record: ContainerRecord) -> dict:
    """Verbose info as containerd gives it: tools such as Tetragon read runtimeSpec from it."""
    spec = {}
    path = os.path.join(record.bundle, "config.json")
    if os.path.exists(path):
        with open(path) as f:
            spec = json.load(f)
    return {
        "sandboxID": record.sandbox_id, "pid": record.pid, "runtimeSpec": spec,
        "snapshotKey": record.id, "rootfs": record.rootfs, "image": record.image_ref,
    }  # fmt: skip


def _labels_match(labels, selector) -> bool:
    return all(labels.get(k) == v for k, v in selector.items())


def filter_sandboxes(items: list, wanted) -> list:
    if wanted is None:
        return items
    return [
        s for s in items
        if (not wanted.id or s.id.startswith(wanted.id))
        and (not wanted.HasField("state") or s.state == wanted.state.state)
        and _labels_match(s.labels, wanted.label_selector)
    ]  # fmt: skip


def filter_containers(items: list, wanted) -> list:
    if wanted is None:
        return items
    return [
        c for c in items
        if (not wanted.id or c.id.startswith(wanted.id))
        and (not wanted.pod_sandbox_id or c.pod_sandbox_id.startswith(wanted.pod_sandbox_id))
        and (not wanted.HasField("state") or c.state == wanted.state.state)
        and _labels_match(c.labels, wanted.label_selector)
    ]  # fmt: skip

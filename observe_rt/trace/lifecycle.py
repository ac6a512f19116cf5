"""What the traces remember of pods and containers, and the runtime events linked to them.

    RunPodSandbox   ─> pod id -> k8s.pod.name, k8s.namespace.name, k8s.pod.uid
    CreateContainer ─> container id -> pod names + k8s.container.name, container.image.name,
                       and the span context of the call (the container's lifecycle)
    StartContainer  ─> that span context becomes the start call's
    an OOM kill, an exit, the shim's death ─> a span of its own, linked to the lifecycle span
                       (the call that caused it returned long ago), carrying the names

Kept in memory, bounded (oldest forgotten first): after a daemon restart, events of older
containers still carry container.id, just not the names.
"""

from __future__ import annotations

import collections
import json
import logging
import threading

from opentelemetry import trace as otel_trace
from opentelemetry.trace.status import Status, StatusCode

log = logging.getLogger("observe_rt.trace")
LIMIT = 4096
_POD_KEYS = ("k8s.pod.name", "k8s.namespace.name", "k8s.pod.uid")
_CONTAINER_KEYS = (*_POD_KEYS, "k8s.pod.sandbox.id", "k8s.container.name", "container.image.name")

_lock = threading.Lock()
_pods: collections.OrderedDict[str, dict] = collections.OrderedDict()
_containers: collections.OrderedDict[str, tuple[dict, object]] = collections.OrderedDict()


def _keep(table: collections.OrderedDict, key: str, value) -> None:
    table[key] = value
    table.move_to_end(key)
    while len(table) > LIMIT:
        table.popitem(last=False)


def remember(method: str, attributes: dict, span_context) -> None:
    """After a successful call: learn or forget what it made or removed."""
    pod_id, container_id = attributes.get("k8s.pod.sandbox.id"), attributes.get("container.id")
    with _lock:
        if method == "RunPodSandbox" and pod_id:
            _keep(_pods, pod_id, {k: attributes[k] for k in _POD_KEYS if k in attributes})
        elif method == "CreateContainer" and container_id:
            names = {**_pods.get(pod_id or "", {}), **attributes}
            _keep(_containers, container_id,
                  ({k: names[k] for k in _CONTAINER_KEYS if k in names}, span_context))  # fmt: skip
        elif method == "StartContainer" and container_id in _containers:
            _keep(_containers, container_id, (_containers[container_id][0], span_context))
        elif method == "RemoveContainer" and container_id:
            _containers.pop(container_id, None)
        elif method == "RemovePodSandbox" and pod_id:
            _pods.pop(pod_id, None)


def known(attributes: dict) -> dict:
    """`attributes` with the names remembered for its container or pod id added."""
    with _lock:
        found = _containers.get(attributes.get("container.id", ""))
        names = found[0] if found else _pods.get(attributes.get("k8s.pod.sandbox.id", ""), {})
    return {**names, **attributes}


def container_event(tracer, container_id: str, name: str, attributes: dict, error: str) -> None:
    """`name` as a short span linked to the container's lifecycle span, with one event."""
    with _lock:
        names, lifecycle = _containers.get(container_id, ({}, None))
    links = [otel_trace.Link(lifecycle)] if lifecycle is not None else []
    all_attributes = {**names, "container.id": container_id, **attributes}
    with tracer.start_as_current_span(name, links=links, attributes=all_attributes) as span:
        span.add_event(name.rsplit(".", 1)[-1], attributes)
        if error:
            span.set_status(Status(StatusCode.ERROR, error))


def executor_steps(tracer, path: str) -> None:
    """Spans for the steps the executor timed in the pod shim, under the current span.

    The executor runs in another process (the shim), so it writes [name, start_ns, end_ns]
    rows to steps.json beside its state, and the daemon turns them into spans here."""
    try:
        with open(path) as f:
            steps = json.load(f)["steps"]
    except (OSError, ValueError, KeyError) as err:
        log.debug("no executor steps at %s: %s", path, err)
        return
    for step_name, start_ns, end_ns in steps:
        span = tracer.start_span(f"executor.{step_name}", start_time=int(start_ns))
        span.end(end_time=int(end_ns))

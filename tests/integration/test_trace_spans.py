"""The daemon's span trees, read from the SDK's in-memory exporter.

The daemon runs inside the test process here (build_server, as `observe-rt daemon` does, minus
signals), so its spans land in an InMemorySpanExporter; everything else is real: the gRPC unix
socket, a registry with basic auth, pod shims, CNI plugins, cgroups, the eBPF probes.
"""

from __future__ import annotations

import contextlib
import random
import tempfile
import threading
import time
import uuid
from pathlib import Path

import pytest
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from observe_rt import config as config_module
from observe_rt import trace
from observe_rt.cri.v1 import api_pb2
from observe_rt.server import build_server
from tests.support import images
from tests.support.daemon import (
    Daemon,
    _teardown,
    container_config,
    pod_config,
    start_container,
    wait_exited,
    write_config,
)
from tests.support.registry import htpasswd_auth, running_registry

pytestmark = pytest.mark.root
USER, PASSWORD = "alice", "wonder-land-7f3e"
TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736"
RUNTIME = "runtime.v1.RuntimeService"


@pytest.fixture(scope="module")
def auth_registry(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("trace-registry")
    with running_registry(tmp) as plain:
        images.push(images.busybox_image(), plain.url, "trace/busybox", "1")
        with running_registry(tmp, storage=plain.root,
                              auth=htpasswd_auth(tmp, {USER: PASSWORD})) as basic:  # fmt: skip
            yield basic


@contextlib.contextmanager
def in_process_daemon():
    root = Path(tempfile.mkdtemp(prefix="ort-", dir="/tmp"))  # short: unix socket paths
    tag = uuid.uuid4().hex[:6]
    cgroup_parent, bridge = f"/observe-rt-test-{tag}", f"ort{tag}"
    subnet = f"10.{random.randint(100, 250)}.{random.randint(0, 255)}.0/24"
    config_file = write_config(root, cgroup_parent, bridge, subnet)
    daemon = Daemon(root, f"{root}/cri.sock", config_file, cgroup_parent, bridge, subnet)
    exporter, provider = InMemorySpanExporter(), TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    trace.install(provider)
    stop, server, parts = threading.Event(), None, {}
    try:
        server, parts = build_server(config_module.load(str(config_file)))
        server.add_insecure_port(f"unix://{daemon.socket}")
        server.start()
        watchers = [parts["containers"].watch_exits]
        if parts["probes"] is not None:
            watchers.append(parts["containers"].watch_probes)
        for watch in watchers:
            threading.Thread(target=watch, args=(stop,), daemon=True).start()
        yield daemon, exporter, parts
    finally:
        with contextlib.suppress(Exception):
            stub = daemon.runtime()
            for pod in stub.ListPodSandbox(api_pb2.ListPodSandboxRequest(), timeout=30).items:
                stub.RemovePodSandbox(api_pb2.RemovePodSandboxRequest(pod_sandbox_id=pod.id),
                                      timeout=60)  # fmt: skip
        stop.set()
        if server is not None:
            server.stop(5).wait()
        if parts.get("probes") is not None:
            parts["probes"].stop()
        trace.shutdown()
        _teardown(daemon)  # shims, mounts, bridge, cgroups, the temp dir


@pytest.fixture(scope="module")
def traced(auth_registry):
    with in_process_daemon() as (daemon, exporter, parts):
        daemon.image = f"{auth_registry.host}/trace/busybox:1"
        yield daemon, exporter, parts


def children(spans, parent) -> list:
    return [s for s in spans if s.parent and s.parent.span_id == parent.context.span_id]


def named(spans, name: str) -> list:
    return [s for s in spans if s.name == name]


def wait_for_span(exporter, name: str, timeout: float = 30):
    deadline = time.monotonic() + timeout
    while not (found := named(exporter.get_finished_spans(), name)):
        assert time.monotonic() < deadline, f"no {name} span after {timeout:.0f}s"
        time.sleep(0.2)
    return found


def test_pull_image_with_registry_auth(traced):
    daemon, exporter, _ = traced
    auth = api_pb2.AuthConfig(username=USER, password=PASSWORD)
    request = api_pb2.PullImageRequest(image=api_pb2.ImageSpec(image=daemon.image), auth=auth)
    image_ref = daemon.images().PullImage(request, timeout=120).image_ref
    spans = exporter.get_finished_spans()
    (pull,) = named(spans, "runtime.v1.ImageService/PullImage")
    assert pull.attributes["container.image.name"] == daemon.image
    assert pull.attributes["container.image.id"] == image_ref
    assert pull.attributes["rpc.grpc.status_code"] == 0
    steps = children(spans, pull)
    assert [s.name for s in steps if s.name == "image.resolve"] == ["image.resolve"]
    downloads = [s for s in steps if s.name == "image.download"]  # from the blob threads
    layers = [s for s in downloads if "layer" in s.attributes["oci.blob.media_type"]]
    assert len(layers) == 3 and all(s.attributes["oci.blob.bytes"] > 0 for s in layers)
    unpacks = [s for s in steps if s.name == "image.unpack"]
    assert len(unpacks) == 3 and sum(s.attributes["oci.layer.bytes"] for s in unpacks) > 1 << 20
    assert_no_secret(spans)


def assert_no_secret(spans) -> None:
    import base64

    secrets = (PASSWORD, base64.b64encode(f"{USER}:{PASSWORD}".encode()).decode(), "Basic ")
    for span in spans:
        text = span.to_json()  # attributes, events, links, status, resource
        for secret in secrets:
            assert secret not in text, f"{secret!r} in span {span.name}"


def test_pod_start_span_trees_join_the_kubelets_trace(traced):
    daemon, exporter, _ = traced
    exporter.clear()
    runtime = daemon.runtime()
    config = pod_config(daemon)
    traceparent = [("traceparent", f"00-{TRACE_ID}-00f067aa0ba902b7-01")]
    pod_id = runtime.RunPodSandbox(api_pb2.RunPodSandboxRequest(config=config),
                                   metadata=traceparent, timeout=60).pod_sandbox_id  # fmt: skip
    cid = start_container(daemon, pod_id, config, container_config(daemon, "app", "sleep 60"))
    spans = exporter.get_finished_spans()

    (run,) = named(spans, f"{RUNTIME}/RunPodSandbox")
    assert format(run.context.trace_id, "032x") == TRACE_ID
    assert format(run.parent.span_id, "016x") == "00f067aa0ba902b7"
    pod_names = {"k8s.pod.name": config.metadata.name, "k8s.namespace.name": "test",
                 "k8s.pod.uid": config.metadata.uid}  # fmt: skip
    assert pod_names.items() <= run.attributes.items()
    assert run.attributes["k8s.pod.sandbox.id"] == pod_id
    steps = {s.name: s for s in children(spans, run)}
    assert {"sandbox.cgroup", "sandbox.namespaces", "sandbox.network"} <= set(steps)
    cni = children(spans, steps["sandbox.network"])
    assert sorted(s.attributes["cni.plugin.type"] for s in cni) == ["bridge", "loopback"]
    assert {s.name for s in cni} == {"cni.add"}

    (create,) = named(spans, f"{RUNTIME}/CreateContainer")
    container_names = {**pod_names, "k8s.container.name": "app", "container.id": cid,
                       "container.image.name": daemon.image}  # fmt: skip
    assert container_names.items() <= create.attributes.items()
    steps = {s.name: s for s in children(spans, create)}
    assert {"container.rootfs", "container.bundle", "executor.create"} <= set(steps)
    executor = {s.name for s in children(spans, steps["executor.create"])}
    assert executor == {"executor.spec", "executor.cgroups", "executor.init"}

    (start,) = named(spans, f"{RUNTIME}/StartContainer")
    assert container_names.items() <= start.attributes.items()  # remembered from create
    assert [s.name for s in children(spans, start)] == ["executor.start"]

    exporter.clear()
    runtime.StopContainer(api_pb2.StopContainerRequest(container_id=cid, timeout=30), timeout=60)
    spans = exporter.get_finished_spans()
    (stop,) = named(spans, "container.stop")
    assert stop.attributes["observe_rt.stop.signal"] == "SIGTERM"  # the image's stop signal
    assert stop.attributes["observe_rt.stop.exit_s"] >= 0
    (exited,) = named(spans, "container.exit")
    assert exited.parent.span_id == stop.context.span_id
    assert exited.attributes["observe_rt.exit.code"] == 128 + 15
    assert exited.links[0].context.span_id == start.context.span_id


def test_oom_kill_is_traced_and_linked_to_the_container(traced):
    daemon, exporter, parts = traced
    config = pod_config(daemon)
    pod_id = daemon.runtime().RunPodSandbox(api_pb2.RunPodSandboxRequest(config=config),
                                            timeout=60).pod_sandbox_id  # fmt: skip
    limit = api_pb2.LinuxContainerConfig(
        resources=api_pb2.LinuxContainerResources(memory_limit_in_bytes=32 << 20)
    )
    hog = container_config(daemon, "hog", "exec tail /dev/zero", linux=limit)
    cid = start_container(daemon, pod_id, config, hog)
    assert wait_exited(daemon, cid, timeout=60).reason == "OOMKilled"
    spans = exporter.get_finished_spans()
    (start,) = [s for s in named(spans, f"{RUNTIME}/StartContainer")
                if s.attributes["container.id"] == cid]  # fmt: skip
    (exited,) = [s for s in named(spans, "container.exit") if s.attributes["container.id"] == cid]
    assert exited.attributes["observe_rt.exit.reason"] == "OOMKilled"
    assert exited.attributes["k8s.container.name"] == "hog"
    assert exited.links[0].context.span_id == start.context.span_id
    assert exited.status.description == "OOMKilled"
    probes = parts["probes"]
    if probes is None or not probes.status().available:
        pytest.skip("eBPF probes are off here: the OOM kill itself is not seen")
    oom = [s for s in wait_for_span(exporter, "container.oom_kill")
           if s.attributes["container.id"] == cid]  # fmt: skip
    assert len(oom) == 1
    assert oom[0].attributes["process.command"] == "tail"
    assert oom[0].attributes["process.pid"] > 0 and oom[0].attributes["observe_rt.oom.rss_kb"] > 0
    assert oom[0].links[0].context.span_id == start.context.span_id
    assert [e.name for e in oom[0].events] == ["oom_kill"]


def test_shim_death_is_traced(traced):
    import os
    import signal

    daemon, exporter, _ = traced
    config = pod_config(daemon)
    pod_id = daemon.runtime().RunPodSandbox(api_pb2.RunPodSandboxRequest(config=config),
                                            timeout=60).pod_sandbox_id  # fmt: skip
    cid = start_container(daemon, pod_id, config, container_config(daemon, "lost", "sleep 300"))
    shims = [pid for pid in daemon.shim_pids()
             if pod_id.encode() in Path(f"/proc/{pid}/cmdline").read_bytes()]  # fmt: skip
    # The shim, and the pid namespace's holder it forked: kill the shim (the parent).
    (shim,) = [pid for pid in shims if _parent(pid) not in shims]
    os.kill(shim, signal.SIGKILL)
    assert wait_exited(daemon, cid, timeout=60).reason == "ShimDied"
    (died,) = [s for s in wait_for_span(exporter, "container.shim_died")
               if s.attributes["container.id"] == cid]  # fmt: skip
    assert died.attributes["k8s.container.name"] == "lost"
    assert "pod shim exited" in died.status.description


def _parent(pid: int) -> int:
    status = Path(f"/proc/{pid}/status").read_text()
    return int(next(line.split()[1] for line in status.splitlines() if line.startswith("PPid:")))

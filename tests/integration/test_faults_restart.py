"""kill -9 of the daemon in the middle of a pull, RunPodSandbox, CreateContainer,
StartContainer, StopContainer and StopPodSandbox; the restarted daemon converges: no half-made
pod, container or image, every running container still running and known.

The kills land in real windows, no hooks in the runtime: a throttled registry link (pull), a
CNI plugin that takes its time (RunPodSandbox, StopPodSandbox), a pod shim frozen with SIGSTOP
so the daemon waits on it (create, start), a workload that ignores SIGTERM (stop).
"""

from __future__ import annotations

import json
import os
import threading
import time

import grpc
import pytest

from observe_rt.cri.v1 import api_pb2
from tests.support import footprint, images
from tests.support.daemon import container_config, pod_config, run_pod, status
from tests.support.faults import (
    SlowLink,
    assert_converged,
    frozen,
    remove_pod,
    unique_image,
    wait_for,
)

pytestmark = pytest.mark.root


class InFlight:
    """One CRI call on its own thread; the daemon is killed under it, so it ends in an error."""

    def __init__(self, call, *args) -> None:
        self.error: grpc.RpcError | None = None
        self.thread = threading.Thread(target=self._run, args=(call, args), daemon=True)
        self.thread.start()

    def _run(self, call, args) -> None:
        try:
            call(*args, timeout=300)
        except grpc.RpcError as err:
            self.error = err

    def join(self) -> grpc.RpcError | None:
        self.thread.join(60)
        assert not self.thread.is_alive()
        return self.error


def kill_and_restart(daemon) -> None:
    daemon.kill9()
    daemon.start()


def shim_pid(daemon, pod_id: str) -> int:
    request = api_pb2.PodSandboxStatusRequest(pod_sandbox_id=pod_id, verbose=True)
    return json.loads(daemon.runtime().PodSandboxStatus(request).info["info"])["shim"]["pid"]


def create_request(daemon, pod_id, config, name, script) -> api_pb2.CreateContainerRequest:
    return api_pb2.CreateContainerRequest(
        pod_sandbox_id=pod_id, config=container_config(daemon, name, script), sandbox_config=config
    )


def new_entries(directory, before: set[str]) -> set[str]:
    return set(os.listdir(directory)) - before if directory.exists() else set()


# --- pull -----------------------------------------------------------------------------------


def test_kill_during_pull_leaves_no_partial_image(daemon, daemon_registry, witness, baseline):
    images.push(unique_image(), daemon_registry.url, "test/killed", "1")
    with SlowLink(daemon_registry.host) as link:
        image = api_pb2.ImageSpec(image=f"{link.host}/test/killed:1")
        link.throttle(256 << 10)
        pull = InFlight(daemon.images().PullImage, api_pb2.PullImageRequest(image=image))
        wait_for(lambda: link.relayed > 512 << 10, what="the layer to be half-way")
        kill_and_restart(daemon)
        assert pull.join() is not None
        status_request = api_pb2.ImageStatusRequest(image=image)
        assert not daemon.images().ImageStatus(status_request).HasField("image")
        ingest = daemon.state_dir / "images" / "ingest"
        assert [f for f in os.listdir(ingest) if f.endswith(".part")] == []
        link.throttle(None)
        daemon.images().PullImage(api_pb2.PullImageRequest(image=image), timeout=300)
        assert daemon.images().ImageStatus(status_request).image.size > 2 << 20
    daemon.images().RemoveImage(api_pb2.RemoveImageRequest(image=image))
    assert_converged(daemon, witness, baseline)


# --- pods -----------------------------------------------------------------------------------


@pytest.mark.long  # `make reliability`; keeps `make test` near its time budget
def test_kill_during_run_pod_sandbox_undoes_the_pod(daemon, faulty, witness, baseline):
    faulty.set(add="slow", seconds=60)  # bridge has made the veth and taken an IP by then
    request = api_pb2.RunPodSandboxRequest(config=pod_config(daemon))
    run = InFlight(daemon.runtime().RunPodSandbox, request)
    wait_for(lambda: faulty.running("ADD"), what="the CNI ADD to be under way")
    kill_and_restart(daemon)
    assert run.join() is not None
    assert faulty.running("ADD") == []
    assert_converged(daemon, witness, baseline)


@pytest.mark.long  # `make reliability`; keeps `make test` near its time budget
def test_kill_during_stop_pod_sandbox_then_a_retry_finishes(daemon, faulty, witness, baseline):
    config = pod_config(daemon)
    pod_id = run_pod(daemon, config)
    daemon.runtime().CreateContainer(create_request(daemon, pod_id, config, "c", "sleep 3600"))
    faulty.set(delete="slow", seconds=60)
    request = api_pb2.StopPodSandboxRequest(pod_sandbox_id=pod_id)
    stop = InFlight(daemon.runtime().StopPodSandbox, request)
    wait_for(lambda: faulty.running("DEL"), what="the CNI DEL to be under way")
    kill_and_restart(daemon)
    assert stop.join() is not None
    faulty.set()
    assert pod_id in [
        p.id for p in daemon.runtime().ListPodSandbox(api_pb2.ListPodSandboxRequest()).items
    ]
    remove_pod(daemon, pod_id)  # as the kubelet retries
    assert_converged(daemon, witness, baseline)


# --- containers -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "window", ["shim-busy", pytest.param("rootfs-mounted", marks=pytest.mark.long)]
)
def test_kill_during_create_container_undoes_it(daemon, witness, baseline, window):
    config = pod_config(daemon)
    pod_id = run_pod(daemon, config)
    request = create_request(daemon, pod_id, config, "half", "sleep 3600")
    made = daemon.run_dir / "containers"
    before = set(os.listdir(made)) if made.exists() else set()
    if window == "shim-busy":  # the daemon waits on the shim after mounting and writing
        with frozen(shim_pid(daemon, pod_id)):
            create = InFlight(daemon.runtime().CreateContainer, request)
            cid = wait_for(lambda: new_entries(made, before), what="the container dir").pop()
            wait_for(lambda: (made / cid / "bundle" / "config.json").exists(), what="bundle")
            time.sleep(0.5)  # connected to the shim, request sent
            daemon.kill9()
        # The shim wakes up and makes the container nobody will ask for.
        wait_for(lambda: (daemon.run_dir / "oci" / cid).exists(), what="the shim's create")
    else:
        create = InFlight(daemon.runtime().CreateContainer, request)
        cid = wait_for(lambda: new_entries(made, before), what="the container dir").pop()
        wait_for(lambda: os.path.ismount(made / cid / "rootfs"), what="the rootfs mount")
        daemon.kill9()
    daemon.start()
    assert create.join() is not None
    listed = [
        c.id for c in daemon.runtime().ListContainers(api_pb2.ListContainersRequest()).containers
    ]
    assert cid not in listed
    # The pod is whole: a container with the same name can be made and run in it.
    again = daemon.runtime().CreateContainer(request).container_id
    daemon.runtime().StartContainer(api_pb2.StartContainerRequest(container_id=again))
    assert status(daemon, again).state == api_pb2.CONTAINER_RUNNING
    remove_pod(daemon, pod_id)
    assert_converged(daemon, witness, baseline)


def test_kill_during_start_container_keeps_it_running_and_known(daemon, witness, baseline):
    config = pod_config(daemon)
    pod_id = run_pod(daemon, config)
    stub = daemon.runtime()
    cid = stub.CreateContainer(
        create_request(daemon, pod_id, config, "c", "sleep 3600")
    ).container_id
    shim = shim_pid(daemon, pod_id)
    with frozen(shim):
        start = InFlight(stub.StartContainer, api_pb2.StartContainerRequest(container_id=cid))
        time.sleep(1)  # the daemon has tracked the cgroup and waits for the shim's answer
        daemon.kill9()
    started = daemon.run_dir / "pods" / pod_id / "shim" / "containers" / cid / "started.json"
    wait_for(started.exists, what="the shim to start the container")
    daemon.start()
    assert start.join() is not None
    running = status(daemon, cid)
    assert running.state == api_pb2.CONTAINER_RUNNING and running.started_at > 0
    tracked = footprint.bpf_entries(daemon.process.pid, ("tracked",))
    assert tracked == {"tracked": 2}  # the witness and this one, tracked again after restart
    remove_pod(daemon, pod_id)
    assert_converged(daemon, witness, baseline)


def test_kill_during_stop_container_keeps_it_running_then_stops(daemon, witness, baseline):
    config = pod_config(daemon)
    pod_id = run_pod(daemon, config)
    stub = daemon.runtime()
    stubborn = "trap '' TERM; sleep 3600"  # SIGTERM ignored: stop waits its whole timeout
    cid = stub.CreateContainer(create_request(daemon, pod_id, config, "c", stubborn)).container_id
    stub.StartContainer(api_pb2.StartContainerRequest(container_id=cid))
    stop = InFlight(stub.StopContainer, api_pb2.StopContainerRequest(container_id=cid, timeout=60))
    time.sleep(1)
    kill_and_restart(daemon)
    assert stop.join() is not None
    assert status(daemon, cid).state == api_pb2.CONTAINER_RUNNING  # the stop never finished
    daemon.runtime().StopContainer(api_pb2.StopContainerRequest(container_id=cid, timeout=0))
    stopped = status(daemon, cid)
    assert (stopped.state, stopped.exit_code) == (api_pb2.CONTAINER_EXITED, 137)
    remove_pod(daemon, pod_id)
    assert_converged(daemon, witness, baseline)

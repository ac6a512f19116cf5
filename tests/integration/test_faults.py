"""Faults around a running daemon, each with nothing lost: a CNI plugin that fails or hangs,
a pod shim killed with SIGKILL, the registry dying in the middle of a pull.

A witness pod runs through the whole module; after every fault it must still be ready, its
container running and known, and the host must hold exactly what it held before the fault
(tests/support/footprint.py counts mounts, cgroups, netns, veths, processes, files, IPs and
eBPF tracked-map entries). Daemon kill -9 faults are in test_faults_restart.py, the full disk
in test_faults_disk.py.
"""

from __future__ import annotations

import json
import os
import threading

import grpc
import pytest

from observe_rt.cri.v1 import api_pb2
from tests.support import images
from tests.support.daemon import container_config, pod_config, run_pod, start_container, status
from tests.support.faults import (
    SlowLink,
    assert_converged,
    remove_pod,
    unique_image,
    wait_for,
)

pytestmark = pytest.mark.root


# --- CNI ------------------------------------------------------------------------------------


def test_cni_add_failure_is_a_clear_error_and_leaves_nothing(daemon, faulty, witness, baseline):
    faulty.set(add="fail")
    with pytest.raises(grpc.RpcError) as failed:
        run_pod(daemon, pod_config(daemon))
    assert failed.value.code() == grpc.StatusCode.UNAVAILABLE
    assert "CNI plugin faulty ADD failed (code 11: try again later): injected failure" in (
        failed.value.details()
    )
    assert_converged(daemon, witness, baseline)
    faulty.set()
    remove_pod(daemon, run_pod(daemon, pod_config(daemon)))  # the network works again
    assert_converged(daemon, witness, baseline)


def test_cni_add_that_hangs_times_out_and_is_deleted(daemon, faulty, witness, baseline):
    faulty.set(add="hang")
    with pytest.raises(grpc.RpcError) as failed:
        run_pod(daemon, pod_config(daemon))
    assert failed.value.code() == grpc.StatusCode.UNAVAILABLE
    assert "CNI plugin faulty ADD failed: timed out after 5s" in failed.value.details()
    assert faulty.running("ADD") == []  # killed, not left sleeping
    assert_converged(daemon, witness, baseline)


@pytest.mark.long  # `make reliability`; keeps `make test` near its time budget
def test_cni_del_that_hangs_times_out_and_a_retry_cleans_up(daemon, faulty, witness, baseline):
    pod_id = run_pod(daemon, pod_config(daemon))
    faulty.set(delete="hang")
    with pytest.raises(grpc.RpcError) as failed:
        daemon.runtime().StopPodSandbox(api_pb2.StopPodSandboxRequest(pod_sandbox_id=pod_id))
    assert failed.value.code() == grpc.StatusCode.UNAVAILABLE
    assert "CNI plugin faulty DEL failed: timed out after 5s" in failed.value.details()
    faulty.set()
    remove_pod(daemon, pod_id)  # the kubelet retries: this time DEL goes through
    assert_converged(daemon, witness, baseline)


# --- the pod shim ---------------------------------------------------------------------------


def test_killed_shim_leaves_an_exited_container_and_a_removable_pod(daemon, witness, baseline):
    config = pod_config(daemon)
    pod_id = run_pod(daemon, config)
    cid = start_container(daemon, pod_id, config, container_config(daemon, "c", "sleep 3600"))
    stub = daemon.runtime()
    info = stub.PodSandboxStatus(
        api_pb2.PodSandboxStatusRequest(pod_sandbox_id=pod_id, verbose=True)
    ).info["info"]
    os.kill(json.loads(info)["shim"]["pid"], 9)
    exited = wait_for(
        lambda: (s := status(daemon, cid)).state == api_pb2.CONTAINER_EXITED and s,
        timeout=30, interval=0.1, what="the container to be reported exited",
    )  # fmt: skip
    assert (exited.reason, exited.exit_code) == ("ShimDied", 255)
    pod = stub.PodSandboxStatus(api_pb2.PodSandboxStatusRequest(pod_sandbox_id=pod_id)).status
    assert pod.state == api_pb2.SANDBOX_NOTREADY
    listed = {p.id: p.state for p in stub.ListPodSandbox(api_pb2.ListPodSandboxRequest()).items}
    assert listed[pod_id] == api_pb2.SANDBOX_NOTREADY
    with pytest.raises(grpc.RpcError) as refused:  # no new containers in a dead pod
        start_container(daemon, pod_id, config, container_config(daemon, "late", "true"))
    assert refused.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    remove_pod(daemon, pod_id)
    assert_converged(daemon, witness, baseline)


# --- the registry -----------------------------------------------------------------------------


def test_registry_dying_mid_pull_is_a_clear_error_and_a_retry_works(
    daemon, daemon_registry, witness, baseline
):
    images.push(unique_image(), daemon_registry.url, "test/dies", "1")
    with SlowLink(daemon_registry.host) as link:
        image = f"{link.host}/test/dies:1"
        link.throttle(256 << 10)
        outcome: dict = {}
        pull = threading.Thread(target=_pull, args=(daemon, image, outcome))
        pull.start()
        wait_for(lambda: link.relayed > 512 << 10, what="the layer to be half-way")
        link.die()
        pull.join(120)
        error = outcome["error"]
        assert error.code() == grpc.StatusCode.UNAVAILABLE, error
        assert link.host in error.details(), error.details()
        assert not _image_status(daemon, image).HasField("image")  # nothing half-stored
        assert os.listdir(daemon.state_dir / "images" / "ingest") in ([], [".lock"])
        link.revive()
        link.throttle(None)
        _pull(daemon, image, outcome)
        assert "error" not in outcome and _image_status(daemon, image).image.size > 2 << 20
    daemon.images().RemoveImage(api_pb2.RemoveImageRequest(image=api_pb2.ImageSpec(image=image)))
    assert_converged(daemon, witness, baseline)


def _pull(daemon, image: str, outcome: dict) -> None:
    outcome.pop("error", None)
    try:
        daemon.images().PullImage(
            api_pb2.PullImageRequest(image=api_pb2.ImageSpec(image=image)), timeout=300
        )
    except grpc.RpcError as err:
        outcome["error"] = err


def _image_status(daemon, image: str) -> api_pb2.ImageStatusResponse:
    return daemon.images().ImageStatus(
        api_pb2.ImageStatusRequest(image=api_pb2.ImageSpec(image=image))
    )

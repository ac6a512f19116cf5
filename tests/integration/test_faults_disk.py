"""The disk of the state dir runs full (a small tmpfs as state_dir): every call that needs to
write answers a clear error (RESOURCE_EXHAUSTED naming the device), leaves nothing half-made,
the daemon keeps serving what it has, and once space is back everything works, also after a
restart (no record was left corrupt).
"""

from __future__ import annotations

import shutil
import subprocess

import grpc
import pytest

from observe_rt.cri.v1 import api_pb2
from tests.support import footprint, images
from tests.support.daemon import container_config, pod_config, run_pod, running_daemon
from tests.support.faults import Witness, assert_converged, fill_disk, remove_pod

pytestmark = pytest.mark.root


@pytest.fixture(scope="module")
def small_disk_daemon(daemon_registry):
    with running_daemon() as daemon:
        daemon.stop()
        shutil.rmtree(daemon.state_dir)
        daemon.state_dir.mkdir()
        subprocess.run(["mount", "-t", "tmpfs", "-o", "size=48m,mode=0711", "tmpfs",
                        str(daemon.state_dir)], check=True)  # fmt: skip
        daemon.start()  # unmounted by running_daemon's teardown, with every mount below root
        daemon.image = f"{daemon_registry.host}/test/busybox:1"
        request = api_pb2.PullImageRequest(image=api_pb2.ImageSpec(image=daemon.image))
        daemon.images().PullImage(request, timeout=300)
        yield daemon


def assert_disk_full(error: grpc.RpcError) -> None:
    assert error.code() == grpc.StatusCode.RESOURCE_EXHAUSTED, error
    assert "No space left on device" in error.details(), error.details()


def test_full_state_disk_is_a_clear_error_and_loses_nothing(small_disk_daemon, daemon_registry):
    daemon = small_disk_daemon
    witness = Witness.start(daemon)
    config = (
        daemon.runtime()
        .PodSandboxStatus(api_pb2.PodSandboxStatusRequest(pod_sandbox_id=witness.pod_id))
        .status
    )
    baseline = footprint.inventory(daemon, counters=False)
    images.push(images.fake_image(images.host_platform()), daemon_registry.url, "test/other", "1")
    filler = daemon.state_dir / "filler"
    fill_disk(filler)

    with pytest.raises(grpc.RpcError) as pod:
        run_pod(daemon, pod_config(daemon))
    assert_disk_full(pod.value)
    sandbox_config = pod_config(daemon, name=config.metadata.name)
    with pytest.raises(grpc.RpcError) as container:
        daemon.runtime().CreateContainer(api_pb2.CreateContainerRequest(
            pod_sandbox_id=witness.pod_id, sandbox_config=sandbox_config,
            config=container_config(daemon, "more", "sleep 3600")))  # fmt: skip
    assert_disk_full(container.value)
    other = api_pb2.ImageSpec(image=f"{daemon_registry.host}/test/other:1")
    with pytest.raises(grpc.RpcError) as pull:
        daemon.images().PullImage(api_pb2.PullImageRequest(image=other), timeout=300)
    assert_disk_full(pull.value)
    assert (
        not daemon.images().ImageStatus(api_pb2.ImageStatusRequest(image=other)).HasField("image")
    )
    assert_converged(daemon, witness, baseline)  # still serving, nothing half-made

    filler.unlink()
    remove_pod(daemon, run_pod(daemon, pod_config(daemon)))
    daemon.images().PullImage(api_pb2.PullImageRequest(image=other), timeout=300)
    daemon.images().RemoveImage(api_pb2.RemoveImageRequest(image=other))
    daemon.kill9()
    daemon.start()  # every record on disk still reads
    assert_converged(daemon, witness, baseline)

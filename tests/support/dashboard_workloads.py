"""Real workloads in a test daemon, so that every dashboard panel has something to show.

    with running_daemon() as daemon:
        daemon.image = ...                   # pulled busybox image (see tests.support.images)
        started = start_dashboard_workloads(daemon)

Pods (namespace "test", the names below are the pod names) and what each one feeds:
    dash-web      server: busybox httpd with a 256 KiB file;    TCP passive connections, bytes
                  aborter: accepts and closes unread (a reset)
    dash-client   fetcher: wget of that file each second, and    TCP active connections, resets,
                  64 KiB sent to the aborter                     pod network bytes
    dash-busy     spinner: a busy loop under a 0.2 CPU quota    CPU vs limit, throttling
    dash-syscalls opener: bursts of failing open()s             syscall rates, ENOENT errors
    dash-oom      hog: `tail /dev/zero` under 24 MiB, again     OOM kills, working set vs limit
                  and again; crasher: exits 1, then runs as      restarts (attempt 1)
                  attempt 1, as the kubelet restarts it
Each loop sleeps between rounds: the machine's two cores are shared with other tests.
pull_images() pulls a second image and a missing one (an error), for the image pull panels;
kubelet_poller() calls the CRI as a kubelet's relist and stats loops do (plus a NOT_FOUND now
and then), so the runtime's RPC panels have traffic while Prometheus scrapes.
"""

from __future__ import annotations

import contextlib
import threading
import time

import grpc

from observe_rt.cri.v1 import api_pb2
from tests.support import images
from tests.support.daemon import (
    container_config,
    pod_config,
    run_pod,
    start_container,
    wait_exited,
)

FILE_BYTES = 256 << 10
SERVER_PORT = 8080
ABORT_PORT = 8081  # accepts, then closes with the data unread: the kernel sends a reset
HOG_LIMIT = 24 << 20


def _pod(daemon, name: str) -> tuple[str, api_pb2.PodSandboxConfig]:
    config = pod_config(daemon, name=name)
    return run_pod(daemon, config), config


def _limits(**resources) -> api_pb2.LinuxContainerConfig:
    return api_pb2.LinuxContainerConfig(resources=api_pb2.LinuxContainerResources(**resources))


def start_tcp_pair(daemon) -> None:
    pod_id, config = _pod(daemon, "dash-web")
    serve = (
        f"mkdir /www; head -c {FILE_BYTES} /dev/urandom > /www/f; httpd -f -p {SERVER_PORT} -h /www"
    )
    start_container(daemon, pod_id, config, container_config(daemon, "server", serve))
    abort = f"while :; do nc -l -p {ABORT_PORT} -e true; done"
    start_container(daemon, pod_id, config, container_config(daemon, "aborter", abort))
    status = daemon.runtime().PodSandboxStatus(
        api_pb2.PodSandboxStatusRequest(pod_sandbox_id=pod_id)
    )
    ip = status.status.network.ip
    assert ip, "the server pod got no address from CNI"
    pod_id, config = _pod(daemon, "dash-client")
    fetch = (
        f"while :; do wget -q -O /dev/null http://{ip}:{SERVER_PORT}/f; "
        f"head -c 65536 /dev/zero | nc -w 1 {ip} {ABORT_PORT}; sleep 1; done"
    )
    start_container(daemon, pod_id, config, container_config(daemon, "fetcher", fetch))


def start_cpu_spinner(daemon) -> None:
    pod_id, config = _pod(daemon, "dash-busy")
    spin = container_config(
        daemon, "spinner", "while :; do :; done",
        linux=_limits(cpu_quota=20000, cpu_period=100000, memory_limit_in_bytes=64 << 20),
    )  # fmt: skip
    start_container(daemon, pod_id, config, spin)


def start_syscall_maker(daemon) -> None:
    pod_id, config = _pod(daemon, "dash-syscalls")
    burst = "while :; do for i in 1 2 3 4 5; do cat /nonexistent 2>/dev/null; done; sleep 1; done"
    start_container(daemon, pod_id, config, container_config(daemon, "opener", burst))


def start_oom_and_restart(daemon) -> None:
    pod_id, config = _pod(daemon, "dash-oom")
    hog = container_config(
        daemon, "hog", "while :; do tail /dev/zero; sleep 3; done",
        linux=_limits(memory_limit_in_bytes=HOG_LIMIT),
    )  # fmt: skip
    start_container(daemon, pod_id, config, hog)
    first = start_container(daemon, pod_id, config, container_config(daemon, "crasher", "exit 1"))
    wait_exited(daemon, first, timeout=60)
    again = container_config(daemon, "crasher", "sleep 3600")
    again.metadata.attempt = 1
    start_container(daemon, pod_id, config, again)


def make_rpc_error(daemon) -> None:
    """One failed CRI call (NOT_FOUND), so the RPC error panels have a series."""
    request = api_pb2.ContainerStatusRequest(container_id="dashboard-check-no-such-container")
    try:
        daemon.runtime().ContainerStatus(request, timeout=30)
    except grpc.RpcError as err:
        assert err.code() == grpc.StatusCode.NOT_FOUND, err
    else:
        raise AssertionError("ContainerStatus of a missing container succeeded")


def pull_images(daemon, registry) -> None:
    """One good pull (new layers: other compressions than the fixture's image) and one bad."""
    images.push(images.busybox_image(("zstd", "zstd", "zstd")), registry.url, "test/busybox", "2")
    service = daemon.images()
    good = api_pb2.ImageSpec(image=f"{registry.host}/test/busybox:2")
    service.PullImage(api_pb2.PullImageRequest(image=good), timeout=120)
    missing = api_pb2.ImageSpec(image=f"{registry.host}/test/no-such-image:1")
    try:
        service.PullImage(api_pb2.PullImageRequest(image=missing), timeout=120)
    except grpc.RpcError as err:
        assert err.code() == grpc.StatusCode.NOT_FOUND, err
    else:
        raise AssertionError("pulling a missing image succeeded")


def start_dashboard_workloads(daemon) -> float:
    """Start every workload above; returns the wall-clock time they all ran."""
    start_tcp_pair(daemon)
    start_cpu_spinner(daemon)
    start_syscall_maker(daemon)
    start_oom_and_restart(daemon)
    make_rpc_error(daemon)
    return time.time()


def _poll_once(daemon, round_no: int) -> None:
    stub = daemon.runtime()
    stub.ListPodSandbox(api_pb2.ListPodSandboxRequest(), timeout=30)
    for container in stub.ListContainers(api_pb2.ListContainersRequest(), timeout=30).containers:
        stub.ContainerStatus(api_pb2.ContainerStatusRequest(container_id=container.id), timeout=30)
    stub.ListContainerStats(api_pb2.ListContainerStatsRequest(), timeout=30)
    stub.ListPodSandboxStats(api_pb2.ListPodSandboxStatsRequest(), timeout=30)
    if round_no % 5 == 0:
        make_rpc_error(daemon)


@contextlib.contextmanager
def kubelet_poller(daemon, interval: float = 2.0):
    """CRI calls every `interval` seconds in a thread, until the block ends."""
    stop = threading.Event()

    def loop() -> None:
        round_no = 0
        while not stop.wait(interval):
            round_no += 1
            with contextlib.suppress(grpc.RpcError):
                _poll_once(daemon, round_no)

    thread = threading.Thread(target=loop, name="kubelet-poller", daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join(60)

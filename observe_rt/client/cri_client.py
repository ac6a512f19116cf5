"""A thin, typed CRI runtime.v1 client over the runtime's unix socket.

Each method sends one RPC and returns its natural result: an id for the calls that create
something, a list for the List calls, the whole response where it carries more than one
thing (statuses with their verbose info, ExecSync, Version). Failures surface unchanged as
`grpc.RpcError` (`.code()`, `.details()`), so callers and tests see the daemon's status codes.

Deadlines: every call gets `timeout` seconds; calls that wait on purpose get more
(StopContainer and ExecSync their own CRI timeout on top, PullImage `pull_timeout`).
"""

from __future__ import annotations

import os
from collections.abc import Mapping

import grpc

from observe_rt.client import DEFAULT_SOCKET
from observe_rt.cri.v1 import api_pb2, api_pb2_grpc

DEFAULT_TIMEOUT = 10.0
DEFAULT_PULL_TIMEOUT = 600.0
MAX_MESSAGE_BYTES = 16 * 1024 * 1024  # what the kubelet allows a CRI message to be
CRI_VERSION = "v1"


def socket_target(socket_path: str) -> str:
    """The gRPC target for a socket path (an `unix:...` target is kept as it is)."""
    if socket_path.startswith("unix:"):
        return socket_path
    return "unix://" + os.path.abspath(socket_path)


class CriClient:
    """RuntimeService and ImageService of one CRI runtime, method per RPC."""

    def __init__(
        self,
        socket_path: str = DEFAULT_SOCKET,
        timeout: float = DEFAULT_TIMEOUT,
        *,
        pull_timeout: float = DEFAULT_PULL_TIMEOUT,
    ) -> None:
        self.socket_path = socket_path
        self.timeout = timeout
        self.pull_timeout = pull_timeout
        self._channel = grpc.insecure_channel(
            socket_target(socket_path),
            options=[
                ("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),
                ("grpc.max_send_message_length", MAX_MESSAGE_BYTES),
            ],
        )
        self.runtime = api_pb2_grpc.RuntimeServiceStub(self._channel)
        self.images = api_pb2_grpc.ImageServiceStub(self._channel)

    # --- lifecycle of the client ---------------------------------------------------------------

    def wait_ready(self, timeout: float | None = None) -> None:
        """Block until the socket accepts a connection; TimeoutError after `timeout` seconds."""
        try:
            grpc.channel_ready_future(self._channel).result(timeout=timeout or self.timeout)
        except grpc.FutureTimeoutError:
            raise TimeoutError(f"no CRI runtime answers on {self.socket_path}") from None

    def close(self) -> None:
        self._channel.close()

    def __enter__(self) -> CriClient:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    # --- runtime ---------------------------------------------------------------------------------

    def version(self) -> api_pb2.VersionResponse:
        return self.runtime.Version(
            api_pb2.VersionRequest(version=CRI_VERSION), timeout=self.timeout
        )

    def status(self, verbose: bool = False) -> api_pb2.StatusResponse:
        return self.runtime.Status(api_pb2.StatusRequest(verbose=verbose), timeout=self.timeout)

    # --- pods ------------------------------------------------------------------------------------

    def run_pod_sandbox(self, config: api_pb2.PodSandboxConfig, runtime_handler: str = "") -> str:
        request = api_pb2.RunPodSandboxRequest(config=config, runtime_handler=runtime_handler)
        return self.runtime.RunPodSandbox(request, timeout=self.timeout).pod_sandbox_id

    def stop_pod_sandbox(self, pod_id: str) -> None:
        request = api_pb2.StopPodSandboxRequest(pod_sandbox_id=pod_id)
        self.runtime.StopPodSandbox(request, timeout=self.timeout)

    def remove_pod_sandbox(self, pod_id: str) -> None:
        request = api_pb2.RemovePodSandboxRequest(pod_sandbox_id=pod_id)
        self.runtime.RemovePodSandbox(request, timeout=self.timeout)

    def pod_sandbox_status(
        self, pod_id: str, verbose: bool = False
    ) -> api_pb2.PodSandboxStatusResponse:
        request = api_pb2.PodSandboxStatusRequest(pod_sandbox_id=pod_id, verbose=verbose)
        return self.runtime.PodSandboxStatus(request, timeout=self.timeout)

    def list_pod_sandbox(
        self,
        *,
        pod_id: str = "",
        state: api_pb2.PodSandboxState | None = None,
        labels: Mapping[str, str] | None = None,
    ) -> list[api_pb2.PodSandbox]:
        """Pods matching every filter given (an unset filter matches all)."""
        selector = api_pb2.PodSandboxFilter(id=pod_id, label_selector=dict(labels or {}))
        if state is not None:
            selector.state.state = state
        request = api_pb2.ListPodSandboxRequest(filter=selector)
        return list(self.runtime.ListPodSandbox(request, timeout=self.timeout).items)

    # --- containers ------------------------------------------------------------------------------

    def create_container(
        self,
        pod_id: str,
        config: api_pb2.ContainerConfig,
        sandbox_config: api_pb2.PodSandboxConfig,
    ) -> str:
        request = api_pb2.CreateContainerRequest(
            pod_sandbox_id=pod_id, config=config, sandbox_config=sandbox_config
        )
        return self.runtime.CreateContainer(request, timeout=self.timeout).container_id

    def start_container(self, container_id: str) -> None:
        request = api_pb2.StartContainerRequest(container_id=container_id)
        self.runtime.StartContainer(request, timeout=self.timeout)

    def stop_container(self, container_id: str, timeout: int = 0) -> None:
        """Stop with a grace period of `timeout` seconds (CRI: 0 kills at once)."""
        request = api_pb2.StopContainerRequest(container_id=container_id, timeout=timeout)
        self.runtime.StopContainer(request, timeout=self.timeout + max(timeout, 0))

    def remove_container(self, container_id: str) -> None:
        request = api_pb2.RemoveContainerRequest(container_id=container_id)
        self.runtime.RemoveContainer(request, timeout=self.timeout)

    def container_status(
        self, container_id: str, verbose: bool = False
    ) -> api_pb2.ContainerStatusResponse:
        request = api_pb2.ContainerStatusRequest(container_id=container_id, verbose=verbose)
        return self.runtime.ContainerStatus(request, timeout=self.timeout)

    def list_containers(
        self,
        *,
        container_id: str = "",
        pod_id: str = "",
        state: api_pb2.ContainerState | None = None,
        labels: Mapping[str, str] | None = None,
    ) -> list[api_pb2.Container]:
        """Containers matching every filter given (an unset filter matches all)."""
        selector = api_pb2.ContainerFilter(
            id=container_id, pod_sandbox_id=pod_id, label_selector=dict(labels or {})
        )
        if state is not None:
            selector.state.state = state
        request = api_pb2.ListContainersRequest(filter=selector)
        return list(self.runtime.ListContainers(request, timeout=self.timeout).containers)

    def exec_sync(
        self, container_id: str, cmd: list[str], timeout: int = 0
    ) -> api_pb2.ExecSyncResponse:
        """Run `cmd` in the container; `timeout` seconds (0: the runtime's own limit)."""
        request = api_pb2.ExecSyncRequest(container_id=container_id, cmd=cmd, timeout=timeout)
        return self.runtime.ExecSync(request, timeout=self.timeout + max(timeout, 0))

    def reopen_container_log(self, container_id: str) -> None:
        request = api_pb2.ReopenContainerLogRequest(container_id=container_id)
        self.runtime.ReopenContainerLog(request, timeout=self.timeout)

    # --- images ----------------------------------------------------------------------------------

    def pull_image(
        self,
        image: str,
        *,
        auth: api_pb2.AuthConfig | None = None,
        sandbox_config: api_pb2.PodSandboxConfig | None = None,
    ) -> str:
        """Pull `image`; return the image reference the runtime stored it as."""
        request = api_pb2.PullImageRequest(
            image=api_pb2.ImageSpec(image=image), auth=auth, sandbox_config=sandbox_config
        )
        return self.images.PullImage(request, timeout=self.pull_timeout).image_ref

    def list_images(self, image: str = "") -> list[api_pb2.Image]:
        selector = api_pb2.ImageFilter(image=api_pb2.ImageSpec(image=image) if image else None)
        request = api_pb2.ListImagesRequest(filter=selector)
        return list(self.images.ListImages(request, timeout=self.timeout).images)

    def image_status(self, image: str, verbose: bool = False) -> api_pb2.ImageStatusResponse:
        """The image's record; `.HasField("image")` is False when the image is not present."""
        request = api_pb2.ImageStatusRequest(image=api_pb2.ImageSpec(image=image), verbose=verbose)
        return self.images.ImageStatus(request, timeout=self.timeout)

    def remove_image(self, image: str) -> None:
        request = api_pb2.RemoveImageRequest(image=api_pb2.ImageSpec(image=image))
        self.images.RemoveImage(request, timeout=self.timeout)

    def image_fs_info(self) -> api_pb2.ImageFsInfoResponse:
        return self.images.ImageFsInfo(api_pb2.ImageFsInfoRequest(), timeout=self.timeout)

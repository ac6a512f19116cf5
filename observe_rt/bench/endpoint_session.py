"""One endpoint under `observe-rt bench --endpoint`: connect, find the daemon, get the image,
and remove everything the benchmark made afterwards (pods, the loopback registry, temp files).

    with EndpointSession("unix:///run/observe-rt/observe-rt.sock", image=None) as session:
        target = session.prepare(say)        # endpoint.Target, image pulled, daemon pid found
        ...                                  # the phases
"""

from __future__ import annotations

import secrets
import shutil
import signal
import tempfile
from pathlib import Path

from observe_rt.bench.common import Session, signals_ignored
from observe_rt.bench.endpoint import Target, endpoint_path, remove_all_pods, socket_owner
from observe_rt.errors import FailedPrecondition, InvalidArgument

CONNECT_TIMEOUT_S = 10.0
CALL_TIMEOUT_S = 60.0  # a busy machine: a pod start can take seconds


class EndpointSession(Session):
    def __init__(self, endpoint: str, image: str | None, metrics_url: str | None) -> None:
        try:
            self.path = endpoint_path(endpoint)
        except ValueError as err:
            raise InvalidArgument(str(err)) from None
        if not Path(self.path).is_socket():
            raise FailedPrecondition(f"{self.path} is not a socket: is the runtime running?")
        self.endpoint, self.image, self.metrics_url = endpoint, image, metrics_url
        self.tag = secrets.token_hex(3)
        self.tmp = Path(tempfile.mkdtemp(prefix="ocb-"))
        self.client = None
        self.registry = None
        self.target: Target | None = None

    def prepare(self, say) -> Target:
        from observe_rt.client.cri_client import CriClient

        self.client = CriClient(self.path, timeout=CALL_TIMEOUT_S)
        try:
            self.client.wait_ready(CONNECT_TIMEOUT_S)
            version = self.client.version()
        except TimeoutError as err:
            raise FailedPrecondition(str(err)) from None
        except Exception as err:  # grpc.RpcError: not a CRI runtime
            raise FailedPrecondition(
                f"{self.endpoint} does not answer CRI Version: {err}"
            ) from None
        image = self.image or self._bench_image(say)
        say(f"pulling {image}")
        self._pull(image)
        self.target = Target(
            name=version.runtime_name or "endpoint", client=self.client, image=image,
            log_dir=self.tmp / "logs", daemon_pid=socket_owner(self.path),
            metrics_url=self.metrics_url,
            version=f"{version.runtime_name} {version.runtime_version}".strip(),
        )  # fmt: skip
        return self.target

    def _bench_image(self, say) -> str:
        from observe_rt.bench.cri_image import push_bench_images
        from observe_rt.bench.registry import start_registry

        say("starting a loopback registry with the bench busybox image")
        self.registry = start_registry(self.tmp, access_log=False)
        return push_bench_images(self.registry.url, self.registry.host).busybox

    def _pull(self, image: str) -> None:
        import grpc

        try:
            if self.client.image_status(image).HasField("image"):
                return
            self.client.pull_image(image)
        except grpc.RpcError as err:
            raise FailedPrecondition(
                f"the runtime cannot pull {image}: {err.code().name}: {err.details()} "
                "(pass --image with an image it can pull or already has)"
            ) from None

    def close(self) -> None:
        with signals_ignored(signal.SIGINT, signal.SIGTERM):
            if self.target is not None:
                remove_all_pods(self.target)
            if self.client is not None:
                self.client.close()
            if self.registry is not None:
                self.registry.stop()
            shutil.rmtree(self.tmp, ignore_errors=True)

"""Where `observe-rt top` gets its data: the daemon's read API and its CRI socket, nothing else.

    source = DaemonSource(api="http://127.0.0.1:9464", socket="/run/observe-rt/observe-rt.sock")
    frame = source.fetch(previous_frame, selected_row)    # never raises: errors go in the frame

GET /api/v1/view (export/liveview.py) gives the figures; ListContainers and ListPodSandbox give
every container with its state and attempt (also exited ones), and ContainerStatus of the
selected container's newest exited attempt gives its last exit reason. When the daemon is down
the previous frame is kept and marked with the error, and the next refresh tries again.
"""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.request

from observe_rt.export.liveview import VIEW_PATH
from observe_rt.top.model import (
    CriContainer,
    CriListing,
    CriPod,
    Frame,
    LastExit,
    Row,
    build_frame,
    failed,
    with_last_exit,
)

DEFAULT_API = "http://127.0.0.1:9464"
API_ENV = "OBSERVE_RT_API"
HTTP_TIMEOUT_S = 3.0
CRI_TIMEOUT_S = 3.0
CONTAINER_STATES = {0: "CREATED", 1: "RUNNING", 2: "EXITED", 3: "UNKNOWN"}
POD_STATES = {0: "READY", 1: "NOTREADY"}


class DaemonDown(Exception):
    """The read API did not answer; the message says where and why."""


def fetch_view(api: str, timeout: float = HTTP_TIMEOUT_S) -> dict:
    url = api.rstrip("/") + VIEW_PATH
    # No proxy, whatever the environment says: the daemon is on this node (or a tunnel to it).
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    try:
        with opener.open(url, timeout=timeout) as response:
            return json.load(response)
    except urllib.error.HTTPError as err:
        raise DaemonDown(f"{url}: HTTP {err.code} (is this an observe-rt daemon?)") from None
    except (urllib.error.URLError, OSError) as err:
        reason = getattr(err, "reason", err)
        raise DaemonDown(f"{url}: {reason}; is `observe-rt daemon` running?") from None
    except ValueError as err:
        raise DaemonDown(f"{url}: not JSON ({err})") from None


class DaemonSource:
    def __init__(self, api: str, socket: str) -> None:
        self.api = api
        self.socket = socket
        self._client = None

    def _cri(self):
        if self._client is None:
            from observe_rt.client.cri_client import CriClient

            self._client = CriClient(self.socket, timeout=CRI_TIMEOUT_S)
        return self._client

    def close(self) -> None:
        if self._client is not None:
            self._client.close()
            self._client = None

    def fetch(self, previous: Frame, selected: Row | None = None) -> Frame:
        now = time.time_ns()
        try:
            doc = fetch_view(self.api)
        except DaemonDown as err:
            return failed(previous, str(err), now)
        listing = self.listing()
        frame = build_frame(doc, listing, now)
        exited = {c.id for c in listing.containers if c.state == "EXITED"}
        return with_last_exit(frame, self.last_exit(frame, selected, exited))

    def listing(self) -> CriListing:
        import grpc

        try:
            client = self._cri()
            pods = client.list_pod_sandbox()
            containers = client.list_containers()
        except grpc.RpcError as err:
            return CriListing(error=f"{self.socket}: {err.code().name}: {err.details()}")
        return CriListing(
            containers=tuple(
                CriContainer(
                    c.id,
                    c.pod_sandbox_id,
                    c.metadata.name,
                    c.metadata.attempt,
                    CONTAINER_STATES.get(c.state, "UNKNOWN"),
                    c.image.image,
                    c.created_at,
                )  # fmt: skip
                for c in containers
            ),
            pods=tuple(
                CriPod(p.id, p.metadata.name, p.metadata.namespace, POD_STATES.get(p.state, "?"))
                for p in pods
            ),
        )

    def last_exit(self, frame: Frame, selected: Row | None, exited: set[str]) -> LastExit | None:
        """ContainerStatus of the newest exited attempt of the selected row (one call)."""
        import grpc

        row = next((r for r in frame.rows if selected and r.key == selected.key), None)
        container_id = next((c for c in row.attempts if c in exited), None) if row else None
        if container_id is None:
            return None
        try:
            status = self._cri().container_status(container_id).status
        except grpc.RpcError:
            return None
        return LastExit(container_id, status.metadata.attempt, status.reason, status.exit_code,
                        status.message, status.finished_at)  # fmt: skip


def snapshot_json(api: str) -> str:
    """`--json`: the daemon's view document as it is (for scripts and jq)."""
    return json.dumps(fetch_view(api), indent=1, sort_keys=True)

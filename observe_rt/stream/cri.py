"""The CRI side of streaming: validate Exec/Attach/PortForward requests, run their sessions.

The RPCs call `exec_url`, `attach_url` and `portforward_url` (validation errors become gRPC
status codes there); the sessions run later, when the client connects, and look the container
or pod up again, since it may have stopped in between.
"""

from __future__ import annotations

import logging

from observe_rt import errors
from observe_rt.stream import attach, portforward, process, remotecommand, spdy_portforward
from observe_rt.stream.server import StreamServer
from observe_rt.stream.spdy_session import SpdySession
from observe_rt.stream.websocket import WebSocket

log = logging.getLogger("observe_rt.stream")


class CriStreams:
    def __init__(self, containers, sandboxes, address: str = "127.0.0.1:0") -> None:
        self.containers = containers
        self.sandboxes = sandboxes
        handlers = {"exec": self._exec, "attach": self._attach, "portforward": self._portforward}
        self.server = StreamServer(handlers, address)

    # --- RPC side -------------------------------------------------------------------------------

    def exec_url(self, request) -> str:
        if not request.cmd:
            raise errors.InvalidArgument("ExecRequest.cmd: a command is required")
        _check_streams(request)
        self._running(request.container_id)
        return self.server.url("exec", request)

    def attach_url(self, request) -> str:
        _check_streams(request)
        record = self._running(request.container_id)
        if request.stdin and not record.config.stdin:
            raise errors.FailedPrecondition(
                f"container {record.id} was created without stdin (ContainerConfig.stdin): "
                "there is none to attach"
            )
        if not record.log_path:
            raise errors.FailedPrecondition(f"container {record.id} has no log file to attach to")
        return self.server.url("attach", request)

    def portforward_url(self, request) -> str:
        sandbox = self.sandboxes.get(request.pod_sandbox_id)
        if sandbox.state != "READY":
            raise errors.FailedPrecondition(f"pod sandbox {sandbox.id} is not ready")
        for port in request.port:
            if not 0 < port < 65536:
                raise errors.InvalidArgument(f"PortForwardRequest.port {port}: out of range")
        return self.server.url("portforward", request)

    def _running(self, container_id: str):
        record = self.containers.get(container_id)
        if record.state != "RUNNING":
            raise errors.FailedPrecondition(
                f"container {record.id} is {record.state.lower()}: it must be running"
            )
        return record

    # --- sessions -------------------------------------------------------------------------------

    def _exec(self, request, ws: WebSocket, query: dict) -> None:
        try:
            started = self._start_exec(request)
        except Exception as err:  # noqa: BLE001 - the client hears why, on the error channel
            remotecommand.send_error(ws, f"exec failed: {err}")
            return
        try:
            remotecommand.run_exec(ws, started)
        finally:
            started.release()

    def _start_exec(self, request) -> process.ExecProcess:
        from observe_rt.runtime.exec import exec_plan_for
        from observe_rt.runtime.executor import Executor

        record = self._running(request.container_id)
        runtime = self.sandboxes.runtime(self.sandboxes.get(record.sandbox_id))
        if not isinstance(runtime, Executor):
            raise errors.FailedPrecondition("streaming exec needs the built-in runtime handler")
        plan, manager = exec_plan_for(runtime, record.id, list(request.cmd))
        return process.start(plan, manager, request.tty, request.stdin, request.stdout,
                             request.stderr)  # fmt: skip

    def _attach(self, request, ws: WebSocket, query: dict) -> None:
        try:
            record = self._running(request.container_id)
        except errors.ObserveRtError as err:
            remotecommand.send_error(ws, str(err))
            return
        want = {ch for ch, on in ((1, request.stdout), (2, request.stderr)) if on}

        def running() -> bool:
            try:
                return self.containers.get(record.id).state == "RUNNING"
            except errors.NotFound:
                return False

        shim = self.sandboxes.shim(self.sandboxes.get(record.sandbox_id))
        try:
            sink = shim.attach_stdin(record.id) if request.stdin else None
        except errors.ObserveRtError as err:
            remotecommand.send_error(ws, f"attach failed: {err}")
            return

        def resize(width: int, height: int) -> None:
            shim.call("resize", id=record.id, width=width, height=height, timeout=5)

        inputs = attach.AttachInput(sink, resize)
        attach.run_attach(ws, record.log_path, running, want, request.tty, inputs)

    def _portforward(self, request, ws: WebSocket | SpdySession, query: dict) -> None:
        if isinstance(ws, SpdySession):  # SPDY: the client opens a stream pair per connection
            self._portforward_spdy(request, ws)
            return
        try:
            ports = portforward.parse_ports(query.get("port", [])) or list(request.port)
            sandbox = self.sandboxes.get(request.pod_sandbox_id)
        except (ValueError, errors.ObserveRtError) as err:
            ws.send(bytes([1]) + f"port-forward refused: {err}".encode())
            return
        if not ports:
            ws.send(bytes([1]) + b"port-forward refused: no port requested")
            return
        portforward.run_portforward(ws, ports, portforward.connector(sandbox.netns_path))

    def _portforward_spdy(self, request, session: SpdySession) -> None:
        try:
            sandbox = self.sandboxes.get(request.pod_sandbox_id)
        except errors.ObserveRtError as err:
            log.info("SPDY port-forward refused: %s", err)  # the session ends with GOAWAY
            return
        spdy_portforward.run_portforward(session, portforward.connector(sandbox.netns_path))


def _check_streams(request) -> None:
    if not (request.stdin or request.stdout or request.stderr):
        raise errors.InvalidArgument("one of stdin, stdout and stderr must be requested")
    if request.tty and request.stderr:
        raise errors.InvalidArgument("tty and stderr cannot both be true (a terminal has one "
                                     "output stream)")  # fmt: skip

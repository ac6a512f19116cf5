"""Kubernetes remotecommand over WebSocket (v4.channel.k8s.io, v5.channel.k8s.io): exec, attach.

Every binary message starts with a channel byte:

    0 stdin (client ->)   1 stdout   2 stderr   3 error: the final metav1.Status as JSON
    4 resize (client ->, JSON {"Width": w, "Height": h})
    255 close (v5 only, client ->): the next byte names the channel the client is done with

    exec session:  output pump (this thread) ── pipes / pty master ──> ws channels 1, 2
                   input pump (thread)       <── ws channels 0, 4, 255 ──> stdin, resize
                   the command exits ─> drain output (2 s grace for background holders)
                   ─> status on channel 3 ─> close.  Client gone ─> kill the command's session.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import selectors
import socket
import threading
import time

from observe_rt.stream.process import ExecProcess
from observe_rt.stream.websocket import ConnectionClosed, WebSocket

V4, V5 = "v4.channel.k8s.io", "v5.channel.k8s.io"
PROTOCOLS = (V5, V4)  # our preference
STDIN, STDOUT, STDERR, ERROR, RESIZE, CLOSE = 0, 1, 2, 3, 4, 255
DRAIN_GRACE = 2.0


def negotiate(offered: list[str]) -> str | None:
    for protocol in PROTOCOLS:
        if protocol in offered:
            return protocol
    return None


def status(exit_code: int | None, message: str = "") -> bytes:
    """The metav1.Status the error channel carries at the end of a session."""
    if exit_code == 0 and not message:
        return json.dumps({"metadata": {}, "status": "Success"}).encode()
    if exit_code is None:
        message = message or "the command ended without an exit code"
        return json.dumps({"metadata": {}, "status": "Failure", "reason": "InternalError",
                           "message": message}).encode()  # fmt: skip
    cause = {"reason": "ExitCode", "message": str(exit_code)}
    return json.dumps({
        "metadata": {}, "status": "Failure", "reason": "NonZeroExitCode",
        "message": message or f"command terminated with non-zero exit code: {exit_code}",
        "details": {"causes": [cause]},
    }).encode()  # fmt: skip


def send_error(ws: WebSocket, message: str) -> None:
    """End a session that could not start: a Failure status, then close."""
    body = {"metadata": {}, "status": "Failure", "reason": "InternalError", "message": message}
    with contextlib.suppress(ConnectionClosed, OSError):
        ws.send(bytes([ERROR]) + json.dumps(body).encode())
    ws.close()


def run_exec(ws: WebSocket, process: ExecProcess) -> int | None:
    """Pump one exec session to its end; returns the exit code (None: client went away)."""
    done = threading.Event()
    reader = threading.Thread(target=_pump_input, args=(ws, process, done), daemon=True,
                              name="stream-input")  # fmt: skip
    reader.start()
    try:
        code = _pump_output(ws, process)
        if code is not None or not ws.closed:
            with contextlib.suppress(ConnectionClosed, OSError):
                ws.send(bytes([ERROR]) + status(code))
    finally:
        done.set()
        finish(ws, reader)
    return code


def finish(ws: WebSocket, reader: threading.Thread) -> None:
    """Close the connection and wait for the input thread (it must not outlive the session)."""
    ws.close()
    reader.join(1.0)
    with contextlib.suppress(OSError):
        ws.sock.shutdown(socket.SHUT_RDWR)  # wakes a reader blocked on a silent client
    reader.join()


def _pump_output(ws: WebSocket, process: ExecProcess) -> int | None:
    code, deadline = None, None
    with selectors.DefaultSelector() as selector:
        for fd, channel in process.outputs.items():
            selector.register(fd, selectors.EVENT_READ, channel)
        selector.register(process.channel.sock, selectors.EVENT_READ, ERROR)
        while selector.get_map():
            wait = None if deadline is None else max(0.0, deadline - time.monotonic())
            events = selector.select(wait)
            if not events and deadline is not None:
                break  # something in the background still holds the output open
            for key, _ in events:
                if key.data == ERROR:
                    selector.unregister(key.fileobj)
                    code, deadline = process.exit_code(), time.monotonic() + DRAIN_GRACE
                elif not _forward(ws, key.fd, key.data, process):
                    selector.unregister(key.fd)
            if ws.closed and code is None:
                process.kill()
    return code


def _forward(ws: WebSocket, fd: int, channel: int, process: ExecProcess) -> bool:
    """Copy one read from `fd` to `channel`; False at EOF (or when the client is gone)."""
    try:
        data = os.read(fd, 32768)
    except OSError as err:
        if err.errno == errno.EIO:  # a pty whose last slave fd closed
            return False
        raise
    if not data:
        return False
    try:
        ws.send(bytes([channel]) + data)
    except (ConnectionClosed, OSError):
        ws.closed = True
        process.kill()
        return False
    return True


def _pump_input(ws: WebSocket, process: ExecProcess, done: threading.Event) -> None:
    while True:
        try:
            _, message = ws.receive()
        except ConnectionClosed:
            if not done.is_set():
                ws.closed = True
                process.kill()  # the client went away mid-stream: nothing may be left behind
            return
        if message:
            dispatch_input(message[0], message[1:], process)


def dispatch_input(channel: int, payload: bytes, process) -> None:
    """A client message for stdin, resize or close, to an exec'd process or an attach session."""
    if channel == STDIN and payload and process.stdin is not None:
        try:
            while payload:
                payload = payload[os.write(process.stdin, payload) :]
        except OSError:
            process.close_stdin()  # the command closed its stdin; drop the rest
    elif channel == RESIZE:
        with contextlib.suppress(ValueError, KeyError, TypeError, OSError):
            size = json.loads(payload)
            process.resize(int(size["Width"]), int(size["Height"]))
    elif channel == CLOSE and payload[:1] == bytes([STDIN]):
        process.close_stdin()

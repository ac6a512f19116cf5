"""Attach: follow a running container's output from its CRI log file.

The pod shim owns the container's stdio and writes it to the CRI log
(`<RFC3339Nano> stdout|stderr P|F <text>`); attach streams what is written from the moment it
connects, on channel 1 (stdout) and 2 (stderr; 1 as well with a tty), until the container
exits or the client goes away. With stdin (the container was created with stdin), channel 0
goes to the shim, which writes it to the container's stdin (pod/stdio.py); channel 4 resizes
the container's terminal; the v5 close signal for channel 0 ends stdin for this session.
"""

from __future__ import annotations

import contextlib
import os
import socket
import threading
import time
from collections.abc import Callable

from observe_rt.errors import ObserveRtError
from observe_rt.stream.remotecommand import STDERR, STDOUT, dispatch_input, finish, status
from observe_rt.stream.websocket import ConnectionClosed, WebSocket

POLL = 0.1


def parse_line(line: bytes) -> tuple[int, bytes] | None:
    """(channel, text) of one CRI log line; a full line (F) gets its newline back."""
    parts = line.rstrip(b"\n").split(b" ", 3)
    if len(parts) < 3 or parts[1] not in (b"stdout", b"stderr"):
        return None
    text = parts[3] if len(parts) == 4 else b""
    if parts[2] == b"F":
        text += b"\n"
    return (STDOUT if parts[1] == b"stdout" else STDERR), text


class AttachInput:
    """What the client's input channels drive: the shim's stdin connection, and resizes."""

    def __init__(self, sink: socket.socket | None, resize: Callable[[int, int], None]) -> None:
        self.sink = sink
        self.stdin = sink.fileno() if sink else None
        self._resize = resize

    def resize(self, width: int, height: int) -> None:
        with contextlib.suppress(ObserveRtError):  # no terminal, or the container is gone
            self._resize(width, height)

    def close_stdin(self) -> None:
        """This session is done with stdin (the shim decides what stdin_once means)."""
        if self.sink is not None:
            self.sink.close()
            self.sink, self.stdin = None, None


def run_attach(ws: WebSocket, log_path: str, running: Callable[[], bool],
               want: set[int], tty: bool, inputs: AttachInput) -> None:  # fmt: skip
    """Stream new log lines of the wanted channels until the container stops."""
    gone = threading.Event()
    reader = threading.Thread(target=_watch_client, args=(ws, gone, inputs), daemon=True,
                              name="stream-attach")  # fmt: skip
    reader.start()
    try:
        with open(log_path, "rb") as log:
            log.seek(0, os.SEEK_END)
            _follow(ws, log, running, want, tty, gone)
        if not gone.is_set():
            with contextlib.suppress(ConnectionClosed, OSError):
                ws.send(bytes([3]) + status(0))
    finally:
        finish(ws, reader)
        inputs.close_stdin()


def _follow(ws, log, running, want, tty, gone) -> None:
    pending = b""
    last_check, alive = 0.0, True
    while not gone.is_set():
        chunk = log.readline()
        if not chunk:
            if not alive:
                return
            if time.monotonic() - last_check > 0.5:
                last_check, alive = time.monotonic(), running()  # one more pass after the exit
            time.sleep(POLL)
            continue
        pending += chunk
        if not pending.endswith(b"\n"):
            continue
        parsed, pending = parse_line(pending), b""
        if parsed and parsed[0] in want:
            channel = STDOUT if tty else parsed[0]
            try:
                ws.send(bytes([channel]) + parsed[1])
            except (ConnectionClosed, OSError):
                return


def _watch_client(ws: WebSocket, gone: threading.Event, inputs: AttachInput) -> None:
    """Forward stdin and resizes until the client closes or goes away."""
    with contextlib.suppress(ConnectionClosed):
        while True:
            _, message = ws.receive()
            if message:
                dispatch_input(message[0], message[1:], inputs)
    gone.set()
    inputs.close_stdin()

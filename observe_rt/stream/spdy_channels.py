"""Exec and attach over SPDY, dressed as the WebSocket channel protocol remotecommand.py speaks.

    SPDY stream (streamtype)        channel message (remotecommand.py, attach.py)
    stdin DATA / FIN  ───────────>  0 + data / 255 0 (the client is done with stdin)
    resize DATA (JSON objects) ──>  4 + {"Width": w, "Height": h}, one per object
    stdout, stderr  <────────────  1 + data, 2 + data
    error           <────────────  3 + metav1.Status JSON: v4 as is; v1-v3 only a
                                       failure's message, as text; then FIN

The session starts once every stream the request asked for is open (as kubelet waits for
them); until then nothing runs in the container.
"""

from __future__ import annotations

import json
import logging
import time
from collections import deque

from observe_rt.stream.remotecommand import CLOSE, ERROR, RESIZE, STDERR, STDIN, STDOUT
from observe_rt.stream.spdy_session import Event, SpdySession, Stream
from observe_rt.stream.websocket import OP_BINARY, ConnectionClosed

log = logging.getLogger("observe_rt.stream")
V4, V3, V2, V1 = "v4.channel.k8s.io", "v3.channel.k8s.io", "v2.channel.k8s.io", "channel.k8s.io"
PROTOCOLS = (V4, V3, V2, V1)  # our preference; "" (no header) means V1
STREAM_CREATION_TIMEOUT = 30.0  # kubelet's default


def wanted_streams(request, protocol: str) -> set[str]:
    """The stream types an Exec/AttachRequest makes the client open (kubelet counts these)."""
    wanted = {"error"} | {name for name in ("stdin", "stdout", "stderr") if getattr(request, name)}
    if request.tty and protocol in (V4, V3):
        wanted.add("resize")
    return wanted


def await_streams(
    session: SpdySession, wanted: set[str], timeout: float = STREAM_CREATION_TIMEOUT
) -> tuple[dict[str, Stream], list[Event]]:
    """Accept the client's streams until every wanted type is open; others are refused.
    Returns them by type, and whatever else the client did meanwhile (handled later)."""
    streams: dict[str, Stream] = {}
    early: list[Event] = []
    deadline = time.monotonic() + timeout  # for all the streams, as kubelet's timer: a client
    try:  # that keeps the connection busy (pings) cannot hold the session open past it
        while not wanted <= streams.keys():
            left = deadline - time.monotonic()
            if left <= 0:
                raise ConnectionClosed(f"the client did not open its streams in {timeout:g}s")
            session.sock.settimeout(left)
            event = session.next_event()
            kind = event.stream.type
            if event.kind != "open":
                early.append(event)
            elif kind in wanted and kind not in streams:
                session.reply(event.stream)
                streams[kind] = event.stream
            else:
                log.info("SPDY: refused a stream of type %r (wanted %s)", kind, sorted(wanted))
                session.refuse(event.stream)
    finally:
        try:
            session.sock.settimeout(None)
        except OSError:
            pass
    return streams, early


class RemoteCommandStreams:
    """An exec/attach session's SPDY streams in the shape of remotecommand's WebSocket: a
    message is a channel byte and its data, both ways (see remotecommand.py)."""

    def __init__(self, session: SpdySession, protocol: str, streams: dict[str, Stream],
                 early: list[Event] = ()) -> None:  # fmt: skip
        self.session = session
        self.protocol = protocol
        self.streams = streams
        self._outputs = {STDOUT: streams.get("stdout"), STDERR: streams.get("stderr")}
        self._pending: deque[Event] = deque(early)
        self._messages: deque[bytes] = deque()
        self._resize_buffer = b""

    @property
    def sock(self):
        return self.session.sock

    @property
    def closed(self) -> bool:
        return self.session.closed

    @closed.setter
    def closed(self, value: bool) -> None:  # remotecommand marks a client that went away
        self.session.closed = self.session.closed or value

    def send(self, payload: bytes, opcode: int = OP_BINARY) -> None:
        channel, data = payload[0], payload[1:]
        if channel == ERROR:
            self._send_status(data)
            return
        stream = self._outputs.get(channel)
        if stream is not None and data:
            self.session.send_data(stream, data)

    def _send_status(self, body: bytes) -> None:
        """v4 sends the metav1.Status as JSON; v1-v3 only a failure's message, as text."""
        stream = self.streams["error"]
        if self.protocol != V4:
            status = json.loads(body)
            body = b"" if status.get("status") == "Success" else status["message"].encode()
        if body:
            self.session.send_data(stream, body)
        self.session.finish(stream)

    def receive(self) -> tuple[int, bytes]:
        while not self._messages:
            event = self._pending.popleft() if self._pending else self.session.next_event()
            self._translate(event)
        return OP_BINARY, self._messages.popleft()

    def _translate(self, event: Event) -> None:
        kind = event.stream.type
        if event.kind == "open":
            self.session.refuse(event.stream)  # the session is set up: no new streams
        elif kind == "stdin":
            # The client's FIN (or reset) is EOF for the command, like v5's close message.
            message = bytes([STDIN]) + event.data if event.kind == "data" else bytes([CLOSE, STDIN])
            self._messages.append(message)
        elif kind == "resize" and event.kind == "data":
            self._resize_buffer += event.data
            self._decode_resizes()

    def _decode_resizes(self) -> None:
        """The resize stream is a sequence of JSON objects ({"Width": w, "Height": h})."""
        decoder = json.JSONDecoder()
        text = self._resize_buffer.decode(errors="replace")
        while text.strip():
            text = text.lstrip()
            try:
                size, end = decoder.raw_decode(text)
            except json.JSONDecodeError:
                break
            self._messages.append(bytes([RESIZE]) + json.dumps(size).encode())
            text = text[end:]
        self._resize_buffer = text.encode()[-4096:]  # a partial object waits for its rest

    def close(self) -> None:
        """FIN on what we write, then GOAWAY."""
        for stream in self.streams.values():
            try:
                self.session.finish(stream)
            except ConnectionClosed:
                break
        self.session.close()

"""Port-forward over SPDY (portforward.k8s.io), as kubelet serves `kubectl port-forward`.

The client opens a pair of streams per forwarded connection, both with the headers `port` and
`requestid`: `streamtype: error` (a failure's text comes back there) and `streamtype: data`
(the bytes, both ways). Once a pair is complete, a thread of its own connects into the pod's
network namespace (portforward.connector) and copies pod -> data stream; the session's reader
(this loop) copies data stream -> pod.

    client FIN on data ─> shutdown(SHUT_WR) on the pod socket   client reset ─> SHUT_RDWR
    pod socket EOF     ─> FIN on data and error: the pair is done, its socket closed
    connection ends    ─> every pod socket shut down, the threads joined
"""

from __future__ import annotations

import contextlib
import logging
import socket
import threading
from collections.abc import Callable
from dataclasses import dataclass, field

from observe_rt.stream.spdy_session import Event, SpdySession, Stream
from observe_rt.stream.websocket import ConnectionClosed

log = logging.getLogger("observe_rt.stream")
MAX_PENDING = 4 << 20  # bytes from the client held while the pod connection is being made


@dataclass(eq=False)
class _Pair:
    request_id: str
    port: int
    data: Stream | None = None
    error: Stream | None = None
    sock: socket.socket | None = None  # set once connected; None again when closed
    pending: list[bytes] = field(default_factory=list)  # client bytes before the connect
    pending_bytes: int = 0
    client_done: bool = False  # FIN on the data stream
    reset: bool = False
    lock: threading.Lock = field(default_factory=threading.Lock)


def parse_stream_headers(headers: dict[str, str], stream_id: int) -> tuple[int, str, str]:
    """(port, "data" | "error", request id); ValueError says what is wrong."""
    kind = headers.get("streamtype", "")
    if kind not in ("data", "error"):
        raise ValueError(f"streamtype {kind!r}: must be data or error")
    text = headers.get("port", "")
    if not text.isdigit() or not 0 < int(text) < 65536:
        raise ValueError(f"port {text!r}: must be a number from 1 to 65535")
    # Old clients send no request id: kubelet pairs error stream N with data stream N + 2.
    request_id = headers.get("requestid") or str(stream_id if kind == "error" else stream_id - 2)
    return int(text), kind, request_id


def run_portforward(session: SpdySession, connect: Callable[[int], socket.socket]) -> None:
    forwarder = _Forwarder(session, connect)
    try:
        forwarder.serve()
    finally:
        forwarder.stop()


class _Forwarder:
    def __init__(self, session: SpdySession, connect: Callable[[int], socket.socket]) -> None:
        self.session = session
        self.connect = connect
        self.pairs: dict[str, _Pair] = {}
        self.by_stream: dict[int, _Pair] = {}
        self.threads: list[threading.Thread] = []
        self.lock = threading.Lock()  # pairs and by_stream (the pair threads remove theirs)

    def serve(self) -> None:
        while True:
            try:
                event = self.session.next_event()
            except ConnectionClosed:
                return
            if event.kind == "open":
                self._open(event.stream)
                continue
            with self.lock:
                pair = self.by_stream.get(event.stream.id)
            if pair is not None and event.stream is pair.data:
                _from_client(pair, event)
            # the error stream: the client closes its side at once; nothing to do

    def _open(self, stream: Stream) -> None:
        try:
            port, kind, request_id = parse_stream_headers(stream.headers, stream.id)
        except ValueError as err:
            log.info("SPDY port-forward: refused stream %d: %s", stream.id, err)
            self.session.refuse(stream)
            return
        with self.lock:
            pair = self.pairs.setdefault(request_id, _Pair(request_id, port))
            if getattr(pair, kind) is not None or pair.port != port:
                pair = None
            else:
                setattr(pair, kind, stream)
                self.by_stream[stream.id] = pair
        if pair is None:
            log.info("SPDY port-forward: refused a second %s stream for %s", kind, request_id)
            self.session.refuse(stream)
            return
        self.session.reply(stream)
        if pair.data is not None and pair.error is not None:
            self._start(pair)

    def _start(self, pair: _Pair) -> None:
        self.threads = [thread for thread in self.threads if thread.is_alive()]
        thread = threading.Thread(target=self._forward, args=(pair,), daemon=True,
                                  name=f"stream-spdy-port-{pair.port}")  # fmt: skip
        self.threads.append(thread)
        thread.start()

    def _forward(self, pair: _Pair) -> None:
        try:
            sock = self.connect(pair.port)
        except OSError as err:
            message = f"error forwarding port {pair.port} to the pod: {err}"
            with contextlib.suppress(ConnectionClosed):
                self.session.send_data(pair.error, message.encode())
            self._done(pair)
            return
        sock.settimeout(None)
        with pair.lock:
            pair.sock = sock
            with contextlib.suppress(OSError):
                for chunk in pair.pending:
                    sock.sendall(chunk)
                if pair.client_done:
                    sock.shutdown(socket.SHUT_RDWR if pair.reset else socket.SHUT_WR)
            pair.pending.clear()
        with contextlib.suppress(OSError, ConnectionClosed):
            while data := sock.recv(32768):
                self.session.send_data(pair.data, data)
        self._done(pair)

    def _done(self, pair: _Pair) -> None:
        """FIN both streams, close the pod socket, forget the pair."""
        for stream in (pair.data, pair.error):
            with contextlib.suppress(ConnectionClosed):
                self.session.finish(stream)
        with pair.lock:
            if pair.sock is not None:
                pair.sock.close()
                pair.sock = None
        with self.lock:
            self.pairs.pop(pair.request_id, None)
            for stream in (pair.data, pair.error):
                self.by_stream.pop(stream.id, None)
                self.session.forget(stream)  # a client need not half-close a finished pair

    def stop(self) -> None:
        """The connection is over: wake every pair thread and wait for it."""
        self.session.close()  # writers blocked on a flow-control window give up
        with self.lock:
            pairs = list(self.pairs.values())
        for pair in pairs:
            with pair.lock:
                if pair.sock is not None:
                    with contextlib.suppress(OSError):
                        pair.sock.shutdown(socket.SHUT_RDWR)
                pair.client_done = pair.reset = True
        for thread in self.threads:
            thread.join()


def _from_client(pair: _Pair, event: Event) -> None:
    with pair.lock:
        if event.kind == "data":
            if pair.sock is not None:
                with contextlib.suppress(OSError):
                    pair.sock.sendall(event.data)
            elif pair.pending_bytes + len(event.data) <= MAX_PENDING:
                pair.pending.append(event.data)
                pair.pending_bytes += len(event.data)
            else:  # never forward a byte stream with a hole in it: reset the connection
                pair.pending.clear()
                pair.client_done = pair.reset = True
            return
        pair.client_done = True
        pair.reset = event.kind == "reset"
        if pair.sock is not None:
            with contextlib.suppress(OSError):
                pair.sock.shutdown(socket.SHUT_RDWR if pair.reset else socket.SHUT_WR)

"""One SPDY/3.1 connection, server side: the streams the client opens, frames both ways.

    client                                   SpdySession
    SYN_STREAM (streamtype: stdout, ...) ──> next_event() -> Event("open") ─> reply()/refuse()
    DATA / DATA+FIN / RST_STREAM ──────────> Event("data" | "fin" | "reset")
    PING, SETTINGS, WINDOW_UPDATE ─────────> answered or accounted here, no event
    <── send_data(), finish() (FIN), close() (GOAWAY)

One thread reads (next_event); any thread may write: a frame goes out whole under a lock,
with the header compressor used in wire order.

Flow control (SPDY/3.1: 64 KiB per stream and per session): what we read is given back with
WINDOW_UPDATE. The Go peers (moby/spdystream, i.e. kubelet, kubectl, crictl) never send
WINDOW_UPDATE and ignore ours, so our send window is enforced only once the peer has shown it
does flow control (its first WINDOW_UPDATE or SETTINGS); for the others TCP's own backpressure
bounds what is in flight.
"""

from __future__ import annotations

import logging
import threading
from collections import deque
from dataclasses import dataclass, field
from typing import NamedTuple

from observe_rt.stream import spdy
from observe_rt.stream.websocket import ConnectionClosed

log = logging.getLogger("observe_rt.stream")
MAX_STREAMS = 256  # open at once on one connection; more are refused


@dataclass(eq=False)
class Stream:
    id: int
    headers: spdy.Headers
    send_window: int
    remote_done: bool = False  # the client sent FIN (or reset it)
    local_done: bool = False  # we sent FIN
    reset: bool = False
    unacked: int = 0  # bytes read and not yet returned by WINDOW_UPDATE

    @property
    def type(self) -> str:
        return self.headers.get("streamtype", "")


class Event(NamedTuple):
    kind: str  # "open", "data", "fin" (the client is done writing) or "reset"
    stream: Stream
    data: bytes = b""


@dataclass
class _Windows:
    session: int = spdy.DEFAULT_WINDOW  # what we may still send, all streams together
    initial: int = spdy.DEFAULT_WINDOW  # a new stream's send window (the peer's SETTINGS)
    enforced: bool = False  # the peer does flow control: wait for its WINDOW_UPDATEs
    unacked: int = 0  # session-level bytes read and not yet returned
    cond: threading.Condition = field(default_factory=threading.Condition)


class SpdySession:
    """The server end of one upgraded connection. One thread reads (next_event); any thread
    may write: frames go out whole under a lock, with the header compressor in wire order."""

    def __init__(self, sock, reader) -> None:
        self.sock = sock  # remotecommand.finish() shuts it down to wake a blocked reader
        self.closed = False
        self._reader = reader  # a buffered file over sock: may hold bytes read past the request
        self._codec = spdy.HeaderCodec()
        self._send_lock = threading.Lock()
        self._windows = _Windows()
        self._streams: dict[int, Stream] = {}
        self._last_id = 0
        self._events: deque[Event] = deque()

    # --- reading --------------------------------------------------------------------------------

    def next_event(self) -> Event:
        """What the client did next; control frames are answered here. ConnectionClosed at
        the end (EOF, GOAWAY, or a protocol error, which we answer with GOAWAY first)."""
        while not self._events:
            try:
                frame = spdy.read_frame(self._read_exact, self._codec)
                if frame is not None:
                    self._handle(frame)
            except spdy.ProtocolError as err:
                log.info("SPDY client broke the protocol: %s", err)
                self.close(spdy.GOAWAY_PROTOCOL_ERROR)
                raise ConnectionClosed(f"SPDY protocol error: {err}") from None
        return self._events.popleft()

    def _read_exact(self, count: int) -> bytes:
        try:
            data = self._reader.read(count)
        except (OSError, ValueError) as err:  # ValueError: the file was closed under us
            raise ConnectionClosed(str(err)) from None
        if len(data or b"") < count:
            raise ConnectionClosed("EOF")
        return data

    def _handle(self, frame: spdy.Frame) -> None:
        match frame:
            case spdy.SynStream():
                self._open(frame)
            case spdy.Data():
                self._data(frame)
            case spdy.RstStream():
                stream = self._streams.pop(frame.stream_id, None)
                if stream is not None:
                    stream.reset = stream.remote_done = True
                    self._wake()
                    self._events.append(Event("reset", stream))
            case spdy.WindowUpdate():
                self._window_update(frame)
            case spdy.Settings():
                self._settings(frame)
            case spdy.Ping() if frame.ping_id % 2:  # the client's (odd): echo it
                self._write(frame)
            case spdy.GoAway():
                raise ConnectionClosed("the client sent GOAWAY")
            # SYN_REPLY, HEADERS and our own pings' answers: nothing to do

    def _open(self, frame: spdy.SynStream) -> None:
        if frame.stream_id % 2 == 0 or frame.stream_id <= self._last_id:
            raise spdy.ProtocolError(f"stream id {frame.stream_id} is not odd and increasing")
        self._last_id = frame.stream_id
        stream = Stream(frame.stream_id, frame.headers, self._windows.initial,
                        remote_done=frame.fin)  # fmt: skip
        if self.closed or len(self._streams) >= MAX_STREAMS:
            self._write(spdy.RstStream(stream.id, spdy.REFUSED_STREAM))
            return
        self._streams[stream.id] = stream
        self._events.append(Event("open", stream))

    def _data(self, frame: spdy.Data) -> None:
        stream = self._streams.get(frame.stream_id)
        if stream is None or stream.remote_done:
            self._write(spdy.RstStream(frame.stream_id, spdy.INVALID_STREAM))
            return
        if frame.data:
            self._acknowledge(stream, len(frame.data))
            self._events.append(Event("data", stream, frame.data))
        if frame.fin:
            stream.remote_done = True
            self._forget_if_done(stream)
            self._events.append(Event("fin", stream))

    def _acknowledge(self, stream: Stream, count: int) -> None:
        """Give the window back once half of it is used (it is consumed as soon as read)."""
        windows = self._windows
        stream.unacked += count
        windows.unacked += count
        if stream.unacked >= spdy.DEFAULT_WINDOW // 2:
            self._write(spdy.WindowUpdate(stream.id, stream.unacked))
            stream.unacked = 0
        if windows.unacked >= spdy.DEFAULT_WINDOW // 2:
            self._write(spdy.WindowUpdate(0, windows.unacked))
            windows.unacked = 0

    def _window_update(self, frame: spdy.WindowUpdate) -> None:
        windows = self._windows
        with windows.cond:
            windows.enforced = True
            if frame.stream_id == 0:
                windows.session += frame.delta
                if windows.session > spdy.MAX_WINDOW:
                    raise spdy.ProtocolError("session window above 2^31 - 1")
            elif (stream := self._streams.get(frame.stream_id)) is not None:
                stream.send_window = min(stream.send_window + frame.delta, spdy.MAX_WINDOW)
            windows.cond.notify_all()

    def _settings(self, frame: spdy.Settings) -> None:
        initial = frame.values.get(spdy.SETTINGS_INITIAL_WINDOW_SIZE)
        if initial is None:
            return
        windows = self._windows
        with windows.cond:
            if initial > spdy.MAX_WINDOW:
                raise spdy.ProtocolError(f"initial window {initial} above 2^31 - 1")
            for stream in list(self._streams.values()):  # writers may drop theirs meanwhile
                stream.send_window += initial - windows.initial
            windows.initial, windows.enforced = initial, True
            windows.cond.notify_all()

    # --- writing --------------------------------------------------------------------------------

    def reply(self, stream: Stream) -> None:
        self._write(spdy.SynReply(stream.id))

    def refuse(self, stream: Stream, status: int = spdy.REFUSED_STREAM) -> None:
        self._streams.pop(stream.id, None)
        stream.reset = True
        self._write(spdy.RstStream(stream.id, status))

    def send_data(self, stream: Stream, data: bytes) -> None:
        """Write `data` on `stream` within its windows (blocks while they are shut); dropped
        when the stream is reset or finished. ConnectionClosed once the session is over."""
        view = memoryview(data)
        while view:
            count = self._take_window(stream, len(view))
            if count == 0:
                return
            self._write(spdy.Data(stream.id, bytes(view[:count])))
            view = view[count:]

    def _take_window(self, stream: Stream, wanted: int) -> int:
        windows = self._windows
        with windows.cond:
            while windows.enforced and min(windows.session, stream.send_window) <= 0:
                if self.closed or stream.reset:
                    break
                windows.cond.wait()
            if self.closed:
                raise ConnectionClosed("session closed")
            if stream.reset or stream.local_done:
                return 0
            count = wanted
            if windows.enforced:
                count = min(wanted, windows.session, stream.send_window)
            windows.session -= count
            stream.send_window -= count
            return count

    def finish(self, stream: Stream) -> None:
        """FIN: we are done writing on `stream` (idempotent; nothing if it was reset)."""
        if stream.local_done or stream.reset:
            return
        stream.local_done = True
        self._write(spdy.Data(stream.id, b"", fin=True))
        self._forget_if_done(stream)

    def close(self, status: int = spdy.GOAWAY_OK) -> None:
        """GOAWAY (once); writers blocked on a window give up. The caller closes the socket."""
        if self.closed:
            return
        try:
            self._write(spdy.GoAway(self._last_id, status))
        except ConnectionClosed:
            pass
        self.closed = True
        self._wake()

    def forget(self, stream: Stream) -> None:
        """We are done with `stream` whatever the client still does: more DATA on it gets
        RST_STREAM, and it no longer counts towards MAX_STREAMS."""
        self._streams.pop(stream.id, None)

    def _forget_if_done(self, stream: Stream) -> None:
        if stream.local_done and stream.remote_done:
            self._streams.pop(stream.id, None)

    def _wake(self) -> None:
        with self._windows.cond:
            self._windows.cond.notify_all()

    def _write(self, frame: spdy.Frame) -> None:
        with self._send_lock:
            try:
                self.sock.sendall(spdy.encode(frame, self._codec))
            except OSError as err:
                raise ConnectionClosed(str(err)) from None

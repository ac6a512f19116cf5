"""A SPDY/3.1 client for the streaming server's tests, opening streams the way client-go does.

    client = SpdyClient.connect(url, ["v4.channel.k8s.io"])
    ids = client.open_exec_streams(stdin=True, stdout=True, stderr=True, tty=False)
    client.send(ids["stdin"], b"hello\\n", fin=True)
    client.wait_done([ids["stdout"], ids["error"]]); client.output(ids["error"])

A reader thread collects every stream's data, FIN and RST_STREAM, and GOAWAY. With
`flow_control` it returns each DATA frame's bytes at once with WINDOW_UPDATE, as a SPDY/3.1
peer should; without, it behaves like moby/spdystream (kubelet, kubectl), which never does.
"""

from __future__ import annotations

import contextlib
import socket
import threading
import time
from urllib.parse import urlsplit

from observe_rt.stream import spdy
from observe_rt.stream.websocket import HandshakeError

REMOTECOMMAND_V4 = "v4.channel.k8s.io"


class StreamRefused(Exception):
    pass


class SpdyClient:
    def __init__(self, sock: socket.socket, protocol: str, flow_control: bool = True,
                 initial_window: int | None = None) -> None:  # fmt: skip
        self.sock = sock
        self.protocol = protocol
        self.flow_control = flow_control
        self.codec = spdy.HeaderCodec()
        self.data: dict[int, bytearray] = {}
        self.fin: set[int] = set()
        self.replied: set[int] = set()
        self.resets: dict[int, int] = {}
        self.goaway: spdy.GoAway | None = None
        self.pings: list[int] = []
        self.window_updates: list[spdy.WindowUpdate] = []
        self.eof = False
        self._next_id = 1
        self._send_lock = threading.Lock()
        self._cond = threading.Condition()
        if initial_window is not None:
            self.write(spdy.Settings({spdy.SETTINGS_INITIAL_WINDOW_SIZE: initial_window}))
        self._reader = threading.Thread(target=self._read_loop, daemon=True, name="spdy-client")
        self._reader.start()

    @classmethod
    def connect(cls, url: str, protocols: list[str], method: str = "POST", timeout: float = 30,
                **options) -> SpdyClient:  # fmt: skip
        sock, headers = handshake(url, protocols, method, timeout)
        return cls(sock, headers.get("x-stream-protocol-version", ""), **options)

    # --- writing --------------------------------------------------------------------------------

    def write(self, frame: spdy.Frame) -> None:
        with self._send_lock:
            self.sock.sendall(spdy.encode(frame, self.codec))

    def open(self, headers: dict[str, str], timeout: float = 30) -> int:
        """SYN_STREAM, then wait for the server's SYN_REPLY (StreamRefused on RST_STREAM)."""
        stream_id, self._next_id = self._next_id, self._next_id + 2
        self.write(spdy.SynStream(stream_id, headers))
        self.wait(lambda: stream_id in self.replied or stream_id in self.resets or self.eof,
                  timeout)  # fmt: skip
        if stream_id not in self.replied:
            raise StreamRefused(f"stream {stream_id} ({headers}): {self.resets.get(stream_id)}")
        return stream_id

    def open_exec_streams(self, stdin: bool, stdout: bool, stderr: bool, tty: bool) -> dict:
        """client-go's order: error, stdin, stdout, stderr, resize (tty, v3 and v4)."""
        wanted = ["error"] + [name for name, on in (("stdin", stdin), ("stdout", stdout),
                                                     ("stderr", stderr)) if on]  # fmt: skip
        if tty and self.protocol in ("v4.channel.k8s.io", "v3.channel.k8s.io"):
            wanted.append("resize")
        return {name: self.open({"streamtype": name}) for name in wanted}

    def send(self, stream_id: int, data: bytes = b"", fin: bool = False) -> None:
        self.write(spdy.Data(stream_id, data, fin))

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self.write(spdy.GoAway(0))
        with contextlib.suppress(OSError):
            self.sock.shutdown(socket.SHUT_RDWR)
        self._reader.join(10)
        self.sock.close()

    def vanish(self) -> None:
        """Gone without a word (no GOAWAY): a crashed client. shutdown() first, since a plain
        close() does not end a socket that our reader thread is blocked in."""
        with contextlib.suppress(OSError):
            self.sock.shutdown(socket.SHUT_RDWR)
        self._reader.join(10)
        self.sock.close()

    # --- reading --------------------------------------------------------------------------------

    def wait(self, predicate, timeout: float = 30) -> bool:
        with self._cond:
            return self._cond.wait_for(predicate, timeout)

    def wait_done(self, stream_ids: list[int], timeout: float = 30) -> None:
        """Until the server finished (FIN or reset) each stream, or the connection ended."""
        done = self.wait(lambda: self.eof or all(s in self.fin or s in self.resets
                                                 for s in stream_ids), timeout)  # fmt: skip
        assert done, f"streams {stream_ids} not finished after {timeout} s"

    def output(self, stream_id: int) -> bytes:
        with self._cond:
            return bytes(self.data.get(stream_id, b""))

    def _read_loop(self) -> None:
        try:
            while True:
                frame = spdy.read_frame(self._read_exact, self.codec)
                with self._cond:
                    self._record(frame)
                    self._cond.notify_all()
        except (EOFError, OSError, spdy.ProtocolError):
            pass
        with self._cond:
            self.eof = True
            self._cond.notify_all()

    def _record(self, frame: spdy.Frame | None) -> None:
        match frame:
            case spdy.SynReply():
                self.replied.add(frame.stream_id)
            case spdy.Data():
                self.data.setdefault(frame.stream_id, bytearray()).extend(frame.data)
                if frame.fin:
                    self.fin.add(frame.stream_id)
                if self.flow_control and frame.data:
                    self.write(spdy.WindowUpdate(frame.stream_id, len(frame.data)))
                    self.write(spdy.WindowUpdate(0, len(frame.data)))
            case spdy.RstStream():
                self.resets[frame.stream_id] = frame.status
            case spdy.GoAway():
                self.goaway = frame
            case spdy.Ping():
                self.pings.append(frame.ping_id)
            case spdy.WindowUpdate():
                self.window_updates.append(frame)

    def _read_exact(self, count: int) -> bytes:
        data = bytearray()
        while len(data) < count:
            chunk = self.sock.recv(count - len(data))
            if not chunk:
                raise EOFError
            data += chunk
        return bytes(data)


def handshake(url: str, protocols: list[str], method: str = "POST",
              timeout: float = 30) -> tuple[socket.socket, dict[str, str]]:  # fmt: skip
    """The HTTP/1.1 upgrade; HandshakeError (with the status and body) unless 101."""
    parts = urlsplit(url)
    sock = socket.create_connection((parts.hostname, parts.port or 80), timeout=timeout)
    path = parts.path + (f"?{parts.query}" if parts.query else "")
    offers = "".join(f"X-Stream-Protocol-Version: {name}\r\n" for name in protocols)
    sock.sendall((f"{method} {path} HTTP/1.1\r\nHost: {parts.netloc}\r\nConnection: Upgrade\r\n"
                  f"Upgrade: SPDY/3.1\r\n{offers}Content-Length: 0\r\n\r\n").encode())  # fmt: skip
    head = bytearray()
    while b"\r\n\r\n" not in head:
        chunk = sock.recv(1)  # byte by byte: nothing of the SPDY frames after it is read here
        if not chunk:
            break
        head += chunk
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split()[1]) if len(lines[0].split()) > 1 else 0
    headers: dict[str, str] = {}
    for name, _, value in (line.partition(":") for line in lines[1:] if line):
        key = name.strip().lower()
        headers[key] = f"{headers[key]}, {value.strip()}" if key in headers else value.strip()
    if status != 101:
        body = _read_body(sock, int(headers.get("content-length", "0")))
        sock.close()
        error = HandshakeError(status, body)
        error.headers = headers  # type: ignore[attr-defined]
        raise error
    sock.settimeout(None)
    return sock, headers


def _read_body(sock: socket.socket, length: int) -> str:
    body = b""
    deadline = time.monotonic() + 10
    while len(body) < length and time.monotonic() < deadline:
        chunk = sock.recv(length - len(body))
        if not chunk:
            break
        body += chunk
    return body.decode(errors="replace")

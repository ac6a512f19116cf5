"""Minimal RFC 6455 WebSocket framing on a blocking stdlib socket (server and test client).

Only what the Kubernetes channel protocols need: binary and text messages, fragmented messages
reassembled, ping answered with pong, close answered with close. Frames from a client are
masked (RFC 6455 5.3); the server's are not. Sending is serialised by a lock, so a reader
thread and a writer thread can share one connection.
"""

from __future__ import annotations

import base64
import hashlib
import os
import socket
import struct
import threading

GUID = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
OP_CONT, OP_TEXT, OP_BINARY, OP_CLOSE, OP_PING, OP_PONG = 0x0, 0x1, 0x2, 0x8, 0x9, 0xA
_OPCODES = frozenset((OP_CONT, OP_TEXT, OP_BINARY, OP_CLOSE, OP_PING, OP_PONG))
MAX_MESSAGE = 16 << 20


class ConnectionClosed(Exception):
    """The peer closed the connection (close frame or EOF)."""


def accept_key(key: str) -> str:
    """Sec-WebSocket-Accept for a client's Sec-WebSocket-Key."""
    return base64.b64encode(hashlib.sha1((key + GUID).encode()).digest()).decode()


def encode_frame(opcode: int, payload: bytes, mask: bool = False) -> bytes:
    length = len(payload)
    head = bytes([0x80 | opcode])
    mask_bit = 0x80 if mask else 0
    if length < 126:
        head += bytes([mask_bit | length])
    elif length < 1 << 16:
        head += bytes([mask_bit | 126]) + struct.pack("!H", length)
    else:
        head += bytes([mask_bit | 127]) + struct.pack("!Q", length)
    if not mask:
        return head + payload
    key = os.urandom(4)
    return head + key + _unmask(payload, key)


def _unmask(payload: bytes, key: bytes) -> bytes:
    repeated = (key * (len(payload) // 4 + 1))[: len(payload)]
    return (int.from_bytes(payload, "big") ^ int.from_bytes(repeated, "big")).to_bytes(
        len(payload), "big"
    )


class WebSocket:
    """One connection; `client=True` masks outgoing frames as a client must."""

    def __init__(self, sock: socket.socket, client: bool = False) -> None:
        self.sock = sock
        self.client = client
        self._send_lock = threading.Lock()
        self.closed = False

    def send(self, payload: bytes, opcode: int = OP_BINARY) -> None:
        frame = encode_frame(opcode, payload, mask=self.client)
        with self._send_lock:
            if self.closed and opcode != OP_CLOSE:
                raise ConnectionClosed("connection already closed")
            self.sock.sendall(frame)

    def close(self, code: int = 1000, reason: str = "") -> None:
        """Send a close frame once; errors are ignored (the peer may be gone already)."""
        with self._send_lock:
            if self.closed:
                return
            self.closed = True
            try:
                self.sock.sendall(encode_frame(OP_CLOSE, struct.pack("!H", code) + reason.encode(),
                                               mask=self.client))  # fmt: skip
            except OSError:
                pass

    def receive(self) -> tuple[int, bytes]:
        """The next data message (opcode, payload); control frames are handled here."""
        parts: list[bytes] = []
        first_opcode = None
        while True:
            fin, opcode, payload = self._read_frame()
            if opcode == OP_PING:
                self.send(payload, OP_PONG)
                continue
            if opcode == OP_PONG:
                continue
            if opcode == OP_CLOSE:
                self.close()
                raise ConnectionClosed("peer sent close")
            if first_opcode is None:
                first_opcode = opcode
            parts.append(payload)
            if sum(map(len, parts)) > MAX_MESSAGE:
                raise ConnectionClosed("message too large")
            if fin:
                return first_opcode, b"".join(parts)

    def _read_frame(self) -> tuple[bool, int, bytes]:
        b0, b1 = self._read_exact(2)
        # No extension is negotiated, so reserved bits and opcodes are errors; a client's frames
        # must be masked. Refuse at once rather than wait for a length that may never come.
        if b0 & 0x70 or b0 & 0x0F not in _OPCODES or (not self.client and not b1 & 0x80):
            self.close(1002, "protocol error")
            raise ConnectionClosed(f"protocol error: frame header {b0:#04x} {b1:#04x}")
        length = b1 & 0x7F
        if length == 126:
            length = struct.unpack("!H", self._read_exact(2))[0]
        elif length == 127:
            length = struct.unpack("!Q", self._read_exact(8))[0]
        if length > MAX_MESSAGE:
            raise ConnectionClosed("frame too large")
        key = self._read_exact(4) if b1 & 0x80 else b""
        payload = self._read_exact(length)
        if key:
            payload = _unmask(payload, key)
        return bool(b0 & 0x80), b0 & 0x0F, payload

    def _read_exact(self, count: int) -> bytes:
        data = bytearray()
        while len(data) < count:
            try:
                chunk = self.sock.recv(count - len(data))
            except OSError as err:
                raise ConnectionClosed(str(err)) from None
            if not chunk:
                raise ConnectionClosed("EOF")
            data += chunk
        return bytes(data)


class HandshakeError(Exception):
    def __init__(self, status: int, body: str) -> None:
        super().__init__(f"HTTP {status}: {body.strip()}")
        self.status = status
        self.body = body


def connect(url: str, protocols: list[str], timeout: float = 10.0) -> tuple[WebSocket, str]:
    """Client side (tests, `observe-rt` tools): open `http://host:port/path` as a WebSocket."""
    from urllib.parse import urlsplit

    parts = urlsplit(url)
    sock = socket.create_connection((parts.hostname, parts.port or 80), timeout=timeout)
    key = base64.b64encode(os.urandom(16)).decode()
    path = parts.path + (f"?{parts.query}" if parts.query else "")
    request = (f"GET {path} HTTP/1.1\r\nHost: {parts.netloc}\r\nUpgrade: websocket\r\n"
               f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n"
               f"Sec-WebSocket-Protocol: {', '.join(protocols)}\r\n\r\n")  # fmt: skip
    sock.sendall(request.encode())
    head = bytearray()
    while b"\r\n\r\n" not in head:
        chunk = sock.recv(1)
        if not chunk:
            break
        head += chunk
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split()[1]) if lines and len(lines[0].split()) > 1 else 0
    headers = {k.strip().lower(): v.strip() for k, _, v in (x.partition(":") for x in lines[1:])}
    if status != 101:
        body = sock.recv(65536).decode(errors="replace")
        sock.close()
        raise HandshakeError(status, body)
    if headers.get("sec-websocket-accept") != accept_key(key):
        sock.close()
        raise HandshakeError(status, "bad Sec-WebSocket-Accept")
    sock.settimeout(None)
    return WebSocket(sock, client=True), headers.get("sec-websocket-protocol", "")

"""A reverse proxy in front of a registry that injects faults, and the HTTP plumbing it shares
with the token server (tests/support/registry.py).

    with FlakyProxy(registry.url) as proxy: proxy.add(Fault(r"/blobs/", "status", times=3))

It listens on 127.0.0.1 with a free port and is stopped on exit, also when a test fails.
"""

from __future__ import annotations

import contextlib
import http.client
import json
import re
import socket
import struct
import threading
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import urlsplit


@dataclass
class Fault:
    """What the proxy does to requests whose path matches `path` (a regex), `times` times.

    action: "status" (answer `status`), "reset" (RST the connection), "truncate" (send half of
    the body, then close), "corrupt" (flip one byte), "content_type" (serve as `value`),
    "redirect" (307 to `value` + path), "require_basic" (401 with a Basic challenge unless the
    request has an Authorization header; otherwise the next matching fault or the upstream).
    """

    path: str
    action: str = "status"
    times: int | None = None  # None: every time
    status: int = 503
    value: str = ""
    method: str | None = None

    def matches(self, method: str, path: str) -> bool:
        return (
            (self.times is None or self.times > 0)
            and (self.method is None or self.method == method)
            and re.search(self.path, path) is not None
        )


class FlakyProxy:
    """A reverse proxy in front of a registry that injects faults and logs every request."""

    def __init__(self, upstream_url: str) -> None:
        self.upstream = urlsplit(upstream_url).netloc
        self.faults: list[Fault] = []
        self.log: list[dict] = []  # method, path, headers, and what the proxy did
        self._lock = threading.Lock()
        self._server = serve(self._handler())
        self.url = f"http://127.0.0.1:{self._server.server_port}"

    @property
    def host(self) -> str:
        return urlsplit(self.url).netloc

    def add(self, fault: Fault) -> Fault:
        self.faults.append(fault)
        return fault

    def __enter__(self) -> FlakyProxy:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()

    def requests(self, path_pattern: str = "") -> list[dict]:
        return [entry for entry in self.log if re.search(path_pattern, entry["path"])]

    def _fault_for(self, method: str, path: str, headers) -> Fault | None:
        with self._lock:
            for fault in self.faults:
                if not fault.matches(method, path):
                    continue
                if fault.action == "require_basic" and headers.get("Authorization"):
                    continue
                if fault.times is not None:
                    fault.times -= 1
                return fault
        return None

    def _forward(self, method: str, path: str, headers, body: bytes | None):
        conn = http.client.HTTPConnection(self.upstream, timeout=30)
        forwarded = {k: v for k, v in headers.items() if k.lower() not in _HOP_BY_HOP}
        forwarded["Host"] = self.upstream
        conn.request(method, path, body=body, headers=forwarded)
        response = conn.getresponse()
        data = response.read()
        conn.close()
        kept = [(k, v) for k, v in response.getheaders() if k.lower() not in _HOP_BY_HOP]
        return response.status, kept, data

    def _handler(self):
        proxy = self

        class Handler(QuietHandler):
            def _handle(self):
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else None
                fault = proxy._fault_for(self.command, self.path, self.headers)
                proxy.log.append({
                    "method": self.command, "path": self.path, "headers": dict(self.headers),
                    "fault": fault.action if fault else None,
                })  # fmt: skip
                _apply(self, proxy, fault, body)

            do_GET = do_HEAD = do_PUT = do_POST = do_PATCH = do_DELETE = _handle

        return Handler


_HOP_BY_HOP = {"connection", "keep-alive", "transfer-encoding", "host", "content-length"}


def _apply(handler: QuietHandler, proxy: FlakyProxy, fault: Fault | None, body) -> None:
    action = fault.action if fault else None
    if action == "status":
        return handler._send_json(fault.status, {"errors": [{"code": "INJECTED"}]})
    if action == "require_basic":
        extra = [("WWW-Authenticate", 'Basic realm="flaky-proxy"')]
        return handler._send_json(401, {"errors": [{"code": "UNAUTHORIZED"}]}, extra)
    if action == "reset":
        return handler._reset()
    if action == "redirect":
        return handler._send_raw(307, [("Location", fault.value + handler.path)], b"")
    status, headers, data = proxy._forward(handler.command, handler.path, handler.headers, body)
    if action == "content_type":
        headers = [(k, v) for k, v in headers if k.lower() != "content-type"]
        headers.append(("Content-Type", fault.value))
    if action == "corrupt" and data:
        middle = len(data) // 2
        data = data[:middle] + bytes([data[middle] ^ 0xFF]) + data[middle + 1 :]
    if action == "truncate" and data:
        # A clean close (FIN) after half the body: the client sees a short read.
        return handler._send_raw(status, headers, data[: len(data) // 2], length=len(data))
    handler._send_raw(status, headers, data)


class QuietHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *args) -> None:  # keep test output clean
        pass

    def _send_json(self, status: int, body: dict, extra=()) -> None:
        headers = [("Content-Type", "application/json"), *extra]
        self._send_raw(status, headers, json.dumps(body).encode())

    def _send_raw(self, status: int, headers, data: bytes, length: int | None = None) -> None:
        self.send_response(status)
        for key, value in headers:
            self.send_header(key, value)
        self.send_header("Content-Length", str(len(data) if length is None else length))
        self.send_header("Connection", "close")
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(data)
        self.wfile.flush()
        self.close_connection = True

    def _reset(self) -> None:
        """Close with a TCP RST, as a crashed server or a middlebox would."""
        self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        self.close_connection = True
        with contextlib.suppress(OSError):
            self.connection.close()

    def finish(self) -> None:
        with contextlib.suppress(OSError, ValueError):
            super().finish()


class QuietServer(ThreadingHTTPServer):
    daemon_threads = True

    def handle_error(self, request, client_address) -> None:
        pass  # resets and truncations are deliberate


def serve(handler) -> ThreadingHTTPServer:
    server = QuietServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, name="test-http", daemon=True).start()
    return server

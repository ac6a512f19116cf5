"""The streaming server: the URLs that Exec, Attach and PortForward answer lead here.

    RPC validates ─> cache.put(request) ─> http://127.0.0.1:<port>/<kind>/<token>
    client GET (Upgrade: websocket, Sec-WebSocket-Protocol) ─> token taken (once, 60 s)
    ─> 101 Switching Protocols ─> the kind's handler runs the session on the socket
    client GET/POST (Upgrade: SPDY/3.1, X-Stream-Protocol-Version) ─> spdy_server.py

Loopback by default (127.0.0.1:0: an ephemeral port), like the kubelet's own streaming server
for CRI runtimes. One thread per connection; it ends with the session. Both transports
kubelet, kubectl and crictl use: WebSocket (v4/v5 channels) and SPDY/3.1 (v1-v4).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlsplit

from observe_rt.stream import portforward, remotecommand, spdy_server
from observe_rt.stream.cache import DEFAULT_TTL, TokenCache
from observe_rt.stream.websocket import WebSocket, accept_key

log = logging.getLogger("observe_rt.stream")
KINDS = ("exec", "attach", "portforward")
# handler(request, websocket, query) runs one session; the server closes the socket after.
Handler = Callable[[object, WebSocket, dict], None]


def parse_address(address: str) -> tuple[str, int]:
    host, _, port = address.rpartition(":")
    return host.strip("[]") or "127.0.0.1", int(port or 0)


class StreamServer:
    def __init__(self, handlers: dict[str, Handler], address: str = "127.0.0.1:0",
                 ttl: float = DEFAULT_TTL) -> None:  # fmt: skip
        self.handlers = handlers
        self.cache = TokenCache(ttl)
        # Bound in start(), so building the daemon's parts (tests) opens no socket.
        self.httpd = ThreadingHTTPServer(parse_address(address), _RequestHandler,
                                         bind_and_activate=False)  # fmt: skip
        self.httpd.daemon_threads = True
        self.httpd.stream_server = self  # type: ignore[attr-defined]
        self._thread: threading.Thread | None = None

    @property
    def base_url(self) -> str:
        host, port = self.httpd.server_address[:2]
        host = f"[{host}]" if ":" in host else host
        return f"http://{host}:{port}"

    def url(self, kind: str, request: object) -> str:
        """A one-time URL for `request` (already validated by the RPC)."""
        token = self.cache.put((kind, request))
        return f"{self.base_url}/{kind}/{token}"

    def start(self) -> StreamServer:
        try:
            self.httpd.server_bind()
            self.httpd.server_activate()
        except OSError:
            self.httpd.server_close()
            raise
        self._thread = threading.Thread(target=self.httpd.serve_forever, daemon=True,
                                        name="stream-server")  # fmt: skip
        self._thread.start()
        log.info("streaming server on %s", self.base_url)
        return self

    def stop(self) -> None:
        if self._thread:
            self.httpd.shutdown()
            self._thread.join()
        self.httpd.server_close()


class _RequestHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args) -> None:  # noqa: A002 - the base class's name
        log.debug("%s %s", self.address_string(), format % args)

    def do_GET(self) -> None:  # noqa: N802 - http.server's naming
        server: StreamServer = self.server.stream_server  # type: ignore[attr-defined]
        url = urlsplit(self.path)
        kind, _, token = url.path.strip("/").partition("/")
        entry = server.cache.pop(token) if kind in KINDS else None
        if entry is None or entry[0] != kind:
            return self._refuse(404, "unknown or expired streaming token")
        if spdy_server.is_spdy_upgrade(self.headers):
            spdy_server.serve(self, kind, entry[1], server.handlers[kind], parse_qs(url.query),
                              self._refuse)  # fmt: skip
            self.close_connection = True
            return
        if self.headers.get("Upgrade", "").lower() != "websocket" or not self.headers.get(
            "Sec-WebSocket-Key"
        ):
            return self._refuse(400, "a WebSocket or SPDY/3.1 upgrade is required")
        offered = [p.strip() for p in self.headers.get("Sec-WebSocket-Protocol", "").split(",")
                   if p.strip()]  # fmt: skip
        negotiate = portforward.negotiate if kind == "portforward" else remotecommand.negotiate
        protocol = negotiate(offered)
        if protocol is None:
            return self._refuse(400, f"no supported subprotocol in {offered}")
        self._switch(protocol)
        ws = WebSocket(self.connection)
        query = parse_qs(url.query)
        try:
            server.handlers[kind](entry[1], ws, query)
        except Exception:  # noqa: BLE001 - one broken session must not take the server down
            log.exception("%s session failed", kind)
        finally:
            ws.close()
            self.close_connection = True

    do_POST = do_GET  # noqa: N815 - SPDY clients (client-go) POST

    def _switch(self, protocol: str) -> None:
        self.send_response(101)
        self.send_header("Upgrade", "websocket")
        self.send_header("Connection", "Upgrade")
        self.send_header("Sec-WebSocket-Accept", accept_key(self.headers["Sec-WebSocket-Key"]))
        if protocol:
            self.send_header("Sec-WebSocket-Protocol", protocol)
        self.end_headers()
        self.wfile.flush()

    def _refuse(self, code: int, message: str, headers: list[tuple[str, str]] = ()) -> None:
        body = message.encode() + b"\n"
        self.send_response(code)
        for name, value in headers:
            self.send_header(name, value)
        self.send_header("Content-Type", "text/plain; charset=utf-8")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)
        self.close_connection = True

"""The SPDY/3.1 upgrade of the streaming server: server.py hands such requests here.

    POST|GET /exec/<token>  Connection: Upgrade, Upgrade: SPDY/3.1,
                            X-Stream-Protocol-Version: v4.channel.k8s.io (one header per choice)
    -> 403 + X-Accepted-Stream-Protocol-Versions when we share none (k8s httpstream.Handshake)
    -> 101, Upgrade: SPDY/3.1, X-Stream-Protocol-Version: <ours>, then SPDY frames

exec/attach: wait for the client's streams (spdy_channels), then the kind's handler runs on
them as on a WebSocket. portforward: the handler gets the SpdySession itself.
"""

from __future__ import annotations

import contextlib
import logging
import socket
import time
from collections.abc import Callable

from observe_rt.stream import spdy_channels
from observe_rt.stream.spdy_session import SpdySession
from observe_rt.stream.websocket import ConnectionClosed

log = logging.getLogger("observe_rt.stream")
UPGRADE = "SPDY/3.1"
PROTOCOL_HEADER = "X-Stream-Protocol-Version"
ACCEPTED_HEADER = "X-Accepted-Stream-Protocol-Versions"
PORTFORWARD_PROTOCOLS = ("portforward.k8s.io",)
LINGER = 2.0  # seconds to wait for the client to close after our GOAWAY
# refuse(status, message, extra headers) answers the HTTP request (server.py's)
Refuse = Callable[[int, str, list[tuple[str, str]]], None]


def is_spdy_upgrade(headers) -> bool:
    return UPGRADE.lower() in headers.get("Upgrade", "").lower()


def offered_protocols(headers) -> list[str]:
    """The client's choices in its order: one header each (client-go), or comma-separated."""
    values = headers.get_all(PROTOCOL_HEADER) or []
    return [item.strip() for value in values for item in value.split(",") if item.strip()]


def negotiate(offered: list[str], supported: tuple[str, ...]) -> str | None:
    """The client's first choice that we support; "" for a client that names none."""
    if not offered:
        return ""
    return next((protocol for protocol in offered if protocol in supported), None)


def serve(http, kind: str, request, handler: Callable, query: dict, refuse: Refuse) -> None:
    """Upgrade `http` (a BaseHTTPRequestHandler) to SPDY and run the session of `kind`."""
    supported = PORTFORWARD_PROTOCOLS if kind == "portforward" else spdy_channels.PROTOCOLS
    if "upgrade" not in http.headers.get("Connection", "").lower():
        return refuse(400, "unable to upgrade: the request has no 'Connection: Upgrade'", [])
    offered = offered_protocols(http.headers)
    protocol = negotiate(offered, supported)
    if protocol is None:
        message = (f"unable to upgrade: unable to negotiate protocol: client supports {offered}, "
                   f"server accepts {list(supported)}")  # fmt: skip
        return refuse(403, message, [(ACCEPTED_HEADER, name) for name in supported])
    _switch(http, protocol)
    session = SpdySession(http.connection, http.rfile)
    try:
        if kind == "portforward":
            handler(request, session, query)
        else:
            _remotecommand(session, protocol or spdy_channels.V1, request, handler, query)
    except Exception:  # noqa: BLE001 - one broken session must not take the server down
        log.exception("SPDY %s session failed", kind)
    finally:
        session.close()
        _linger(http.connection)


def _linger(sock, timeout: float = LINGER) -> None:
    """Half-close, then read until the client closes too: closing a socket with unread bytes
    (a late WINDOW_UPDATE, say) sends RST, and RST can destroy data the client has not read."""
    deadline = time.monotonic() + timeout
    with contextlib.suppress(OSError):
        sock.shutdown(socket.SHUT_WR)
        while (left := deadline - time.monotonic()) > 0:
            sock.settimeout(left)
            if not sock.recv(65536):
                return


def _switch(http, protocol: str) -> None:
    http.send_response(101)
    http.send_header("Connection", "Upgrade")
    http.send_header("Upgrade", UPGRADE)
    if protocol:
        http.send_header(PROTOCOL_HEADER, protocol)
    http.end_headers()
    http.wfile.flush()


def _remotecommand(session: SpdySession, protocol: str, request, handler, query: dict) -> None:
    wanted = spdy_channels.wanted_streams(request, protocol)
    try:
        streams, early = spdy_channels.await_streams(session, wanted)
    except ConnectionClosed as err:
        log.info("SPDY: the client did not open its streams %s: %s", sorted(wanted), err)
        return
    channels = spdy_channels.RemoteCommandStreams(session, protocol, streams, early)
    try:
        handler(request, channels, query)
    finally:
        channels.close()

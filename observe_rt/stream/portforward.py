"""Port-forward over WebSocket (v4.channel.k8s.io / portforward.k8s.io), into a pod's netns.

For the i-th requested port, channel 2i carries data both ways and channel 2i+1 carries error
text to the client; the server opens each channel by writing the port as two little-endian
bytes on it. The connection to the pod is made by a throwaway thread that joined the pod's
network namespace (network/netns.py run_in_netns); the socket keeps that namespace, so the
daemon relays it from its own threads afterwards.

    client ──ws channel 2i──> relay ──socket (pod netns, 127.0.0.1:port)──> workload
           <──────────────── pump thread per port <───────────────────────
    all pod sockets closed ─> ws closed;  client gone ─> every pod socket shut down
"""

from __future__ import annotations

import contextlib
import socket
import struct
import threading
from collections.abc import Callable

from observe_rt.stream.websocket import ConnectionClosed, WebSocket

PROTOCOLS = ("v4.channel.k8s.io", "portforward.k8s.io")
CONNECT_TIMEOUT = 5.0


def negotiate(offered: list[str]) -> str | None:
    for protocol in PROTOCOLS:
        if protocol in offered:
            return protocol
    return "" if not offered else None  # kubelet accepts a client that names no protocol


def parse_ports(values: list[str]) -> list[int]:
    """`?port=80&port=8080,9090` -> [80, 8080, 9090]; ValueError when one is not a port."""
    ports = []
    for value in values:
        for item in value.split(","):
            port = int(item)
            if not 0 < port < 65536:
                raise ValueError(f"port {item!r} out of range")
            ports.append(port)
    return ports


def connector(netns_path: str) -> Callable[[int], socket.socket]:
    """connect(port) to localhost inside the namespace on `netns_path` ('' = the host's)."""

    def connect(port: int) -> socket.socket:
        try:
            return socket.create_connection(("127.0.0.1", port), timeout=CONNECT_TIMEOUT)
        except ConnectionRefusedError:
            return socket.create_connection(("::1", port), timeout=CONNECT_TIMEOUT)

    if not netns_path:
        return connect
    from observe_rt.network.netns import run_in_netns

    return lambda port: run_in_netns(netns_path, lambda: connect(port))


def run_portforward(ws: WebSocket, ports: list[int],
                    connect: Callable[[int], socket.socket]) -> None:  # fmt: skip
    sockets: dict[int, socket.socket] = {}
    pumps = []
    for index, port in enumerate(ports):
        prefix = struct.pack("<H", port)
        ws.send(bytes([2 * index]) + prefix)
        ws.send(bytes([2 * index + 1]) + prefix)
        try:
            sock = connect(port)
        except OSError as err:
            ws.send(bytes([2 * index + 1]) + f"error forwarding port {port}: {err}".encode())
            continue
        sock.settimeout(None)
        sockets[index] = sock
        pumps.append(threading.Thread(target=_pump, args=(ws, sock, 2 * index), daemon=True,
                                      name=f"stream-port-{port}"))  # fmt: skip
    for pump in pumps:
        pump.start()
    watcher = threading.Thread(target=_close_when_done, args=(ws, pumps), daemon=True,
                               name="stream-port-watch")  # fmt: skip
    watcher.start()
    try:
        _relay_from_client(ws, sockets)
    finally:
        for sock in sockets.values():
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
        for pump in pumps:
            pump.join()
        watcher.join()
        for sock in sockets.values():
            sock.close()


def _relay_from_client(ws: WebSocket, sockets: dict[int, socket.socket]) -> None:
    while True:
        try:
            _, message = ws.receive()
        except ConnectionClosed:
            return
        if not message or message[0] % 2:
            continue
        sock = sockets.get(message[0] // 2)
        if sock is not None and len(message) > 1:
            with contextlib.suppress(OSError):
                sock.sendall(message[1:])


def _pump(ws: WebSocket, sock: socket.socket, channel: int) -> None:
    with contextlib.suppress(OSError, ConnectionClosed):
        while data := sock.recv(32768):
            ws.send(bytes([channel]) + data)


def _close_when_done(ws: WebSocket, pumps: list[threading.Thread]) -> None:
    """Every pod-side connection ended: close the WebSocket (wakes the client relay)."""
    for pump in pumps:
        pump.join()
    ws.close()
    with contextlib.suppress(OSError):
        ws.sock.shutdown(socket.SHUT_RDWR)

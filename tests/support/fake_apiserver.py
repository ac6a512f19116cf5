"""Just enough of a Kubernetes API server on 127.0.0.1 for `kubectl exec` / `port-forward`.

kubectl reads the pod, then POSTs .../pods/<name>/exec (or /portforward) with an upgrade; the
API server would proxy that to the kubelet, which redirects to the runtime's streaming URL.
Here that upgrade is relayed byte for byte to the URL the test got from the CRI RPC, so kubectl's
own SPDY implementation (client-go + moby/spdystream) talks to our streaming server.
"""

from __future__ import annotations

import contextlib
import json
import socket
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import urlsplit

POD_NAME, CONTAINER = "app-pod", "app"


def _pod() -> dict:
    return {
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": POD_NAME, "namespace": "default", "uid": "1"},
        "spec": {"containers": [{"name": CONTAINER, "image": "busybox",
                                 "ports": [{"containerPort": 8080}]}]},
        "status": {"phase": "Running"},
    }  # fmt: skip


DISCOVERY = {
    "/api": {"kind": "APIVersions", "versions": ["v1"]},
    "/apis": {"kind": "APIGroupList", "apiVersion": "v1", "groups": []},
    "/api/v1": {"kind": "APIResourceList", "groupVersion": "v1", "resources": [
        {"name": "pods", "namespaced": True, "kind": "Pod", "verbs": ["get", "list"]},
        {"name": "pods/exec", "namespaced": True, "kind": "PodExecOptions", "verbs": ["create"]},
        {"name": "pods/portforward", "namespaced": True, "kind": "PodPortForwardOptions",
         "verbs": ["create"]},
    ]},
}  # fmt: skip


class FakeApiServer:
    def __init__(self) -> None:
        self.upstream: str | None = None  # the streaming URL the next upgrade is relayed to
        self.requests: list[str] = []
        self.upgrades: list[str] = []  # the Upgrade header of each relayed request
        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
        self.httpd.daemon_threads = True
        self.httpd.fake = self  # type: ignore[attr-defined]
        self._thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.httpd.server_address[1]}"

    def kubeconfig(self, path) -> str:
        config = {
            "apiVersion": "v1", "kind": "Config", "current-context": "fake",
            "clusters": [{"name": "fake", "cluster": {"server": self.url}}],
            "users": [{"name": "fake", "user": {}}],
            "contexts": [{"name": "fake", "context": {"cluster": "fake", "user": "fake",
                                                      "namespace": "default"}}],
        }  # fmt: skip
        path.write_text(json.dumps(config))
        return str(path)

    def __enter__(self) -> FakeApiServer:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args) -> None:  # noqa: A002 - the base class's name
        pass

    def do_GET(self) -> None:  # noqa: N802 - http.server's naming
        fake: FakeApiServer = self.server.fake  # type: ignore[attr-defined]
        path = urlsplit(self.path).path
        fake.requests.append(f"GET {path}")
        body = DISCOVERY.get(path)
        if path == f"/api/v1/namespaces/default/pods/{POD_NAME}":
            body = _pod()
        self._json(200 if body else 404, body or {"kind": "Status", "code": 404})

    def do_POST(self) -> None:  # noqa: N802 - http.server's naming
        fake: FakeApiServer = self.server.fake  # type: ignore[attr-defined]
        fake.requests.append(f"POST {urlsplit(self.path).path}")
        if fake.upstream is None or "upgrade" not in self.headers.get("Connection", "").lower():
            return self._json(400, {"kind": "Status", "code": 400})
        fake.upgrades.append(self.headers.get("Upgrade", ""))
        target, fake.upstream = urlsplit(fake.upstream), None
        upstream = socket.create_connection((target.hostname, target.port), timeout=30)
        head = [f"POST {target.path} HTTP/1.1"] + [f"{k}: {v}" for k, v in self.headers.items()]
        upstream.sendall(("\r\n".join(head) + "\r\n\r\n").encode())
        upstream.settimeout(None)
        self.close_connection = True
        _relay(self.connection, self.rfile, upstream)

    def _json(self, status: int, body: dict) -> None:
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)


def _relay(client: socket.socket, client_reader, upstream: socket.socket) -> None:
    """Bytes both ways until both sides are done; each direction's EOF is passed on."""

    def pump(read, sink: socket.socket) -> None:
        with contextlib.suppress(OSError, ValueError):
            while data := read(65536):
                sink.sendall(data)
        with contextlib.suppress(OSError):
            sink.shutdown(socket.SHUT_WR)

    back = threading.Thread(target=pump, args=(upstream.recv, client), daemon=True)
    back.start()
    pump(client_reader.read1, upstream)
    back.join()
    upstream.close()

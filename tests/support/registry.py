"""Real registries for tests: Debian's docker-registry on 127.0.0.1, a token server, a flaky proxy.

    with running_registry(tmp) as registry: ...               # plain, anonymous
    with running_registry(tmp, auth=htpasswd_auth(tmp, {"alice": "secret"})) as registry: ...
    with TokenServer({"alice": "secret"}) as tokens, \
         running_registry(tmp, auth=tokens.registry_auth()) as registry: ...
    with FlakyProxy(registry.url) as proxy: proxy.add(Fault(r"/blobs/", "status", times=3))

Everything listens on 127.0.0.1 with a free port and is stopped on exit, also when a test fails.
closed_port_url() gives an address where nothing listens (a dead mirror).
"""

from __future__ import annotations

import base64
import contextlib
import ctypes
import ctypes.util
import datetime
import hashlib
import http.client
import ipaddress
import json
import re
import socket
import ssl
import struct
import subprocess
import threading
import time
import uuid
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature
from cryptography.x509.oid import NameOID

REGISTRY_BIN = "/usr/bin/docker-registry"
SERVICE = "observe-rt-test-registry"
ISSUER = "observe-rt-test-token-issuer"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def closed_port_url() -> str:
    """An http:// URL on 127.0.0.1 where nothing listens: connections are refused."""
    return f"http://127.0.0.1:{free_port()}"


# docker-registry -----------------------------------------------------------------------------


@dataclass
class RunningRegistry:
    url: str
    root: Path
    process: subprocess.Popen = field(repr=False)
    log: Path = field(repr=False)

    @property
    def host(self) -> str:
        return urlsplit(self.url).netloc

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


@contextlib.contextmanager
def running_registry(
    workdir: Path, storage: Path | None = None, auth: dict | None = None, tls=None
):
    registry = start_registry(workdir, storage, auth, tls)
    try:
        yield registry
    finally:
        registry.stop()


def start_registry(workdir: Path, storage: Path | None = None, auth: dict | None = None, tls=None):
    """Start docker-registry with its own config.yml; `storage` may be shared with another.

    tls: (certificate, key) paths to serve HTTPS (see tls_files()).
    """
    workdir = Path(workdir) / f"registry-{uuid.uuid4().hex[:6]}"
    workdir.mkdir(parents=True)
    storage = storage or workdir / "storage"
    storage.mkdir(parents=True, exist_ok=True)
    port = free_port()
    config = {
        "version": 0.1,
        "log": {"level": "info", "formatter": "text", "accesslog": {"disabled": False}},
        "storage": {"filesystem": {"rootdirectory": str(storage)}, "delete": {"enabled": True}},
        "http": {"addr": f"127.0.0.1:{port}", "secret": "observe-rt-tests"},
        "health": {"storagedriver": {"enabled": False}},
    } | ({"auth": auth} if auth else {})
    if tls:
        config["http"]["tls"] = {"certificate": str(tls[0]), "key": str(tls[1])}
    config_file = workdir / "config.yml"
    config_file.write_text(json.dumps(config, indent=1))  # JSON is YAML
    log = workdir / "registry.log"
    with open(log, "wb") as out:
        process = subprocess.Popen(
            [REGISTRY_BIN, "serve", str(config_file)],
            stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
        )  # fmt: skip
    scheme = "https" if tls else "http"
    registry = RunningRegistry(f"{scheme}://127.0.0.1:{port}", storage, process, log)
    try:
        _wait_until_serving(registry)
    except BaseException:
        registry.stop()
        raise
    return registry


def _wait_until_serving(registry: RunningRegistry, timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if registry.process.poll() is not None:
            raise RuntimeError(f"docker-registry exited: {registry.log.read_text()[-2000:]}")
        try:
            conn = http.client.HTTPConnection(registry.host, timeout=1)
            if registry.url.startswith("https"):
                unverified = ssl._create_unverified_context()  # only asks "is it up?"
                conn = http.client.HTTPSConnection(registry.host, timeout=1, context=unverified)
            conn.request("GET", "/v2/")
            conn.getresponse().read()
            conn.close()
            return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"docker-registry did not serve in {timeout}s: {registry.log.read_text()}")


def htpasswd_auth(workdir: Path, users: dict[str, str]) -> dict:
    """The registry's `auth: htpasswd:` section, with a bcrypt htpasswd file for `users`."""
    path = Path(workdir) / f"htpasswd-{uuid.uuid4().hex[:6]}"
    path.write_text("".join(f"{user}:{bcrypt_hash(pw)}\n" for user, pw in users.items()))
    return {"htpasswd": {"realm": "observe-rt-test", "path": str(path)}}


def bcrypt_hash(password: str, cost: int = 4) -> str:
    """bcrypt through glibc's libcrypt (libxcrypt): no bcrypt module or htpasswd(1) needed."""
    libcrypt = ctypes.CDLL(ctypes.util.find_library("crypt") or "libcrypt.so.1")
    libcrypt.crypt_gensalt.restype = ctypes.c_char_p
    libcrypt.crypt_gensalt.argtypes = [
        ctypes.c_char_p,
        ctypes.c_ulong,
        ctypes.c_char_p,
        ctypes.c_int,
    ]
    libcrypt.crypt.restype = ctypes.c_char_p
    libcrypt.crypt.argtypes = [ctypes.c_char_p, ctypes.c_char_p]
    salt = libcrypt.crypt_gensalt(b"$2b$", cost, None, 0)
    hashed = libcrypt.crypt(password.encode(), salt) if salt else None
    if not hashed or not hashed.startswith(b"$2"):
        raise RuntimeError("libcrypt cannot make bcrypt hashes")
    return hashed.decode()


def tls_files(workdir: Path) -> tuple[Path, Path, Path]:
    """A test CA and a server certificate for 127.0.0.1 and localhost: (ca, cert, key) paths."""
    workdir = Path(workdir)
    ca_key, key = ec.generate_private_key(ec.SECP256R1()), ec.generate_private_key(ec.SECP256R1())
    ca = _self_signed(ca_key, "observe-rt test CA")
    now = datetime.datetime.now(datetime.UTC)
    names = [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")]))
        .issuer_name(ca.subject).public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(days=1))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName(names), critical=False)
        .sign(ca_key, hashes.SHA256())
    )  # fmt: skip
    paths = workdir / "ca.pem", workdir / "server.pem", workdir / "server.key"
    paths[0].write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    paths[1].write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    paths[2].write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return paths


# Token server (docker token auth, JWT signed ES256 with an x5c certificate) -------------------


class TokenServer:
    """Issues registry tokens: users get what they ask for, anonymous callers pull `public`."""

    def __init__(self, users: dict[str, str], public: set[str] = frozenset(), field_name="token"):
        self.users, self.public, self.field_name = users, set(public), field_name
        self.requests: list[dict] = []  # what each token request carried
        self._key = ec.generate_private_key(ec.SECP256R1())
        self._cert = _self_signed(self._key)
        self._server = _serve(self._handler())
        self.realm = f"http://127.0.0.1:{self._server.server_port}/token"

    def registry_auth(self, workdir: Path) -> dict:
        bundle = Path(workdir) / f"token-{uuid.uuid4().hex[:6]}.crt"
        bundle.write_bytes(self._cert.public_bytes(serialization.Encoding.PEM))
        token = {"realm": self.realm, "service": SERVICE, "issuer": ISSUER}
        return {"token": token | {"rootcertbundle": str(bundle)}}

    def __enter__(self) -> TokenServer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()

    def answer(self, query: dict, authorization: str | None) -> tuple[int, dict]:
        self.requests.append({"query": query, "authorization": authorization})
        user = None
        if authorization:
            user = self._check_basic(authorization)
            if user is None:
                return 401, {"errors": [{"code": "UNAUTHORIZED", "message": "bad credentials"}]}
        access = [self._grant(scope, user) for scope in query.get("scope", [])]
        token = self.issue([entry for entry in access if entry["actions"]], user or "")
        return 200, {self.field_name: token, "expires_in": 300, "issued_at": _now_iso()}

    def _check_basic(self, authorization: str) -> str | None:
        scheme, _, encoded = authorization.partition(" ")
        if scheme.lower() != "basic":
            return None
        user, _, password = base64.b64decode(encoded).decode().partition(":")
        return user if self.users.get(user) == password and password else None

    def _grant(self, scope: str, user: str | None) -> dict:
        kind, name, actions = (scope.split(":") + ["", "", ""])[:3]
        wanted = [action for action in actions.split(",") if action]
        granted = wanted if user else [a for a in wanted if a == "pull" and name in self.public]
        return {"type": kind, "name": name, "actions": granted}

    def issue(self, access: list[dict], subject: str) -> str:
        now = int(time.time())
        der = self._cert.public_bytes(serialization.Encoding.DER)
        header = {"typ": "JWT", "alg": "ES256", "x5c": [base64.b64encode(der).decode()]}
        claims = {
            "iss": ISSUER, "sub": subject, "aud": SERVICE, "exp": now + 300, "nbf": now - 10,
            "iat": now, "jti": uuid.uuid4().hex, "access": access,
        }  # fmt: skip
        signing_input = f"{_b64url(json.dumps(header))}.{_b64url(json.dumps(claims))}"
        r, s = decode_dss_signature(
            self._key.sign(signing_input.encode(), ec.ECDSA(hashes.SHA256()))
        )
        return f"{signing_input}.{_b64url(r.to_bytes(32, 'big') + s.to_bytes(32, 'big'))}"

    def _handler(self):
        server = self

        class Handler(_QuietHandler):
            def do_GET(self):
                query = parse_qs(urlsplit(self.path).query)
                status, body = server.answer(query, self.headers.get("Authorization"))
                self._send_json(status, body)

        return Handler


def _self_signed(key, common_name: str = "observe-rt test token signer") -> x509.Certificate:
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])
    now = datetime.datetime.now(datetime.UTC)
    return (
        x509.CertificateBuilder()
        .subject_name(name).issuer_name(name).public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(days=1))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )  # fmt: skip


def _b64url(data: str | bytes) -> str:
    raw = data.encode() if isinstance(data, str) else data
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def _now_iso() -> str:
    return datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


# Flaky proxy ---------------------------------------------------------------------------------


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
        self._server = _serve(self._handler())
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

        class Handler(_QuietHandler):
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


def _apply(handler: _QuietHandler, proxy: FlakyProxy, fault: Fault | None, body) -> None:
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


class _QuietHandler(BaseHTTPRequestHandler):
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


class _QuietServer(ThreadingHTTPServer):
    daemon_threads = True

    def handle_error(self, request, client_address) -> None:
        pass  # resets and truncations are deliberate


def _serve(handler) -> ThreadingHTTPServer:
    server = _QuietServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, name="test-http", daemon=True).start()
    return server


def sha256(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()

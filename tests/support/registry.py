"""Real registries for tests: Debian's docker-registry on 127.0.0.1 and a token server.

    with running_registry(tmp) as registry: ...               # plain, anonymous
    with running_registry(tmp, auth=htpasswd_auth(tmp, {"alice": "secret"})) as registry: ...
    with TokenServer({"alice": "secret"}) as tokens, \
         running_registry(tmp, auth=tokens.registry_auth()) as registry: ...

The flaky proxy that injects faults in front of a registry is in tests/support/proxy.py.
Everything listens on 127.0.0.1 with a free port and is stopped on exit, also when a test fails.
closed_port_url() gives an address where nothing listens (a dead mirror).
"""

from __future__ import annotations

import base64
import ctypes
import ctypes.util
import datetime
import hashlib
import ipaddress
import json
import time
import uuid
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature
from cryptography.x509.oid import NameOID

# docker-registry is started by the package's launcher, so `bench pull` and the tests share it.
from observe_rt.bench.registry import (
    REGISTRY_BIN,
    RunningRegistry,
    free_port,
    running_registry,
    start_registry,
)
from tests.support.proxy import QuietHandler, serve

__all__ = ["REGISTRY_BIN", "RunningRegistry", "free_port", "running_registry", "start_registry"]

SERVICE = "observe-rt-test-registry"
ISSUER = "observe-rt-test-token-issuer"


def closed_port_url() -> str:
    """An http:// URL on 127.0.0.1 where nothing listens: connections are refused."""
    return f"http://127.0.0.1:{free_port()}"


# docker-registry options ---------------------------------------------------------------------


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
        self._server = serve(self._handler())
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

        class Handler(QuietHandler):
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


def sha256(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()

"""Registry credentials and the Basic / Bearer (docker token) authentication flows.

Where credentials come from:
- a CRI AuthConfig (username+password, `auth` = base64 "user:pass", identity_token, or
  registry_token). As in containerd, with `server_address` set they go only to that registry;
  without it they go to the hosts configured for the image's registry (its mirrors included:
  the node admin chose them).
- a docker config.json: `auths` entries, each for the one host it names ("https://index.docker.io/v1/"
  counts for docker.io). Credential helpers (credsStore, credHelpers) are not supported: their
  hosts get no credentials.

Where credentials go (the CVE-2020-15157 class): a registry answers 401 with a challenge. Basic:
the credentials for that very host go back to it. Bearer: they go to the token realm that host
named, as containerd and docker do (Docker Hub's realm auth.docker.io is another host), but never
over plain HTTP unless the realm is loopback or the registry host itself. Layer `urls` (foreign
layers) are never fetched, and redirects drop the Authorization header when they change host
(registry.py).
"""

from __future__ import annotations

import base64
import json
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlencode, urlsplit

from observe_rt.errors import ObserveRtError
from observe_rt.oci.hosts import RegistryHost, is_loopback

DOCKER_HUB_ALIASES = frozenset({"docker.io", "index.docker.io", "registry-1.docker.io"})
_TOKEN_MARGIN = 10.0  # renew a token this many seconds before it expires
_MIN_TOKEN_LIFETIME = 60  # the token spec's default when expires_in is missing


class AuthError(ObserveRtError):
    grpc_code = "UNAUTHENTICATED"

    def __init__(self, message: str, grpc_code: str = "UNAUTHENTICATED") -> None:
        super().__init__(message)
        self.grpc_code = grpc_code


@dataclass(frozen=True)
class Credentials:
    username: str = ""
    password: str = field(default="", repr=False)
    identity_token: str = field(default="", repr=False)  # an OAuth2 refresh token
    registry_token: str = field(default="", repr=False)  # a bearer token, sent as it is

    def basic(self) -> str | None:
        if not (self.username and self.password):
            return None
        pair = f"{self.username}:{self.password}".encode()
        return "Basic " + base64.b64encode(pair).decode()

    def describe(self) -> str:
        if self.username:
            return f"user {self.username!r}"
        return "an identity token" if self.identity_token else "a registry token"


# (image's registry domain, host:port being contacted) -> credentials or None
CredentialsProvider = Callable[[str, str], "Credentials | None"]


def from_auth_config(auth: Mapping | None) -> CredentialsProvider:
    """A provider for a CRI AuthConfig (a dict with its field names)."""
    credentials = _credentials_from_entry(auth) if auth else None
    server = _host_of(_field(auth, "server_address") if auth else "")

    def provider(domain: str, host: str) -> Credentials | None:
        if credentials is None or (server and not _same_registry(server, host)):
            return None
        return credentials

    return provider


def from_docker_config(config: str | Path | Mapping) -> CredentialsProvider:
    """A provider for a docker config.json (a path or its parsed content)."""
    where = "docker config"
    if not isinstance(config, Mapping):
        where = f"docker config {config}"
        try:
            config = json.loads(Path(config).read_text())
        except (OSError, ValueError) as err:
            raise AuthError(f"{where}: unreadable: {err}", "FAILED_PRECONDITION") from None
    auths = (config.get("auths") if isinstance(config, Mapping) else None) or {}
    if not isinstance(auths, Mapping):
        raise AuthError(f"{where}: 'auths' must map registries to entries", "FAILED_PRECONDITION")
    entries = {}
    for key, entry in auths.items():
        if isinstance(entry, Mapping) and (creds := _credentials_from_entry(entry)):
            entries[_canonical_host(_host_of(key))] = creds

    def provider(domain: str, host: str) -> Credentials | None:
        return entries.get(_canonical_host(host))

    return provider


def chain(*providers: CredentialsProvider | None) -> CredentialsProvider:
    """The first provider that has credentials for the host wins."""

    def provider(domain: str, host: str) -> Credentials | None:
        for candidate in providers:
            if candidate and (found := candidate(domain, host)):
                return found
        return None

    return provider


def _credentials_from_entry(entry: Mapping) -> Credentials | None:
    username, password = _field(entry, "username"), _field(entry, "password")
    if not username and entry.get("auth"):
        try:
            decoded = base64.b64decode(str(entry["auth"]), validate=True).decode()
        except (ValueError, UnicodeDecodeError):
            decoded = ""
        username, sep, password = decoded.partition(":")
        if not sep:
            raise AuthError(
                "credentials: 'auth' is not base64 of user:password", "INVALID_ARGUMENT"
            )
        password = password.strip("\x00")
    identity = _field(entry, "identity_token")
    registry_token = _field(entry, "registry_token")
    if not (username or identity or registry_token):
        return None
    return Credentials(username, password, identity, registry_token)


def _field(entry: Mapping, name: str) -> str:
    """A field as the CRI proto (identity_token), its JSON (identityToken) or docker spell it."""
    camel = name.split("_")[0] + "".join(part.title() for part in name.split("_")[1:])
    for key in (name, camel, name.replace("_", "")):
        if entry.get(key):
            return str(entry[key])
    return ""


def _host_of(address: str) -> str:
    """ "https://index.docker.io/v1/" -> "index.docker.io"; "myreg:5000" stays."""
    if "://" not in address:
        address = "//" + address
    return urlsplit(address).netloc or ""


def _canonical_host(host: str) -> str:
    return "docker.io" if host in DOCKER_HUB_ALIASES else host


def _same_registry(server: str, host: str) -> bool:
    return _canonical_host(server) == _canonical_host(host)


@dataclass(frozen=True)
class Challenge:
    scheme: str  # lowercase: "bearer", "basic", ...
    params: dict[str, str]


def parse_www_authenticate(values: str | list[str]) -> list[Challenge]:
    """Challenges from WWW-Authenticate header values, Bearer before Basic before others."""
    challenges = []
    for value in [values] if isinstance(values, str) else values:
        challenges.extend(_parse_challenges(value))
    order = {"bearer": 0, "basic": 1}
    return sorted(challenges, key=lambda challenge: order.get(challenge.scheme, 2))


_TOKEN_CHARS = frozenset(
    "!#$%&'*+-.^_`|~0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ"
)


def _parse_challenges(text: str) -> list[Challenge]:
    """RFC 7235 challenges: scheme, then comma-separated key=value (value quoted or a token)."""
    challenges, pos = [], 0
    while pos < len(text):
        scheme, pos = _read_token(text, _skip(text, pos, " \t,"))
        if not scheme:
            pos += 1
            continue
        params: dict[str, str] = {}
        while True:
            start = _skip(text, pos, " \t")
            key, after_key = _read_token(text, start)
            after_key = _skip(text, after_key, " \t")
            if not key or after_key >= len(text) or text[after_key] != "=":
                pos = start
                break
            value, pos = _read_value(text, _skip(text, after_key + 1, " \t"))
            params[key.lower()] = value
            pos = _skip(text, pos, " \t")
            if pos >= len(text) or text[pos] != ",":
                break
            pos += 1
        challenges.append(Challenge(scheme.lower(), params))
    return challenges


def _skip(text: str, pos: int, chars: str) -> int:
    while pos < len(text) and text[pos] in chars:
        pos += 1
    return pos


def _read_token(text: str, pos: int) -> tuple[str, int]:
    end = pos
    while end < len(text) and text[end] in _TOKEN_CHARS:
        end += 1
    return text[pos:end], end


def _read_value(text: str, pos: int) -> tuple[str, int]:
    if pos >= len(text) or text[pos] != '"':
        return _read_token(text, pos)
    out, pos = [], pos + 1
    while pos < len(text) and text[pos] != '"':
        if text[pos] == "\\" and pos + 1 < len(text):
            pos += 1
        out.append(text[pos])
        pos += 1
    return "".join(out), pos + 1


# method, url, headers, body, host whose TLS settings apply (or None) -> status, headers, body
HttpCall = Callable[
    [str, str, dict, "bytes | None", "RegistryHost | None"], tuple[int, dict, bytes]
]


class Authorizer:
    """Remembers how each host authenticates and caches bearer tokens per scope."""

    def __init__(self, credentials: CredentialsProvider | None, http: HttpCall) -> None:
        self._credentials = credentials
        self._http = http
        self._lock = threading.Lock()
        self._schemes: dict[str, Challenge] = {}  # host:port -> the challenge it sent
        # (realm, service, scope, credentials) -> (token, monotonic expiry)
        self._tokens: dict[tuple, tuple[str, float]] = {}

    def credentials_for(self, domain: str, host: RegistryHost) -> Credentials | None:
        return self._credentials(domain, host.host) if self._credentials else None

    def authorization(self, domain: str, host: RegistryHost, scope: str) -> str | None:
        """The Authorization value to send up front, once the host has challenged us before."""
        with self._lock:
            challenge = self._schemes.get(host.host)
            if challenge is None:
                return None
            return self._answer(challenge, domain, host, scope, fresh=False)

    def on_unauthorized(
        self, domain: str, host: RegistryHost, scope: str, www_authenticate: list[str]
    ) -> str:
        """Answer a 401 with the Authorization value to retry with (a fresh token for Bearer)."""
        usable = [
            challenge
            for challenge in parse_www_authenticate(www_authenticate)
            if challenge.scheme in ("bearer", "basic")
        ]
        if not usable:
            raise AuthError(
                f"{host.host} asks for an unsupported authentication: {www_authenticate}"
            )
        for challenge in usable:
            with self._lock:
                # Remembered for later requests minus its scope, which was for this request only.
                params = {k: v for k, v in challenge.params.items() if k != "scope"}
                self._schemes[host.host] = Challenge(challenge.scheme, params)
                answer = self._answer(challenge, domain, host, scope, fresh=True)
            if answer:
                return answer
        raise AuthError(
            f"{host.host} requires authentication; no credentials are configured for it"
        )

    def _answer(self, challenge: Challenge, domain, host, scope, fresh: bool) -> str | None:
        creds = self.credentials_for(domain, host)
        if challenge.scheme == "basic":
            return creds.basic() if creds else None
        if creds and creds.registry_token:
            return "Bearer " + creds.registry_token
        realm, service = challenge.params.get("realm", ""), challenge.params.get("service", "")
        key = (realm, service, scope, creds)  # per credentials: one mirror, many registries
        cached = self._tokens.get(key)
        if cached and not fresh and cached[1] > time.monotonic():
            return "Bearer " + cached[0]
        token, lifetime = self._fetch_token(challenge, host, scope, creds)
        self._tokens[key] = (token, time.monotonic() + max(lifetime - _TOKEN_MARGIN, 1.0))
        return "Bearer " + token

    def _fetch_token(self, challenge, host, scope, creds) -> tuple[str, float]:
        realm = challenge.params.get("realm", "")
        parts = urlsplit(realm)
        if parts.scheme not in ("http", "https") or not parts.netloc:
            raise AuthError(f"{host.host} named an invalid token realm {realm!r}")
        if (
            creds
            and parts.scheme == "http"
            and not (is_loopback(parts.netloc) or parts.netloc == host.host)
        ):
            raise AuthError(
                f"{host.host} asks to send credentials to {realm} over plain HTTP; refused"
            )
        query = [("service", challenge.params["service"])] if "service" in challenge.params else []
        scopes = dict.fromkeys([scope, *challenge.params.get("scope", "").split()])
        query += [("scope", item) for item in scopes if item]
        tls_host = host if parts.netloc == host.host else None
        headers, body, method = {}, None, "GET"
        if creds and creds.identity_token and not creds.password:
            method, body = "POST", self._refresh_form(query, creds)
            headers["Content-Type"] = "application/x-www-form-urlencoded"
        elif creds and creds.basic():
            headers["Authorization"] = creds.basic()
        url = realm + ("&" if parts.query else "?") + urlencode(query) if method == "GET" else realm
        status, _, payload = self._http(method, url, headers, body, tls_host)
        return self._token_from_response(status, payload, realm, creds)

    @staticmethod
    def _refresh_form(query: list, creds: Credentials) -> bytes:
        form = [*query, ("grant_type", "refresh_token"), ("client_id", "observe-rt")]
        return urlencode([*form, ("refresh_token", creds.identity_token)]).encode()

    @staticmethod
    def _token_from_response(status, payload, realm, creds) -> tuple[str, float]:
        who = creds.describe() if creds else "anonymous access"
        if status in (401, 403):
            code = "UNAUTHENTICATED" if status == 401 else "PERMISSION_DENIED"
            raise AuthError(f"token server {realm} refused {who} (HTTP {status})", code)
        if status != 200:
            raise AuthError(f"token server {realm} answered HTTP {status}", "UNAVAILABLE")
        try:
            answer = json.loads(payload)
            token = answer.get("access_token") or answer.get("token")
            lifetime = float(answer.get("expires_in") or _MIN_TOKEN_LIFETIME)
        except (ValueError, AttributeError, TypeError):
            raise AuthError(
                f"token server {realm} sent an unreadable answer", "UNAVAILABLE"
            ) from None
        if not token or not isinstance(token, str):
            raise AuthError(f"token server {realm} sent no token", "UNAVAILABLE")
        return token, lifetime

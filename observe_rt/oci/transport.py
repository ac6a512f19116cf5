"""HTTP transport for the registry client: one request to one host until it is answered.

A 401 is answered once from the host's challenge (auth.py); 5xx, 408 and 429 answers, connection
errors, timeouts and cut-off bodies are retried with exponential backoff, but only on the last
host, as containerd does: a failing mirror should hand over to the next host quickly.

Every request opens a fresh connection (no reuse), with the TLS settings of the registry host it
is addressed to; a host reached by redirect, or a token realm elsewhere, gets the system CAs.
Redirects are followed by hand (at most 5) and drop Authorization and configured headers when the
target is another host; HTTPS never redirects down to plain HTTP except on loopback.
A loopback upstream that answers the TLS hello in plain HTTP is spoken to in plain HTTP from then
on (hosts.py decides which hosts may fall back).
"""

from __future__ import annotations

import errno
import http.client
import json
import random
import ssl
import threading
import time
from dataclasses import dataclass
from urllib.parse import SplitResult, urlencode, urljoin, urlsplit

from observe_rt import __version__
from observe_rt.errors import ObserveRtError
from observe_rt.oci.auth import AuthError, Authorizer, CredentialsProvider
from observe_rt.oci.hosts import RegistryHost, is_loopback
from observe_rt.oci.reference import Reference

MAX_REDIRECTS = 5
_RETRY_STATUSES = frozenset({408, 429, 500, 502, 503, 504})
_REDIRECT_STATUSES = frozenset({301, 302, 303, 307, 308})
_SAFE_REDIRECT_HEADERS = frozenset({"accept", "user-agent", "range"})


class HostFailure(Exception):
    """What one host answered; the walk goes on to the next host."""

    def __init__(self, message: str, grpc_code: str = "UNAVAILABLE", status: int = 0) -> None:
        super().__init__(message)
        self.grpc_code, self.status = grpc_code, status


class TransferInterrupted(Exception):
    """A body cut short: worth another attempt on the same host."""


class RegistryError(ObserveRtError):
    def __init__(self, message: str, grpc_code: str = "UNAVAILABLE") -> None:
        super().__init__(message)
        self.grpc_code = grpc_code


@dataclass(frozen=True)
class RetryPolicy:
    attempts: int = 5
    base_delay: float = 0.5
    max_delay: float = 8.0

    def delay(self, attempt: int, retry_after: str | None = None) -> float:
        if retry_after and retry_after.strip().isdigit():
            return min(float(retry_after), self.max_delay)
        return min(self.base_delay * 2**attempt, self.max_delay) * random.uniform(0.5, 1.0)


@dataclass
class HostCall:
    """One host of the walk, for one operation on one repository."""

    reference: Reference
    host: RegistryHost
    last_host: bool
    cancel: threading.Event | None = None
    where: str = ""  # the host's URL as reached, for messages

    @property
    def scope(self) -> str:
        return f"repository:{self.reference.path}:pull"

    def url(self, *parts: str) -> str:
        url = "/".join([self.host.url, self.reference.path, *parts])
        if self.host.needs_namespace(self.reference.domain):
            url += "?" + urlencode({"ns": self.reference.domain})
        return url


class Response:
    """An HTTP response that closes its connection with it (no connection reuse)."""

    def __init__(self, conn: http.client.HTTPConnection, response: http.client.HTTPResponse):
        self._conn, self._response = conn, response
        self.status, self.reason, self.headers = response.status, response.reason, response.headers
        self.url = ""  # the URL that answered, after redirects

    def getheader(self, name: str) -> str | None:
        return self._response.getheader(name)

    def read(self, amount: int | None = None) -> bytes:
        return self._response.read(amount)

    def close(self) -> None:
        self._response.close()
        self._conn.close()

    def __enter__(self) -> Response:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class Transport:
    """Opens connections to registry hosts, remembering which ones fell back to plain HTTP."""

    def __init__(self, timeout: float) -> None:
        self.timeout = timeout
        self._plain_http: set[str] = set()  # fallback hosts found to speak plain HTTP

    def url_of(self, host: RegistryHost) -> str:
        """The host's API root as actually reached (http:// once it fell back to plain HTTP)."""
        scheme = "http" if host.host in self._plain_http else host.scheme
        return f"{scheme}://{host.host}{host.path}"

    def token_call(self, method, url, headers, body, tls_host) -> tuple[int, dict, bytes]:
        """For the token server: one request, redirects followed safely, body read (<= 1 MiB)."""
        try:
            with self.open(tls_host, method, url, headers, body) as response:
                return response.status, dict(response.headers), response.read(1024 * 1024)
        except (OSError, http.client.HTTPException) as error:
            message = f"token server {url}: {_describe_exception(error)}"
            raise AuthError(message, "UNAVAILABLE") from None

    def open(self, host: RegistryHost | None, method, url, headers, body=None) -> Response:
        """Send, following redirects; Authorization and host headers never leave the host."""
        for _ in range(MAX_REDIRECTS + 1):
            response = self._send(host, method, url, headers, body)
            location = response.getheader("Location")
            if response.status not in _REDIRECT_STATUSES or not location:
                response.url = url
                return response
            response.close()
            target = urljoin(url, location)
            old, new = urlsplit(url), urlsplit(target)
            downgrade = old.scheme == "https" and new.scheme == "http"
            if new.scheme not in ("http", "https") or (downgrade and not is_loopback(new.netloc)):
                raise HostFailure(f"refused redirect from {url} to {target}", "UNKNOWN")
            if (new.scheme, new.netloc) != (old.scheme, old.netloc):
                headers = {k: v for k, v in headers.items() if k.lower() in _SAFE_REDIRECT_HEADERS}
            if response.status == 303 and method != "HEAD":
                method, body = "GET", None
            url = target
        raise HostFailure(f"more than {MAX_REDIRECTS} redirects, last to {url}", "UNKNOWN")

    def _send(self, host: RegistryHost | None, method, url, headers, body) -> Response:
        parts = urlsplit(url)
        tls_host = host if host is not None and parts.netloc == host.host else None
        fallback = tls_host is not None and tls_host.http_fallback
        scheme = parts.scheme
        if scheme == "https" and fallback and tls_host.host in self._plain_http:
            scheme = "http"
        try:
            return self._send_once(scheme, parts, tls_host, method, headers, body)
        except ssl.SSLError as error:
            if scheme != "https" or not fallback or isinstance(error, ssl.SSLCertVerificationError):
                raise
            # The server answered the TLS hello in plain HTTP: use HTTP for it from now on.
            self._plain_http.add(tls_host.host)
            return self._send_once("http", parts, tls_host, method, headers, body)

    def _send_once(self, scheme, parts: SplitResult, tls_host, method, headers, body) -> Response:
        dial_timeout = (tls_host and tls_host.dial_timeout) or self.timeout
        if scheme == "https":
            context = tls_host.ssl_context() if tls_host else _default_context()
            conn = http.client.HTTPSConnection(parts.netloc, timeout=dial_timeout, context=context)
        else:
            conn = http.client.HTTPConnection(parts.netloc, timeout=dial_timeout)
        try:
            conn.connect()
            conn.sock.settimeout(self.timeout)
            target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
            conn.request(method, target, body=body, headers=headers)
            return Response(conn, conn.getresponse())
        except BaseException:
            conn.close()
            raise


class HostRequests:
    """One request to one registry host until it is answered: the 401 challenge, retries."""

    def __init__(
        self, transport: Transport, credentials: CredentialsProvider | None, retry: RetryPolicy
    ) -> None:
        self.transport = transport
        self.retry = retry
        self._auth = Authorizer(credentials, transport.token_call)

    def send(self, call: HostCall, method: str, url: str, headers, consume):
        """Send until answered: a 401 is answered once, transient failures are retried."""
        attempts = self.retry.attempts if call.last_host else 1
        authorization = self._authorization(call)
        challenged, attempt = False, 0
        while True:
            outcome = self._attempt(call, method, url, headers, authorization, consume)
            if outcome[0] == "done":
                return outcome[1]
            if outcome[0] == "challenge":
                if challenged:
                    raise self._refused(call, authorization, outcome[1])
                challenged = True
                authorization = self._challenge(call, outcome[1])
                continue
            attempt += 1
            if attempt >= attempts:
                tries = f" (after {attempt} attempts)" if attempt > 1 else ""
                raise HostFailure(outcome[1] + tries)
            self._sleep(call, self.retry.delay(attempt - 1, outcome[2]))

    def _attempt(self, call: HostCall, method, url, headers, authorization, consume) -> tuple:
        """One try: ("done", value), ("challenge", WWW-Authenticate values) or ("retry", ...)."""
        extra = headers() if callable(headers) else headers
        try:
            response = self.transport.open(
                call.host, method, url, self._headers(call, extra, authorization)
            )
        except ssl.SSLCertVerificationError as error:
            raise HostFailure(f"TLS verification failed: {error.verify_message}") from None
        except (OSError, http.client.HTTPException) as error:
            return "retry", _describe_exception(error), None
        with response:
            if response.status == 401 and urlsplit(response.url).netloc != call.host.host:
                # Only the registry host may ask for credentials, not where it redirected us.
                raise HostFailure(
                    f"HTTP 401 from redirect target {response.url}", "UNAUTHENTICATED"
                )
            if response.status == 401:
                return "challenge", response.headers.get_all("WWW-Authenticate") or []
            if response.status in _RETRY_STATUSES:
                return "retry", _describe_status(response), response.getheader("Retry-After")
            if response.status >= 300:
                raise _status_failure(response)
            try:
                return "done", consume(response)
            except OSError as error:
                if error.errno in _LOCAL_DISK_ERRORS:
                    raise  # our disk, not the registry: another attempt would only fail again
                return "retry", f"transfer interrupted: {_describe_exception(error)}", None
            except (http.client.HTTPException, TransferInterrupted) as error:
                return "retry", f"transfer interrupted: {_describe_exception(error)}", None

    def _authorization(self, call: HostCall) -> str | None:
        try:
            return self._auth.authorization(call.reference.domain, call.host, call.scope)
        except AuthError as error:
            raise HostFailure(str(error), error.grpc_code) from None

    def _challenge(self, call: HostCall, www_authenticate: list[str]) -> str:
        try:
            return self._auth.on_unauthorized(
                call.reference.domain, call.host, call.scope, www_authenticate
            )
        except AuthError as error:
            raise HostFailure(str(error), error.grpc_code) from None

    def _refused(self, call: HostCall, authorization, www_authenticate) -> HostFailure:
        """A second 401: the credentials (or the token they earned) were not enough."""
        creds = self._auth.credentials_for(call.reference.domain, call.host)
        if creds is None:
            return HostFailure(
                "HTTP 401: authentication required and no credentials are configured for "
                f"{call.host.host}",
                "UNAUTHENTICATED",
            )
        if (authorization or "").startswith("Basic "):
            return HostFailure(f"HTTP 401: {creds.describe()} rejected", "UNAUTHENTICATED")
        return HostFailure(
            f"HTTP 401: the token for {creds.describe()} does not grant {call.scope}",
            "PERMISSION_DENIED",
        )

    def _headers(self, call: HostCall, extra: dict, authorization: str | None) -> dict:
        headers = {"User-Agent": f"observe-rt/{__version__}"}
        for name, value in call.host.header:
            headers[name] = f"{headers[name]}, {value}" if name in headers else value
        headers.update(extra)
        if authorization:
            headers["Authorization"] = authorization
        return headers

    def _sleep(self, call: HostCall, seconds: float) -> None:
        if call.cancel is None:
            time.sleep(seconds)
        elif call.cancel.wait(seconds):
            raise RegistryError("cancelled after another download failed")


def read_limited(response: Response, limit: int) -> bytes:
    """The whole body of a manifest, refused past `limit` and checked against Content-Length."""
    data = response.read(limit + 1)
    if len(data) > limit:
        raise HostFailure(f"manifest larger than {limit} bytes", "UNKNOWN")
    length = response.getheader("Content-Length")
    if length and length.isdigit() and int(length) != len(data):
        raise TransferInterrupted(f"{len(data)} of {length} bytes received")
    return data


def _status_failure(response: Response) -> HostFailure:
    code = {404: "NOT_FOUND", 403: "PERMISSION_DENIED"}.get(response.status, "UNKNOWN")
    return HostFailure(_describe_status(response), code, response.status)


def _describe_status(response: Response) -> str:
    """ "HTTP 404 Not Found (MANIFEST_UNKNOWN: manifest unknown)" from the registry's error body."""
    text = f"HTTP {response.status} {response.reason}".rstrip()
    try:
        errors = json.loads(response.read(4096)).get("errors") or []
        details = [
            f"{e.get('code')}: {e.get('message')}" for e in errors[:3] if isinstance(e, dict)
        ]
    except (ValueError, AttributeError, OSError, http.client.HTTPException):
        details = []
    return f"{text} ({'; '.join(details)})" if details else text


_LOCAL_DISK_ERRORS = (errno.ENOSPC, errno.EDQUOT, errno.EROFS)


def _describe_exception(error: BaseException) -> str:
    if isinstance(error, TimeoutError):
        return "timed out"
    if isinstance(error, ConnectionRefusedError):
        return "connection refused"
    return f"{type(error).__name__}: {error}".rstrip(": ")


_DEFAULT_CONTEXT: ssl.SSLContext | None = None


def _default_context() -> ssl.SSLContext:
    """System CAs, full verification: for hosts reached by redirect or named as token realm."""
    global _DEFAULT_CONTEXT
    if _DEFAULT_CONTEXT is None:
        _DEFAULT_CONTEXT = ssl.create_default_context()
    return _DEFAULT_CONTEXT

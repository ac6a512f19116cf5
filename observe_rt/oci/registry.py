"""Client for the OCI distribution API: resolve references, fetch manifests, stream blobs.

Each operation walks the hosts configured for the image's registry (hosts.py: mirrors in order,
then the upstream), keeping only those with the needed capability ("resolve" to turn a tag into a
digest, "pull" for anything fetched by digest). A host that is dead, answers 404, refuses us or
sends bad content is noted and the next one is tried; when all fail, one RegistryError lists what
each host answered, with the gRPC code of the most telling answer.

On one host: a 401 is answered once from its challenge (auth.py); 5xx, 408 and 429 answers,
connection errors, timeouts and cut-off bodies are retried with exponential backoff, but only on
the last host, as containerd does: a failing mirror should hand over to the next host quickly.
An interrupted blob resumes with a Range request, so the writer never sees a byte twice.
Redirects are followed by hand (at most 5) and drop Authorization and configured headers when the
target is another host; HTTPS never redirects down to plain HTTP except on loopback.
"""

from __future__ import annotations

import hashlib
import http.client
import json
import random
import ssl
import threading
import time
from collections.abc import Callable, Iterable
from concurrent.futures import FIRST_EXCEPTION, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol
from urllib.parse import urlencode, urljoin, urlsplit

from observe_rt import __version__
from observe_rt.errors import InvalidArgument, ObserveRtError
from observe_rt.oci import media
from observe_rt.oci.auth import AuthError, Authorizer, CredentialsProvider
from observe_rt.oci.hosts import DEFAULT_CONFIG_DIR, RegistryHost, hosts_for, is_loopback
from observe_rt.oci.reference import Reference, parse

MAX_MANIFEST_SIZE = 4 * 1024 * 1024
CHUNK_SIZE = 1024 * 1024
MAX_REDIRECTS = 5
_RETRY_STATUSES = frozenset({408, 429, 500, 502, 503, 504})
_REDIRECT_STATUSES = frozenset({301, 302, 303, 307, 308})
_SAFE_REDIRECT_HEADERS = frozenset({"accept", "user-agent", "range"})
# The most telling failure decides the error code: a 404 beats a dead mirror, and so on.
_PRIORITY = {"UNAVAILABLE": 1, "NOT_FOUND": 2, "UNKNOWN": 3}


class RegistryError(ObserveRtError):
    def __init__(self, message: str, grpc_code: str = "UNAVAILABLE") -> None:
        super().__init__(message)
        self.grpc_code = grpc_code


class BlobWriter(Protocol):
    """Where a blob goes: the content store's ingest writer, or anything with these methods."""

    def write(self, data: bytes) -> object: ...

    def commit(self, expected_digest: str, expected_size: int) -> object: ...

    def abort(self) -> None: ...


@dataclass(frozen=True)
class Descriptor:
    media_type: str
    digest: str
    size: int
    platform: dict | None = field(default=None, compare=False)

    @classmethod
    def from_dict(cls, value: dict) -> Descriptor:
        return cls(value["mediaType"], value["digest"], value["size"], value.get("platform"))

    def to_dict(self) -> dict:
        out = {"mediaType": self.media_type, "digest": self.digest, "size": self.size}
        return out | ({"platform": self.platform} if self.platform else {})


@dataclass(frozen=True)
class Resolved:
    """A resolved reference: the platform's manifest, and the index it came from, if any."""

    reference: Reference
    host: str  # API root URL of the host that resolved the reference
    descriptor: Descriptor  # the manifest chosen for the platform
    manifest: bytes
    index: Descriptor | None = None
    index_bytes: bytes | None = None

    @property
    def repo_digest(self) -> str:
        """name@digest of what the reference points to (the index for a multi-arch image)."""
        return self.reference.repo_digest((self.index or self.descriptor).digest)

    def manifest_json(self) -> dict:
        return json.loads(self.manifest)


@dataclass(frozen=True)
class RetryPolicy:
    attempts: int = 5
    base_delay: float = 0.5
    max_delay: float = 8.0

    def delay(self, attempt: int, retry_after: str | None = None) -> float:
        if retry_after and retry_after.strip().isdigit():
            return min(float(retry_after), self.max_delay)
        return min(self.base_delay * 2**attempt, self.max_delay) * random.uniform(0.5, 1.0)


class _HostFailure(Exception):
    """What one host answered; the walk goes on to the next host."""

    def __init__(self, message: str, grpc_code: str = "UNAVAILABLE", status: int = 0) -> None:
        super().__init__(message)
        self.grpc_code, self.status = grpc_code, status


class _Interrupted(Exception):
    """A body cut short: worth another attempt on the same host."""


@dataclass
class _Call:
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


class RegistryClient:
    def __init__(
        self,
        hosts_dir: str | Path | None = DEFAULT_CONFIG_DIR,
        credentials: CredentialsProvider | None = None,
        *,
        platform: media.Platform | None = None,
        retry: RetryPolicy = RetryPolicy(),
        timeout: float = 30.0,
    ) -> None:
        self.hosts_dir = hosts_dir
        self.platform = platform or media.host_platform()
        self.retry = retry
        self.timeout = timeout
        self._auth = Authorizer(credentials, self._http_call)
        self._plain_http: set[str] = set()  # fallback hosts found to speak plain HTTP

    def _url_of(self, host: RegistryHost) -> str:
        """The host's API root as actually reached (http:// once it fell back to plain HTTP)."""
        scheme = "http" if host.host in self._plain_http else host.scheme
        return f"{scheme}://{host.host}{host.path}"

    def hosts(self, domain: str) -> list[RegistryHost]:
        # Read on every pull: a changed hosts.toml applies without a restart.
        try:
            return hosts_for(domain, self.hosts_dir)
        except InvalidArgument as error:
            raise RegistryError(str(error), "INVALID_ARGUMENT") from None

    def resolve(self, ref: Reference | str) -> Resolved:
        """Resolve `ref` to the manifest for this client's platform."""
        ref = _as_reference(ref)
        capability = "pull" if ref.digest else "resolve"
        host, raw, media_type, digest = self._on_hosts(
            ref,
            capability,
            f'manifest for "{ref}"',
            lambda c: (c.host, *self._manifest(c, ref.object)),
        )
        target = Descriptor(media_type, digest, len(raw))
        if media.kind_of(media_type) == "manifest":
            return Resolved(ref, self._url_of(host), target, raw)
        try:
            chosen = media.select_platform(json.loads(raw), self.platform, ref.repo_digest(digest))
            if media.kind_of(chosen["mediaType"]) != "manifest":
                raise media.ManifestError(f"{chosen['digest']} is a nested index; not supported")
        except media.ManifestError as error:
            raise RegistryError(f'pulling "{ref}": {error}', error.grpc_code) from None
        descriptor = Descriptor.from_dict(chosen)
        manifest = self.fetch_manifest(ref, descriptor)
        return Resolved(ref, self._url_of(host), descriptor, manifest, target, raw)

    def resolve_digest(self, ref: Reference | str) -> Descriptor:
        """The descriptor `ref` points to, from a HEAD request (no platform selection)."""
        ref = _as_reference(ref)
        capability = "pull" if ref.digest else "resolve"
        return self._on_hosts(ref, capability, f'manifest for "{ref}"', self._head_manifest)

    def fetch_manifest(self, ref: Reference | str, descriptor: Descriptor) -> bytes:
        ref = _as_reference(ref)
        what = f"manifest {descriptor.digest} of {ref.name}"
        raw, _, _ = self._on_hosts(
            ref, "pull", what, lambda c: self._manifest(c, descriptor.digest)
        )
        if len(raw) != descriptor.size:
            raise RegistryError(
                f"{what}: {len(raw)} bytes, descriptor says {descriptor.size}",
                "FAILED_PRECONDITION",
            )
        return raw

    def fetch_blob(
        self,
        ref: Reference | str,
        descriptor: Descriptor,
        writer: BlobWriter,
        cancel: threading.Event | None = None,
    ) -> str:
        """Stream a blob into `writer`, verifying size and digest; commit, or abort on error."""
        ref = _as_reference(ref)
        progress = _BlobProgress(descriptor)
        try:
            self._on_hosts(
                ref, "pull", f"blob {descriptor.digest} of {ref.name}",
                lambda c: self._stream_blob(c, descriptor, writer, progress), cancel,
            )  # fmt: skip
            writer.commit(descriptor.digest, descriptor.size)
        except BaseException:
            writer.abort()
            raise
        return descriptor.digest

    def fetch_blobs(
        self,
        ref: Reference | str,
        descriptors: Iterable[Descriptor],
        writer_factory: Callable[[Descriptor], BlobWriter],
        max_concurrent: int = 3,
    ) -> list[str]:
        """Fetch blobs with at most `max_concurrent` downloads; the first failure stops the rest."""
        ref, descriptors = _as_reference(ref), list(descriptors)
        cancel = threading.Event()

        def fetch_one(descriptor: Descriptor) -> str:
            if cancel.is_set():
                raise RegistryError("cancelled after another download failed")
            return self.fetch_blob(ref, descriptor, writer_factory(descriptor), cancel)

        workers = max(1, min(max_concurrent, len(descriptors)))
        with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="blob") as pool:
            futures = [pool.submit(fetch_one, descriptor) for descriptor in descriptors]
            done, _ = wait(futures, return_when=FIRST_EXCEPTION)
            failed = [future for future in done if future.exception() is not None]
            if failed:
                cancel.set()
                for future in futures:
                    future.cancel()
                wait(futures)
                raise failed[0].exception()
        return [future.result() for future in futures]

    # The walk over hosts ---------------------------------------------------------------------

    def _on_hosts(self, ref, capability, what, attempt, cancel=None):
        hosts = [host for host in self.hosts(ref.domain) if host.can(capability)]
        if not hosts:
            raise RegistryError(
                f"{what}: no host for {ref.domain} has the {capability!r} capability "
                f"(see {self.hosts_dir})",
                "FAILED_PRECONDITION",
            )
        failures: list[tuple[RegistryHost, _HostFailure]] = []
        for position, host in enumerate(hosts):
            try:
                last = position == len(hosts) - 1
                return attempt(_Call(ref, host, last, cancel, self._url_of(host)))
            except _HostFailure as failure:
                failures.append((host, failure))
            except InvalidArgument as error:  # e.g. a CA file named in hosts.toml is unreadable
                raise RegistryError(f"{what}: {error}", "INVALID_ARGUMENT") from None
        answers = "; ".join(f"{self._url_of(host)}: {failure}" for host, failure in failures)
        code = max(failures, key=lambda f: _PRIORITY.get(f[1].grpc_code, 4))[1].grpc_code
        raise RegistryError(f"{what}: {answers}", code)

    def _manifest(self, call: _Call, obj: str) -> tuple[bytes, str, str]:
        """GET a manifest by tag or digest: (raw bytes, media type, digest) after checks."""
        headers = {"Accept": media.ACCEPT_MANIFESTS}

        def read(response: http.client.HTTPResponse):
            return _read_limited(response, MAX_MANIFEST_SIZE), response

        raw, response = self._exchange(call, "GET", call.url("manifests", obj), headers, read)
        expected = obj if ":" in obj else None
        algorithm = expected.split(":")[0] if expected else "sha256"
        digest = f"{algorithm}:{hashlib.new(algorithm, raw).hexdigest()}"
        declared = response.getheader("Docker-Content-Digest")
        if expected and digest != expected:
            raise _HostFailure(f"sent a manifest with digest {digest}, not {expected}", "UNKNOWN")
        if not expected and declared and declared.startswith("sha256:") and declared != digest:
            raise _HostFailure(
                f"manifest digest {digest} differs from header {declared}", "UNKNOWN"
            )
        try:
            media_type, _ = media.parse_document(raw, response.getheader("Content-Type"))
            media.kind_of(media_type)
        except media.ManifestError as error:
            raise _HostFailure(str(error), error.grpc_code) from None
        return raw, media_type, digest

    def _head_manifest(self, call: _Call) -> Descriptor:
        headers = {"Accept": media.ACCEPT_MANIFESTS}
        obj = call.reference.object
        try:
            response = self._exchange(call, "HEAD", call.url("manifests", obj), headers, _keep)
        except _HostFailure as failure:
            if failure.status != 405:  # some registries lack HEAD on manifests
                raise
            response = None
        digest = response and response.getheader("Docker-Content-Digest")
        length = response and response.getheader("Content-Length")
        if not digest or not (length or "").isdigit():
            raw, media_type, digest = self._manifest(call, obj)
            return Descriptor(media_type, digest, len(raw))
        content_type = (response.getheader("Content-Type") or "").split(";")[0]
        return Descriptor(content_type, digest, int(length))

    def _stream_blob(self, call, descriptor, writer, progress) -> None:
        def headers() -> dict:
            return {"Accept": "*/*"} | (
                {"Range": f"bytes={progress.received}-"} if progress.received else {}
            )

        self._exchange(
            call, "GET", call.url("blobs", descriptor.digest), headers,
            lambda response: progress.copy(response, writer, call),
        )  # fmt: skip
        actual = progress.digest()
        if actual != descriptor.digest:
            raise RegistryError(
                f"blob {descriptor.digest} of repository {call.reference.path} from "
                f"{call.where}: digest mismatch, received content hashes to {actual}",
                "DATA_LOSS",
            )

    # One request to one host: auth, retries, redirects -----------------------------------------

    def _exchange(self, call: _Call, method: str, url: str, headers, consume):
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
                raise _HostFailure(outcome[1] + tries)
            self._sleep(call, self.retry.delay(attempt - 1, outcome[2]))

    def _attempt(self, call: _Call, method, url, headers, authorization, consume) -> tuple:
        """One try: ("done", value), ("challenge", WWW-Authenticate values) or ("retry", ...)."""
        extra = headers() if callable(headers) else headers
        try:
            response = self._open(call.host, method, url, self._headers(call, extra, authorization))
        except ssl.SSLCertVerificationError as error:
            raise _HostFailure(f"TLS verification failed: {error.verify_message}") from None
        except (OSError, http.client.HTTPException) as error:
            return "retry", _describe_exception(error), None
        with response:
            if response.status == 401 and urlsplit(response.url).netloc != call.host.host:
                # Only the registry host may ask for credentials, not where it redirected us.
                raise _HostFailure(
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
            except (OSError, http.client.HTTPException, _Interrupted) as error:
                return "retry", f"transfer interrupted: {_describe_exception(error)}", None

    def _authorization(self, call: _Call) -> str | None:
        try:
            return self._auth.authorization(call.reference.domain, call.host, call.scope)
        except AuthError as error:
            raise _HostFailure(str(error), error.grpc_code) from None

    def _challenge(self, call: _Call, www_authenticate: list[str]) -> str:
        try:
            return self._auth.on_unauthorized(
                call.reference.domain, call.host, call.scope, www_authenticate
            )
        except AuthError as error:
            raise _HostFailure(str(error), error.grpc_code) from None

    def _refused(self, call: _Call, authorization, www_authenticate) -> _HostFailure:
        """A second 401: the credentials (or the token they earned) were not enough."""
        creds = self._auth.credentials_for(call.reference.domain, call.host)
        if creds is None:
            return _HostFailure(
                "HTTP 401: authentication required and no credentials are configured for "
                f"{call.host.host}",
                "UNAUTHENTICATED",
            )
        if (authorization or "").startswith("Basic "):
            return _HostFailure(f"HTTP 401: {creds.describe()} rejected", "UNAUTHENTICATED")
        return _HostFailure(
            f"HTTP 401: the token for {creds.describe()} does not grant {call.scope}",
            "PERMISSION_DENIED",
        )

    def _headers(self, call: _Call, extra: dict, authorization: str | None) -> dict:
        headers = {"User-Agent": f"observe-rt/{__version__}"}
        for name, value in call.host.header:
            headers[name] = f"{headers[name]}, {value}" if name in headers else value
        headers.update(extra)
        if authorization:
            headers["Authorization"] = authorization
        return headers

    def _sleep(self, call: _Call, seconds: float) -> None:
        if call.cancel is None:
            time.sleep(seconds)
        elif call.cancel.wait(seconds):
            raise RegistryError("cancelled after another download failed")

    def _http_call(self, method, url, headers, body, tls_host) -> tuple[int, dict, bytes]:
        """For the token server: one request, redirects followed safely, body read (<= 1 MiB)."""
        try:
            with self._open(tls_host, method, url, headers, body) as response:
                return response.status, dict(response.headers), response.read(1024 * 1024)
        except (OSError, http.client.HTTPException) as error:
            message = f"token server {url}: {_describe_exception(error)}"
            raise AuthError(message, "UNAVAILABLE") from None

    def _open(self, host: RegistryHost | None, method, url, headers, body=None) -> _Response:
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
                raise _HostFailure(f"refused redirect from {url} to {target}", "UNKNOWN")
            if (new.scheme, new.netloc) != (old.scheme, old.netloc):
                headers = {k: v for k, v in headers.items() if k.lower() in _SAFE_REDIRECT_HEADERS}
            if response.status == 303 and method != "HEAD":
                method, body = "GET", None
            url = target
        raise _HostFailure(f"more than {MAX_REDIRECTS} redirects, last to {url}", "UNKNOWN")

    def _send(self, host: RegistryHost | None, method, url, headers, body) -> _Response:
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

    def _send_once(self, scheme, parts, tls_host, method, headers, body) -> _Response:
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
            return _Response(conn, conn.getresponse())
        except BaseException:
            conn.close()
            raise


class _Response:
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

    def __enter__(self) -> _Response:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class _BlobProgress:
    """Bytes of one blob received so far, hashed, across retries and hosts."""

    def __init__(self, descriptor: Descriptor) -> None:
        self.descriptor = descriptor
        self.received = 0
        self._hash = hashlib.new(descriptor.digest.split(":")[0])

    def digest(self) -> str:
        return f"{self._hash.name}:{self._hash.hexdigest()}"

    def copy(self, response: _Response, writer: BlobWriter, call: _Call) -> None:
        skip = self._bytes_to_skip(response)
        size = self.descriptor.size
        while chunk := response.read(CHUNK_SIZE):
            if call.cancel is not None and call.cancel.is_set():
                raise RegistryError("cancelled after another download failed")
            if skip:
                dropped, skip = min(skip, len(chunk)), skip - min(skip, len(chunk))
                chunk = chunk[dropped:]
            if self.received + len(chunk) > size:
                raise RegistryError(
                    f"blob {self.descriptor.digest} of repository {call.reference.path} from "
                    f"{call.where}: more than the {size} bytes its descriptor gives",
                    "DATA_LOSS",
                )
            writer.write(chunk)
            self._hash.update(chunk)
            self.received += len(chunk)
        if self.received < size:
            raise _Interrupted(f"{self.received} of {size} bytes received")

    def _bytes_to_skip(self, response: _Response) -> int:
        if not self.received:
            return 0
        if response.status != 206:
            return self.received  # the Range was ignored: the body starts from byte 0 again
        content_range = response.getheader("Content-Range") or ""
        if not content_range.startswith(f"bytes {self.received}-"):
            raise _HostFailure(f"answered Range with Content-Range {content_range!r}", "UNKNOWN")
        return 0


def _as_reference(ref: Reference | str) -> Reference:
    try:
        return ref if isinstance(ref, Reference) else parse(ref)
    except ValueError as error:
        raise RegistryError(str(error), "INVALID_ARGUMENT") from None


def _keep(response: _Response) -> _Response:
    return response


def _read_limited(response: _Response, limit: int) -> bytes:
    data = response.read(limit + 1)
    if len(data) > limit:
        raise _HostFailure(f"manifest larger than {limit} bytes", "UNKNOWN")
    length = response.getheader("Content-Length")
    if length and length.isdigit() and int(length) != len(data):
        raise _Interrupted(f"{len(data)} of {length} bytes received")
    return data


def _status_failure(response: _Response) -> _HostFailure:
    code = {404: "NOT_FOUND", 403: "PERMISSION_DENIED"}.get(response.status, "UNKNOWN")
    return _HostFailure(_describe_status(response), code, response.status)


def _describe_status(response: _Response) -> str:
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

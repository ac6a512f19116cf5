"""Client for the OCI distribution API: resolve references, fetch manifests, stream blobs.

Each operation walks the hosts configured for the image's registry (hosts.py: mirrors in order,
then the upstream), keeping only those with the needed capability ("resolve" to turn a tag into a
digest, "pull" for anything fetched by digest). A host that is dead, answers 404, refuses us or
sends bad content is noted and the next one is tried; when all fail, one RegistryError lists what
each host answered, with the gRPC code of the most telling answer.

One request to one host (the 401 challenge, retries with backoff on the last host only,
redirects, connections) is transport.py's part. An interrupted blob resumes with a Range request,
so the writer never sees a byte twice.
"""

from __future__ import annotations

import hashlib
import http.client
import json
import threading
from collections.abc import Callable, Iterable
from concurrent.futures import FIRST_EXCEPTION, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

from observe_rt import trace
from observe_rt.errors import InvalidArgument
from observe_rt.oci import media
from observe_rt.oci.auth import CredentialsProvider
from observe_rt.oci.hosts import DEFAULT_CONFIG_DIR, RegistryHost, hosts_for
from observe_rt.oci.reference import Reference, parse

# RegistryError and RetryPolicy live with the transport but belong to this module's API too.
from observe_rt.oci.transport import (
    HostCall,
    HostFailure,
    HostRequests,
    RegistryError,
    Response,
    RetryPolicy,
    TransferInterrupted,
    Transport,
    read_limited,
)

MAX_MANIFEST_SIZE = 4 * 1024 * 1024
CHUNK_SIZE = 1024 * 1024
# The most telling failure decides the error code: a 404 beats a dead mirror, and so on.
_PRIORITY = {"UNAVAILABLE": 1, "NOT_FOUND": 2, "UNKNOWN": 3}
_DEFAULT_RETRY = RetryPolicy()


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


class RegistryClient:
    def __init__(
        self,
        hosts_dir: str | Path | None = DEFAULT_CONFIG_DIR,
        credentials: CredentialsProvider | None = None,
        *,
        platform: media.Platform | None = None,
        retry: RetryPolicy = _DEFAULT_RETRY,
        timeout: float = 30.0,
    ) -> None:
        self.hosts_dir = hosts_dir
        self.platform = platform or media.host_platform()
        self.retry = retry
        self.timeout = timeout
        self._transport = Transport(timeout)
        self._requests = HostRequests(self._transport, credentials, retry)

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
            return Resolved(ref, self._transport.url_of(host), target, raw)
        try:
            chosen = media.select_platform(json.loads(raw), self.platform, ref.repo_digest(digest))
            if media.kind_of(chosen["mediaType"]) != "manifest":
                raise media.ManifestError(f"{chosen['digest']} is a nested index; not supported")
        except media.ManifestError as error:
            raise RegistryError(f'pulling "{ref}": {error}', error.grpc_code) from None
        descriptor = Descriptor.from_dict(chosen)
        manifest = self.fetch_manifest(ref, descriptor)
        return Resolved(ref, self._transport.url_of(host), descriptor, manifest, target, raw)

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
        attributes = {"oci.blob.digest": descriptor.digest, "oci.blob.bytes": descriptor.size,
                      "oci.blob.media_type": descriptor.media_type}  # fmt: skip
        with trace.span("image.download", attributes):
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

        @trace.carry  # the download spans are children of the caller's (a pull's) span
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
        failures: list[tuple[RegistryHost, HostFailure]] = []
        for position, host in enumerate(hosts):
            try:
                last = position == len(hosts) - 1
                return attempt(HostCall(ref, host, last, cancel, self._transport.url_of(host)))
            except HostFailure as failure:
                failures.append((host, failure))
            except InvalidArgument as error:  # e.g. a CA file named in hosts.toml is unreadable
                raise RegistryError(f"{what}: {error}", "INVALID_ARGUMENT") from None
        answers = "; ".join(
            f"{self._transport.url_of(host)}: {failure}" for host, failure in failures
        )
        code = max(failures, key=lambda f: _PRIORITY.get(f[1].grpc_code, 4))[1].grpc_code
        raise RegistryError(f"{what}: {answers}", code)

    def _manifest(self, call: HostCall, obj: str) -> tuple[bytes, str, str]:
        """GET a manifest by tag or digest: (raw bytes, media type, digest) after checks."""
        headers = {"Accept": media.ACCEPT_MANIFESTS}

        def read(response: http.client.HTTPResponse):
            return read_limited(response, MAX_MANIFEST_SIZE), response

        raw, response = self._requests.send(call, "GET", call.url("manifests", obj), headers, read)
        expected = obj if ":" in obj else None
        algorithm = expected.split(":")[0] if expected else "sha256"
        digest = f"{algorithm}:{hashlib.new(algorithm, raw).hexdigest()}"
        declared = response.getheader("Docker-Content-Digest")
        if expected and digest != expected:
            raise HostFailure(f"sent a manifest with digest {digest}, not {expected}", "UNKNOWN")
        if not expected and declared and declared.startswith("sha256:") and declared != digest:
            raise HostFailure(f"manifest digest {digest} differs from header {declared}", "UNKNOWN")
        try:
            media_type, _ = media.parse_document(raw, response.getheader("Content-Type"))
            media.kind_of(media_type)
        except media.ManifestError as error:
            raise HostFailure(str(error), error.grpc_code) from None
        return raw, media_type, digest

    def _head_manifest(self, call: HostCall) -> Descriptor:
        headers = {"Accept": media.ACCEPT_MANIFESTS}
        obj = call.reference.object
        try:
            response = self._requests.send(call, "HEAD", call.url("manifests", obj), headers, _keep)
        except HostFailure as failure:
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

        self._requests.send(
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


class _BlobProgress:
    """Bytes of one blob received so far, hashed, across retries and hosts."""

    def __init__(self, descriptor: Descriptor) -> None:
        self.descriptor = descriptor
        self.received = 0
        self._hash = hashlib.new(descriptor.digest.split(":")[0])

    def digest(self) -> str:
        return f"{self._hash.name}:{self._hash.hexdigest()}"

    def copy(self, response: Response, writer: BlobWriter, call: HostCall) -> None:
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
            raise TransferInterrupted(f"{self.received} of {size} bytes received")

    def _bytes_to_skip(self, response: Response) -> int:
        if not self.received:
            return 0
        if response.status != 206:
            return self.received  # the Range was ignored: the body starts from byte 0 again
        content_range = response.getheader("Content-Range") or ""
        if not content_range.startswith(f"bytes {self.received}-"):
            raise HostFailure(f"answered Range with Content-Range {content_range!r}", "UNKNOWN")
        return 0


def _as_reference(ref: Reference | str) -> Reference:
    try:
        return ref if isinstance(ref, Reference) else parse(ref)
    except ValueError as error:
        raise RegistryError(str(error), "INVALID_ARGUMENT") from None


def _keep(response: Response) -> Response:
    return response

"""The image service: pull, list, inspect, remove, prune and import images.

One object ties the parts together, and is what both `observe-rt images` and the CRI
ImageService use:

    reference ─> registry (hosts.toml mirrors, auth) ─> trust policy ─> content store (blobs by
    digest) ─> snapshots (one unpacked dir per layer, shared) ─> image record (id = config digest)

The trust policy is asked before any blob is written, so a rejected image is never stored.
Removing images and pruning take the service's lock exclusively; pulls and imports share it,
so garbage collection never deletes a blob or layer a pull is about to use.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import threading
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

from observe_rt import trace
from observe_rt.errors import InvalidArgument, NotFound
from observe_rt.oci import auth, media, reference
from observe_rt.oci.hosts import DEFAULT_CONFIG_DIR
from observe_rt.oci.policy import TrustPolicy
from observe_rt.oci.registry import Descriptor, RegistryClient, RegistryError, Resolved
from observe_rt.oci.snapshots import LayerRef, SnapshotStore, Usage, chain_ids, image_fs_usage
from observe_rt.oci.store import ContentStore, ImageRecord, ImageStore
from observe_rt.oci.unpack import Limits

DEFAULT_ROOT = "/var/lib/observe-rt/images"


@dataclass(frozen=True)
class ImageParts:
    """What a manifest says an image is made of, checked against its config."""

    manifest_digest: str
    config: Descriptor
    layers: list[Descriptor]
    diff_ids: list[str]
    created: str


class ImageService:
    def __init__(
        self,
        root: str | Path = DEFAULT_ROOT,
        *,
        hosts_dir: str | Path | None = DEFAULT_CONFIG_DIR,
        policy: TrustPolicy | None = None,
        docker_config: str | Path | None = None,
        limits: Limits | None = None,
        max_concurrent_downloads: int = 3,
    ) -> None:
        self.root = Path(root)
        self.content = ContentStore(self.root)
        self.images = ImageStore(self.root)
        self.snapshots = SnapshotStore(self.root, limits)
        self.hosts_dir = hosts_dir
        self.policy = policy or TrustPolicy.accept_anything()
        self.docker_config = docker_config
        self.max_concurrent_downloads = max_concurrent_downloads
        self._gc = _SharedExclusiveLock()
        self.on_pull = None  # (name, bytes, seconds, ok) after each pull: the metrics exporter

    # --- pull ---------------------------------------------------------------------------------

    def pull(self, name: str, auth_config: dict | None = None) -> ImageRecord:
        """Pull `name` (any docker-style reference) and return its record."""
        started, record = time.monotonic(), None
        try:
            record = self._pull(name, auth_config)
            return record
        finally:
            if self.on_pull is not None:
                size = record.size if record else 0
                self.on_pull(name, size, time.monotonic() - started, record is not None)

    def _pull(self, name: str, auth_config: dict | None) -> ImageRecord:
        ref = parse_reference(name)
        client = self._client(auth_config)
        with self._gc.shared():
            with trace.span("image.resolve", {"container.image.name": str(ref)}) as span:
                resolved = client.resolve(ref)
                span.set_attribute("oci.manifest.digest", resolved.descriptor.digest)
            top_digest = (resolved.index or resolved.descriptor).digest
            self.policy.check(ref.name, top_digest, self._signature_fetcher(client, ref))
            parts = self._fetch_parts(client, resolved)
            self._unpack(parts)
            self._store_manifests(resolved)
            record = self._record(parts, tags=[ref.repo_tag] if ref.repo_tag else [],
                                  digests=[resolved.repo_digest])  # fmt: skip
            return self.images.put(record)

    def _client(self, auth_config: dict | None) -> RegistryClient:
        providers = [auth.from_auth_config(auth_config) if auth_config else None]
        if self.docker_config:
            providers.append(auth.from_docker_config(self.docker_config))
        return RegistryClient(self.hosts_dir, auth.chain(*providers))

    def _fetch_parts(self, client: RegistryClient, resolved: Resolved) -> ImageParts:
        manifest = resolved.manifest_json()
        config = Descriptor.from_dict(manifest["config"])
        self._fetch_missing(client, resolved.reference, [config])
        parts = parse_image(
            resolved.descriptor.digest, manifest, self.content.read_bytes(config.digest)
        )
        self._fetch_missing(client, resolved.reference, parts.layers)
        return parts

    def _fetch_missing(self, client, ref, descriptors: list[Descriptor]) -> None:
        missing = [d for d in descriptors if not self.content.has(d.digest)]
        if missing:
            client.fetch_blobs(ref, missing, lambda d: self.content.writer(d.digest, d.size),
                               self.max_concurrent_downloads)  # fmt: skip

    def _signature_fetcher(self, client: RegistryClient, ref: reference.Reference):
        """cosign signatures live in the same repository, under a tag named after the digest."""

        def fetch(tag: str):
            try:
                found = client.resolve(reference.parse(f"{ref.name}:{tag}"))
            except RegistryError as err:
                if err.grpc_code == "NOT_FOUND":
                    return None, None
                raise
            return found.manifest_json(), lambda digest: _fetch_small_blob(client, found, digest)

        return fetch

    def _unpack(self, parts: ImageParts) -> None:
        layers = [LayerRef(d.digest, diff_id, d.media_type)
                  for d, diff_id in zip(parts.layers, parts.diff_ids, strict=True)]  # fmt: skip
        self.snapshots.unpack_image(self.content, layers)

    def _store_manifests(self, resolved: Resolved) -> None:
        self.content.put_bytes(resolved.manifest, resolved.descriptor.digest)
        if resolved.index and resolved.index_bytes is not None:
            self.content.put_bytes(resolved.index_bytes, resolved.index.digest)

    def _record(self, parts: ImageParts, tags: list[str], digests: list[str]) -> ImageRecord:
        blobs = [parts.config, *parts.layers]
        return ImageRecord(
            id=parts.config.digest,
            manifest_digest=parts.manifest_digest,
            config_digest=parts.config.digest,
            layer_digests=[d.digest for d in parts.layers],
            diff_ids=parts.diff_ids,
            size=sum(d.size for d in blobs),
            repo_tags=tags,
            repo_digests=digests,
            created=parts.created,
        )

    # --- queries ------------------------------------------------------------------------------

    def list(self) -> list[ImageRecord]:
        return self.images.list()

    def get(self, name: str) -> ImageRecord:
        """An image by id, id prefix, tag or digest reference (NotFound otherwise)."""
        return self.images.resolve(_normalise_name(name))

    def find(self, name: str) -> ImageRecord | None:
        with contextlib.suppress(NotFound):
            return self.get(name)
        return None

    def config(self, record: ImageRecord) -> dict:
        return json.loads(self.content.read_bytes(record.config_digest))

    def rootfs_chain(self, record: ImageRecord) -> list[str]:
        """The image's snapshot chain ids, bottom layer first (for a container's overlay)."""
        return chain_ids(record.diff_ids)

    def fs_usage(self) -> Usage:
        return image_fs_usage(self.content, self.snapshots)

    # --- remove and prune ---------------------------------------------------------------------

    def remove(self, name: str, containers_chains: Iterable[str] = ()) -> ImageRecord:
        """Remove an image with all its tags, then the blobs and layers nothing else uses.

        As with containerd, a container keeps running after its image is removed: the layers
        its rootfs stands on (`containers_chains`) stay until it is gone.
        """
        with self._gc.exclusive():
            record = self.get(name)
            self.images.remove(record.id)
            self._collect_garbage(containers_chains)
            return record

    def prune(self, images_in_use: Iterable[str] = (),
              containers_chains: Iterable[str] = ()) -> list[ImageRecord]:  # fmt: skip
        """Remove every image no container uses (ids not in `images_in_use`), unless pinned."""
        keep = set(images_in_use)
        with self._gc.exclusive():
            doomed = [r for r in self.images.list() if r.id not in keep and not r.pinned]
            for record in doomed:
                self.images.remove(record.id)
            self._collect_garbage(containers_chains)
            return doomed

    def _collect_garbage(self, containers_chains: Iterable[str]) -> None:
        """Delete blobs and snapshots that no remaining image or container refers to."""
        live_chains = set(containers_chains)
        live_blobs: set[str] = set()
        for record in self.images.list():
            live_chains.update(chain_ids(record.diff_ids))
            live_blobs.update([record.manifest_digest, record.config_digest, *record.layer_digests])
            live_blobs.update(_index_digests(record))
        self.snapshots.prune(live_chains)
        for digest, _size in list(self.content.walk()):
            if digest not in live_blobs:
                self.content.delete(digest)

    # --- import -------------------------------------------------------------------------------

    def import_archive(self, path: str | Path) -> list[ImageRecord]:
        """Import an OCI layout tar or a `docker save` tar (for nodes without a registry)."""
        from observe_rt.oci import archive

        with self._gc.shared():
            imported = []
            for found in archive.read(Path(path), self.content):
                config = self.content.read_bytes(found.manifest["config"]["digest"])
                parts = parse_image(found.manifest_digest, found.manifest, config)
                self._unpack(parts)
                tags = [parse_reference(name).repo_tag for name in found.names]
                imported.append(self.images.put(self._record(parts, [t for t in tags if t], [])))
            return imported


def parse_reference(name: str) -> reference.Reference:
    try:
        return reference.parse(name)
    except ValueError as err:
        raise InvalidArgument(str(err)) from None


def _normalise_name(name: str) -> str:
    """busybox -> docker.io/library/busybox:latest, as image records store names."""
    if name.startswith("sha256:") or all(c in "0123456789abcdef" for c in name):
        return name
    with contextlib.suppress(ValueError):
        return str(reference.parse(name))
    return name


def parse_image(manifest_digest: str, manifest: dict, config_bytes: bytes) -> ImageParts:
    """Check a manifest against its config and return the parts to unpack."""
    where = f"image manifest {manifest_digest}"
    media_type = manifest.get("mediaType") or media.OCI_MANIFEST
    if media.kind_of(media_type) != "manifest":
        raise InvalidArgument(f"{where}: {media_type} is not an image manifest")
    layers = [Descriptor.from_dict(layer) for layer in manifest.get("layers") or []]
    for layer in layers:
        media.layer_compression(layer.media_type)  # raises on foreign or unknown layer types
    try:
        config = json.loads(config_bytes)
        diff_ids = list(config["rootfs"]["diff_ids"])
    except (ValueError, KeyError, TypeError):
        raise InvalidArgument(f"{where}: its config has no rootfs.diff_ids") from None
    if len(diff_ids) != len(layers):
        raise InvalidArgument(f"{where}: {len(layers)} layers but {len(diff_ids)} diff_ids")
    return ImageParts(manifest_digest, Descriptor.from_dict(manifest["config"]), layers,
                      diff_ids, str(config.get("created", "")))  # fmt: skip


def _index_digests(record: ImageRecord) -> list[str]:
    """Index digests named by the record's repo digests (kept with the image)."""
    return [d.rsplit("@", 1)[1] for d in record.repo_digests if "@" in d]


def _fetch_small_blob(client: RegistryClient, resolved: Resolved, digest: str) -> bytes:
    """A signature payload: fetched into memory, digest verified by the writer."""
    writer = _MemoryWriter()
    size = next(layer["size"] for layer in resolved.manifest_json()["layers"]
                if layer["digest"] == digest)  # fmt: skip
    client.fetch_blob(resolved.reference, Descriptor("application/octet-stream", digest, size),
                      writer)  # fmt: skip
    return bytes(writer.data)


class _MemoryWriter:
    _LIMIT = 1 << 20  # signature payloads are a few hundred bytes

    def __init__(self) -> None:
        self.data = bytearray()

    def write(self, chunk: bytes) -> int:
        if len(self.data) + len(chunk) > self._LIMIT:
            raise InvalidArgument("signature payload larger than 1 MiB")
        self.data += chunk
        return len(chunk)

    def commit(self, expected_digest: str, expected_size: int) -> str:
        actual = "sha256:" + hashlib.sha256(self.data).hexdigest()
        if actual != expected_digest or len(self.data) != expected_size:
            raise InvalidArgument(f"signature payload {expected_digest}: got {actual}")
        return actual

    def abort(self) -> None:
        self.data.clear()


class _SharedExclusiveLock:
    """Many pulls at once, or one garbage collection, never both."""

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._shared = 0
        self._exclusive = False

    @contextlib.contextmanager
    def shared(self) -> Iterator[None]:
        with self._cond:
            self._cond.wait_for(lambda: not self._exclusive)
            self._shared += 1
        try:
            yield
        finally:
            with self._cond:
                self._shared -= 1
                self._cond.notify_all()

    @contextlib.contextmanager
    def exclusive(self) -> Iterator[None]:
        with self._cond:
            self._cond.wait_for(lambda: not self._exclusive and self._shared == 0)
            self._exclusive = True
        try:
            yield
        finally:
            with self._cond:
                self._exclusive = False
                self._cond.notify_all()

"""Read image archives for `images import`: OCI image layouts and `docker save` tars.

Either kind may be gzip-compressed. Blobs go into the content store with their digests
verified; nothing is extracted to disk by path, so hostile member names cannot reach the
filesystem. Member count and total size are bounded against archive bombs.

    OCI layout:   oci-layout, index.json, blobs/<alg>/<hex>        names from index annotations
    docker save:  manifest.json [{Config, RepoTags, Layers}] + the files it names
"""

from __future__ import annotations

import json
import posixpath
import tarfile
from dataclasses import dataclass, field
from pathlib import Path

from observe_rt.errors import InvalidArgument
from observe_rt.oci import media
from observe_rt.oci.store import ContentStore

NAME_ANNOTATIONS = ("io.containerd.image.name", "org.opencontainers.image.ref.name")
MAX_MEMBERS = 100_000
MAX_TOTAL_BYTES = 64 << 30
_MAX_LINK_HOPS = 16


@dataclass
class FoundImage:
    manifest_digest: str
    manifest: dict
    names: list[str] = field(default_factory=list)


def read(path: Path, content: ContentStore) -> list[FoundImage]:
    """Store the archive's blobs and return the images it holds (for this host's platform)."""
    try:
        tar = tarfile.open(path, "r:*")  # noqa: SIM115 - closed by the with below
    except (OSError, tarfile.TarError) as err:
        raise InvalidArgument(f"import {path}: not a readable tar archive: {err}") from None
    with tar:
        archive = _Archive(path, tar)
        if "oci-layout" in archive.members and "index.json" in archive.members:
            return _read_oci_layout(archive, content)
        if "manifest.json" in archive.members:
            return _read_docker_save(archive, content)
    raise InvalidArgument(
        f"import {path}: neither an OCI layout (oci-layout, index.json) nor a docker save "
        "archive (manifest.json)"
    )


class _Archive:
    def __init__(self, path: Path, tar: tarfile.TarFile) -> None:
        self.path, self.tar = path, tar
        self.members: dict[str, tarfile.TarInfo] = {}
        total = 0
        for count, member in enumerate(tar, start=1):
            if count > MAX_MEMBERS:
                raise InvalidArgument(f"import {path}: more than {MAX_MEMBERS} entries")
            total += member.size
            if total > MAX_TOTAL_BYTES:
                raise InvalidArgument(f"import {path}: more than {MAX_TOTAL_BYTES} bytes")
            self.members[_clean(member.name)] = member

    def member(self, name: str) -> tarfile.TarInfo:
        name = _clean(name)
        for _ in range(_MAX_LINK_HOPS):
            member = self.members.get(name)
            if member is None:
                raise InvalidArgument(f"import {self.path}: {name} is missing from the archive")
            if not member.issym():
                return member
            name = _clean(posixpath.join(posixpath.dirname(name), member.linkname))
        raise InvalidArgument(f"import {self.path}: {name}: too many symlinks")

    def open(self, name: str):
        member = self.member(name)
        stream = self.tar.extractfile(member) if member.isfile() else None
        if stream is None:
            raise InvalidArgument(f"import {self.path}: {name} is not a regular file")
        return stream

    def json(self, name: str):
        try:
            return json.loads(self.open(name).read(16 << 20))
        except ValueError as err:
            raise InvalidArgument(f"import {self.path}: {name}: not valid JSON: {err}") from None


def _clean(name: str) -> str:
    """Archive member names compared as relative, normalised paths (never used on disk)."""
    return posixpath.normpath("/" + name).lstrip("/")


def _read_oci_layout(archive: _Archive, content: ContentStore) -> list[FoundImage]:
    for name, member in archive.members.items():
        parts = name.split("/")
        if len(parts) == 3 and parts[0] == "blobs" and member.isfile():
            content.ingest(archive.open(name), f"{parts[1]}:{parts[2]}", member.size)
    images = []
    for descriptor in archive.json("index.json").get("manifests") or []:
        annotations = descriptor.get("annotations") or {}
        names = [annotations[k] for k in NAME_ANNOTATIONS if _looks_like_name(annotations.get(k))]
        digest, manifest = _platform_manifest(content, descriptor, str(archive.path))
        images.append(FoundImage(digest, manifest, names[:1]))
    return images


def _looks_like_name(value: str | None) -> bool:
    """A full image name (busybox:1.36, example.com/app), not a bare tag like "1.36"."""
    return bool(value) and ("/" in value or ":" in value)


def _platform_manifest(content: ContentStore, descriptor: dict, where: str) -> tuple[str, dict]:
    digest = descriptor["digest"]
    document = json.loads(content.read_bytes(digest))
    media_type = descriptor.get("mediaType") or document.get("mediaType") or media.OCI_MANIFEST
    if media.kind_of(media_type) == "index":
        chosen = media.select_platform(document, media.host_platform(), f"{where} {digest}")
        return _platform_manifest(content, chosen, where)
    return digest, document


def _read_docker_save(archive: _Archive, content: ContentStore) -> list[FoundImage]:
    images = []
    for i, entry in enumerate(archive.json("manifest.json")):
        if not isinstance(entry, dict) or "Config" not in entry or "Layers" not in entry:
            raise InvalidArgument(
                f"import {archive.path}: manifest.json[{i}]: needs Config, Layers"
            )
        config = _ingest_member(archive, content, entry["Config"])
        layers = [_layer_descriptor(archive, content, name) for name in entry["Layers"]]
        manifest = {
            "schemaVersion": 2,
            "mediaType": media.OCI_MANIFEST,
            "config": {"mediaType": media.OCI_CONFIG, "digest": config[0], "size": config[1]},
            "layers": layers,
        }
        digest = content.put_bytes(json.dumps(manifest, separators=(",", ":")).encode())
        images.append(FoundImage(digest, manifest, list(entry.get("RepoTags") or [])))
    return images


def _ingest_member(archive: _Archive, content: ContentStore, name: str) -> tuple[str, int]:
    member = archive.member(name)
    return content.ingest(archive.open(name), None, member.size), member.size


def _layer_descriptor(archive: _Archive, content: ContentStore, name: str) -> dict:
    head = archive.open(name).read(4)
    digest, size = _ingest_member(archive, content, name)
    if head[:2] == b"\x1f\x8b":
        media_type = media.OCI_LAYER_GZIP
    elif head == b"\x28\xb5\x2f\xfd":
        media_type = media.OCI_LAYER_ZSTD
    else:
        media_type = media.OCI_LAYER
    return {"mediaType": media_type, "digest": digest, "size": size}

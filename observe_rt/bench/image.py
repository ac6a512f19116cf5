"""Build OCI and Docker images in memory and push them to a loopback registry.

Shared by `bench pull` and the integration tests (tests/support/images.py re-exports these and
adds its busybox fixtures). Layers are reproducible (fixed mtimes and owners), so the same build
gives the same digests. push() speaks the distribution API (monolithic upload) to 127.0.0.1 only.
"""

from __future__ import annotations

import base64
import gzip
import hashlib
import io
import json
import re
import tarfile
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlencode, urljoin, urlsplit

import zstandard

from observe_rt.oci import media

MTIME = 1_700_000_000
CREATED = "2023-11-14T22:13:20Z"
LOOPBACK = ("127.0.0.1", "localhost", "::1")


@dataclass(frozen=True)
class Blob:
    media_type: str
    data: bytes = field(repr=False)

    @property
    def digest(self) -> str:
        return "sha256:" + hashlib.sha256(self.data).hexdigest()

    def descriptor(self, **extra) -> dict:
        return {"mediaType": self.media_type, "digest": self.digest, "size": len(self.data)} | extra


@dataclass
class Image:
    """A manifest, or an index of manifests, with every blob it needs."""

    top: Blob
    blobs: dict[str, Blob] = field(default_factory=dict)  # digest -> blob (children included)
    platform: dict | None = None

    @property
    def digest(self) -> str:
        return self.top.digest

    def manifest(self) -> dict:
        return json.loads(self.top.data)


# Layers ------------------------------------------------------------------------------------------


def tar_bytes(entries: list[tarfile.TarInfo | tuple[tarfile.TarInfo, bytes]]) -> bytes:
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for entry in entries:
            info, data = entry if isinstance(entry, tuple) else (entry, None)
            info.mtime, info.uname, info.gname = MTIME, "root", "root"
            tar.addfile(info, io.BytesIO(data) if data is not None else None)
    return out.getvalue()


def directory(name: str, mode: int = 0o755) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type, info.mode = tarfile.DIRTYPE, mode
    return info


def regular(name: str, data: bytes, mode: int = 0o644) -> tuple[tarfile.TarInfo, bytes]:
    info = tarfile.TarInfo(name)
    info.size, info.mode = len(data), mode
    return info, data


def link(name: str, target: str, hard: bool = False) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type = tarfile.LNKTYPE if hard else tarfile.SYMTYPE
    info.linkname, info.mode = target, 0o777
    return info


def compress(data: bytes, compression: str) -> bytes:
    if compression == "gzip":
        return gzip.compress(data, mtime=0)
    if compression == "zstd":
        return zstandard.ZstdCompressor().compress(data)
    return data


OCI_LAYER = {"gzip": media.OCI_LAYER_GZIP, "zstd": media.OCI_LAYER_ZSTD, "none": media.OCI_LAYER}
DOCKER_LAYER = {
    "gzip": media.DOCKER_LAYER_GZIP,
    "zstd": media.OCI_LAYER_ZSTD,
    "none": media.DOCKER_LAYER,
}


# Images ------------------------------------------------------------------------------------------


def build_image(
    layer_tars: list[bytes],
    compressions: list[str],
    platform: dict,
    style: str = "oci",
    config: dict | None = None,
) -> Image:
    """A single-platform image; `style` "docker" gives Docker schema2 media types."""
    layer_types = OCI_LAYER if style == "oci" else DOCKER_LAYER
    layers = [
        Blob(layer_types[compression], compress(tar, compression))
        for tar, compression in zip(layer_tars, compressions, strict=True)
    ]
    diff_ids = ["sha256:" + hashlib.sha256(tar).hexdigest() for tar in layer_tars]
    config_blob = config_blob_for(platform, diff_ids, config, style)
    return assemble(config_blob, [layer.descriptor() for layer in layers], platform, style,
                    {layer.digest: layer for layer in layers})  # fmt: skip


def config_blob_for(
    platform: dict,
    diff_ids: list[str],
    config: dict | None = None,
    style: str = "oci",
    created_by: str = "tests/support/images.py",
) -> Blob:
    """The image config: platform, process defaults and the uncompressed layer digests."""
    document = {
        "created": CREATED,
        **platform,
        "config": config or {"Env": ["PATH=/bin"], "Cmd": ["/bin/sh"]},
        "rootfs": {"type": "layers", "diff_ids": diff_ids},
        "history": [{"created": CREATED, "created_by": created_by}] * len(diff_ids),
    }
    return Blob(media.OCI_CONFIG if style == "oci" else media.DOCKER_CONFIG, canonical(document))


def assemble(
    config: Blob, layers: list[dict], platform: dict, style: str = "oci", blobs=None
) -> Image:
    """The manifest over a config blob and layer descriptors; `blobs` are the layers' bytes."""
    manifest_type = media.OCI_MANIFEST if style == "oci" else media.DOCKER_MANIFEST
    manifest = {
        "schemaVersion": 2,
        "mediaType": manifest_type,
        "config": config.descriptor(),
        "layers": layers,
    }
    return Image(Blob(manifest_type, canonical(manifest)), {config.digest: config, **(blobs or {})},
                 platform)  # fmt: skip


def host_platform() -> dict:
    host = media.host_platform()
    return {"os": host.os, "architecture": host.architecture} | (
        {"variant": host.variant} if host.variant else {}
    )


def canonical(document: dict) -> bytes:
    return json.dumps(document, separators=(",", ":"), sort_keys=True).encode()


# Push --------------------------------------------------------------------------------------------


def push(image: Image, registry_url: str, name: str, tag: str, auth=None) -> str:
    """Push `image` (a manifest or an index with its children) as name:tag; returns its digest."""
    session = PushSession(registry_url, name, auth)
    session.push_tree(image, image.top)
    session.put_manifest(image.top, tag)
    return image.digest


class PushSession:
    """Uploads to one repository of a loopback registry, answering basic and bearer challenges."""

    def __init__(self, base: str, name: str, auth: tuple[str, str] | None = None) -> None:
        base = base.rstrip("/")
        if urlsplit(base).hostname not in LOOPBACK:
            raise ValueError(f"push goes only to loopback registries, not {base}")
        self.base, self.name, self.auth = base, name, auth
        self.authorization: str | None = None
        # No proxies from the environment: this traffic stays on 127.0.0.1.
        self.opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))

    def push_tree(self, image: Image, top: Blob) -> None:
        document = json.loads(top.data)
        for child in document.get("manifests", []):
            child_blob = Blob(child["mediaType"], image.blobs[child["digest"]].data)
            self.push_tree(image, child_blob)
            self.put_manifest(child_blob, child["digest"])
        for descriptor in [document.get("config"), *document.get("layers", [])]:
            if descriptor:
                self.push_blob(image.blobs[descriptor["digest"]].data, descriptor["digest"])

    def push_blob(self, data: bytes | Path, digest: str) -> None:
        """Upload a blob given as bytes or as a file (streamed, never read whole)."""
        url = f"{self.base}/v2/{self.name}/blobs/{digest}"
        if self.request("HEAD", url)[0] == 200:
            return
        status, headers, _ = self.request("POST", f"{self.base}/v2/{self.name}/blobs/uploads/")
        if status != 202:
            raise RuntimeError(f"starting an upload to {self.name}: HTTP {status}")
        location = urljoin(self.base + "/", headers["Location"])
        location += ("&" if "?" in location else "?") + urlencode({"digest": digest})
        content = {"Content-Type": "application/octet-stream"}
        if isinstance(data, Path):
            with open(data, "rb") as file:
                content["Content-Length"] = str(data.stat().st_size)
                status, _, body = self.request("PUT", location, file, content)
        else:
            status, _, body = self.request("PUT", location, data, content)
        if status != 201:
            raise RuntimeError(f"uploading {digest} to {self.name}: HTTP {status} {body[:300]}")

    def put_manifest(self, blob: Blob, reference: str) -> None:
        url = f"{self.base}/v2/{self.name}/manifests/{reference}"
        status, _, body = self.request("PUT", url, blob.data, {"Content-Type": blob.media_type})
        if status != 201:
            raise RuntimeError(f"putting manifest {self.name}:{reference}: HTTP {status} {body}")

    def request(self, method: str, url: str, data=None, headers=None):
        for _ in range(2):
            if hasattr(data, "seek"):
                data.seek(0)  # a file body is sent again after a 401
            request = urllib.request.Request(url, data=data, method=method)
            for key, value in (headers or {}).items():
                request.add_header(key, value)
            if self.authorization:
                request.add_header("Authorization", self.authorization)
            try:
                with self.opener.open(request, timeout=60) as response:
                    return response.status, response.headers, response.read()
            except urllib.error.HTTPError as error:
                answer = (error.code, error.headers, error.read())
            if answer[0] != 401 or not self.auth:
                return answer
            self.authorization = self._answer(answer[1].get("WWW-Authenticate", ""))
        return answer

    def _answer(self, challenge: str) -> str:
        basic = "Basic " + base64.b64encode(":".join(self.auth).encode()).decode()
        if challenge.lower().startswith("basic"):
            return basic
        params = dict(re.findall(r'(\w+)="([^"]*)"', challenge))
        query = urlencode({"service": params.get("service", ""), "scope": self._scope()})
        request = urllib.request.Request(params["realm"] + "?" + query)
        request.add_header("Authorization", basic)
        with self.opener.open(request, timeout=30) as response:
            answer = json.loads(response.read())
        return "Bearer " + (answer.get("token") or answer["access_token"])

    def _scope(self) -> str:
        return f"repository:{self.name}:pull,push"

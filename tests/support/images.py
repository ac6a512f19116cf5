"""Build OCI and Docker images from Debian's busybox-static, write OCI layouts, push to registries.

Layers are reproducible (fixed mtimes and owners), so the same build gives the same digests:
  1. bin/busybox and a symlink per applet
  2. files: etc/motd, etc/removed-later, a hardlink, a symlink, a setuid file, opaque/{old-a,old-b}
  3. whiteouts: etc/.wh.removed-later and opaque/.wh..wh..opq plus opaque/new-file
The multi-arch index holds this host's busybox image and a tiny fake image for the other of
amd64/arm64. push() speaks the distribution API (monolithic upload) to 127.0.0.1 only.
"""

from __future__ import annotations

import base64
import gzip
import hashlib
import io
import json
import re
import subprocess
import tarfile
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlencode, urljoin, urlsplit

import zstandard

from observe_rt.oci import media

BUSYBOX = Path("/bin/busybox")
MTIME = 1_700_000_000
CREATED = "2023-11-14T22:13:20Z"


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


def busybox_applets() -> list[str]:
    output = subprocess.run([str(BUSYBOX), "--list"], capture_output=True, text=True, check=True)
    return sorted(name for name in output.stdout.split() if name and name != "busybox")


def busybox_layer() -> bytes:
    entries = [directory("bin"), regular("bin/busybox", BUSYBOX.read_bytes(), 0o755)]
    entries += [link(f"bin/{applet}", "busybox") for applet in busybox_applets()]
    return tar_bytes(entries)


def files_layer() -> bytes:
    return tar_bytes([
        directory("etc"),
        regular("etc/motd", b"hello from layer 2\n"),
        regular("etc/removed-later", b"a whiteout in layer 3 hides me\n"),
        directory("data", 0o700),
        regular("data/file.txt", b"payload\n"),
        link("data/hardlink.txt", "data/file.txt", hard=True),
        link("data/symlink.txt", "file.txt"),
        regular("data/setuid", b"#!/bin/sh\n", 0o4755),
        directory("opaque"),
        regular("opaque/old-a", b"hidden by the opaque marker\n"),
        regular("opaque/old-b", b"hidden by the opaque marker\n"),
    ])  # fmt: skip


def whiteout_layer() -> bytes:
    return tar_bytes([
        directory("etc"),
        regular("etc/.wh.removed-later", b""),
        directory("opaque"),
        regular("opaque/.wh..wh..opq", b""),
        regular("opaque/new-file", b"after the opaque marker\n"),
    ])  # fmt: skip


def compress(data: bytes, compression: str) -> bytes:
    if compression == "gzip":
        return gzip.compress(data, mtime=0)
    if compression == "zstd":
        return zstandard.ZstdCompressor().compress(data)
    return data


_OCI_LAYER = {"gzip": media.OCI_LAYER_GZIP, "zstd": media.OCI_LAYER_ZSTD, "none": media.OCI_LAYER}
_DOCKER_LAYER = {
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
    layer_types = _OCI_LAYER if style == "oci" else _DOCKER_LAYER
    layers = [
        Blob(layer_types[compression], compress(tar, compression))
        for tar, compression in zip(layer_tars, compressions, strict=True)
    ]
    config_doc = {
        "created": CREATED,
        **platform,
        "config": config or {"Env": ["PATH=/bin"], "Cmd": ["/bin/sh"]},
        "rootfs": {
            "type": "layers",
            "diff_ids": ["sha256:" + hashlib.sha256(tar).hexdigest() for tar in layer_tars],
        },
        "history": [{"created": CREATED, "created_by": "tests/support/images.py"}] * len(layers),
    }
    config_type = media.OCI_CONFIG if style == "oci" else media.DOCKER_CONFIG
    config_blob = Blob(config_type, _json(config_doc))
    manifest_type = media.OCI_MANIFEST if style == "oci" else media.DOCKER_MANIFEST
    manifest = {
        "schemaVersion": 2,
        "mediaType": manifest_type,
        "config": config_blob.descriptor(),
        "layers": [layer.descriptor() for layer in layers],
    }
    blobs = {blob.digest: blob for blob in [config_blob, *layers]}
    return Image(Blob(manifest_type, _json(manifest)), blobs, platform)


def host_platform() -> dict:
    host = media.host_platform()
    return {"os": host.os, "architecture": host.architecture} | (
        {"variant": host.variant} if host.variant else {}
    )


def other_platform() -> dict:
    """amd64 on an arm64 host and arm64 anywhere else."""
    if media.host_platform().architecture == "arm64":
        return {"os": "linux", "architecture": "amd64"}
    return {"os": "linux", "architecture": "arm64", "variant": "v8"}


def busybox_image(compressions=("gzip", "zstd", "none"), style: str = "oci") -> Image:
    tars = [busybox_layer(), files_layer(), whiteout_layer()]
    return build_image(tars, list(compressions), host_platform(), style)


def fake_image(platform: dict, style: str = "oci") -> Image:
    tar = tar_bytes([regular("README", f"fake image for {platform}\n".encode())])
    return build_image([tar], ["gzip"], platform, style)


def build_index(images: list[Image], style: str = "oci") -> Image:
    index_type = media.OCI_INDEX if style == "oci" else media.DOCKER_MANIFEST_LIST
    document = {
        "schemaVersion": 2,
        "mediaType": index_type,
        "manifests": [image.top.descriptor(platform=image.platform) for image in images],
    }
    blobs: dict[str, Blob] = {}
    for image in images:
        blobs |= image.blobs | {image.digest: image.top}
    return Image(Blob(index_type, _json(document)), blobs)


def multiarch_image(style: str = "oci") -> Image:
    """An index with this host's busybox image and a fake one for the other architecture."""
    return build_index([busybox_image(style=style), fake_image(other_platform(), style)], style)


def write_layout(dest: Path, images: dict[str, Image]) -> Path:
    """An OCI image layout: oci-layout, index.json (ref.name annotations), blobs/sha256/."""
    blob_dir = dest / "blobs" / "sha256"
    blob_dir.mkdir(parents=True, exist_ok=True)
    manifests = []
    for tag, image in images.items():
        for blob in [image.top, *image.blobs.values()]:
            (blob_dir / blob.digest.split(":")[1]).write_bytes(blob.data)
        annotations = {"org.opencontainers.image.ref.name": tag}
        manifests.append(image.top.descriptor(annotations=annotations))
    (dest / "oci-layout").write_text(json.dumps({"imageLayoutVersion": "1.0.0"}))
    index = {"schemaVersion": 2, "mediaType": media.OCI_INDEX, "manifests": manifests}
    (dest / "index.json").write_text(json.dumps(index, indent=1))
    return dest


def read_layout(layout: Path, tag: str) -> Image:
    """The image tagged `tag` in an OCI layout, with every blob it references."""
    index = json.loads((layout / "index.json").read_text())
    for entry in index["manifests"]:
        if entry.get("annotations", {}).get("org.opencontainers.image.ref.name") == tag:
            blobs = {
                f"sha256:{path.name}": Blob("", path.read_bytes())
                for path in (layout / "blobs" / "sha256").iterdir()
            }
            top = Blob(entry["mediaType"], blobs.pop(entry["digest"]).data)
            return Image(top, blobs)
    raise KeyError(f"no image tagged {tag!r} in {layout}")


def _json(document: dict) -> bytes:
    return json.dumps(document, separators=(",", ":"), sort_keys=True).encode()


# Push --------------------------------------------------------------------------------------------


def push(
    image: Image | Path,
    registry_url: str,
    name: str,
    tag: str,
    auth: tuple[str, str] | None = None,
    layout_tag: str | None = None,
) -> str:
    """Push `image` (or the image tagged `layout_tag` in an OCI layout) as name:tag."""
    if isinstance(image, Path):
        image = read_layout(image, layout_tag or tag)
    session = _PushSession(registry_url.rstrip("/"), name, auth)
    session.push_tree(image, image.top)
    session.put_manifest(image.top, tag)
    return image.digest


class _PushSession:
    def __init__(self, base: str, name: str, auth: tuple[str, str] | None) -> None:
        if urlsplit(base).hostname not in ("127.0.0.1", "localhost", "::1"):
            raise ValueError(f"tests push only to loopback registries, not {base}")
        self.base, self.name, self.auth = base, name, auth
        self.authorization: str | None = None
        # No proxies from the environment: test traffic stays on 127.0.0.1.
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

    def push_blob(self, data: bytes, digest: str) -> None:
        url = f"{self.base}/v2/{self.name}/blobs/{digest}"
        if self.request("HEAD", url)[0] == 200:
            return
        status, headers, _ = self.request("POST", f"{self.base}/v2/{self.name}/blobs/uploads/")
        if status != 202:
            raise RuntimeError(f"starting an upload to {self.name}: HTTP {status}")
        location = urljoin(self.base + "/", headers["Location"])
        location += ("&" if "?" in location else "?") + urlencode({"digest": digest})
        content = {"Content-Type": "application/octet-stream"}
        status, _, body = self.request("PUT", location, data, content)
        if status != 201:
            raise RuntimeError(f"uploading {digest} to {self.name}: HTTP {status} {body[:300]}")

    def put_manifest(self, blob: Blob, reference: str) -> None:
        url = f"{self.base}/v2/{self.name}/manifests/{reference}"
        status, _, body = self.request("PUT", url, blob.data, {"Content-Type": blob.media_type})
        if status != 201:
            raise RuntimeError(f"putting manifest {self.name}:{reference}: HTTP {status} {body}")

    def request(self, method: str, url: str, data: bytes | None = None, headers=None):
        for _ in range(2):
            request = urllib.request.Request(url, data=data, method=method)
            for key, value in (headers or {}).items():
                request.add_header(key, value)
            if self.authorization:
                request.add_header("Authorization", self.authorization)
            try:
                with self.opener.open(request, timeout=30) as response:
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

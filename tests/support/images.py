"""Build OCI and Docker images from Debian's busybox-static, write OCI layouts, push to registries.

Layers are reproducible (fixed mtimes and owners), so the same build gives the same digests:
  1. bin/busybox and a symlink per applet
  2. files: etc/motd, etc/removed-later, a hardlink, a symlink, a setuid file, opaque/{old-a,old-b}
  3. whiteouts: etc/.wh.removed-later and opaque/.wh..wh..opq plus opaque/new-file
The multi-arch index holds this host's busybox image and a tiny fake image for the other of
amd64/arm64. push() speaks the distribution API (monolithic upload) to 127.0.0.1 only.
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

from observe_rt.bench.image import (
    CREATED,
    MTIME,
    Blob,
    Image,
    PushSession,
    build_image,
    canonical,
    compress,
    directory,
    host_platform,
    link,
    regular,
    tar_bytes,
)
from observe_rt.bench.image import push as push_image
from observe_rt.oci import media

# The generic builders and the pusher live in the package so `bench pull` shares them.
__all__ = [
    "CREATED", "MTIME", "Blob", "Image", "PushSession", "build_image", "compress", "directory",
    "host_platform", "link", "regular", "tar_bytes",
]  # fmt: skip

BUSYBOX = Path("/bin/busybox")


# Layers ------------------------------------------------------------------------------------------


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


# Images ------------------------------------------------------------------------------------------


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
    return Image(Blob(index_type, canonical(document)), blobs)


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
    return push_image(image, registry_url, name, tag, auth)

"""Fuzz target: manifest, index and image config parsing, in the order a pull meets them.

registry.resolve parses the document (media.parse_document), picks a platform from an index
(media.select_platform) and reads the chosen descriptor; images._fetch_parts then reads the
config descriptor and checks manifest and config together (images.parse_image). Documented
errors: ObserveRtError (ManifestError and its kinds, InvalidArgument).
"""

from __future__ import annotations

import json
import sys

from tests.fuzz import harness

with harness.instrumented():
    from observe_rt.errors import ObserveRtError
    from observe_rt.oci import images, media
    from observe_rt.oci.registry import Descriptor

DIGEST = "sha256:" + "ab" * 32
LAYER = {"mediaType": media.OCI_LAYER_GZIP, "digest": DIGEST, "size": 10}
MANIFEST = {
    "schemaVersion": 2,
    "mediaType": media.OCI_MANIFEST,
    "config": {"mediaType": media.OCI_CONFIG, "digest": DIGEST, "size": 7},
    "layers": [LAYER, dict(LAYER, mediaType=media.OCI_LAYER_ZSTD)],
}
INDEX = {
    "schemaVersion": 2,
    "mediaType": media.OCI_INDEX,
    "manifests": [
        {"mediaType": media.OCI_MANIFEST, "digest": DIGEST, "size": 5,
         "platform": {"os": "linux", "architecture": arch, "variant": variant}}
        for arch, variant in (("amd64", ""), ("arm", "v7"), ("arm64", "8"))
    ],
}  # fmt: skip
CONFIG = {"rootfs": {"type": "layers", "diff_ids": [DIGEST, DIGEST]}, "created": "2020-01-01"}
CONTENT_TYPES = ["", "application/json", media.OCI_MANIFEST, media.OCI_INDEX,
                 media.DOCKER_MANIFEST_LIST, "text/plain; charset=utf-8", "x/y"]  # fmt: skip
PLATFORMS = [
    media.host_platform(),
    media.Platform("linux", "arm", "v6"),
    media.Platform("linux", "arm64", "v8"),
    media.Platform("windows", "amd64"),
]


def one_input(data: bytes) -> None:
    fdp = harness.provider(data)
    content_type = fdp.PickValueInList(CONTENT_TYPES)
    platform = fdp.PickValueInList(PLATFORMS)
    document = harness.mutate_json(fdp.PickValueInList([MANIFEST, INDEX]), fdp)
    config = harness.mutate_json(CONFIG, fdp, 2)
    raw = json.dumps(document).encode() if fdp.ConsumeBool() else fdp.ConsumeBytes(4096)
    try:
        pull(raw, content_type, platform, json.dumps(config).encode())
    except ObserveRtError:
        pass


def pull(raw: bytes, content_type: str, platform: media.Platform, config: bytes) -> None:
    media_type, document = media.parse_document(raw, content_type)
    if media.kind_of(media_type) == "index":
        chosen = media.select_platform(json.loads(raw), platform)
        media.kind_of(chosen["mediaType"])
        Descriptor.from_dict(chosen)
        return
    Descriptor.from_dict(document["config"])
    images.parse_image(DIGEST, document, config)


if __name__ == "__main__":
    seeds = [json.dumps(doc).encode() for doc in (MANIFEST, INDEX)] + [b"\x00" * 64]
    harness.main("manifest", one_input, seeds)
    sys.exit(0)

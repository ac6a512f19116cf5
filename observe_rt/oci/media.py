"""OCI and Docker media types, manifest checks and platform selection.

A registry answers a manifest request with one of four documents: an OCI index or a Docker
manifest list (one entry per platform), or an OCI manifest or a Docker schema2 manifest (config +
layers). Docker schema1 is refused, as containerd 2.x does. Platform matching follows containerd's:
the os and architecture must be equal; arm64 treats "" and "v8" alike; 32-bit arm v7 also runs
v6 and v5 images, preferring the closest variant.
"""

from __future__ import annotations

import json
import platform as _platform
from dataclasses import dataclass

from observe_rt.errors import ObserveRtError
from observe_rt.oci.reference import validate_digest

OCI_INDEX = "application/vnd.oci.image.index.v1+json"
OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_CONFIG = "application/vnd.oci.image.config.v1+json"
OCI_LAYER = "application/vnd.oci.image.layer.v1.tar"
OCI_LAYER_GZIP = "application/vnd.oci.image.layer.v1.tar+gzip"
OCI_LAYER_ZSTD = "application/vnd.oci.image.layer.v1.tar+zstd"
OCI_FOREIGN_LAYER = "application/vnd.oci.image.layer.nondistributable.v1.tar"
OCI_FOREIGN_LAYER_GZIP = "application/vnd.oci.image.layer.nondistributable.v1.tar+gzip"
OCI_FOREIGN_LAYER_ZSTD = "application/vnd.oci.image.layer.nondistributable.v1.tar+zstd"

DOCKER_MANIFEST_LIST = "application/vnd.docker.distribution.manifest.list.v2+json"
DOCKER_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"
DOCKER_CONFIG = "application/vnd.docker.container.image.v1+json"
DOCKER_LAYER = "application/vnd.docker.image.rootfs.diff.tar"
DOCKER_LAYER_GZIP = "application/vnd.docker.image.rootfs.diff.tar.gzip"
DOCKER_LAYER_ZSTD = "application/vnd.docker.image.rootfs.diff.tar.zstd"
DOCKER_FOREIGN_LAYER = "application/vnd.docker.image.rootfs.foreign.diff.tar.gzip"
DOCKER_SCHEMA1 = "application/vnd.docker.distribution.manifest.v1+json"
DOCKER_SCHEMA1_SIGNED = "application/vnd.docker.distribution.manifest.v1+prettyjws"

INDEX_TYPES = frozenset({OCI_INDEX, DOCKER_MANIFEST_LIST})
MANIFEST_TYPES = frozenset({OCI_MANIFEST, DOCKER_MANIFEST})
CONFIG_TYPES = frozenset({OCI_CONFIG, DOCKER_CONFIG})
# Every manifest type we can use, for the Accept header of a manifest request.
ACCEPT_MANIFESTS = ", ".join([OCI_INDEX, DOCKER_MANIFEST_LIST, OCI_MANIFEST, DOCKER_MANIFEST])

LAYER_COMPRESSION = {
    OCI_LAYER: "none",
    OCI_LAYER_GZIP: "gzip",
    OCI_LAYER_ZSTD: "zstd",
    OCI_FOREIGN_LAYER: "none",
    OCI_FOREIGN_LAYER_GZIP: "gzip",
    OCI_FOREIGN_LAYER_ZSTD: "zstd",
    DOCKER_LAYER: "none",
    DOCKER_LAYER_GZIP: "gzip",
    DOCKER_LAYER_ZSTD: "zstd",
    DOCKER_FOREIGN_LAYER: "gzip",
}
FOREIGN_LAYER_TYPES = frozenset(
    {OCI_FOREIGN_LAYER, OCI_FOREIGN_LAYER_GZIP, OCI_FOREIGN_LAYER_ZSTD, DOCKER_FOREIGN_LAYER}
)
# Content types that say nothing; the document's own mediaType field (or shape) decides.
_GENERIC_CONTENT_TYPES = {"", "application/json", "text/plain", "application/octet-stream"}


class ManifestError(ObserveRtError):
    """A manifest or index that observe-rt cannot use (malformed, unknown type)."""

    grpc_code = "FAILED_PRECONDITION"


class UnsupportedMediaType(ManifestError):
    pass


class NoMatchingPlatform(ManifestError):
    grpc_code = "NOT_FOUND"


@dataclass(frozen=True)
class Platform:
    os: str
    architecture: str
    variant: str = ""

    def __str__(self) -> str:
        return "/".join(part for part in (self.os, self.architecture, self.variant) if part)


_MACHINE_TO_PLATFORM = {
    "x86_64": ("amd64", ""),
    "amd64": ("amd64", ""),
    "aarch64": ("arm64", "v8"),
    "arm64": ("arm64", "v8"),
    "armv7l": ("arm", "v7"),
    "armv6l": ("arm", "v6"),
    "i386": ("386", ""),
    "i686": ("386", ""),
    "ppc64le": ("ppc64le", ""),
    "s390x": ("s390x", ""),
    "riscv64": ("riscv64", ""),
}


def normalize_platform(os: str, architecture: str, variant: str = "") -> Platform:
    """Canonical names: x86_64 -> amd64, aarch64 -> arm64/v8, "8" -> "v8", amd64 v1 -> ""."""
    os = (os or "").lower()
    architecture, default_variant = _MACHINE_TO_PLATFORM.get(
        (architecture or "").lower(), ((architecture or "").lower(), "")
    )
    variant = (variant or "").lower()
    if variant and variant[0].isdigit():
        variant = "v" + variant
    if architecture == "arm64" and variant in ("", "v8"):
        variant = "v8"
    elif architecture == "arm" and not variant and not default_variant:
        variant = "v7"
    elif architecture == "amd64" and variant == "v1":
        variant = ""
    return Platform(os, architecture, variant or default_variant)


def host_platform() -> Platform:
    return normalize_platform("linux", _platform.machine())


def kind_of(media_type: str) -> str:
    """'index' or 'manifest'; UnsupportedMediaType (saying what it is) for anything else."""
    if media_type in INDEX_TYPES:
        return "index"
    if media_type in MANIFEST_TYPES:
        return "manifest"
    if media_type in (DOCKER_SCHEMA1, DOCKER_SCHEMA1_SIGNED):
        raise UnsupportedMediaType(
            f"media type {media_type!r} (Docker schema1) is not supported; rebuild the image as "
            "Docker schema2 or OCI"
        )
    raise UnsupportedMediaType(
        f"unknown manifest media type {media_type!r}; expected one of {ACCEPT_MANIFESTS}"
    )


def layer_compression(media_type: str) -> str:
    """'gzip', 'zstd' or 'none' for a layer media type; UnsupportedMediaType otherwise."""
    try:
        return LAYER_COMPRESSION[media_type]
    except KeyError:
        raise UnsupportedMediaType(f"unknown layer media type {media_type!r}") from None


def parse_document(raw: bytes, content_type: str | None = None) -> tuple[str, dict]:
    """Parse a manifest or index; returns (media type, document) after checking its shape.

    The media type is the Content-Type the registry sent, unless that says nothing
    (application/json...), when the document's mediaType field or its shape decides.
    """
    try:
        document = json.loads(raw)
    except (ValueError, UnicodeDecodeError) as error:
        raise ManifestError(f"manifest is not valid JSON: {error}") from None
    if not isinstance(document, dict):
        raise ManifestError("manifest is not a JSON object")
    media_type = _media_type_of(document, (content_type or "").split(";")[0].strip())
    kind = kind_of(media_type)
    if kind == "index":
        _check_descriptors(document.get("manifests"), "manifests")
    else:
        _check_descriptors([document.get("config")], "config")
        _check_descriptors(document.get("layers"), "layers")
    return media_type, document


def _media_type_of(document: dict, content_type: str) -> str:
    declared = document.get("mediaType")
    if declared is not None and not isinstance(declared, str):
        kind = _json_type(declared)
        raise ManifestError(f"manifest field 'mediaType' must be a string, not {kind}")
    if document.get("schemaVersion") == 1:
        return DOCKER_SCHEMA1
    if content_type not in _GENERIC_CONTENT_TYPES:
        if declared and declared != content_type:
            raise ManifestError(
                f"manifest says mediaType {declared!r} but was served as {content_type!r}"
            )
        return content_type
    if declared:
        return declared
    if "manifests" in document:
        return OCI_INDEX
    if "config" in document and "layers" in document:
        return OCI_MANIFEST
    raise UnsupportedMediaType("manifest has no media type and is neither an index nor a manifest")


def _check_descriptors(descriptors: object, field: str) -> None:
    if not isinstance(descriptors, list):
        raise ManifestError(f"manifest field {field!r} must be a list of descriptors")
    for position, descriptor in enumerate(descriptors):
        where = f"manifest {field}" if field == "config" else f"manifest {field}[{position}]"
        if not isinstance(descriptor, dict):
            raise ManifestError(f"{where} is not a descriptor object")
        size = descriptor.get("size")
        if not isinstance(size, int) or isinstance(size, bool) or size < 0:
            raise ManifestError(f"{where}: size {size!r} is not a non-negative integer")
        if not isinstance(descriptor.get("mediaType"), str):
            raise ManifestError(f"{where}: mediaType is missing")
        try:
            validate_digest(descriptor.get("digest"))
        except ValueError as error:
            raise ManifestError(f"{where}: {error}") from None


def _variant_preference(wanted: Platform) -> list[str]:
    """Variants the wanted platform runs, best first."""
    if wanted.architecture == "arm" and wanted.variant in ("v7", "v6", "v5"):
        return ["v7", "v6", "v5"][["v7", "v6", "v5"].index(wanted.variant) :]
    return [wanted.variant]


def select_platform(
    index: dict | bytes, wanted: Platform | None = None, where: str = "index"
) -> dict:
    """The descriptor of the manifest in `index` that best suits `wanted` (default: this host)."""
    if isinstance(index, bytes | str):
        index = json.loads(index)
    if not isinstance(index, dict):
        raise ManifestError(f"{where} is not a JSON object")
    wanted = normalize_platform(*_fields(wanted or host_platform()))
    preference = _variant_preference(wanted)
    best: tuple[int, dict] | None = None
    available = []
    manifests = index.get("manifests") or []
    if not isinstance(manifests, list):
        raise ManifestError(f"{where}: field 'manifests' must be a list of descriptors")
    for position, descriptor in enumerate(manifests):
        offered = _offered_platform(descriptor, f"{where} manifests[{position}]")
        available.append(str(offered))
        if (offered.os, offered.architecture) != (wanted.os, wanted.architecture):
            continue
        if offered.variant in preference:
            rank = preference.index(offered.variant)
            if best is None or rank < best[0]:
                best = (rank, descriptor)
    if best is None:
        offered = ", ".join(available) or "none"
        raise NoMatchingPlatform(f"no manifest for {wanted} in {where} (available: {offered})")
    return best[1]


def _offered_platform(descriptor: object, where: str) -> Platform:
    """The platform a descriptor of an index names (none named: the empty platform)."""
    entry = descriptor.get("platform") if isinstance(descriptor, dict) else None
    fields = ("os", "architecture", "variant")
    if not isinstance(descriptor, dict) or not isinstance(entry or {}, dict):
        raise ManifestError(f"{where}: a descriptor and its platform must be JSON objects")
    values = [(entry or {}).get(name) or "" for name in fields]
    if not all(isinstance(value, str) for value in values):
        raise ManifestError(f"{where}: platform os, architecture and variant must be strings")
    return normalize_platform(*values)


def _fields(platform: Platform) -> tuple[str, str, str]:
    return platform.os, platform.architecture, platform.variant


def _json_type(value: object) -> str:
    """The JSON name of a value's type, for messages about a field of the wrong type."""
    names = {dict: "an object", list: "an array", str: "a string", bool: "a boolean"}
    return names.get(type(value), "a number" if isinstance(value, int | float) else "null")

"""Manifest media types, document checks and platform selection."""

import json

import pytest

from observe_rt.oci import media
from observe_rt.oci.media import Platform, normalize_platform, select_platform

DIGEST = "sha256:" + "b" * 64


def entry(os="linux", arch="amd64", variant=None, digest=DIGEST) -> dict:
    platform = {"os": os, "architecture": arch} | ({"variant": variant} if variant else {})
    return {"mediaType": media.OCI_MANIFEST, "digest": digest, "size": 10, "platform": platform}


def index(*entries) -> dict:
    return {"schemaVersion": 2, "mediaType": media.OCI_INDEX, "manifests": list(entries)}


@pytest.mark.parametrize(
    ("machine", "expected"),
    [
        ("x86_64", Platform("linux", "amd64")),
        ("aarch64", Platform("linux", "arm64", "v8")),
        ("armv7l", Platform("linux", "arm", "v7")),
        ("s390x", Platform("linux", "s390x")),
    ],
)
def test_machine_names_normalise_to_oci_platforms(machine, expected):
    assert normalize_platform("linux", machine) == expected


def test_variant_spellings_normalise():
    assert normalize_platform("Linux", "arm64", "8") == Platform("linux", "arm64", "v8")
    assert normalize_platform("linux", "amd64", "v1") == Platform("linux", "amd64")
    assert normalize_platform("linux", "arm") == Platform("linux", "arm", "v7")


def test_selects_the_host_entry_and_skips_attestations():
    amd = entry(digest="sha256:" + "1" * 64)
    arm = entry(arch="arm64", variant="v8", digest="sha256:" + "2" * 64)
    unknown = entry(os="unknown", arch="unknown", digest="sha256:" + "3" * 64)
    doc = index(unknown, arm, amd)
    assert select_platform(doc, Platform("linux", "amd64")) is amd
    assert select_platform(doc, normalize_platform("linux", "aarch64")) is arm
    assert select_platform(json.dumps(doc).encode(), Platform("linux", "amd64")) == amd


def test_arm64_without_variant_matches_v8():
    plain = entry(arch="arm64")
    assert select_platform(index(plain), Platform("linux", "arm64", "v8")) is plain


def test_arm_v7_prefers_its_variant_then_older_ones():
    v6, v7 = entry(arch="arm", variant="v6"), entry(arch="arm", variant="v7")
    assert select_platform(index(v6, v7), Platform("linux", "arm", "v7")) is v7
    assert select_platform(index(v6), Platform("linux", "arm", "v7")) is v6
    with pytest.raises(media.NoMatchingPlatform):
        select_platform(index(v7), Platform("linux", "arm", "v6"))


def test_no_match_lists_what_is_available():
    doc = index(entry(arch="arm64", variant="v8"), entry(arch="s390x"))
    with pytest.raises(media.NoMatchingPlatform) as raised:
        select_platform(doc, Platform("linux", "amd64"), where="example.com/app@sha256:abc")
    message = str(raised.value)
    assert "no manifest for linux/amd64 in example.com/app@sha256:abc" in message
    assert "available: linux/arm64/v8, linux/s390x" in message
    assert raised.value.grpc_code == "NOT_FOUND"


def manifest(**changes) -> bytes:
    layer = {"mediaType": media.OCI_LAYER_GZIP, "digest": DIGEST, "size": 3}
    config = {"mediaType": media.OCI_CONFIG, "digest": DIGEST, "size": 2}
    document = {"schemaVersion": 2, "mediaType": media.OCI_MANIFEST, "config": config}
    return json.dumps(document | {"layers": [layer]} | changes).encode()


def test_parse_document_takes_the_served_type_or_the_declared_one():
    assert media.parse_document(manifest(), media.OCI_MANIFEST)[0] == media.OCI_MANIFEST
    assert media.parse_document(manifest(), "application/json")[0] == media.OCI_MANIFEST
    undeclared = manifest(mediaType=None)
    assert media.parse_document(undeclared, None)[0] == media.OCI_MANIFEST
    listing = json.dumps(index(entry())).encode()
    assert media.parse_document(listing, f"{media.OCI_INDEX}; charset=utf-8")[0] == media.OCI_INDEX


@pytest.mark.parametrize(
    ("raw", "content_type", "words"),
    [
        (manifest(mediaType=None), "application/vnd.example+json", "unknown manifest media type"),
        (b'{"schemaVersion": 1, "fsLayers": []}', media.DOCKER_SCHEMA1_SIGNED, "schema1"),
        (manifest(), media.DOCKER_MANIFEST, "says mediaType"),
        (b"not json", media.OCI_MANIFEST, "not valid JSON"),
        (b"[]", media.OCI_MANIFEST, "not a JSON object"),
        (manifest(layers={}), media.OCI_MANIFEST, "'layers' must be a list"),
        (manifest(config={"mediaType": "x", "digest": DIGEST}), None, "size None"),
        (manifest(config={"mediaType": "x", "digest": "md5:1", "size": 1}), None, "config: digest"),
        (json.dumps({"schemaVersion": 2}).encode(), None, "neither an index nor a manifest"),
    ],
)
def test_unusable_documents_are_refused_clearly(raw, content_type, words):
    with pytest.raises(media.ManifestError, match=words):
        media.parse_document(raw, content_type)


def test_layer_types():
    assert media.layer_compression(media.OCI_LAYER_ZSTD) == "zstd"
    assert media.layer_compression(media.DOCKER_LAYER_GZIP) == "gzip"
    assert media.layer_compression(media.OCI_LAYER) == "none"
    assert media.DOCKER_FOREIGN_LAYER in media.FOREIGN_LAYER_TYPES
    with pytest.raises(media.UnsupportedMediaType, match="unknown layer media type"):
        media.layer_compression("application/vnd.example.layer")


def test_accept_header_names_all_four_manifest_types():
    for media_type in media.INDEX_TYPES | media.MANIFEST_TYPES:
        assert media_type in media.ACCEPT_MANIFESTS

"""Trust policy decisions and cosign signature checks, with keys made by the test."""

from __future__ import annotations

import base64
import json

import pytest
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec

from observe_rt.errors import InvalidArgument
from observe_rt.oci.policy import (
    SIGNATURE_ANNOTATION,
    SIMPLE_SIGNING,
    PolicyRejected,
    TrustPolicy,
    signature_tag,
)

DIGEST = "sha256:" + "ab" * 32


def keypair():
    private = ec.generate_private_key(ec.SECP256R1())
    pem = private.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return private, pem


def signature_artifact(private, digest=DIGEST, tamper=False):
    payload = json.dumps({
        "critical": {"identity": {"docker-reference": "example.com/app"},
                     "image": {"docker-manifest-digest": digest},
                     "type": "cosign container image signature"},
        "optional": None,
    }).encode()  # fmt: skip
    signature = base64.b64encode(private.sign(payload, ec.ECDSA(hashes.SHA256()))).decode()
    blobs = {"sha256:payload": payload + (b" " if tamper else b"")}
    manifest = {"layers": [{"mediaType": SIMPLE_SIGNING, "digest": "sha256:payload",
                            "annotations": {SIGNATURE_ANNOTATION: signature}}]}  # fmt: skip
    return manifest, blobs.__getitem__


def policy_with(scopes, default=None):
    return TrustPolicy.parse({
        "default": default or [{"type": "insecureAcceptAnything"}],
        "transports": {"docker": scopes},
    })  # fmt: skip


def no_signatures(tag):
    return None, None


def test_most_specific_scope_wins():
    policy = policy_with({
        "example.com": [{"type": "reject"}],
        "example.com/team": [{"type": "insecureAcceptAnything"}],
        "*.corp.example": [{"type": "reject"}],
    })  # fmt: skip
    assert policy.rule_for("example.com/team/app").scope == "example.com/team"
    assert policy.rule_for("example.com/other").scope == "example.com"
    assert policy.rule_for("registry.corp.example/x").scope == "*.corp.example"
    assert policy.rule_for("docker.io/library/busybox").scope == "default"
    policy.check("example.com/team/app", DIGEST, no_signatures)
    with pytest.raises(PolicyRejected, match="rejected by trust policy rule 'example.com'"):
        policy.check("example.com/other", DIGEST, no_signatures)


def test_signed_image_accepted_and_unsigned_or_wrong_key_rejected():
    private, pem = keypair()
    other, _ = keypair()
    policy = policy_with({"example.com/app": [
        {"type": "sigstoreSigned", "keyData": base64.b64encode(pem).decode()}]})  # fmt: skip
    seen = []

    def fetch(tag):
        seen.append(tag)
        return signature_artifact(private)

    policy.check("example.com/app", DIGEST, fetch)
    assert seen == [signature_tag(DIGEST)] == ["sha256-" + "ab" * 32 + ".sig"]
    with pytest.raises(PolicyRejected, match="no signature artifact"):
        policy.check("example.com/app", DIGEST, no_signatures)
    with pytest.raises(PolicyRejected, match="does not verify"):
        policy.check("example.com/app", DIGEST, lambda tag: signature_artifact(other))
    with pytest.raises(PolicyRejected, match="does not verify"):
        policy.check(
            "example.com/app", DIGEST, lambda tag: signature_artifact(private, tamper=True)
        )
    other_digest = "sha256:" + "cd" * 32
    with pytest.raises(PolicyRejected, match="covers sha256:abab"):
        policy.check("example.com/app", other_digest,
                     lambda tag: signature_artifact(private, digest=DIGEST))  # fmt: skip


def test_policy_file_errors(tmp_path):
    assert TrustPolicy.load(str(tmp_path / "absent.json")).rule_for("x/y").scope == "default"
    bad = tmp_path / "policy.json"
    bad.write_text(json.dumps({"default": [{"type": "maybe"}]}))
    with pytest.raises(InvalidArgument, match="unknown requirement type 'maybe'"):
        TrustPolicy.load(str(bad))
    bad.write_text(json.dumps({"default": [{"type": "sigstoreSigned", "keyPath": "nope.pub"}]}))
    with pytest.raises(InvalidArgument, match="nope.pub"):
        TrustPolicy.load(str(bad))
    rsa_like = tmp_path / "k.pub"
    rsa_like.write_text("not a key")
    bad.write_text(json.dumps({"default": [{"type": "sigstoreSigned", "keyPath": "k.pub"}]}))
    with pytest.raises(InvalidArgument, match="not a PEM public key"):
        TrustPolicy.load(str(bad))
    bad.write_text("{")
    with pytest.raises(InvalidArgument, match="trust policy"):
        TrustPolicy.load(str(bad))

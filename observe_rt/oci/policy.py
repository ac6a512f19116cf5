"""Trust policy: which images may be pulled, in the spirit of containers-policy.json.

    {
      "default": [{"type": "insecureAcceptAnything"}],
      "transports": {"docker": {
        "quay.io": [{"type": "reject"}],
        "registry.example.com/team": [{"type": "sigstoreSigned", "keyPath": "/etc/keys/team.pub"}],
        "*.internal.example.com": [{"type": "insecureAcceptAnything"}]
      }}
    }

A reference is judged by its most specific scope: the full repository, then each parent
namespace, then the registry host, then `*.domain` wildcards (longest first), then "default".
Every requirement of that scope must hold. `sigstoreSigned` means a cosign signature made with
the given ECDSA P-256 public key: an OCI manifest at tag `sha256-<hex>.sig` in the same
repository, whose simple-signing layers carry the payload and, in the annotation
`dev.cosignproject.cosign/signature`, a base64 ECDSA signature over it. The payload must name
the digest being pulled. A rejected image is never stored: the caller asks before it writes.
"""

from __future__ import annotations

import base64
import json
import os
from collections.abc import Callable
from dataclasses import dataclass

from observe_rt.errors import InvalidArgument, ObserveRtError

SIMPLE_SIGNING = "application/vnd.dev.cosign.simplesigning.v1+json"
SIGNATURE_ANNOTATION = "dev.cosignproject.cosign/signature"
_KNOWN_TYPES = {"insecureAcceptAnything", "reject", "sigstoreSigned"}


class PolicyRejected(ObserveRtError):
    """The trust policy refused the image; the message names the rule."""

    grpc_code = "PERMISSION_DENIED"


@dataclass(frozen=True)
class Requirement:
    type: str
    public_key_pem: bytes = b""


@dataclass(frozen=True)
class Rule:
    scope: str  # "default", a host, a repository, or "*.domain"
    requirements: tuple[Requirement, ...]


# A signature source: given the signature tag, the manifest there (or None) and a blob reader.
SignatureFetcher = Callable[[str], "tuple[dict | None, Callable[[str], bytes]]"]


class TrustPolicy:
    def __init__(self, rules: dict[str, Rule]) -> None:
        self.rules = rules

    @classmethod
    def accept_anything(cls) -> TrustPolicy:
        return cls({"default": Rule("default", (Requirement("insecureAcceptAnything"),))})

    @classmethod
    def load(cls, path: str | None) -> TrustPolicy:
        """Read a policy file; no file means accept anything (containerd's behaviour)."""
        if not path or not os.path.exists(path):
            return cls.accept_anything()
        try:
            with open(path) as f:
                raw = json.load(f)
        except (OSError, json.JSONDecodeError) as err:
            raise InvalidArgument(f"trust policy {path}: {err}") from None
        return cls.parse(raw, os.path.dirname(path), where=path)

    @classmethod
    def parse(cls, raw: dict, base_dir: str = ".", where: str = "policy") -> TrustPolicy:
        if not isinstance(raw, dict) or "default" not in raw:
            raise InvalidArgument(f'{where}: needs a "default" list of requirements')
        rules = {"default": _rule("default", raw["default"], base_dir, where)}
        scopes = (raw.get("transports") or {}).get("docker") or {}
        for scope, requirements in scopes.items():
            rules[scope] = _rule(scope, requirements, base_dir, where)
        return cls(rules)

    def rule_for(self, name: str) -> Rule:
        """The most specific rule for a repository name like docker.io/library/busybox."""
        parts = name.split("/")
        for i in range(len(parts), 0, -1):
            scope = "/".join(parts[:i])
            if scope in self.rules:
                return self.rules[scope]
        host_labels = parts[0].split(".")
        for i in range(1, len(host_labels)):
            wildcard = "*." + ".".join(host_labels[i:])
            if wildcard in self.rules:
                return self.rules[wildcard]
        return self.rules["default"]

    def check(self, name: str, digest: str, fetch_signatures: SignatureFetcher) -> Rule:
        """Raise PolicyRejected unless every requirement of the matching rule holds."""
        rule = self.rule_for(name)
        for requirement in rule.requirements:
            if requirement.type == "reject":
                raise PolicyRejected(
                    f"{name}@{digest}: rejected by trust policy rule {rule.scope!r}"
                )
            if requirement.type == "sigstoreSigned":
                _require_signature(name, digest, requirement, rule, fetch_signatures)
        return rule


def _rule(scope: str, raw: object, base_dir: str, where: str) -> Rule:
    if not isinstance(raw, list) or not raw:
        raise InvalidArgument(f"{where}: scope {scope!r} needs a non-empty list of requirements")
    return Rule(scope, tuple(_requirement(r, scope, base_dir, where) for r in raw))


def _requirement(raw: object, scope: str, base_dir: str, where: str) -> Requirement:
    kind = raw.get("type") if isinstance(raw, dict) else None
    if kind not in _KNOWN_TYPES:
        raise InvalidArgument(
            f"{where}: scope {scope!r}: unknown requirement type {kind!r} "
            f"(known: {', '.join(sorted(_KNOWN_TYPES))})"
        )
    if kind != "sigstoreSigned":
        return Requirement(kind)
    if raw.get("keyData"):
        key = base64.b64decode(raw["keyData"])
    elif raw.get("keyPath"):
        path = os.path.join(base_dir, raw["keyPath"])
        try:
            with open(path, "rb") as f:
                key = f.read()
        except OSError as err:
            raise InvalidArgument(f"{where}: scope {scope!r}: key {path}: {err.strerror}") from None
    else:
        raise InvalidArgument(f"{where}: scope {scope!r}: sigstoreSigned needs keyPath or keyData")
    _load_key(key, f"{where}: scope {scope!r}")
    return Requirement(kind, key)


def _load_key(pem: bytes, where: str):
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.hazmat.primitives.serialization import load_pem_public_key

    try:
        key = load_pem_public_key(pem)
    except ValueError as err:
        raise InvalidArgument(f"{where}: not a PEM public key: {err}") from None
    if not isinstance(key, ec.EllipticCurvePublicKey) or key.curve.name != "secp256r1":
        raise InvalidArgument(f"{where}: cosign keys must be ECDSA P-256")
    return key


def signature_tag(digest: str) -> str:
    """cosign's tag for the signatures of `digest`: sha256:abc -> sha256-abc.sig."""
    return digest.replace(":", "-") + ".sig"


def _require_signature(name: str, digest: str, requirement: Requirement, rule: Rule,
                       fetch_signatures: SignatureFetcher) -> None:  # fmt: skip
    tag = signature_tag(digest)
    manifest, read_blob = fetch_signatures(tag)
    why = f"no signature artifact at {name}:{tag}"
    if manifest is not None:
        why = _verify_any(manifest, read_blob, digest, requirement.public_key_pem)
        if why is None:
            return
    raise PolicyRejected(
        f"{name}@{digest}: trust policy rule {rule.scope!r} requires a cosign signature "
        f"by its key: {why}"
    )


def _verify_any(manifest: dict, read_blob: Callable[[str], bytes], digest: str,
                public_key_pem: bytes) -> str | None:  # fmt: skip
    """None when one signature layer verifies; otherwise why none did."""
    from cryptography.exceptions import InvalidSignature
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.asymmetric import ec

    key = _load_key(public_key_pem, "trust policy")
    reasons = []
    for layer in manifest.get("layers") or []:
        if layer.get("mediaType") != SIMPLE_SIGNING:
            continue
        signature = (layer.get("annotations") or {}).get(SIGNATURE_ANNOTATION)
        if not signature:
            reasons.append(f"layer {layer.get('digest')} has no signature annotation")
            continue
        payload = read_blob(layer["digest"])
        try:
            key.verify(base64.b64decode(signature), payload, ec.ECDSA(hashes.SHA256()))
        except (InvalidSignature, ValueError):
            reasons.append(f"signature on layer {layer.get('digest')} does not verify")
            continue
        signed = _signed_digest(payload)
        if signed == digest:
            return None
        reasons.append(f"a valid signature covers {signed}, not this digest")
    return "; ".join(reasons) or "the signature artifact has no simple-signing layers"


def _signed_digest(payload: bytes) -> str | None:
    try:
        return json.loads(payload)["critical"]["image"]["docker-manifest-digest"]
    except (ValueError, KeyError, TypeError):
        return None

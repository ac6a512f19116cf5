"""Image references, normalised as docker and containerd do (distribution/reference).

    busybox                     -> docker.io/library/busybox:latest
    quay.io/a/b@sha256:<hex>    -> domain quay.io, path a/b, digest only
    127.0.0.1:5000/x:1.0        -> domain 127.0.0.1:5000 (it has a ':' or a '.')

The first path component is a registry domain only when it contains '.' or ':', is exactly
"localhost", or holds an uppercase letter (repository paths must be lowercase, so "Foo/bar" names
the registry "Foo"); otherwise the name lives on docker.io, and a one-component name there goes
under "library/". A reference with neither tag nor digest gets the tag "latest". Malformed input
raises ValueError saying which part is wrong.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

DEFAULT_DOMAIN = "docker.io"
LEGACY_DEFAULT_DOMAIN = "index.docker.io"
OFFICIAL_PREFIX = "library/"
DEFAULT_TAG = "latest"
MAX_PATH_LENGTH = 255

_ALNUM = r"[a-z0-9]+"
_SEPARATOR = r"(?:[._]|__|[-]+)"
_PATH_COMPONENT = rf"{_ALNUM}(?:{_SEPARATOR}{_ALNUM})*"
_DOMAIN_COMPONENT = r"(?:[a-zA-Z0-9]|[a-zA-Z0-9][a-zA-Z0-9-]*[a-zA-Z0-9])"
_IPV6 = r"\[(?:[a-fA-F0-9:]+)\]"
_DOMAIN = rf"(?:{_DOMAIN_COMPONENT}(?:\.{_DOMAIN_COMPONENT})*|{_IPV6})(?::[0-9]+)?"
_TAG = r"[\w][\w.-]{0,127}"
_DIGEST = r"[A-Za-z][A-Za-z0-9]*(?:[-_+.][A-Za-z][A-Za-z0-9]*)*:[0-9a-fA-F]{32,}"

# parse() always puts a domain in front, so the domain is required: with an optional one, an
# invalid domain such as "a_b.io" would match as a path component and leave no domain at all.
_REFERENCE_RE = re.compile(
    rf"^({_DOMAIN})/({_PATH_COMPONENT}(?:/{_PATH_COMPONENT})*)"
    rf"(?::({_TAG}))?(?:@({_DIGEST}))?$",
    re.ASCII,
)
_PATH_COMPONENT_RE = re.compile(rf"^{_PATH_COMPONENT}$", re.ASCII)
_DOMAIN_RE = re.compile(rf"^{_DOMAIN}$", re.ASCII)
_TAG_RE = re.compile(rf"^{_TAG}$", re.ASCII)
_IDENTIFIER_RE = re.compile(r"^[a-f0-9]{64}$")
# The algorithms go-digest knows, with the exact hex length each must have.
_DIGEST_HEX_LENGTH = {"sha256": 64, "sha384": 96, "sha512": 128}


@dataclass(frozen=True)
class Reference:
    domain: str
    path: str
    tag: str | None = None
    digest: str | None = None

    @property
    def name(self) -> str:
        return f"{self.domain}/{self.path}"

    @property
    def object(self) -> str:
        """What to ask the registry for: the digest when there is one (it wins over a tag)."""
        return self.digest or self.tag or DEFAULT_TAG

    @property
    def repo_tag(self) -> str | None:
        return f"{self.name}:{self.tag}" if self.tag else None

    def repo_digest(self, digest: str | None = None) -> str:
        return f"{self.name}@{digest or self.digest}"

    def __str__(self) -> str:
        return (
            self.name
            + (f":{self.tag}" if self.tag else "")
            + (f"@{self.digest}" if self.digest else "")
        )

    def familiar(self) -> str:
        """The short form docker prints: docker.io and library/ dropped."""
        name = self.name
        first = self.path.split("/", 1)[0]
        # A first component that looks like a domain keeps docker.io: "a.b/c" would name a host.
        if self.domain == DEFAULT_DOMAIN and not (
            any(c in first for c in ".:") or first == "localhost"
        ):
            name = self.path
            rest = name.removeprefix(OFFICIAL_PREFIX)
            if rest != name and "/" not in rest:
                name = rest
        return (
            name + (f":{self.tag}" if self.tag else "") + (f"@{self.digest}" if self.digest else "")
        )


def parse(text: str) -> Reference:
    """Parse and normalise a docker-style reference; ValueError names what is wrong."""
    if not isinstance(text, str) or not text:
        raise ValueError(f"reference {text!r}: empty")
    if _IDENTIFIER_RE.match(text):
        raise ValueError(
            f'reference "{text}": a bare 64-hex string is an image id, not a repository name'
        )
    domain, remainder = _split_domain(text)
    remote = remainder.split(":", 1)[0]
    if remote.lower() != remote:
        raise ValueError(f'reference "{text}": repository name "{remote}" must be lowercase')
    match = _REFERENCE_RE.match(f"{domain}/{remainder}")
    if match is None:
        raise ValueError(f'reference "{text}": {_diagnose(domain, remainder)}')
    domain, path, tag, digest = match.groups()
    if len(path) > MAX_PATH_LENGTH:
        raise ValueError(
            f'reference "{text}": repository name must not be more than {MAX_PATH_LENGTH} '
            "characters"
        )
    if digest is not None:
        digest = _checked_digest(digest, text)
    if tag is None and digest is None:
        tag = DEFAULT_TAG
    return Reference(domain=domain, path=path, tag=tag, digest=digest)


def validate_digest(digest: str) -> str:
    """Return `digest` when it is a well-formed digest of a known algorithm, else ValueError."""
    if not isinstance(digest, str) or not re.match(rf"^{_DIGEST}$", digest, re.ASCII):
        raise ValueError(f"digest {digest!r}: not of the form <algorithm>:<hex>")
    return _checked_digest(digest, None)


def _checked_digest(digest: str, text: str | None) -> str:
    algorithm, _, hexpart = digest.partition(":")
    where = f'reference "{text}": ' if text is not None else ""
    expected = _DIGEST_HEX_LENGTH.get(algorithm)
    if expected is None:
        raise ValueError(f'{where}digest "{digest}": unsupported digest algorithm "{algorithm}"')
    if len(hexpart) != expected or not re.match(r"^[a-f0-9]+$", hexpart):
        raise ValueError(
            f'{where}digest "{digest}": {algorithm} needs {expected} lowercase hex characters'
        )
    return digest


def _split_domain(text: str) -> tuple[str, str]:
    first, slash, rest = text.partition("/")
    if not slash:
        # A single component is always a docker.io name, even "localhost" or "example.com".
        return DEFAULT_DOMAIN, OFFICIAL_PREFIX + text
    if first == "localhost" or any(char in first for char in ".:") or first.lower() != first:
        domain, remote = first, rest
    else:
        domain, remote = DEFAULT_DOMAIN, text
    if domain == LEGACY_DEFAULT_DOMAIN:
        domain = DEFAULT_DOMAIN
    if domain == DEFAULT_DOMAIN and "/" not in remote:
        remote = OFFICIAL_PREFIX + remote
    return domain, remote


def _diagnose(domain: str, remainder: str) -> str:
    """Say which part of a reference the grammar rejected (acceptance itself is the regex)."""
    if "://" in f"{domain}/{remainder}":
        return "a reference has no URL scheme (drop the http:// or https://)"
    if not _DOMAIN_RE.match(domain):
        return f'registry domain "{domain}" is not a valid host[:port]'
    name, _, digest = remainder.partition("@")
    if digest and not re.match(rf"^{_DIGEST}$", digest, re.ASCII):
        return f'digest "{digest}" is not of the form <algorithm>:<hex, 32 or more>'
    last_slash = name.rfind("/")
    if ":" in name[last_slash + 1 :]:
        name, _, tag = name.rpartition(":")
        if not _TAG_RE.match(tag):
            return (
                f'tag "{tag}" is invalid: up to 128 of A-Z a-z 0-9 _ . -, not starting with . or -'
            )
    for component in name.split("/"):
        if not component:
            return f'repository name "{name}" has an empty path component'
        if not _PATH_COMPONENT_RE.match(component):
            return (
                f'repository path component "{component}" is invalid: lowercase letters and '
                'digits, separated by one ".", "_", "__" or dashes'
            )
    return "invalid reference format"

"""Reference normalisation, checked against the cases of distribution/reference's own tests."""

import pytest

from observe_rt.oci.reference import Reference, parse, validate_digest

DIGEST = "sha256:" + "a" * 64
HEX64 = "1a3f5e7d9c1b3a5f7e9d1c3b5a7f9e1d3c5b7a9f1e3d5d7c9b1a3f5e7d9c1b3a"

# text, canonical string, familiar string, domain, path
VALID = [
    (
        "busybox",
        "docker.io/library/busybox:latest",
        "busybox:latest",
        "docker.io",
        "library/busybox",
    ),
    (
        "busybox:1.36",
        "docker.io/library/busybox:1.36",
        "busybox:1.36",
        "docker.io",
        "library/busybox",
    ),
    ("library/busybox", "docker.io/library/busybox:latest", "busybox:latest", "docker.io", None),
    ("docker.io/busybox", "docker.io/library/busybox:latest", "busybox:latest", "docker.io", None),
    (
        "index.docker.io/library/busybox",
        "docker.io/library/busybox:latest",
        "busybox:latest",
        "docker.io",
        None,
    ),
    (
        "docker/docker",
        "docker.io/docker/docker:latest",
        "docker/docker:latest",
        "docker.io",
        "docker/docker",
    ),
    (
        "library/foo/bar",
        "docker.io/library/foo/bar:latest",
        "library/foo/bar:latest",
        "docker.io",
        None,
    ),
    (
        "test_com/foo",
        "docker.io/test_com/foo:latest",
        "test_com/foo:latest",
        "docker.io",
        "test_com/foo",
    ),
    ("test.com/foo", "test.com/foo:latest", "test.com/foo:latest", "test.com", "foo"),
    ("test-com:8080/foo", "test-com:8080/foo:latest", None, "test-com:8080", "foo"),
    ("localhost/foo", "localhost/foo:latest", "localhost/foo:latest", "localhost", "foo"),
    ("localhost:5000/a/b:v1", "localhost:5000/a/b:v1", None, "localhost:5000", "a/b"),
    ("localhost", "docker.io/library/localhost:latest", "localhost:latest", "docker.io", None),
    ("127.0.0.1:5000/debian", "127.0.0.1:5000/debian:latest", None, "127.0.0.1:5000", "debian"),
    (
        "[fc00::1]:5000/docker/docker",
        "[fc00::1]:5000/docker/docker:latest",
        None,
        "[fc00::1]:5000",
        None,
    ),
    ("xn--n3h.com:18080/foo", "xn--n3h.com:18080/foo:latest", None, "xn--n3h.com:18080", "foo"),
    ("Foo/bar", "Foo/bar:latest", "Foo/bar:latest", "Foo", "bar"),  # uppercase: a domain
    (
        "docker---rules/dock__er",
        "docker.io/docker---rules/dock__er:latest",
        "docker---rules/dock__er:latest",
        "docker.io",
        None,
    ),
    (
        f"docker.io/{HEX64}",
        f"docker.io/library/{HEX64}:latest",
        f"{HEX64}:latest",
        "docker.io",
        None,
    ),
    (
        f"busybox@{DIGEST}",
        f"docker.io/library/busybox@{DIGEST}",
        f"busybox@{DIGEST}",
        "docker.io",
        None,
    ),
    (
        f"busybox:v@{DIGEST}",
        f"docker.io/library/busybox:v@{DIGEST}",
        f"busybox:v@{DIGEST}",
        "docker.io",
        None,
    ),
    (
        f"quay.io/a/b/c:v1.2_3-x@{DIGEST}",
        f"quay.io/a/b/c:v1.2_3-x@{DIGEST}",
        None,
        "quay.io",
        "a/b/c",
    ),
    ("registry.k8s.io/pause:3.9", "registry.k8s.io/pause:3.9", None, "registry.k8s.io", "pause"),
]


@pytest.mark.parametrize(("text", "canonical", "familiar", "domain", "path"), VALID)
def test_valid_references_normalise_like_docker(text, canonical, familiar, domain, path):
    """familiar None: same as canonical; path None: canonical name minus the domain."""
    ref = parse(text)
    assert str(ref) == canonical
    assert ref.familiar() == (familiar or canonical)
    assert ref.domain == domain
    assert ref.path == (path or ref.name.removeprefix(domain + "/"))
    assert canonical.startswith(ref.name)
    assert parse(str(ref)) == ref  # the canonical form parses to itself


def test_tag_and_digest_are_both_kept_and_the_digest_is_what_is_pulled():
    ref = parse(f"busybox:1.36@{DIGEST}")
    assert (ref.tag, ref.digest, ref.object) == ("1.36", DIGEST, DIGEST)
    assert ref.repo_tag == "docker.io/library/busybox:1.36"
    assert ref.repo_digest() == f"docker.io/library/busybox@{DIGEST}"
    assert parse("busybox").object == "latest"
    assert parse(f"busybox@{DIGEST}").tag is None


def test_reference_is_a_frozen_value():
    ref = parse("busybox")
    assert ref == Reference("docker.io", "library/busybox", "latest", None)
    with pytest.raises(AttributeError):
        ref.tag = "other"


# text -> words the error must contain
INVALID = {
    "": "empty",
    "docker/Docker": 'repository name "docker/Docker" must be lowercase',
    "docker.io/docker/Docker": "must be lowercase",
    HEX64: "image id",
    "https://github.com/docker/docker": "no URL scheme",
    "-docker": 'path component "-docker" is invalid',
    "-docker/docker": 'path component "-docker" is invalid',
    "docker-/docker": 'path component "docker-" is invalid',
    "____/____": 'path component "____" is invalid',
    "dock..er/docker": 'registry domain "dock..er"',  # a '.' makes it a domain
    "dock_.er/docker": 'registry domain "dock_.er"',
    "a/dock_.er": 'path component "dock_.er" is invalid',
    "docker///docker": "empty path component",
    "docker/": "empty path component",
    "-docker.io/docker/docker": 'registry domain "-docker.io" is not a valid host',
    "[fc00::1]:5000": 'path component "[fc00::1]" is invalid',  # one component: a name
    "fc00::1:5000/debian": 'registry domain "fc00::1:5000"',
    "[fe80::1%eth0]:5000/debian": "registry domain",
    "busybox:-tag": 'tag "-tag" is invalid',
    "busybox:" + "x" * 129: "is invalid",
    "busybox@sha256:abc": "not of the form",
    "busybox@sha256:" + "A" * 64: "lowercase hex",
    "busybox@sha256:" + "a" * 63 + "g": "not of the form",
    "busybox@md5:" + "a" * 32: 'unsupported digest algorithm "md5"',
    "busybox@sha512:" + "a" * 64: "sha512 needs 128",
    "a/" + "b" * 255: "not be more than 255",
    "busy box": "is invalid",
}


@pytest.mark.parametrize("text", INVALID)
def test_malformed_references_say_what_is_wrong(text):
    with pytest.raises(ValueError) as raised:
        parse(text)
    message = str(raised.value)
    assert INVALID[text] in message
    assert message.startswith(f"reference {text!r}" if not text else "reference")


def test_validate_digest():
    assert validate_digest(DIGEST) == DIGEST
    assert validate_digest("sha512:" + "0" * 128)
    with pytest.raises(ValueError, match="not of the form"):
        validate_digest("sha256")

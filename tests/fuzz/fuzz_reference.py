"""Fuzz target: image references (oci/reference.py, images.parse_reference).

Documented errors: ValueError from reference.parse and validate_digest, InvalidArgument from
images.parse_reference. Beyond not crashing, a parsed reference must print back to a string
that parses to the same reference (the image store keys records by that string).
"""

from __future__ import annotations

import sys

from tests.fuzz import harness

with harness.instrumented():
    from observe_rt.errors import InvalidArgument
    from observe_rt.oci import images, reference

SEEDS = [
    b"busybox",
    b"docker.io/library/busybox:1.36",
    b"127.0.0.1:5000/observe-rt/busybox:latest@sha256:" + b"ab" * 32,
    b"[::1]:5000/a/b__c-d.e:tag",
    b"localhost/ns/name@sha512:" + b"0f" * 64,
    b"Registry.Example:443/UPPER",
]


def one_input(data: bytes) -> None:
    text = data.decode("utf-8", "surrogateescape")
    try:
        ref = reference.parse(text)
    except ValueError:
        ref = None
    if ref is not None:
        again = reference.parse(str(ref))
        if again != ref:
            raise AssertionError(f"{text!r} -> {ref} parses back as {again}")
        reference.parse(ref.familiar())
    try:
        images.parse_reference(text)
    except InvalidArgument:
        pass
    try:
        reference.validate_digest(text)
    except ValueError:
        pass


if __name__ == "__main__":
    harness.main("reference", one_input, SEEDS)
    sys.exit(0)

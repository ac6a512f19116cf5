"""Fuzz target: OCI config.json validation (runtime/spec.py load_bundle and build_plan).

`observe-rt oci create` and the pod shim turn a bundle's config.json into the init's plan; the
config may come from anyone who can write a bundle. The base document is a complete default
spec (with the RuntimeDefault seccomp profile and id mappings, so those sections are reached)
whose values get replaced by values of other JSON types. Documented error: InvalidArgument.
"""

from __future__ import annotations

import json
import sys

from tests.fuzz import harness

with harness.instrumented():
    from observe_rt.errors import ObserveRtError
    from observe_rt.runtime import spec
    from observe_rt.runtime.seccomp_default import runtime_default_profile
    from observe_rt.runtime.spec_default import DEFAULT_CAPABILITIES, default_spec

BUNDLE = harness.scratch("bundle")
(BUNDLE / "rootfs").mkdir(exist_ok=True)


def base_spec() -> dict:
    doc = default_spec(
        ["/bin/sh", "-c", "true"], seccomp=runtime_default_profile(DEFAULT_CAPABILITIES)
    )
    doc["hostname"] = "fuzz"
    doc["mounts"].append({"destination": "/data", "type": "bind", "source": "/tmp",
                          "options": ["rbind", "ro", "rslave"]})  # fmt: skip
    doc["process"]["rlimits"] = [{"type": "RLIMIT_NOFILE", "soft": 1024, "hard": 4096}]
    doc["process"]["user"] = {"uid": 0, "gid": 0, "additionalGids": [1, 2], "umask": 18}
    linux = doc["linux"]
    linux["namespaces"].append({"type": "user"})
    linux["uidMappings"] = [{"containerID": 0, "hostID": 100000, "size": 65536}]
    linux["gidMappings"] = [{"containerID": 0, "hostID": 100000, "size": 65536}]
    linux["sysctl"] = {"net.ipv4.ip_forward": "1", "kernel.shm_rmid_forced": "1"}
    linux["rootfsPropagation"] = "rslave"
    return doc


BASE = base_spec()


def one_input(data: bytes) -> None:
    if data[:1] == b"R":  # the raw bytes as config.json, through the file reader
        (BUNDLE / "config.json").write_bytes(data[1:])
        try:
            spec.build_plan(spec.load_bundle(str(BUNDLE)), str(BUNDLE), "fuzz")
        except ObserveRtError:
            pass
        return
    document = harness.mutate_json(BASE, harness.provider(data), 5)
    if not isinstance(document, dict):
        return  # load_bundle refuses anything but an object
    try:
        spec.build_plan(document, str(BUNDLE), "fuzz")
    except ObserveRtError:
        pass


if __name__ == "__main__":
    harness.main("oci_spec", one_input, [b"R" + json.dumps(BASE).encode(), b"\x00" * 64])
    sys.exit(0)

"""The crashes the fuzz targets found, as plain unit tests: each input now gets the module's
documented error with a message naming the field (the raw inputs are in corpus/)."""

from __future__ import annotations

import copy
import json
import math

import pytest

from observe_rt.errors import InvalidArgument
from observe_rt.network.cni_exec import NetworkResult, PortMapping
from observe_rt.oci import auth, media, reference
from observe_rt.runtime import spec
from observe_rt.runtime.spec_default import default_spec

DIGEST = "sha256:" + "ab" * 32


def test_reference_with_an_invalid_domain_is_refused_not_domainless():
    with pytest.raises(ValueError, match='registry domain "xb_er.io" is not a valid'):
        reference.parse("xb_er.io/x")


def test_familiar_name_keeps_docker_io_when_the_path_looks_like_a_host():
    ref = reference.parse("docker.io/dock.r.io/o")
    assert ref.familiar() == "docker.io/dock.r.io/o:latest"
    assert reference.parse(ref.familiar()) == ref
    assert reference.parse("docker.io/library/busybox").familiar() == "busybox:latest"


@pytest.mark.parametrize(
    "document,words",
    [
        ({"mediaType": ["x"], "manifests": []}, "'mediaType' must be a string, not an array"),
        ({"mediaType": media.OCI_INDEX, "manifests": [{"mediaType": media.OCI_MANIFEST,
          "digest": DIGEST, "size": 1, "platform": {"os": "linux", "variant": True}}]},
         "platform os, architecture and variant must be strings"),
        ({"mediaType": media.OCI_INDEX, "manifests": [{"mediaType": media.OCI_MANIFEST,
          "digest": DIGEST, "size": 1, "platform": "linux"}]}, "must be JSON objects"),
    ],
)  # fmt: skip
def test_manifest_fields_of_the_wrong_type_are_manifest_errors(document, words):
    with pytest.raises(media.ManifestError, match=words):
        media_type, parsed = media.parse_document(json.dumps(document).encode())
        media.select_platform(parsed)


def test_docker_config_whose_auths_is_not_an_object_is_an_auth_error(tmp_path):
    with pytest.raises(auth.AuthError, match="'auths' must map registries"):
        auth.from_docker_config({"auths": 5})
    with pytest.raises(auth.AuthError, match="unreadable"):
        auth.from_docker_config(tmp_path / "missing.json")


def test_cni_result_junk_lists_and_infinite_ports():
    assert NetworkResult.from_cni({"interfaces": True, "ips": 3}).ips == []
    with pytest.raises(InvalidArgument, match="port mapping"):
        PortMapping.coerce({"containerPort": math.inf})


@pytest.mark.parametrize(
    "path,value,words",
    [
        (["mounts", 0, "options"], [True], "mounts[0].options: must be a list of strings"),
        (["linux", "namespaces", 0], {"type": "pid", "path": 3}, "linux.namespaces[0].path"),
        (["process", "cwd"], 7, "process.cwd: must be a string"),
        (["process", "capabilities", "bounding"], [["CAP_KILL"]], "capabilities.bounding"),
        (["process", "rlimits"], [5], "process.rlimits[0]: must be an object"),
        (["linux", "uidMappings"], [5], "linux.uidMappings[0]: must be an object"),
        (["linux", "rootfsPropagation"], ["rslave"], "linux.rootfsPropagation: must be a string"),
        (["linux", "devices"], [{"path": "/dev/x", "type": "c", "major": 2**40}], "major"),
        (["linux", "devices"], [{"path": "dev/x"}], "linux.devices[0].path"),
        (["process", "oomScoreAdj"], 5000, "process.oomScoreAdj: must be <= 1000"),
    ],
)  # fmt: skip
def test_spec_values_of_the_wrong_type_are_invalid_arguments(tmp_path, path, value, words):
    (tmp_path / "rootfs").mkdir()
    document = copy.deepcopy(default_spec(["/bin/sh"]))
    target = document
    for key in path[:-1]:
        target = target[key]
    target[path[-1]] = value
    with pytest.raises(InvalidArgument) as err:
        spec.build_plan(document, str(tmp_path), "c1")
    assert words in str(err.value)


def test_config_json_that_is_not_utf8_is_an_invalid_argument(tmp_path):
    (tmp_path / "config.json").write_bytes(b'{"a": "\xb5"}')
    with pytest.raises(InvalidArgument, match="not valid JSON"):
        spec.load_bundle(str(tmp_path))

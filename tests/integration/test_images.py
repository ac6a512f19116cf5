"""The image service end to end: a real registry on 127.0.0.1, real unpack, real overlayfs,
and a container run from the pulled image."""

from __future__ import annotations

import base64
import hashlib
import io
import json
import os
import subprocess
import tarfile
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec

from observe_rt.errors import ObserveRtError
from observe_rt.oci import media
from observe_rt.oci.images import ImageService
from observe_rt.oci.policy import SIGNATURE_ANNOTATION, SIMPLE_SIGNING, TrustPolicy, signature_tag
from observe_rt.oci.snapshots import mount_overlay, unmount
from tests.integration.conftest import OBSERVE_RT
from tests.support import images, tars
from tests.support.registry import closed_port_url, running_registry

pytestmark = pytest.mark.root


@pytest.fixture(scope="module")
def registry(tmp_path_factory):
    with running_registry(tmp_path_factory.mktemp("img-registry")) as running:
        pushed = {
            "test/busybox": images.busybox_image(),
            "library/busybox": images.busybox_image(),
            "test/multiarch": images.multiarch_image(),
            "test/other": images.fake_image(images.host_platform()),
        }
        for name, image in pushed.items():
            images.push(image, running.url, name, "1")
        running.pushed = pushed
        yield running


@pytest.fixture
def service(tmp_path):
    return ImageService(tmp_path / "store", hosts_dir=tmp_path / "certs.d")


def blob_count(service: ImageService) -> int:
    return sum(1 for _ in service.content.walk())


def test_pull_unpacks_layers_and_runs_a_container(registry, service, tmp_path, ort, bundles):
    name = f"{registry.host}/test/busybox:1"
    record = service.pull(name)
    assert record.repo_tags == [name]
    assert record.repo_digests == [
        f"{registry.host}/test/busybox@{registry.pushed['test/busybox'].digest}"
    ]
    assert (
        len(record.diff_ids) == 3
        and service.config(record)["rootfs"]["diff_ids"] == record.diff_ids
    )
    assert service.get(record.id[:19]) == record == service.get(name)
    usage = service.fs_usage()
    assert usage.bytes > 1_000_000 and usage.inodes > 100

    rootfs = tmp_path / "merged"
    for d in ("upper", "work", "merged"):
        (tmp_path / d).mkdir()
    lower = service.snapshots.lowerdirs(service.rootfs_chain(record))
    mount_overlay(lower, str(tmp_path / "upper"), str(tmp_path / "work"), str(rootfs))
    try:
        spec = bundles.spec(["sh", "-c", "cat /etc/motd; ls /etc; ls /opaque"])
        spec["root"]["path"] = str(rootfs)
        container_id, bundle = bundles.write(spec)
        result = ort("run", container_id, "--bundle", str(bundle))
    finally:
        unmount(str(rootfs), detach=True)
    assert result.returncode == 0, result.stderr
    assert "removed-later" not in result.stdout  # deleted by layer 3's whiteout
    assert "old-a" not in result.stdout and "new-file" in result.stdout  # opaque directory


def test_layers_shared_between_images_are_unpacked_once(registry, service):
    service.pull(f"{registry.host}/test/busybox:1")
    snapshots_before = len(service.snapshots.list())
    second = service.pull(f"{registry.host}/library/busybox:1")
    assert len(service.snapshots.list()) == snapshots_before
    assert len(service.list()) == 1  # same config digest: one image, two names
    assert len(second.repo_tags) == 2


def test_multiarch_index_gives_this_hosts_image(registry, service):
    record = service.pull(f"{registry.host}/test/multiarch:1")
    index = registry.pushed["test/multiarch"]
    assert record.repo_digests == [f"{registry.host}/test/multiarch@{index.digest}"]
    chosen = [m for m in index.manifest()["manifests"] if m["platform"] == images.host_platform()]
    assert record.manifest_digest == chosen[0]["digest"]


def test_remove_collects_unshared_blobs_and_layers(registry, service, tmp_path):
    kept = service.pull(f"{registry.host}/test/busybox:1")
    other = service.pull(f"{registry.host}/test/other:1")
    assert kept.id != other.id
    service.remove(f"{registry.host}/test/other:1")
    assert [r.id for r in service.list()] == [kept.id]
    live = {kept.manifest_digest, kept.config_digest, *kept.layer_digests}
    live |= {d.split("@")[1] for d in kept.repo_digests}
    assert {digest for digest, _ in service.content.walk()} == live
    assert len(service.snapshots.list()) == 3
    assert service.prune() == [kept]
    assert service.list() == [] and blob_count(service) == 0 and service.snapshots.list() == []


def test_mirror_with_a_dead_first_host(registry, tmp_path):
    hosts = tmp_path / "certs.d" / "docker.io"
    hosts.mkdir(parents=True)
    # The upstream is the local registry too: a test never reaches for the internet.
    hosts.joinpath("hosts.toml").write_text(
        f'server = "{registry.url}"\n\n'
        f'[host."{closed_port_url()}"]\n  capabilities = ["pull", "resolve"]\n\n'
        f'[host."{registry.url}"]\n  capabilities = ["pull", "resolve"]\n'
    )
    service = ImageService(tmp_path / "store", hosts_dir=tmp_path / "certs.d")
    record = service.pull("busybox:1")
    assert record.repo_tags == ["docker.io/library/busybox:1"]
    assert service.get("busybox:1") == record


def test_trust_policy_reject_stores_nothing(registry, tmp_path):
    policy = TrustPolicy.parse({
        "default": [{"type": "insecureAcceptAnything"}],
        "transports": {"docker": {f"{registry.host}/test": [{"type": "reject"}]}},
    })  # fmt: skip
    service = ImageService(tmp_path / "store", hosts_dir=tmp_path / "certs.d", policy=policy)
    with pytest.raises(
        ObserveRtError, match=f"rejected by trust policy rule '{registry.host}/test'"
    ):
        service.pull(f"{registry.host}/test/busybox:1")
    assert service.list() == [] and blob_count(service) == 0
    assert service.pull(f"{registry.host}/library/busybox:1").repo_tags  # other scope: default


def test_cosign_signed_image_accepted_unsigned_rejected(registry, tmp_path):
    key = ec.generate_private_key(ec.SECP256R1())
    pem = key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    signed_digest = images.push(
        images.busybox_image(("gzip",) * 3), registry.url, "signed/app", "1"
    )
    _push_signature(registry, "signed/app", signed_digest, key)
    images.push(images.busybox_image(("zstd",) * 3), registry.url, "signed/unsigned", "1")
    policy = TrustPolicy.parse({
        "default": [{"type": "reject"}],
        "transports": {"docker": {f"{registry.host}/signed": [
            {"type": "sigstoreSigned", "keyData": base64.b64encode(pem).decode()}]}},
    })  # fmt: skip
    service = ImageService(tmp_path / "store", hosts_dir=tmp_path / "certs.d", policy=policy)
    assert service.pull(f"{registry.host}/signed/app:1").repo_tags
    with pytest.raises(ObserveRtError, match="no signature artifact"):
        service.pull(f"{registry.host}/signed/unsigned:1")
    with pytest.raises(ObserveRtError, match="rule 'default'"):
        service.pull(f"{registry.host}/test/busybox:1")
    assert len(service.list()) == 1


def _push_signature(registry, name: str, digest: str, key) -> None:
    payload = json.dumps({
        "critical": {"identity": {"docker-reference": f"{registry.host}/{name}"},
                     "image": {"docker-manifest-digest": digest},
                     "type": "cosign container image signature"},
        "optional": None,
    }).encode()  # fmt: skip
    signature = base64.b64encode(key.sign(payload, ec.ECDSA(hashes.SHA256()))).decode()
    layer = images.Blob(SIMPLE_SIGNING, payload)
    config = images.Blob(media.OCI_CONFIG, b"{}")
    manifest = {
        "schemaVersion": 2, "mediaType": media.OCI_MANIFEST, "config": config.descriptor(),
        "layers": [layer.descriptor(annotations={SIGNATURE_ANNOTATION: signature})],
    }  # fmt: skip
    top = images.Blob(media.OCI_MANIFEST, json.dumps(manifest).encode())
    artifact = images.Image(top, {layer.digest: layer, config.digest: config})
    images.push(artifact, registry.url, name, signature_tag(digest))


def test_missing_image_and_corrupt_pull_keep_existing_images(registry, service):
    good = service.pull(f"{registry.host}/test/busybox:1")
    with pytest.raises(ObserveRtError) as missing:
        service.pull(f"{registry.host}/test/nothing:1")
    assert missing.value.grpc_code == "NOT_FOUND" and "test/nothing" in str(missing.value)
    with pytest.raises(ObserveRtError, match="must be lowercase|invalid reference|malformed"):
        service.pull("docker/Docker:1")
    assert service.list() == [good]


def _oci_layout_tar(tmp_path: Path) -> Path:
    layout = images.write_layout(tmp_path / "layout", {"example.com/app:2": images.busybox_image()})
    archive = tmp_path / "layout.tar"
    with tarfile.open(archive, "w") as tar:
        tar.add(layout, arcname=".")
    return archive


def _docker_save_tar(tmp_path: Path) -> Path:
    image = images.busybox_image(("none",) * 3)
    manifest = image.manifest()
    archive = tmp_path / "docker-save.tar"
    with tarfile.open(archive, "w") as tar:

        def add(name: str, data: bytes) -> None:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))

        config = image.blobs[manifest["config"]["digest"]].data
        add(f"{hashlib.sha256(config).hexdigest()}.json", config)
        layers = []
        for i, layer in enumerate(manifest["layers"]):
            add(f"layer{i}/layer.tar", image.blobs[layer["digest"]].data)
            layers.append(f"layer{i}/layer.tar")
        entry = {"Config": f"{hashlib.sha256(config).hexdigest()}.json",
                 "RepoTags": ["example.com/saved:3"], "Layers": layers}  # fmt: skip
        add("manifest.json", json.dumps([entry]).encode())
    return archive


def test_import_oci_layout_and_docker_save(service, tmp_path):
    (oci,) = service.import_archive(_oci_layout_tar(tmp_path))
    assert oci.repo_tags == ["example.com/app:2"]
    (saved,) = service.import_archive(_docker_save_tar(tmp_path))
    # The same config, so the same image (as docker and containerd see it), now with both names.
    assert saved.id == oci.id and saved.repo_tags == ["example.com/app:2", "example.com/saved:3"]
    assert len(service.snapshots.list()) == 3
    bogus = tmp_path / "bogus.tar"
    with tarfile.open(bogus, "w") as tar:
        tar.add(__file__, arcname="README")
    with pytest.raises(ObserveRtError, match="neither an OCI layout"):
        service.import_archive(bogus)


def test_images_command_line(registry, tmp_path):
    base = [OBSERVE_RT, "images", "--root", str(tmp_path / "store"),
            "--hosts-dir", str(tmp_path / "certs.d"),
            "--policy", str(tmp_path / "none.json")]  # fmt: skip

    def cli(*args, check=True):
        result = subprocess.run([*base, *args], capture_output=True, text=True, timeout=120)
        assert result.returncode == 0 or not check, result.stderr
        return result

    name = f"{registry.host}/test/busybox:1"
    cli("pull", name)
    assert f"{registry.host}/test/busybox" in cli("ls").stdout
    inspected = json.loads(cli("inspect", name).stdout)
    assert inspected[0]["record"]["repo_tags"] == [name]
    assert json.loads(cli("df").stdout)["bytes"] > 0
    failed = cli("pull", f"{registry.host}/test/absent:1", check=False)
    assert failed.returncode != 0 and "test/absent" in failed.stderr
    cli("rm", name)
    assert cli("ls", "-q").stdout == ""
    leftovers = [e for e in os.listdir(tmp_path / "store" / "snapshots") if e.isdigit()]
    assert leftovers == []


@pytest.mark.parametrize(
    "hostile,message",
    [
        (lambda: tars.dotdot_escape(), ".."),
        (lambda: tars.write_through_symlink("/tmp/observe-rt-never"), "symlink"),
        (lambda: tars.hardlink_absolute("/etc/passwd"), "/etc/passwd"),
        (lambda: tars.bare_whiteout(), ".wh."),
    ],
    ids=["dotdot", "symlink", "hardlink", "bare-whiteout"],
)  # fmt: skip
def test_hostile_layer_fails_the_pull_and_keeps_existing_images(registry, service, hostile,
                                                                message):  # fmt: skip
    good = service.pull(f"{registry.host}/test/busybox:1")
    snapshots = {s.chain_id for s in service.snapshots.list()}
    bad = images.build_image([images.busybox_layer(), hostile()], ["gzip", "gzip"],
                             images.host_platform())  # fmt: skip
    images.push(bad, registry.url, "test/hostile", "1")
    with pytest.raises(ObserveRtError) as err:
        service.pull(f"{registry.host}/test/hostile:1")
    assert message in str(err.value) and bad.manifest()["layers"][1]["digest"] in str(err.value)
    assert service.list() == [good]
    # The busybox layer is shared with the good image; no snapshot of the hostile one exists.
    assert {s.chain_id for s in service.snapshots.list()} == snapshots
    assert not os.path.exists("/tmp/observe-rt-never")

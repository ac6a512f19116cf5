"""The CRI ImageService over a real gRPC unix socket, pulling from a real local registry."""

from __future__ import annotations

import base64
import json
from concurrent import futures

import grpc
import pytest

from observe_rt.cri.image_service import ImageServicer
from observe_rt.cri.v1 import api_pb2, api_pb2_grpc
from observe_rt.oci.images import ImageService
from tests.support import images
from tests.support.registry import htpasswd_auth, running_registry

pytestmark = pytest.mark.root


@pytest.fixture(scope="module")
def registries(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("cri-registry")
    with running_registry(tmp) as plain:
        images.push(images.busybox_image(), plain.url, "cri/busybox", "1")
        images.push(images.busybox_image(), plain.url, "cri/busybox", "also")
        auth = htpasswd_auth(tmp, {"alice": "wonderland"})
        with running_registry(tmp, storage=plain.root, auth=auth) as basic:
            yield plain, basic


@pytest.fixture
def stub(tmp_path):
    service = ImageService(tmp_path / "store", hosts_dir=tmp_path / "certs.d")
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
    api_pb2_grpc.add_ImageServiceServicer_to_server(ImageServicer(service), server)
    socket = f"unix://{tmp_path}/cri.sock"
    server.add_insecure_port(socket)
    server.start()
    with grpc.insecure_channel(socket) as channel:
        yield api_pb2_grpc.ImageServiceStub(channel)
    server.stop(None)


def spec(name: str) -> api_pb2.ImageSpec:
    return api_pb2.ImageSpec(image=name)


def test_pull_list_status_fsinfo_remove(registries, stub):
    plain, _ = registries
    name = f"{plain.host}/cri/busybox:1"
    image_ref = stub.PullImage(api_pb2.PullImageRequest(image=spec(name))).image_ref
    assert image_ref.startswith("sha256:")

    listed = stub.ListImages(api_pb2.ListImagesRequest()).images
    assert [i.id for i in listed] == [image_ref] and listed[0].repo_tags == [name]
    assert listed[0].size > 0 and listed[0].repo_digests[0].startswith(f"{plain.host}/cri/busybox@")
    filtered = api_pb2.ListImagesRequest(filter=api_pb2.ImageFilter(image=spec(image_ref)))
    assert [i.id for i in stub.ListImages(filtered).images] == [image_ref]
    other = api_pb2.ListImagesRequest(filter=api_pb2.ImageFilter(image=spec("absent:1")))
    assert list(stub.ListImages(other).images) == []

    status = stub.ImageStatus(api_pb2.ImageStatusRequest(image=spec(name), verbose=True))
    assert status.image.id == image_ref
    info = json.loads(status.info["info"])
    assert info["imageSpec"]["rootfs"]["diff_ids"] and info["chainID"].startswith("sha256:")

    fs = stub.ImageFsInfo(api_pb2.ImageFsInfoRequest()).image_filesystems[0]
    assert fs.used_bytes.value > 0 and fs.inodes_used.value > 0 and fs.timestamp > 0

    stub.RemoveImage(api_pb2.RemoveImageRequest(image=spec(name)))
    assert list(stub.ListImages(api_pb2.ListImagesRequest()).images) == []
    stub.RemoveImage(api_pb2.RemoveImageRequest(image=spec(name)))  # idempotent
    assert not stub.ImageStatus(api_pb2.ImageStatusRequest(image=spec(name))).HasField("image")


def test_remove_by_id_removes_every_tag(registries, stub):
    plain, _ = registries
    names = [f"{plain.host}/cri/busybox:1", f"{plain.host}/cri/busybox:also"]
    ids = {stub.PullImage(api_pb2.PullImageRequest(image=spec(n))).image_ref for n in names}
    assert len(ids) == 1  # one image, two tags
    (listed,) = stub.ListImages(api_pb2.ListImagesRequest()).images
    assert sorted(listed.repo_tags) == sorted(names)
    stub.RemoveImage(api_pb2.RemoveImageRequest(image=spec(ids.pop())))
    assert list(stub.ListImages(api_pb2.ListImagesRequest()).images) == []
    for name in names:
        assert not stub.ImageStatus(api_pb2.ImageStatusRequest(image=spec(name))).HasField("image")


def test_pull_with_auth_config(registries, stub):
    _, basic = registries
    name = f"{basic.host}/cri/busybox:1"
    with pytest.raises(grpc.RpcError) as denied:
        stub.PullImage(api_pb2.PullImageRequest(image=spec(name)))
    assert denied.value.code() == grpc.StatusCode.UNAUTHENTICATED
    assert basic.host in denied.value.details()
    auth = api_pb2.AuthConfig(auth=base64.b64encode(b"alice:wonderland").decode())
    assert stub.PullImage(api_pb2.PullImageRequest(image=spec(name), auth=auth)).image_ref


@pytest.mark.parametrize(
    "name,code",
    [
        ("", grpc.StatusCode.INVALID_ARGUMENT),
        ("docker/Docker:1", grpc.StatusCode.INVALID_ARGUMENT),
        ("busybox:bad tag", grpc.StatusCode.INVALID_ARGUMENT),
    ],  # fmt: skip
)
def test_bad_image_names(stub, name, code):
    with pytest.raises(grpc.RpcError) as err:
        stub.PullImage(api_pb2.PullImageRequest(image=spec(name)))
    assert err.value.code() == code and err.value.details()


def test_missing_image_is_not_found(registries, stub):
    plain, _ = registries
    with pytest.raises(grpc.RpcError) as err:
        stub.PullImage(api_pb2.PullImageRequest(image=spec(f"{plain.host}/cri/absent:1")))
    assert err.value.code() == grpc.StatusCode.NOT_FOUND and "cri/absent" in err.value.details()

"""The CRI ImageService (runtime.v1) on top of observe_rt.oci.images.ImageService."""

from __future__ import annotations

import json
import time
from dataclasses import asdict

from observe_rt.cri import streamed
from observe_rt.cri.rpc import unary
from observe_rt.cri.v1 import api_pb2, api_pb2_grpc
from observe_rt.errors import InvalidArgument
from observe_rt.oci.images import ImageService
from observe_rt.oci.store import ImageRecord


class ImageServicer(api_pb2_grpc.ImageServiceServicer):
    def __init__(self, images: ImageService) -> None:
        self.images = images

    @unary
    def ListImages(self, request, context):
        wanted = request.filter.image.image if request.HasField("filter") else ""
        if wanted:
            found = self.images.find(wanted)
            records = [found] if found else []
        else:
            records = self.images.list()
        return api_pb2.ListImagesResponse(images=[self._image(r) for r in records])

    StreamImages = streamed.rpc(
        "ListImages", api_pb2.ListImagesRequest, "images", api_pb2.StreamImagesResponse, "images"
    )

    @unary
    def ImageStatus(self, request, context):
        record = self.images.find(_image_name(request.image))
        if record is None:
            return api_pb2.ImageStatusResponse()  # CRI: an absent image is not an error
        info = {}
        if request.verbose:
            chain = self.images.rootfs_chain(record)
            info["info"] = json.dumps({
                "id": record.id,
                "chainID": chain[-1] if chain else "",
                "record": asdict(record),
                "imageSpec": self.images.config(record),
            })  # fmt: skip
        return api_pb2.ImageStatusResponse(image=self._image(record), info=info)

    @unary
    def PullImage(self, request, context):
        auth = None
        if request.HasField("auth"):
            fields = ("username", "password", "auth", "identity_token", "registry_token")
            auth = {f: getattr(request.auth, f) for f in fields if getattr(request.auth, f)}
        record = self.images.pull(_image_name(request.image), auth or None)
        return api_pb2.PullImageResponse(image_ref=record.id)

    @unary
    def RemoveImage(self, request, context):
        record = self.images.find(_image_name(request.image))
        if record is not None:  # CRI: removing an absent image succeeds
            self.images.remove(record.id)
        return api_pb2.RemoveImageResponse()

    @unary
    def ImageFsInfo(self, request, context):
        usage = self.images.fs_usage()
        filesystem = api_pb2.FilesystemUsage(
            timestamp=time.time_ns(),
            fs_id=api_pb2.FilesystemIdentifier(mountpoint=str(self.images.root)),
            used_bytes=api_pb2.UInt64Value(value=usage.bytes),
            inodes_used=api_pb2.UInt64Value(value=usage.inodes),
        )
        return api_pb2.ImageFsInfoResponse(image_filesystems=[filesystem])

    def _image(self, record: ImageRecord) -> api_pb2.Image:
        image = api_pb2.Image(
            id=record.id, repo_tags=record.repo_tags, repo_digests=record.repo_digests,
            size=record.size, pinned=record.pinned, spec=api_pb2.ImageSpec(image=record.id),
        )  # fmt: skip
        user = (self.images.config(record).get("config") or {}).get("User", "")
        uid_or_name = user.split(":", 1)[0]
        if uid_or_name.isdigit():
            image.uid.value = int(uid_or_name)
        elif uid_or_name:
            image.username = uid_or_name
        return image


def _image_name(spec: api_pb2.ImageSpec) -> str:
    if not spec.image:
        raise InvalidArgument("image: ImageSpec.image is required (an id, name or digest)")
    return spec.image

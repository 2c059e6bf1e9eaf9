"""The images of a CRI runtime (its ImageService) behind the ImageStore surface the kubelet uses: pull, get, list,
remove, usage.

The runtime keeps and unpacks the images itself, so an Image here has no layer directories; its config holds only
the user the image runs as (what the runAsNonRoot check reads). Failures come back as the store's ImageError family,
so a failed pull is an ErrImagePull with the runtime's message.
"""

from __future__ import annotations

import builtins
from collections.abc import Callable, Mapping
from typing import TypeVar

from kubelite.kubelet.grpcchannel import Channel
from kubelite.kubelet.images.config import AuthConfig, match_credentials
from kubelite.kubelet.images.errors import ImageError, ImageNotFound, RegistryError
from kubelite.kubelet.images.reference import parse_reference
from kubelite.kubelet.images.store import Image
from kubelite.kubelet.runtime import criproto
from kubelite.kubelet.runtime.base import RuntimeServiceError
from kubelite.kubelet.runtime.cri import REQUEST_TIMEOUT, CriClient

T = TypeVar("T")


class CriImageService:
    """ImageStore's pull/get/list/remove/usage over a CRI ImageService (its own channel for an endpoint string, or
    one shared with CriRuntime)."""

    def __init__(self, endpoint: str | Channel):
        self.client = CriClient(endpoint, criproto.IMAGE_SERVICE)

    async def _call(self, method: str, request: bytes, decode: Callable[[bytes], T],
                    deadline: float | None = REQUEST_TIMEOUT) -> T:
        try:
            return await self.client.call(method, request, decode, deadline)
        except RuntimeServiceError as exc:
            raise ImageError(str(exc)) from None

    async def pull(self, ref: str, credentials: Mapping[str, AuthConfig] | None = None) -> Image:
        """PullImage with the credentials for the image's registry host, if any; no deadline (pulls take long)."""
        reference = parse_reference(ref)
        auth = match_credentials(credentials, reference.registry) if credentials else None
        try:
            image_ref = await self.client.call("PullImage",
                                               criproto.pull_image_request(ref, auth),
                                               criproto.decode_pull_image, None)
        except RuntimeServiceError as exc:
            raise RegistryError(str(exc)) from None
        image = await self.get(image_ref or ref)
        if image is None:
            raise ImageNotFound(f"{ref} was removed while it was being pulled")
        return image

    async def get(self, ref_or_id: str) -> Image | None:
        """ImageStatus: the image by reference or id, None when the runtime has no such image."""
        return await self._call("ImageStatus", criproto.image_request(ref_or_id), criproto.decode_image_status)

    async def list(self) -> builtins.list[Image]:
        """ListImages, in name order (unnamed ones last), as the store lists."""
        images = await self._call("ListImages", criproto.list_images_request(), criproto.decode_list_images)
        return sorted(images, key=lambda i: (not i.names, i.names, i.digests, i.id))

    async def remove(self, ref_or_id: str) -> builtins.list[str]:
        """RemoveImage: the image goes with all its names (CRI removes by image); returns those names.
        ImageNotFound when there is no such image."""
        image = await self.get(ref_or_id)
        if image is None:
            raise ImageNotFound(f"no image {ref_or_id!r} in the runtime")
        await self._call("RemoveImage", criproto.image_request(image.id), lambda _reply: None)
        return sorted(image.names + image.digests)

    async def usage(self) -> int:
        """ImageFsInfo: bytes the runtime's images take."""
        return await self._call("ImageFsInfo", criproto.image_fs_info_request(), criproto.decode_image_fs_info)

    async def close(self) -> None:
        """Close the channel if this service made it."""
        await self.client.close()

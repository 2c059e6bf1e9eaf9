"""Images for containers, by imagePullPolicy: pull with the pod's imagePullSecrets, back off after failures, and
report the reasons Kubernetes shows (ErrImagePull, ImagePullBackOff, ErrImageNeverPull, InvalidImageName)."""

from __future__ import annotations

import builtins
import time
from collections.abc import Awaitable, Callable, Mapping
from typing import Any, Protocol

from kubelite.client.events import EventRecorder
from kubelite.kubelet.backoff import Backoff
from kubelite.kubelet.images.config import AuthConfig, credentials_from_secrets
from kubelite.kubelet.images.errors import ImageError, InvalidReference
from kubelite.kubelet.images.reference import parse_reference
from kubelite.kubelet.images.store import Image

Obj = dict[str, Any]
PULL_FAILED = "failed to pull and unpack image"
"""How containerd words a failed pull; the embedded store's errors get it too, a CRI runtime's have it already."""


class ImageService(Protocol):
    """The images of the node as the kubelet uses them: the embedded ImageStore, or a CRI runtime's image service."""

    async def pull(self, ref: str, credentials: Mapping[str, AuthConfig] | None = None) -> Image:
        """Pull the image (with these registry credentials); ImageError when it cannot be had."""
        ...

    async def get(self, ref_or_id: str) -> Image | None:
        """An image by name or id, None when absent."""
        ...

    async def list(self) -> builtins.list[Image]:
        """Every image of the node."""
        ...

    async def remove(self, ref_or_id: str) -> builtins.list[str]:
        """Remove an image; returns the names removed."""
        ...

    async def usage(self) -> int:
        """Bytes the images take on disk."""
        ...

    async def close(self) -> None:
        """Release connections; the images stay."""
        ...


class PullFailed(Exception):
    """The container cannot start for want of its image: reason and message go to its waiting state."""

    def __init__(self, reason: str, message: str, retry_after: float = 0.0):
        super().__init__(message)
        self.reason = reason
        self.message = message
        self.retry_after = retry_after


def default_policy(image: str) -> str:
    """Always for :latest or untagged images, IfNotPresent otherwise (what API defaulting sets)."""
    last = image.rsplit("/", 1)[-1]
    if "@" in last:
        return "IfNotPresent"
    return "Always" if ":" not in last or last.endswith(":latest") else "IfNotPresent"


class ImagePuller:
    """The kubelet's image manager: one image service, events on the pod, a back-off per pod and image."""

    def __init__(self, store: ImageService, recorder: EventRecorder):
        self.store = store
        self.recorder = recorder
        self.backoff = Backoff()

    async def ensure(self, pod: Obj, container: Obj, secrets: Callable[[], Awaitable[list[Obj]]]) -> Image:
        """The container's image, pulled if its policy says so; PullFailed with the Kubernetes reason if not."""
        ref = container.get("image", "")
        policy = container.get("imagePullPolicy") or default_policy(ref)
        event = {"kind": "Pod", "apiVersion": "v1", "metadata": pod["metadata"]}
        try:
            parse_reference(ref)
        except InvalidReference:
            message = f'Failed to apply default image tag "{ref}": couldn\'t parse image name "{ref}": ' \
                      "invalid reference format"
            self.recorder.event(event, "Warning", "InspectFailed", message)
            raise PullFailed("InvalidImageName", message) from None
        present = await self.store.get(ref)
        if present is not None and policy != "Always":
            self.recorder.event(event, "Normal", "Pulled", f'Container image "{ref}" already present on machine')
            return present
        if present is None and policy == "Never":
            message = f'Container image "{ref}" is not present with pull policy of Never'
            self.recorder.event(event, "Warning", "ErrImageNeverPull", message)
            raise PullFailed("ErrImageNeverPull", message)
        key = f"{pod['metadata']['uid']}_{ref}"
        wait = self.backoff.remaining_since_update(key)
        if wait > 0:
            self.recorder.event(event, "Normal", "BackOff", f'Back-off pulling image "{ref}"')
            raise PullFailed("ImagePullBackOff", f'Back-off pulling image "{ref}"', wait)
        self.recorder.event(event, "Normal", "Pulling", f'Pulling image "{ref}"')
        started = time.monotonic()
        try:
            image = await self.store.pull(ref, credentials_from_secrets(await secrets()))
        except ImageError as exc:
            self.backoff.next(key)
            message = str(exc)
            if not message.startswith(PULL_FAILED):
                message = f'{PULL_FAILED} "{ref}": {message}'
            self.recorder.event(event, "Warning", "Failed", f'Failed to pull image "{ref}": {exc}')
            raise PullFailed("ErrImagePull", message, self.backoff.delay(key)) from None
        took = time.monotonic() - started
        self.recorder.event(event, "Normal", "Pulled", f'Successfully pulled image "{ref}" in {took:.3f}s. '
                                                       f"Image size: {image.size} bytes.")
        return image

    async def collect(self, in_use: set[str], target: int) -> int:
        """Image garbage collection: remove images no container uses, largest first, until `target` bytes are freed;
        returns the bytes freed."""
        used_ids = set()
        for name in in_use:
            image = await self.store.get(name)
            if image is not None:
                used_ids.add(image.id)
        before = await self.store.usage()
        freed = 0
        for image in sorted(await self.store.list(), key=lambda i: -i.size):
            if freed >= target:
                break
            if image.id not in used_ids:
                await self.store.remove(image.id)
                freed = before - await self.store.usage()
        return freed

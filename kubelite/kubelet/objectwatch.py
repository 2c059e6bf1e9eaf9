"""The ConfigMaps and Secrets that the node's pods refer to, each kept current by a watch of that one object
(upstream's watch-based manager): a pod's sync reads them from memory, and a change (or the creation of one a pod
waits for) wakes the pods that use it at once instead of at their next periodic volume refresh."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

from kubelite.client.errors import ApiError
from kubelite.client.informer import Informer
from kubelite.client.resources import CONFIGMAPS, SECRETS
from kubelite.client.rest import ApiClient

Obj = dict[str, Any]
Ref = tuple[str, str, str]
"""(plural, namespace, name) of a watched object."""
WATCHED = {r.plural: r for r in (CONFIGMAPS, SECRETS)}
SYNC_TIMEOUT = 10.0
"""How long a read waits for a new watch's first list before the pod's sync fails (and is retried)."""


class WatchedObjects:
    """Objects by reference, each behind its own single-object informer, kept while a pod (by uid) uses it."""

    def __init__(self, client: ApiClient, on_change: Callable[[set[str]], None], sync_timeout: float = SYNC_TIMEOUT):
        self.client = client
        self.on_change = on_change
        self.sync_timeout = sync_timeout
        self._informers: dict[Ref, Informer] = {}
        self._users: dict[Ref, set[str]] = {}

    async def get(self, plural: str, namespace: str, name: str, user: str) -> Obj | None:
        """The object as last seen (None when it does not exist); `user` (a pod uid) is told of its changes until
        released. Raises ApiError (504 Timeout) when the object cannot be listed in time."""
        ref = (plural, namespace, name)
        self._users.setdefault(ref, set()).add(user)
        informer = self._informers.get(ref)
        if informer is None:
            informer = self._watch(ref)
        if not informer.has_synced:
            try:
                async with asyncio.timeout(self.sync_timeout):
                    await informer.wait_synced()
            except TimeoutError:
                raise ApiError({"code": 504, "reason": "Timeout", "message": (
                    f"failed to sync {plural[:-1]} cache for {namespace}/{name}: timed out waiting for the "
                    f"condition")}) from None
        return informer.store.get_by_name(namespace, name)

    def _watch(self, ref: Ref) -> Informer:
        plural, namespace, name = ref
        informer = self._informers[ref] = Informer(self.client, WATCHED[plural], namespace=namespace,
                                                   field_selector=f"metadata.name={name}")

        def changed(*_objs: Obj) -> None:
            if informer.has_synced and self._users.get(ref):
                self.on_change(set(self._users[ref]))

        informer.add_handlers(on_add=changed, on_update=changed, on_delete=changed)
        informer.start()
        return informer

    async def release(self, user: str) -> None:
        """Forget a pod; objects no pod uses any more stop being watched."""
        unused = []
        for ref, users in list(self._users.items()):
            users.discard(user)
            if not users:
                del self._users[ref]
                unused.append(self._informers.pop(ref))
        for informer in unused:
            await informer.stop()

    async def close(self) -> None:
        """Stop every watch."""
        informers, self._informers = list(self._informers.values()), {}
        self._users.clear()
        for informer in informers:
            await informer.stop()

"""The kubelet's single-object watches of ConfigMaps and Secrets against a real `kubelite server`: reads come from
the watch, changes reach exactly the pods that use the object, and an object nobody uses is no longer watched."""

from __future__ import annotations

import asyncio
import base64

import pytest

from kubelite.client import ApiClient, ApiError, ClientConfig
from kubelite.client.resources import CONFIGMAPS, NAMESPACES, SECRETS
from kubelite.kubelet.objectwatch import WatchedObjects
from tests.e2e.conftest import free_port


class Changes:
    """What on_change reported, with a way to wait for the next report."""

    def __init__(self) -> None:
        self.seen: list[set[str]] = []
        self.arrived = asyncio.Event()

    def __call__(self, uids: set[str]) -> None:
        self.seen.append(uids)
        self.arrived.set()

    async def next(self) -> set[str]:
        async with asyncio.timeout(10):
            await self.arrived.wait()
        self.arrived.clear()
        return self.seen.pop(0)


async def test_reads_and_changes_reach_the_pods_that_use_the_object(client: ApiClient) -> None:
    await client.create(NAMESPACES, {"metadata": {"name": "watched"}})
    await client.create(CONFIGMAPS, {"metadata": {"name": "shared"}, "data": {"k": "one"}}, "watched")
    await client.create(CONFIGMAPS, {"metadata": {"name": "other"}, "data": {"k": "x"}}, "watched")
    changes = Changes()
    objects = WatchedObjects(client, changes)
    try:
        assert (await objects.get("configmaps", "watched", "shared", "pod-a"))["data"] == {"k": "one"}
        assert (await objects.get("configmaps", "watched", "shared", "pod-b"))["data"] == {"k": "one"}
        assert await objects.get("configmaps", "watched", "other", "pod-c") is not None
        assert not changes.seen, "the first list is no change"

        await client.patch(CONFIGMAPS, "shared", {"data": {"k": "two"}}, "watched")
        assert await changes.next() == {"pod-a", "pod-b"}
        assert (await objects.get("configmaps", "watched", "shared", "pod-a"))["data"] == {"k": "two"}

        assert await objects.get("secrets", "watched", "token", "pod-a") is None
        await client.create(SECRETS, {"metadata": {"name": "token"},
                                      "data": {"t": base64.b64encode(b"s3cret").decode()}}, "watched")
        assert await changes.next() == {"pod-a"}, "a pod waiting for a missing Secret hears of its creation"
        assert (await objects.get("secrets", "watched", "token", "pod-a"))["data"]["t"] == "czNjcmV0"

        await objects.release("pod-a")
        await client.patch(CONFIGMAPS, "shared", {"data": {"k": "three"}}, "watched")
        assert await changes.next() == {"pod-b"}, "a released pod hears nothing more"
        await objects.release("pod-b")
        await client.delete(SECRETS, "token", "watched")
        await client.patch(CONFIGMAPS, "shared", {"data": {"k": "four"}}, "watched")
        await client.delete(CONFIGMAPS, "other", "watched")
        assert await changes.next() == {"pod-c"}, "only the object still in use is watched"
        await asyncio.sleep(0.5)
        assert not changes.seen
    finally:
        await objects.close()


async def test_a_read_that_cannot_list_in_time_is_a_timeout() -> None:
    config = ClientConfig(server=f"http://127.0.0.1:{free_port()}")
    async with ApiClient(config) as unreachable:
        objects = WatchedObjects(unreachable, lambda _uids: None, sync_timeout=0.5)
        try:
            with pytest.raises(ApiError) as raised:
                await objects.get("configmaps", "default", "kube-root-ca.crt", "pod-a")
            assert raised.value.code == 504 and "kube-root-ca.crt" in raised.value.message
        finally:
            await objects.close()

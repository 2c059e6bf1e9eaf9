"""The agent's local-path cleanup in-process against a real `kubelite server` (API only, no agent): a deleted volume of
this node loses its directory and then its cleanup finalizer (and only that one); another node's is left alone."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from kubelite.client import ApiClient, load_kubeconfig
from kubelite.client.informer import SharedInformerFactory
from kubelite.client.resources import PERSISTENTVOLUMES
from kubelite.kubelet.localpath import LocalPathCleaner
from kubelite.scheduler.volumes import HOSTNAME_LABEL, LOCAL_PATH_FINALIZER, LOCAL_PATH_PROVISIONER, PROVISIONED_BY
from tests.e2e.conftest import Cluster
from tests.integration.test_controllers_core import eventually, get_or_none, gone

Obj = dict[str, Any]
NODE = "node-a"
PV_PROTECTION = "kubernetes.io/pv-protection"
"""Put on new volumes by admission, released by the pv-protection controller, which does not run here."""



@pytest.fixture
async def client(server: Cluster) -> AsyncIterator[ApiClient]:
    """A client, with the cleaner of node-a running on another one until the test ends."""
    async with ApiClient(load_kubeconfig(server.kubeconfig)) as api, \
            ApiClient(load_kubeconfig(server.kubeconfig)) as agent_client:
        informers = SharedInformerFactory(agent_client)
        stop = asyncio.Event()
        running = asyncio.create_task(LocalPathCleaner(agent_client, informers, NODE).run(stop))
        try:
            yield api
        finally:
            stop.set()
            await asyncio.wait_for(running, 20)
            await informers.stop()


def provisioned(name: str, node: str, directory: Path) -> Obj:
    """A PersistentVolume as the local-path provisioner makes it, on `node`, in `directory`."""
    return {
        "apiVersion": "v1", "kind": "PersistentVolume",
        "metadata": {"name": name, "annotations": {PROVISIONED_BY: LOCAL_PATH_PROVISIONER},
                     "finalizers": [PV_PROTECTION, LOCAL_PATH_FINALIZER]},
        "spec": {"capacity": {"storage": "1Gi"}, "accessModes": ["ReadWriteOnce"],
                 "persistentVolumeReclaimPolicy": "Delete", "storageClassName": "local-path",
                 "hostPath": {"path": str(directory), "type": "DirectoryOrCreate"},
                 "nodeAffinity": {"required": {"nodeSelectorTerms": [{"matchExpressions": [
                     {"key": HOSTNAME_LABEL, "operator": "In", "values": [node]}]}]}}},
    }


async def test_deleted_volume_of_this_node_is_cleaned_and_released(client: ApiClient, tmp_path: Path) -> None:
    ours, theirs = tmp_path / "pvc-ours_default_data", tmp_path / "pvc-theirs_default_data"
    for directory in (ours, theirs):
        (directory / "sub").mkdir(parents=True)
        (directory / "sub" / "data").write_text("precious")
    await client.create(PERSISTENTVOLUMES, provisioned("pvc-theirs", "node-b", theirs))
    await client.create(PERSISTENTVOLUMES, provisioned("pvc-ours", NODE, ours))
    # Theirs first: the watch brings its deletion to the cleaner (one worker, keys in order) before ours'.
    await client.delete(PERSISTENTVOLUMES, "pvc-theirs")
    await client.delete(PERSISTENTVOLUMES, "pvc-ours")

    async def released() -> bool:
        pv = await client.get(PERSISTENTVOLUMES, "pvc-ours")
        return pv["metadata"]["finalizers"] == [PV_PROTECTION]
    await eventually(released, "pvc-ours to lose only its cleanup finalizer")
    assert not ours.exists()
    # What the pv-protection controller does for a volume no claim uses: the volume goes.
    await client.patch(PERSISTENTVOLUMES, "pvc-ours", {"metadata": {"finalizers": None}})
    await gone(client, PERSISTENTVOLUMES, "pvc-ours")

    left = await client.get(PERSISTENTVOLUMES, "pvc-theirs")
    assert left["metadata"].get("deletionTimestamp")
    assert left["metadata"]["finalizers"] == [PV_PROTECTION, LOCAL_PATH_FINALIZER]
    assert (theirs / "sub" / "data").read_text() == "precious"
    await client.patch(PERSISTENTVOLUMES, "pvc-theirs", {"metadata": {"finalizers": None}})
    assert await get_or_none(client, PERSISTENTVOLUMES, "pvc-theirs") is None

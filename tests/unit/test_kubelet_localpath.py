"""Which deleted local-path volumes an agent cleans up: only its own node's, still held by the cleanup finalizer, made
by the provisioner, and only directories named pvc-...; anything else is left alone."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from kubelite.client.informer import SharedInformerFactory
from kubelite.kubelet.localpath import LocalPathCleaner, directory_to_clean, remove_tree
from kubelite.scheduler.volumes import HOSTNAME_LABEL, LOCAL_PATH_FINALIZER, LOCAL_PATH_PROVISIONER, PROVISIONED_BY

Obj = dict[str, Any]
NODE = "node-a"
LABELS = {HOSTNAME_LABEL: NODE, "zone": "z1"}
PATH = "/var/lib/kubelite/storage/pvc-1234_default_data"


def volume(path: str = PATH) -> Obj:
    return {
        "apiVersion": "v1", "kind": "PersistentVolume",
        "metadata": {"name": "pvc-1234", "resourceVersion": "7",
                     "annotations": {PROVISIONED_BY: LOCAL_PATH_PROVISIONER},
                     "finalizers": ["kubernetes.io/pv-protection", LOCAL_PATH_FINALIZER],
                     "deletionTimestamp": "2024-01-01T00:00:00Z"},
        "spec": {"capacity": {"storage": "1Gi"}, "accessModes": ["ReadWriteOnce"],
                 "persistentVolumeReclaimPolicy": "Delete", "storageClassName": "local-path",
                 "hostPath": {"path": path, "type": "DirectoryOrCreate"},
                 "nodeAffinity": {"required": {"nodeSelectorTerms": [{"matchExpressions": [
                     {"key": HOSTNAME_LABEL, "operator": "In", "values": [NODE]}]}]}}},
    }


def test_a_deleted_local_path_volume_of_this_node_is_cleaned() -> None:
    assert directory_to_clean(volume(), LABELS, NODE) == PATH


def test_affinity_on_another_label_of_this_node_is_honoured() -> None:
    pv = volume()
    pv["spec"]["nodeAffinity"]["required"]["nodeSelectorTerms"][0]["matchExpressions"][0] = {
        "key": "zone", "operator": "In", "values": ["z1"]}
    assert directory_to_clean(pv, LABELS, NODE) == PATH


def _not_deleted(pv: Obj) -> None:
    del pv["metadata"]["deletionTimestamp"]


def _finalizer_gone(pv: Obj) -> None:
    pv["metadata"]["finalizers"] = ["kubernetes.io/pv-protection"]


def _other_provisioner(pv: Obj) -> None:
    pv["metadata"]["annotations"][PROVISIONED_BY] = "rancher.io/local-path"


def _not_provisioned(pv: Obj) -> None:
    del pv["metadata"]["annotations"]


def _other_node(pv: Obj) -> None:
    pv["spec"]["nodeAffinity"]["required"]["nodeSelectorTerms"][0]["matchExpressions"][0]["values"] = ["node-b"]


def _no_affinity(pv: Obj) -> None:
    del pv["spec"]["nodeAffinity"]


def _not_pvc_directory(pv: Obj) -> None:
    pv["spec"]["hostPath"]["path"] = "/var/lib/kubelite/storage"


def _escaping_directory(pv: Obj) -> None:
    pv["spec"]["hostPath"]["path"] = PATH + "/../.."


def _relative_directory(pv: Obj) -> None:
    pv["spec"]["hostPath"]["path"] = "pvc-1234_default_data"


def _not_host_path(pv: Obj) -> None:
    pv["spec"]["local"] = pv["spec"].pop("hostPath")


@pytest.mark.parametrize("change", [_not_deleted, _finalizer_gone, _other_provisioner, _not_provisioned, _other_node,
                                    _no_affinity, _not_pvc_directory, _escaping_directory, _relative_directory,
                                    _not_host_path])
def test_anything_else_is_left_alone(change: Callable[[Obj], None]) -> None:
    pv = volume()
    change(pv)
    assert directory_to_clean(pv, LABELS, NODE) is None


def test_remove_tree_removes_contents_and_tolerates_a_missing_directory(tmp_path: Path) -> None:
    target = tmp_path / "pvc-1"
    (target / "sub").mkdir(parents=True)
    (target / "sub" / "data").write_text("x")
    remove_tree(str(target))
    assert not target.exists()
    remove_tree(str(target))


class PatchRecorder:
    """Stands in for the API client: records the patches it is sent."""

    def __init__(self) -> None:
        self.patches: list[tuple[str, Obj]] = []

    async def patch(self, resource: object, name: str, patch: Obj) -> Obj:
        self.patches.append((name, patch))
        return {}


async def test_reconcile_removes_the_directory_then_only_its_finalizer_guarded_by_resource_version(
        tmp_path: Path) -> None:
    directory = tmp_path / "pvc-1234_default_data"
    directory.mkdir()
    (directory / "data").write_text("x")
    client: Any = PatchRecorder()
    cleaner = LocalPathCleaner(client, SharedInformerFactory(client), NODE)
    cleaner.volumes.store.put(volume(str(directory)))
    await cleaner.reconcile("pvc-1234")
    assert not directory.exists()
    assert client.patches == [("pvc-1234", {"metadata": {"resourceVersion": "7",
                                                         "finalizers": ["kubernetes.io/pv-protection"]}})]

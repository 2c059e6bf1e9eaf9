"""The node half of the built-in local-path provisioner: when a local-path PersistentVolume of this node is deleted,
remove its directory, then the cleanup finalizer that keeps the volume until the data is gone."""

from __future__ import annotations

import asyncio
import logging
import os
import shutil
from collections.abc import Mapping
from typing import Any

from kubelite.client.controller import Controller
from kubelite.client.errors import ApiError, is_not_found
from kubelite.client.informer import SharedInformerFactory
from kubelite.client.resources import PERSISTENTVOLUMES
from kubelite.client.rest import ApiClient
from kubelite.scheduler.volumes import (
    HOSTNAME_LABEL,
    LOCAL_PATH_FINALIZER,
    LOCAL_PATH_PROVISIONER,
    PROVISIONED_BY,
    node_matches,
)

log = logging.getLogger(__name__)
Obj = dict[str, Any]
DIRECTORY_PREFIX = "pvc-"
"""Only directories named so are ever removed (the provisioner names them pvc-<uid>_<namespace>_<claim>)."""


def directory_to_clean(volume: Obj, labels: Mapping[str, str], node_name: str) -> str | None:
    """The directory this node must remove for the volume, if any: that of a deleted local-path volume still held by
    the cleanup finalizer and pinned by its node affinity to this node (one without affinity is no node's to clean),
    and only an absolute path naming a provisioned directory (pvc-...), never one someone else chose."""
    meta, spec = volume.get("metadata") or {}, volume.get("spec") or {}
    path = (spec.get("hostPath") or {}).get("path") or ""
    if (meta.get("deletionTimestamp")
            and LOCAL_PATH_FINALIZER in (meta.get("finalizers") or [])
            and (meta.get("annotations") or {}).get(PROVISIONED_BY) == LOCAL_PATH_PROVISIONER
            and (spec.get("nodeAffinity") or {}).get("required")
            and node_matches(volume, labels, node_name)
            and os.path.isabs(path)
            and os.path.basename(os.path.normpath(path)).startswith(DIRECTORY_PREFIX)):
        return path
    return None


def remove_tree(path: str) -> None:
    """Remove a directory and everything in it; one already gone is fine."""
    try:
        shutil.rmtree(path)
    except FileNotFoundError:
        pass


class LocalPathCleaner(Controller):
    """Removes the directories of this node's deleted local-path volumes and releases them; a failure is logged and
    the volume retried with back-off (the Controller's work queue)."""

    name = "local-path-cleaner"
    workers = 1

    def __init__(self, client: ApiClient, informers: SharedInformerFactory, node_name: str,
                 labels: Mapping[str, str] | None = None):
        self.node_name = node_name
        self.labels = {HOSTNAME_LABEL: node_name, **(labels or {})}
        super().__init__(client, informers)

    def setup(self) -> None:
        self.volumes = self.watch(PERSISTENTVOLUMES)

    async def reconcile(self, key: str) -> None:
        """Remove the volume's directory, then drop the finalizer guarded by the cached resourceVersion (a conflict
        retries the key, from the cache the informer has refreshed meanwhile)."""
        volume = self.volumes.store.get(key)
        if volume is None or (path := directory_to_clean(volume, self.labels, self.node_name)) is None:
            return
        await asyncio.to_thread(remove_tree, path)
        log.info("removed %s of deleted local-path volume %s", path, key)
        meta = volume["metadata"]
        remaining = [f for f in meta["finalizers"] if f != LOCAL_PATH_FINALIZER]
        patch = {"metadata": {"resourceVersion": meta["resourceVersion"], "finalizers": remaining or None}}
        try:
            await self.client.patch(PERSISTENTVOLUMES, meta["name"], patch)
        except ApiError as exc:
            if not is_not_found(exc):
                raise

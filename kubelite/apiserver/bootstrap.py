"""What a new cluster starts with: the four system namespaces, the `kubernetes` Service and the default
StorageClass `local-path` (volumes as directories on the consumer's node, as k3s's)."""

from __future__ import annotations

import contextlib

from kubelite.api.registry import Registry
from kubelite.apiserver import errors
from kubelite.apiserver.objects import ObjectStore, WriteOptions
from kubelite.scheduler.volumes import LOCAL_PATH_PROVISIONER

SYSTEM_NAMESPACES = ("default", "kube-system", "kube-public", "kube-node-lease")


async def _ensure(store: ObjectStore, registry: Registry, plural: str, namespace: str | None, obj: dict, *,
                  group: str = "", version: str = "v1", fields: tuple[str, ...] = ()) -> None:
    """Create the object if it is missing; with `fields`, also put those fields back if they differ (the
    `kubernetes` Service's endpoints follow the advertised address across restarts)."""
    rt = registry.get(group, version, plural)
    assert rt is not None
    try:
        current = await store.get(rt, namespace, obj["metadata"]["name"])
    except errors.StatusError:
        with contextlib.suppress(errors.StatusError):
            await store.create(rt, namespace, obj, WriteOptions())
        return
    if any(current.get(f) != obj.get(f) for f in fields):
        with contextlib.suppress(errors.StatusError):
            await store.update(rt, namespace, obj["metadata"]["name"], {**current, **{f: obj[f] for f in fields}},
                               WriteOptions())


async def ensure_defaults(store: ObjectStore, registry: Registry, address: str, port: int, storage_path: str) -> None:
    """Create the default namespaces, the `kubernetes` Service, its Endpoints and EndpointSlice, and the default
    StorageClass (local-path volumes under storage_path on each node)."""
    for name in SYSTEM_NAMESPACES:
        await _ensure(store, registry, "namespaces", None, {"metadata": {"name": name}})
    await _ensure(store, registry, "services", "default", {
        "metadata": {"name": "kubernetes", "labels": {"component": "apiserver", "provider": "kubernetes"}},
        "spec": {"ports": [{"name": "https", "port": 443, "protocol": "TCP", "targetPort": port}]},
    })
    await _ensure(store, registry, "endpoints", "default", {
        "metadata": {"name": "kubernetes", "labels": {"endpointslice.kubernetes.io/skip-mirror": "true"}},
        "subsets": [{"addresses": [{"ip": address}], "ports": [{"name": "https", "port": port, "protocol": "TCP"}]}],
    }, fields=("subsets",))
    await _ensure(store, registry, "endpointslices", "default", {
        "metadata": {"name": "kubernetes", "labels": {"kubernetes.io/service-name": "kubernetes"}},
        "addressType": "IPv4",
        "endpoints": [{"addresses": [address], "conditions": {"ready": True}}],
        "ports": [{"name": "https", "port": port, "protocol": "TCP"}],
    }, group="discovery.k8s.io", fields=("endpoints", "ports"))
    await _ensure(store, registry, "storageclasses", None, {
        "metadata": {"name": "local-path", "annotations": {"storageclass.kubernetes.io/is-default-class": "true"}},
        "provisioner": LOCAL_PATH_PROVISIONER,
        "parameters": {"path": storage_path},
        "reclaimPolicy": "Delete",
        "volumeBindingMode": "WaitForFirstConsumer",
    }, group="storage.k8s.io")

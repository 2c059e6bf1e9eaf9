"""What a new cluster starts with: the four system namespaces and the `kubernetes` Service."""

from __future__ import annotations

import contextlib

from kubelite.api.registry import Registry
from kubelite.apiserver import errors
from kubelite.apiserver.objects import ObjectStore, WriteOptions

SYSTEM_NAMESPACES = ("default", "kube-system", "kube-public", "kube-node-lease")


async def _ensure(store: ObjectStore, registry: Registry, plural: str, namespace: str | None, obj: dict) -> None:
    rt = registry.get("", "v1", plural)
    assert rt is not None
    with contextlib.suppress(errors.StatusError):
        await store.get(rt, namespace, obj["metadata"]["name"])
        return
    with contextlib.suppress(errors.StatusError):
        await store.create(rt, namespace, obj, WriteOptions())


async def ensure_defaults(store: ObjectStore, registry: Registry, address: str, port: int) -> None:
    """Create the default namespaces and the `kubernetes` Service with its Endpoints, once."""
    for name in SYSTEM_NAMESPACES:
        await _ensure(store, registry, "namespaces", None, {"metadata": {"name": name}})
    await _ensure(store, registry, "services", "default", {
        "metadata": {"name": "kubernetes", "labels": {"component": "apiserver", "provider": "kubernetes"}},
        "spec": {"ports": [{"name": "https", "port": 443, "protocol": "TCP", "targetPort": port}]},
    })
    await _ensure(store, registry, "endpoints", "default", {
        "metadata": {"name": "kubernetes", "labels": {"endpointslice.kubernetes.io/skip-mirror": "true"}},
        "subsets": [{"addresses": [{"ip": address}], "ports": [{"name": "https", "port": port, "protocol": "TCP"}]}],
    })

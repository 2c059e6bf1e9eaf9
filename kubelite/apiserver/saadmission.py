"""ServiceAccount admission: a new pod runs as its ServiceAccount and gets the API credentials upstream mounts.

The pod's serviceAccountName defaults to "default". Unless automountServiceAccountToken is false on the pod (or,
when the pod leaves it unset, on the ServiceAccount), the pod gets a kube-api-access-XXXXX projected volume — a
token of the ServiceAccount (TokenRequest, 3607 s), the cluster CA from the kube-root-ca.crt ConfigMap and the
namespace — mounted read-only at /var/run/secrets/kubernetes.io/serviceaccount in every container that does not
mount something there already. A pod whose ServiceAccount does not exist is refused (403); the "default" one is
waited for a little, as upstream does, since the controller-manager makes it right after its namespace.
"""

from __future__ import annotations

import asyncio
import random

from kubelite.api.registry import Registry
from kubelite.api.resource import ResourceType
from kubelite.api.strategy import Obj
from kubelite.apiserver import errors
from kubelite.apiserver.objects import ObjectStore, random_suffix

MOUNT_PATH = "/var/run/secrets/kubernetes.io/serviceaccount"
TOKEN_SECONDS = 3607
CONTAINER_LISTS = ("initContainers", "containers", "ephemeralContainers")
DEFAULT_ACCOUNT = "default"
DEFAULT_ATTEMPTS = 10
"""Lookups of a missing "default" ServiceAccount before the pod is refused, 100-200 ms apart (upstream's)."""


def api_access_volume(name: str) -> Obj:
    """The projected volume upstream's admission adds."""
    return {"name": name, "projected": {"defaultMode": 0o644, "sources": [
        {"serviceAccountToken": {"expirationSeconds": TOKEN_SECONDS, "path": "token"}},
        {"configMap": {"name": "kube-root-ca.crt", "items": [{"key": "ca.crt", "path": "ca.crt"}]}},
        {"downwardAPI": {"items": [{"path": "namespace",
                                    "fieldRef": {"apiVersion": "v1", "fieldPath": "metadata.namespace"}}]}}]}}


class ServiceAccountAdmission:
    """The admission hook: the pod's ServiceAccount must exist; its automountServiceAccountToken applies when the
    pod does not say."""

    def __init__(self, store: ObjectStore, registry: Registry):
        self.store = store
        self.accounts = registry.get("", "v1", "serviceaccounts")

    async def _account(self, namespace: str, name: str) -> Obj | None:
        """The ServiceAccount, or None once it was not found (after retries for "default")."""
        assert self.accounts is not None
        attempts = DEFAULT_ATTEMPTS if name == DEFAULT_ACCOUNT else 1
        pause = random.uniform(0.1, 0.2)
        for attempt in range(attempts):
            if attempt:
                await asyncio.sleep(pause)
            try:
                return await self.store.get(self.accounts, namespace, name)
            except errors.StatusError as exc:
                if exc.code != 404:
                    raise
        return None

    async def admit(self, rt: ResourceType, pod: Obj, old: Obj | None) -> None:
        if old is not None or rt.group or rt.plural != "pods" or self.accounts is None:
            return
        spec, meta = pod.setdefault("spec", {}), pod["metadata"]
        namespace = meta.get("namespace", "")
        name = spec.get("serviceAccountName") or spec.get("serviceAccount") or DEFAULT_ACCOUNT
        spec["serviceAccountName"] = spec["serviceAccount"] = name
        account = await self._account(namespace, name)
        if account is None:
            raise errors.forbidden("pods", "", meta.get("name", ""), f"error looking up service account "
                                   f'{namespace}/{name}: serviceaccount "{name}" not found')
        automount = spec.get("automountServiceAccountToken")
        if automount is False or (automount is None and account.get("automountServiceAccountToken") is False):
            return
        containers = [c for key in CONTAINER_LISTS for c in spec.get(key) or []]
        needing = [c for c in containers
                   if not any(m.get("mountPath", "").rstrip("/") == MOUNT_PATH for m in c.get("volumeMounts") or [])]
        if not needing:
            return
        taken = {v.get("name") for v in spec.get("volumes") or []}
        volume = f"kube-api-access-{random_suffix()}"
        while volume in taken:
            volume = f"kube-api-access-{random_suffix()}"
        spec.setdefault("volumes", []).append(api_access_volume(volume))
        for container in needing:
            container.setdefault("volumeMounts", []).append({"name": volume, "readOnly": True,
                                                             "mountPath": MOUNT_PATH})

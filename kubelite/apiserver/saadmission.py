"""ServiceAccount admission: a new pod runs as its ServiceAccount and gets the API credentials upstream mounts.

The pod's serviceAccountName defaults to "default". Unless automountServiceAccountToken is false on the pod (or,
when the pod leaves it unset, on the ServiceAccount), the pod gets a kube-api-access-XXXXX projected volume — a
token of the ServiceAccount (TokenRequest, 3607 s), the cluster CA from the kube-root-ca.crt ConfigMap and the
namespace — mounted read-only at /var/run/secrets/kubernetes.io/serviceaccount in every container that does not
mount something there already. Pods are not refused when the ServiceAccount does not exist (yet).
"""

from __future__ import annotations

from kubelite.api.registry import Registry
from kubelite.api.resource import ResourceType
from kubelite.api.strategy import Obj
from kubelite.apiserver import errors
from kubelite.apiserver.objects import ObjectStore, random_suffix

MOUNT_PATH = "/var/run/secrets/kubernetes.io/serviceaccount"
TOKEN_SECONDS = 3607
CONTAINER_LISTS = ("initContainers", "containers", "ephemeralContainers")


def api_access_volume(name: str) -> Obj:
    """The projected volume upstream's admission adds."""
    return {"name": name, "projected": {"defaultMode": 0o644, "sources": [
        {"serviceAccountToken": {"expirationSeconds": TOKEN_SECONDS, "path": "token"}},
        {"configMap": {"name": "kube-root-ca.crt", "items": [{"key": "ca.crt", "path": "ca.crt"}]}},
        {"downwardAPI": {"items": [{"path": "namespace",
                                    "fieldRef": {"apiVersion": "v1", "fieldPath": "metadata.namespace"}}]}}]}}


class ServiceAccountAdmission:
    """The admission hook; reads the ServiceAccount only when the pod does not say whether to automount."""

    def __init__(self, store: ObjectStore, registry: Registry):
        self.store = store
        self.accounts = registry.get("", "v1", "serviceaccounts")

    async def _automount(self, namespace: str, account: str) -> bool:
        if self.accounts is None:
            return True
        try:
            found = await self.store.get(self.accounts, namespace, account)
        except errors.StatusError:
            return True
        return found.get("automountServiceAccountToken") is not False

    async def admit(self, rt: ResourceType, pod: Obj, old: Obj | None) -> None:
        if old is not None or rt.group or rt.plural != "pods":
            return
        spec = pod.setdefault("spec", {})
        account = spec.get("serviceAccountName") or spec.get("serviceAccount") or "default"
        spec["serviceAccountName"] = spec["serviceAccount"] = account
        automount = spec.get("automountServiceAccountToken")
        if automount is False or (automount is None and
                                  not await self._automount(pod["metadata"].get("namespace", ""), account)):
            return
        containers = [c for key in CONTAINER_LISTS for c in spec.get(key) or []]
        needing = [c for c in containers
                   if not any(m.get("mountPath", "").rstrip("/") == MOUNT_PATH for m in c.get("volumeMounts") or [])]
        if not needing:
            return
        taken = {v.get("name") for v in spec.get("volumes") or []}
        name = f"kube-api-access-{random_suffix()}"
        while name in taken:
            name = f"kube-api-access-{random_suffix()}"
        spec.setdefault("volumes", []).append(api_access_volume(name))
        for container in needing:
            container.setdefault("volumeMounts", []).append({"name": name, "readOnly": True, "mountPath": MOUNT_PATH})

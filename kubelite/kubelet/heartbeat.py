"""What every kubelet (real or hollow) reports about its node: the healthy conditions and the Lease it renews."""

from __future__ import annotations

from typing import Any

from kubelite.client.errors import ApiError, is_conflict, is_not_found
from kubelite.client.resources import LEASES
from kubelite.client.rest import ApiClient
from kubelite.client.timestamps import now_micro_time

Obj = dict[str, Any]
LEASE_NAMESPACE = "kube-node-lease"
LEASE_DURATION_SECONDS = 40
KUBELET_VERSION = "v1.33.0"
NODE_CONDITIONS = (
    ("MemoryPressure", "False", "KubeletHasSufficientMemory", "kubelet has sufficient memory available"),
    ("DiskPressure", "False", "KubeletHasNoDiskPressure", "kubelet has no disk pressure"),
    ("PIDPressure", "False", "KubeletHasSufficientPID", "kubelet has sufficient PID available"),
    ("Ready", "True", "KubeletReady", "kubelet is posting ready status"),
)


def node_conditions(heartbeat: str, since: str) -> list[Obj]:
    """A healthy kubelet's node conditions."""
    return [{"type": type_, "status": status, "reason": reason, "message": message,
             "lastHeartbeatTime": heartbeat, "lastTransitionTime": since}
            for type_, status, reason, message in NODE_CONDITIONS]


def lease_object(node_name: str, node_uid: str) -> Obj:
    """A node's Lease in kube-node-lease, owned by its Node so it goes when the Node does."""
    return {"apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
            "metadata": {"name": node_name, "namespace": LEASE_NAMESPACE,
                         "ownerReferences": [{"apiVersion": "v1", "kind": "Node", "name": node_name,
                                              "uid": node_uid}]},
            "spec": {"holderIdentity": node_name, "leaseDurationSeconds": LEASE_DURATION_SECONDS,
                     "renewTime": now_micro_time()}}


async def renew_lease(client: ApiClient, node_name: str, node_uid: str, lease: Obj | None) -> Obj:
    """PUT the last Lease seen with a new renewTime (read it again on a conflict, create it if missing)."""
    for _attempt in range(2):
        try:
            if lease is None:
                lease = await client.get(LEASES, node_name, LEASE_NAMESPACE)
            renewed = {**lease, "spec": {**lease["spec"], "holderIdentity": node_name,
                                         "leaseDurationSeconds": LEASE_DURATION_SECONDS,
                                         "renewTime": now_micro_time()}}
            return await client.update(LEASES, renewed)
        except ApiError as exc:
            lease = None
            if is_not_found(exc):
                return await client.create(LEASES, lease_object(node_name, node_uid))
            if not is_conflict(exc):
                raise
    return await client.get(LEASES, node_name, LEASE_NAMESPACE)

"""Resource descriptors: where a kind lives in the REST API, and the built-in ones by name."""

from __future__ import annotations

import functools
from dataclasses import dataclass
from urllib.parse import quote


@dataclass(frozen=True)
class Resource:
    """One resource of one group-version (custom resources too): enough to build its URLs."""

    group: str
    version: str
    plural: str
    namespaced: bool
    kind: str = ""

    @property
    def api_version(self) -> str:
        """The apiVersion of its objects: "v1", "apps/v1"."""
        return f"{self.group}/{self.version}" if self.group else self.version

    def path(self, namespace: str | None = None, name: str = "", subresource: str = "") -> str:
        """The URL path of the collection (optionally in a namespace), an object, or its subresource."""
        base = f"/apis/{self.group}/{self.version}" if self.group else f"/api/{self.version}"
        if self.namespaced and namespace:
            base += f"/namespaces/{quote(namespace, safe='')}"
        path = f"{base}/{self.plural}"
        if name:
            path += f"/{quote(name, safe='')}"
            if subresource:
                path += f"/{subresource}"
        return path


@functools.cache
def _builtin_table() -> dict[tuple[str, str], Resource]:
    """Every kind the server has built in, by (apiVersion, kind) and (apiVersion, plural); read from the API
    registry on first use only, so a process that needs just the constants below never loads the kinds."""
    from kubelite.api.kinds.builtin import BUILTIN
    table: dict[tuple[str, str], Resource] = {}
    for rt in BUILTIN:
        res = Resource(rt.group, rt.version, rt.plural, rt.namespaced, rt.kind)
        table[(res.api_version, rt.kind)] = res
        table[(res.api_version, rt.plural)] = res
    return table



def resource(api_version: str, kind_or_plural: str) -> Resource:
    """The built-in resource of a kind ("Pod") or plural ("pods") in an apiVersion ("v1", "apps/v1")."""
    try:
        return _builtin_table()[(api_version, kind_or_plural)]
    except KeyError:
        raise KeyError(f"no built-in resource {kind_or_plural!r} in {api_version!r}") from None


def resource_of(obj: dict) -> Resource:
    """The built-in resource of an object, from its apiVersion and kind."""
    return resource(obj.get("apiVersion", ""), obj.get("kind", ""))


PODS = Resource("", "v1", "pods", True, "Pod")
NODES = Resource("", "v1", "nodes", False, "Node")
NAMESPACES = Resource("", "v1", "namespaces", False, "Namespace")
SERVICES = Resource("", "v1", "services", True, "Service")
ENDPOINTS = Resource("", "v1", "endpoints", True, "Endpoints")
EVENTS = Resource("", "v1", "events", True, "Event")
SERVICEACCOUNTS = Resource("", "v1", "serviceaccounts", True, "ServiceAccount")
RESOURCEQUOTAS = Resource("", "v1", "resourcequotas", True, "ResourceQuota")
PERSISTENTVOLUMECLAIMS = Resource("", "v1", "persistentvolumeclaims", True, "PersistentVolumeClaim")
PERSISTENTVOLUMES = Resource("", "v1", "persistentvolumes", False, "PersistentVolume")
CONFIGMAPS = Resource("", "v1", "configmaps", True, "ConfigMap")
SECRETS = Resource("", "v1", "secrets", True, "Secret")
REPLICATIONCONTROLLERS = Resource("", "v1", "replicationcontrollers", True, "ReplicationController")
ENDPOINTSLICES = Resource("discovery.k8s.io", "v1", "endpointslices", True, "EndpointSlice")
LEASES = Resource("coordination.k8s.io", "v1", "leases", True, "Lease")
STORAGECLASSES = Resource("storage.k8s.io", "v1", "storageclasses", False, "StorageClass")
REPLICASETS = Resource("apps", "v1", "replicasets", True, "ReplicaSet")
DEPLOYMENTS = Resource("apps", "v1", "deployments", True, "Deployment")
STATEFULSETS = Resource("apps", "v1", "statefulsets", True, "StatefulSet")
DAEMONSETS = Resource("apps", "v1", "daemonsets", True, "DaemonSet")
CONTROLLERREVISIONS = Resource("apps", "v1", "controllerrevisions", True, "ControllerRevision")
JOBS = Resource("batch", "v1", "jobs", True, "Job")
CRONJOBS = Resource("batch", "v1", "cronjobs", True, "CronJob")
PODDISRUPTIONBUDGETS = Resource("policy", "v1", "poddisruptionbudgets", True, "PodDisruptionBudget")
HORIZONTALPODAUTOSCALERS = Resource("autoscaling", "v2", "horizontalpodautoscalers", True, "HorizontalPodAutoscaler")
PRIORITYCLASSES = Resource("scheduling.k8s.io", "v1", "priorityclasses", False, "PriorityClass")

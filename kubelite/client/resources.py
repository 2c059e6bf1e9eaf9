"""Resource descriptors: where a kind lives in the REST API, and the built-in ones by name."""

from __future__ import annotations

from dataclasses import dataclass
from urllib.parse import quote

from kubelite.api.kinds import BUILTIN


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


def _builtin_table() -> dict[tuple[str, str], Resource]:
    """Every kind the server has built in, by (apiVersion, kind) and (apiVersion, plural)."""
    table: dict[tuple[str, str], Resource] = {}
    for rt in BUILTIN:
        res = Resource(rt.group, rt.version, rt.plural, rt.namespaced, rt.kind)
        table[(res.api_version, rt.kind)] = res
        table[(res.api_version, rt.plural)] = res
    return table


_BUILTIN = _builtin_table()


def resource(api_version: str, kind_or_plural: str) -> Resource:
    """The built-in resource of a kind ("Pod") or plural ("pods") in an apiVersion ("v1", "apps/v1")."""
    try:
        return _BUILTIN[(api_version, kind_or_plural)]
    except KeyError:
        raise KeyError(f"no built-in resource {kind_or_plural!r} in {api_version!r}") from None


def resource_of(obj: dict) -> Resource:
    """The built-in resource of an object, from its apiVersion and kind."""
    return resource(obj.get("apiVersion", ""), obj.get("kind", ""))


PODS = resource("v1", "pods")
NODES = resource("v1", "nodes")
NAMESPACES = resource("v1", "namespaces")
SERVICES = resource("v1", "services")
ENDPOINTS = resource("v1", "endpoints")
EVENTS = resource("v1", "events")
SERVICEACCOUNTS = resource("v1", "serviceaccounts")
RESOURCEQUOTAS = resource("v1", "resourcequotas")
PERSISTENTVOLUMECLAIMS = resource("v1", "persistentvolumeclaims")
CONFIGMAPS = resource("v1", "configmaps")
SECRETS = resource("v1", "secrets")
REPLICATIONCONTROLLERS = resource("v1", "replicationcontrollers")
ENDPOINTSLICES = resource("discovery.k8s.io/v1", "endpointslices")
LEASES = resource("coordination.k8s.io/v1", "leases")
REPLICASETS = resource("apps/v1", "replicasets")
DEPLOYMENTS = resource("apps/v1", "deployments")
STATEFULSETS = resource("apps/v1", "statefulsets")
DAEMONSETS = resource("apps/v1", "daemonsets")
CONTROLLERREVISIONS = resource("apps/v1", "controllerrevisions")
JOBS = resource("batch/v1", "jobs")
CRONJOBS = resource("batch/v1", "cronjobs")
PODDISRUPTIONBUDGETS = resource("policy/v1", "poddisruptionbudgets")
HORIZONTALPODAUTOSCALERS = resource("autoscaling/v2", "horizontalpodautoscalers")
PRIORITYCLASSES = resource("scheduling.k8s.io/v1", "priorityclasses")

"""The set of served resources: built-in kinds plus those that CRDs declare at run time."""

from __future__ import annotations

from collections.abc import Iterable

from kubelite.api.resource import ResourceType

# Group order in discovery, as kube-apiserver lists them (core first, then by priority).
GROUP_ORDER = [
    "", "apiregistration.k8s.io", "apps", "events.k8s.io", "authentication.k8s.io",
    "authorization.k8s.io", "autoscaling", "batch", "certificates.k8s.io", "networking.k8s.io",
    "policy", "rbac.authorization.k8s.io", "storage.k8s.io", "admissionregistration.k8s.io",
    "apiextensions.k8s.io", "scheduling.k8s.io", "coordination.k8s.io", "node.k8s.io",
    "discovery.k8s.io", "flowcontrol.apiserver.k8s.io", "resource.k8s.io",
]
# The version a client should prefer when a group serves several (autoscaling serves v2 and v1).
VERSION_ORDER = ["v2", "v1", "v2beta2", "v2beta1", "v1beta3", "v1beta2", "v1beta1", "v1alpha1"]


def _version_rank(version: str) -> tuple[int, str]:
    return (VERSION_ORDER.index(version) if version in VERSION_ORDER else len(VERSION_ORDER), version)


class Registry:
    """Looks resources up by path (group, version, plural) and by kind; changes when CRDs do."""

    def __init__(self, resources: Iterable[ResourceType] = ()):
        self._by_path: dict[tuple[str, str, str], ResourceType] = {}
        self.generation = 0
        """Bumped on every change, so discovery and OpenAPI documents know when to rebuild."""
        for resource in resources:
            self.add(resource)

    def add(self, resource: ResourceType) -> None:
        self._by_path[(resource.group, resource.version, resource.plural)] = resource
        self.generation += 1

    def remove(self, group: str, version: str, plural: str) -> None:
        if self._by_path.pop((group, version, plural), None) is not None:
            self.generation += 1

    def get(self, group: str, version: str, plural: str) -> ResourceType | None:
        return self._by_path.get((group, version, plural))

    def by_kind(self, group: str, version: str, kind: str) -> ResourceType | None:
        for resource in self._by_path.values():
            if resource.group == group and resource.version == version and resource.kind == kind:
                return resource
        return None

    def resources(self) -> list[ResourceType]:
        return list(self._by_path.values())

    def groups(self) -> list[tuple[str, list[str]]]:
        """Every served (group, versions preferred first), core group first."""
        versions: dict[str, set[str]] = {}
        for resource in self._by_path.values():
            versions.setdefault(resource.group, set()).add(resource.version)

        def group_rank(group: str) -> tuple[int, str]:
            return (GROUP_ORDER.index(group) if group in GROUP_ORDER else len(GROUP_ORDER), group)

        return [(g, sorted(versions[g], key=_version_rank)) for g in sorted(versions, key=group_rank)]

    def in_group_version(self, group: str, version: str) -> list[ResourceType]:
        return sorted((r for r in self._by_path.values() if r.group == group and r.version == version),
                      key=lambda r: r.plural)

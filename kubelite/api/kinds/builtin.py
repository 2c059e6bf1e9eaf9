"""Every built-in resource kubelite serves, and the name rule each kind's objects follow."""

from __future__ import annotations

from kubelite.api.kinds import (
    apiextensions,
    apps,
    authn,
    autoscaling,
    batch,
    coordination,
    core,
    discovery,
    events,
    networking,
    policy,
    rbac,
    scheduling,
    storage,
)
from kubelite.api.names import NameRule, dns1035_name, dns_label_name, dns_subdomain_name, path_segment_name
from kubelite.api.resource import ResourceType

BUILTIN: list[ResourceType] = [
    *core.RESOURCES,
    *apps.RESOURCES,
    *batch.RESOURCES,
    *coordination.RESOURCES,
    *discovery.RESOURCES,
    *events.RESOURCES,
    *rbac.RESOURCES,
    *policy.RESOURCES,
    *autoscaling.RESOURCES,
    *networking.RESOURCES,
    *storage.RESOURCES,
    *scheduling.RESOURCES,
    *apiextensions.RESOURCES,
    *authn.RESOURCES,
]

_NAME_RULES: dict[tuple[str, str], NameRule] = {
    ("", "namespaces"): dns_label_name,
    ("", "services"): dns1035_name,
    **{
        (rbac.GROUP, plural): path_segment_name
        for plural in ("roles", "rolebindings", "clusterroles", "clusterrolebindings")
    },
}


def name_rule(resource: ResourceType) -> NameRule:
    """The rule metadata.name follows for this resource: a DNS subdomain unless upstream says otherwise."""
    return _NAME_RULES.get((resource.group, resource.plural), dns_subdomain_name)

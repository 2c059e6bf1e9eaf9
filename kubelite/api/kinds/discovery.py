"""discovery.k8s.io/v1: EndpointSlices."""

from __future__ import annotations

from typing import Any

from kubelite.api.kinds.common import columns, dig, immutable, since
from kubelite.api.names import required_because
from kubelite.api.resource import ResourceType
from kubelite.api.strategy import AGE_COLUMN, Cause, Column, Obj, Strategy, unsupported

ADDRESS_TYPES = ["FQDN", "IPv4", "IPv6"]


def endpointslice_defaults(obj: Obj) -> None:
    """SetDefaults_EndpointPort: name '' and protocol TCP."""
    for port in obj.get("ports") or []:
        port.setdefault("name", "")
        port.setdefault("protocol", "TCP")


def endpointslice_validate(obj: Obj) -> list[Cause]:
    """ValidateEndpointSlice: a known address type; each endpoint has an address."""
    kind = obj.get("addressType", "")
    causes = [] if kind in ADDRESS_TYPES else [unsupported("addressType", kind, ADDRESS_TYPES)]
    return causes + [
        required_because(f"endpoints[{i}].addresses", "must contain at least 1 address")
        for i, endpoint in enumerate(obj.get("endpoints") or [])
        if not endpoint.get("addresses")
    ]


def _listed(items: list[str]) -> str:
    """At most three items, then '+ N more...'; '<unset>' for none."""
    if len(items) > 3:
        return f"{','.join(items[:3])} + {len(items) - 3} more..."
    return ",".join(items) or "<unset>"


def endpointslice_row(obj: Obj) -> list[Any]:
    """NAME ADDRESSTYPE PORTS ENDPOINTS AGE, as upstream printEndpointSlice."""
    ports = [
        str(p["port"]) if p.get("port") is not None else p.get("name", "*") for p in obj.get("ports") or []
    ]
    addresses = [a for e in obj.get("endpoints") or [] for a in e.get("addresses") or []]
    return [
        dig(obj, "metadata", "name", default=""),
        obj.get("addressType", ""),
        _listed(ports),
        _listed(addresses),
        since(dig(obj, "metadata", "creationTimestamp")),
    ]


RESOURCES = [
    ResourceType(
        "discovery.k8s.io",
        "v1",
        "EndpointSlice",
        "endpointslices",
        True,
        Strategy(
            has_status=False,
            row=endpointslice_row,
            defaults=endpointslice_defaults,
            validate=endpointslice_validate,
            validate_update=lambda new, old: immutable(
                new.get("addressType"), old.get("addressType"), "addressType"
            ),
            columns=columns(
                Column(
                    "AddressType",
                    description="addressType specifies the type of address carried by this EndpointSlice.",
                ),
                Column(
                    "Ports",
                    description="ports specifies the list of network ports exposed by each endpoint in this "
                    "slice.",
                ),
                Column("Endpoints", description="endpoints is a list of unique endpoints in this slice."),
                AGE_COLUMN,
            ),
        ),
        schema="io.k8s.api.discovery.v1.EndpointSlice",
    )
]

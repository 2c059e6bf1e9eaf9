"""Services: defaults, update carry-over, validation, fields, table (the apiserver allocates IPs)."""

from __future__ import annotations

import ipaddress
from typing import Any

from kubelite.api.kinds.common import columns, dig, format_labels, since
from kubelite.api.names import (
    go_repr,
    invalid_value,
    is_dns1123_label,
    is_dns1123_subdomain,
    is_port_name,
    is_port_number,
    validate_labels,
)
from kubelite.api.strategy import (
    AGE_COLUMN,
    Cause,
    Column,
    Obj,
    Strategy,
    duplicate,
    forbidden,
    required,
    unsupported,
)

SERVICE_TYPES = ["ClusterIP", "ExternalName", "LoadBalancer", "NodePort"]
NODE_PORT_RANGE = (30000, 32767)
_PROTOCOLS = ["SCTP", "TCP", "UDP"]


def _type(spec: Obj) -> str:
    return spec.get("type") or "ClusterIP"


def _externally_accessible(spec: Obj) -> bool:
    kind = _type(spec)
    return kind in ("LoadBalancer", "NodePort") or (kind == "ClusterIP" and bool(spec.get("externalIPs")))


def _headless(spec: Obj) -> bool:
    return spec.get("clusterIP") == "None" or (spec.get("clusterIPs") or [None])[0] == "None"


def service_defaults(service: Obj) -> None:
    """SetDefaults_Service, clusterIP/clusterIPs normalisation and single-stack IPv4 families."""
    spec = service.setdefault("spec", {})
    affinity = spec.setdefault("sessionAffinity", "None")
    if affinity == "None":
        spec.pop("sessionAffinityConfig", None)
    elif affinity == "ClientIP" and not dig(spec, "sessionAffinityConfig", "clientIP", "timeoutSeconds"):
        spec["sessionAffinityConfig"] = {"clientIP": {"timeoutSeconds": 10800}}
    kind = spec.setdefault("type", "ClusterIP")
    for port in spec.get("ports") or []:
        port.setdefault("protocol", "TCP")
        if port.get("targetPort") in (None, 0, ""):
            port["targetPort"] = port.get("port")
    if _externally_accessible(spec):
        spec.setdefault("externalTrafficPolicy", "Cluster")
    if kind != "ExternalName":
        spec.setdefault("internalTrafficPolicy", "Cluster")
    if kind == "LoadBalancer":
        spec.setdefault("allocateLoadBalancerNodePorts", True)
    if spec.get("clusterIP") and not spec.get("clusterIPs"):
        spec["clusterIPs"] = [spec["clusterIP"]]
    elif spec.get("clusterIPs") and not spec.get("clusterIP"):
        spec["clusterIP"] = spec["clusterIPs"][0]
    if kind != "ExternalName":
        selectorless_headless = _headless(spec) and not spec.get("selector")
        spec.setdefault("ipFamilyPolicy", "RequireDualStack" if selectorless_headless else "SingleStack")
        spec.setdefault("ipFamilies", ["IPv6" if ":" in (spec.get("clusterIPs") or [""])[0] else "IPv4"])
    service.setdefault("status", {}).setdefault("loadBalancer", {})


def _needs_node_ports(spec: Obj) -> bool:
    return _type(spec) == "NodePort" or (
        _type(spec) == "LoadBalancer" and spec.get("allocateLoadBalancerNodePorts", True) is not False
    )


def _needs_health_check_port(spec: Obj) -> bool:
    return _type(spec) == "LoadBalancer" and spec.get("externalTrafficPolicy") == "Local"


def _carry_allocated(spec: Obj, old: Obj) -> None:
    """Upstream patchAllocatedValues: a replace that omits allocated values keeps them."""
    if _type(spec) != "ExternalName" and _type(old) != "ExternalName":
        if not spec.get("clusterIP") and old.get("clusterIP"):
            spec["clusterIP"] = old["clusterIP"]
        if not spec.get("clusterIPs") and old.get("clusterIPs"):
            spec["clusterIPs"] = old["clusterIPs"]
    if _needs_node_ports(spec) and _needs_node_ports(old):
        used = {p.get("nodePort") for p in old.get("ports") or []} & {
            p.get("nodePort") for p in spec.get("ports") or []
        }
        by_name = {p.get("name", ""): p.get("nodePort") for p in old.get("ports") or []}
        for port in spec.get("ports") or []:
            previous = by_name.get(port.get("name", ""))
            if not port.get("nodePort") and previous and previous not in used:
                port["nodePort"] = previous
    if (
        _needs_health_check_port(spec)
        and _needs_health_check_port(old)
        and not spec.get("healthCheckNodePort")
    ):
        if old.get("healthCheckNodePort"):
            spec["healthCheckNodePort"] = old["healthCheckNodePort"]


def _drop_type_dependent(spec: Obj, old: Obj) -> None:
    """Upstream dropTypeDependentFields: on a type change, drop unchanged values the new type cannot use."""
    if _type(spec) == _type(old):
        return
    if _type(spec) == "ExternalName":
        for key in ("clusterIP", "clusterIPs", "ipFamilies", "ipFamilyPolicy", "internalTrafficPolicy"):
            if spec.get(key) == old.get(key):
                spec.pop(key, None)
    if not _needs_node_ports(spec):
        old_ports = {p.get("nodePort") for p in old.get("ports") or []}
        for port in spec.get("ports") or []:
            if port.get("nodePort") in old_ports:
                port.pop("nodePort", None)
    if not _needs_health_check_port(spec) and spec.get("healthCheckNodePort") == old.get(
        "healthCheckNodePort"
    ):
        spec.pop("healthCheckNodePort", None)
    if _type(spec) != "LoadBalancer":
        for key in ("allocateLoadBalancerNodePorts", "loadBalancerClass"):
            if spec.get(key) == old.get(key):
                spec.pop(key, None)
    if not _externally_accessible(spec) and spec.get("externalTrafficPolicy") == old.get(
        "externalTrafficPolicy"
    ):
        spec.pop("externalTrafficPolicy", None)


def service_prepare_update(new: Obj, old: Obj) -> None:
    """Keep allocated IPs and ports a replace omitted; drop what a type change makes moot."""
    spec, old_spec = new.setdefault("spec", {}), old.get("spec") or {}
    _carry_allocated(spec, old_spec)
    _drop_type_dependent(spec, old_spec)


def _validate_port(port: Obj, path: str, require_name: bool, names: set[str]) -> list[Cause]:
    causes: list[Cause] = []
    name = port.get("name") or ""
    if require_name and not name:
        causes.append(required(f"{path}.name"))
    elif name:
        causes += [invalid_value(f"{path}.name", name, m) for m in is_dns1123_label(name)]
        if name in names:
            causes.append(duplicate(f"{path}.name", name))
        names.add(name)
    causes += [
        invalid_value(f"{path}.port", port.get("port", 0), m) for m in is_port_number(port.get("port", 0))
    ]
    protocol = port.get("protocol") or ""
    if not protocol:
        causes.append(required(f"{path}.protocol"))
    elif protocol not in _PROTOCOLS:
        causes.append(unsupported(f"{path}.protocol", protocol, _PROTOCOLS))
    target = port.get("targetPort")
    if isinstance(target, str):
        causes += [invalid_value(f"{path}.targetPort", target, m) for m in is_port_name(target)]
    elif target is not None:
        causes += [invalid_value(f"{path}.targetPort", target, m) for m in is_port_number(target)]
    return causes


def _validate_ports(spec: Obj) -> list[Cause]:
    ports = spec.get("ports") or []
    causes: list[Cause] = []
    if not ports and not _headless(spec) and _type(spec) != "ExternalName":
        causes.append(required("spec.ports"))
    names: set[str] = set()
    seen_ports: set[tuple[Any, Any]] = set()
    seen_node_ports: set[tuple[Any, Any]] = set()
    low, high = NODE_PORT_RANGE
    for i, port in enumerate(ports):
        at = f"spec.ports[{i}]"
        causes += _validate_port(port, at, len(ports) > 1, names)
        node_port = port.get("nodePort") or 0
        if node_port and _type(spec) == "ClusterIP":
            causes.append(forbidden(f"{at}.nodePort", "may not be used when `type` is 'ClusterIP'"))
        elif node_port and not low <= node_port <= high:
            causes.append(
                invalid_value(
                    f"{at}.nodePort",
                    node_port,
                    f"provided port is not in the valid range. The range of valid ports is {low}-{high}",
                )
            )
        if node_port and (node_port, port.get("protocol")) in seen_node_ports:
            causes.append(
                Cause(f"{at}.nodePort", "FieldValueDuplicate", f"{at}.nodePort: Duplicate value: {node_port}")
            )
        seen_node_ports.add((node_port, port.get("protocol")))
        key = (port.get("port"), port.get("protocol"))
        if key in seen_ports:
            shown = (
                f'core.ServicePort{{Name:"", Protocol:{go_repr(key[1] or "")}, AppProtocol:(*string)(nil), '
                f'Port:{key[0]}, TargetPort:intstr.IntOrString{{Type:0, IntVal:0, StrVal:""}}, NodePort:0}}'
            )
            causes.append(Cause(at, "FieldValueDuplicate", f"{at}: Duplicate value: {shown}"))
        seen_ports.add(key)
    return causes


def _validate_cluster_ips(spec: Obj) -> list[Cause]:
    ips = spec.get("clusterIPs") or []
    if _type(spec) == "ExternalName":
        return [
            forbidden(f"spec.{key}", "may not be set for ExternalName services")
            for key in ("clusterIPs", "ipFamilies", "ipFamilyPolicy")
            if spec.get(key)
        ]
    causes: list[Cause] = []
    for i, ip in enumerate(ips):
        if i == 0 and ip == "None":
            if len(ips) > 1:
                causes.append(
                    invalid_value("spec.clusterIPs", ips, "'None' must be the first and only value")
                )
            continue
        try:
            ipaddress.ip_address(ip)
        except ValueError:
            causes.append(
                invalid_value(
                    f"spec.clusterIPs[{i}]",
                    ip,
                    "must be a valid IP address, (e.g. 10.9.8.7 or 2001:db8::ffff)",
                )
            )
    return causes


def service_validate(service: Obj) -> list[Cause]:
    """ValidateService: type, ports, clusterIPs, externalName, affinity, traffic policy, selector."""
    spec = service.get("spec") or {}
    kind = spec.get("type") or ""
    causes: list[Cause] = []
    if not kind:
        causes.append(required("spec.type"))
    elif kind not in SERVICE_TYPES:
        causes.append(unsupported("spec.type", kind, SERVICE_TYPES))
    causes += _validate_cluster_ips(spec)
    if kind == "ExternalName":
        cname = (spec.get("externalName") or "").removesuffix(".")
        if not cname:
            causes.append(required("spec.externalName"))
        causes += [invalid_value("spec.externalName", cname, m) for m in is_dns1123_subdomain(cname) if cname]
    causes += _validate_ports(spec)
    causes += validate_labels(spec.get("selector"), "spec.selector")
    affinity = spec.get("sessionAffinity") or ""
    if affinity not in ("ClientIP", "None"):
        causes.append(unsupported("spec.sessionAffinity", affinity, ["ClientIP", "None"]))
    policy = spec.get("externalTrafficPolicy") or ""
    if not _externally_accessible(spec) and policy:
        causes.append(
            invalid_value(
                "spec.externalTrafficPolicy", policy, "may only be set for externally-accessible services"
            )
        )
    elif _externally_accessible(spec) and policy not in ("Cluster", "Local"):
        causes.append(unsupported("spec.externalTrafficPolicy", policy, ["Cluster", "Local"]))
    return causes


def service_validate_update(new: Obj, old: Obj) -> list[Cause]:
    """The primary clusterIP may not change once set, unless the service is or becomes ExternalName."""
    spec, old_spec = new.get("spec") or {}, old.get("spec") or {}
    if "ExternalName" in (_type(spec), _type(old_spec)) or (_headless(spec) and _headless(old_spec)):
        return []
    ips, old_ips = spec.get("clusterIPs") or [], old_spec.get("clusterIPs") or []
    if old_ips and not ips:
        return [invalid_value("spec.clusterIPs[0]", ips, "primary clusterIP can not be unset")]
    return [
        invalid_value(f"spec.clusterIPs[{i}]", ips, "may not change once set")
        for i, (a, b) in enumerate(zip(old_ips, ips, strict=False))
        if a != b
    ]


def service_fields(service: Obj) -> dict[str, str]:
    """Services may be selected by spec.clusterIP and spec.type."""
    spec = service.get("spec") or {}
    return {"spec.clusterIP": spec.get("clusterIP", ""), "spec.type": spec.get("type", "")}


def _load_balancer_ips(service: Obj) -> list[str]:
    ingress = (service.get("status") or {}).get("loadBalancer", {}).get("ingress") or []
    return sorted({i.get("ip") or i.get("hostname") for i in ingress if i.get("ip") or i.get("hostname")})


def _external_ip(service: Obj) -> str:
    spec = service.get("spec") or {}
    external = spec.get("externalIPs") or []
    kind = spec.get("type", "")
    if kind in ("ClusterIP", "NodePort"):
        return ",".join(external) or "<none>"
    if kind == "LoadBalancer":
        return ",".join(_load_balancer_ips(service) + external) or "<pending>"
    if kind == "ExternalName":
        return spec.get("externalName", "")
    return "<unknown>"


def port_string(ports: Any) -> str:
    """PORT(S): '80/TCP,443:30443/TCP' (port, then node port when allocated, then protocol)."""
    return ",".join(
        f"{p.get('port')}:{p['nodePort']}/{p.get('protocol', '')}"
        if p.get("nodePort")
        else f"{p.get('port')}/{p.get('protocol', '')}"
        for p in ports or []
    )


SERVICE_COLUMNS = columns(
    Column("Type", description="type determines how the Service is exposed."),
    Column("Cluster-IP", description="clusterIP is the IP address of the service."),
    Column(
        "External-IP",
        description="externalIPs is a list of IP addresses for which nodes in the cluster will "
        "also accept traffic for this service.",
    ),
    Column("Port(s)", description="The list of ports that are exposed by this service."),
    AGE_COLUMN,
    Column(
        "Selector",
        priority=1,
        description="Route service traffic to pods with label keys and values matching this selector.",
    ),
)


def service_row(service: Obj) -> list[Any]:
    """NAME TYPE CLUSTER-IP EXTERNAL-IP PORT(S) AGE SELECTOR, as upstream printService."""
    spec, meta = service.get("spec") or {}, service.get("metadata") or {}
    ips = spec.get("clusterIPs") or ([spec["clusterIP"]] if spec.get("clusterIP") else [])
    return [
        meta.get("name", ""),
        spec.get("type", ""),
        ips[0] if ips else "<none>",
        _external_ip(service),
        port_string(spec.get("ports")) or "<none>",
        since(meta.get("creationTimestamp")),
        format_labels(spec.get("selector")),
    ]


SERVICE_STRATEGY = Strategy(
    columns=SERVICE_COLUMNS,
    row=service_row,
    selectable_fields=service_fields,
    defaults=service_defaults,
    validate=service_validate,
    validate_update=service_validate_update,
    prepare_update=service_prepare_update,
)

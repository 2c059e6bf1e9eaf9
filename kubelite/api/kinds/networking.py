"""networking.k8s.io/v1: Ingresses, IngressClasses, NetworkPolicies."""

from __future__ import annotations

from typing import Any

from kubelite.api.kinds.common import columns, dig, format_label_selector, immutable, since
from kubelite.api.names import (
    invalid_shown,
    invalid_value,
    is_dns1035_label,
    is_port_name,
    is_port_number,
    required_because,
)
from kubelite.api.resource import ResourceType
from kubelite.api.strategy import AGE_COLUMN, Cause, Column, Obj, Strategy, required, unsupported

GROUP = "networking.k8s.io"
PATH_TYPES = ["Exact", "ImplementationSpecific", "Prefix"]


def _validate_backend(backend: Obj, path: str) -> list[Cause]:
    service, resource = backend.get("service"), backend.get("resource")
    if service is not None and resource is not None:
        return [invalid_value(path, "", "cannot set both resource and service backends")]
    if resource is not None:
        return []
    if service is None:
        return [invalid_value(path, "", "resource or service backend is required")]
    name = service.get("name") or ""
    causes = (
        [invalid_value(f"{path}.service.name", name, m) for m in is_dns1035_label(name)]
        if name
        else [required(f"{path}.service.name")]
    )
    port = service.get("port") or {}
    if port.get("name") and port.get("number"):
        causes.append(invalid_value(path, "", "cannot set both port name & port number"))
    elif port.get("name"):
        causes += [
            invalid_value(f"{path}.service.port.name", port["name"], m) for m in is_port_name(port["name"])
        ]
    elif port.get("number"):
        causes += [
            invalid_value(f"{path}.service.port.number", port["number"], m)
            for m in is_port_number(port["number"])
        ]
    else:
        causes.append(required_because(path, "port name or number is required"))
    return causes


def ingress_validate(ingress: Obj) -> list[Cause]:
    """ValidateIngressSpec: rules or a default backend; typed absolute paths; backends."""
    spec = ingress.get("spec") or {}
    rules = spec.get("rules") or []
    causes: list[Cause] = []
    if not rules and spec.get("defaultBackend") is None:
        causes.append(
            invalid_shown(
                "spec",
                "[]networking.IngressRule(nil)",
                "either `defaultBackend` or `rules` must be specified",
            )
        )
    if spec.get("defaultBackend") is not None:
        causes += _validate_backend(spec["defaultBackend"], "spec.defaultBackend")
    for i, rule in enumerate(rules):
        for j, http_path in enumerate(dig(rule, "http", "paths", default=[])):
            at = f"spec.rules[{i}].http.paths[{j}]"
            kind, route = http_path.get("pathType"), http_path.get("path", "")
            if kind is None:
                causes.append(required_because(f"{at}.pathType", "pathType must be specified"))
                continue
            if kind not in PATH_TYPES:
                causes.append(unsupported(f"{at}.pathType", kind, PATH_TYPES))
            elif (kind != "ImplementationSpecific" or route) and not route.startswith("/"):
                causes.append(invalid_value(f"{at}.path", route, "must be an absolute path"))
            causes += _validate_backend(http_path.get("backend") or {}, f"{at}.backend")
    return causes


def _hosts(rules: list[Obj]) -> str:
    """HOSTS: the first three hosts, '+ N more...' once a rule follows the third, '*' for none."""
    hosts: list[str] = []
    more = False
    for rule in rules:
        more = more or len(hosts) == 3
        if not more and rule.get("host"):
            hosts.append(rule["host"])
    if not hosts:
        return "*"
    return f"{','.join(hosts)} + {len(rules) - 3} more..." if more else ",".join(hosts)


def ingress_row(ingress: Obj) -> list[Any]:
    """NAME CLASS HOSTS ADDRESS PORTS AGE, as upstream printIngress."""
    spec, meta = ingress.get("spec") or {}, ingress.get("metadata") or {}
    entries = dig(ingress, "status", "loadBalancer", "ingress", default=[])
    address = ",".join(
        sorted({e.get("ip") or e.get("hostname") for e in entries if e.get("ip") or e.get("hostname")})
    )
    return [
        meta.get("name", ""),
        spec.get("ingressClassName") or "<none>",
        _hosts(spec.get("rules") or []),
        address,
        "80, 443" if spec.get("tls") else "80",
        since(meta.get("creationTimestamp")),
    ]


INGRESS_COLUMNS = columns(
    Column(
        "Class",
        description="The name of the IngressClass resource that should be used for additional configuration",
    ),
    Column("Hosts", description="Hosts that incoming requests are matched against before the ingress rule"),
    Column("Address", description="Address is a list containing ingress points for the load-balancer"),
    Column("Ports", description="Ports of TLS configurations that open"),
    AGE_COLUMN,
)


def ingressclass_validate(obj: Obj) -> list[Cause]:
    """spec.controller is required and domain-prefixed."""
    controller = dig(obj, "spec", "controller", default="")
    if not controller:
        return [required("spec.controller")]
    if "/" not in controller:
        return [
            invalid_value(
                "spec.controller", controller, 'must be a domain-prefixed path (such as "acme.io/foo")'
            )
        ]
    return []


def ingressclass_row(obj: Obj) -> list[Any]:
    """NAME CONTROLLER PARAMETERS AGE; parameters as Kind.group/name."""
    spec, meta = obj.get("spec") or {}, obj.get("metadata") or {}
    params = spec.get("parameters")
    shown = "<none>"
    if params:
        kind = (
            f"{params.get('kind', '')}.{params['apiGroup']}"
            if params.get("apiGroup")
            else params.get("kind", "")
        )
        shown = f"{kind}/{params.get('name', '')}"
    return [meta.get("name", ""), spec.get("controller", ""), shown, since(meta.get("creationTimestamp"))]


def networkpolicy_defaults(policy: Obj) -> None:
    """policyTypes follow the rules given; rule ports default to TCP."""
    spec = policy.setdefault("spec", {})
    if not spec.get("policyTypes"):
        spec["policyTypes"] = ["Ingress", "Egress"] if spec.get("egress") else ["Ingress"]
    for direction in ("ingress", "egress"):
        for rule in spec.get(direction) or []:
            for port in rule.get("ports") or []:
                port.setdefault("protocol", "TCP")


def _networking(kind: str, plural: str, namespaced: bool, strategy: Strategy, **extra: Any) -> ResourceType:
    return ResourceType(
        GROUP, "v1", kind, plural, namespaced, strategy, schema=f"io.k8s.api.networking.v1.{kind}", **extra
    )


RESOURCES = [
    _networking(
        "Ingress",
        "ingresses",
        True,
        Strategy(columns=INGRESS_COLUMNS, row=ingress_row, validate=ingress_validate),
        short_names=("ing",),
        subresources=("status",),
    ),
    _networking(
        "IngressClass",
        "ingressclasses",
        False,
        Strategy(
            has_status=False,
            row=ingressclass_row,
            validate=ingressclass_validate,
            validate_update=lambda new, old: immutable(
                dig(new, "spec", "controller"), dig(old, "spec", "controller"), "spec.controller"
            ),
            columns=columns(
                Column("Controller", description="Controller that is responsible for handling this class"),
                Column("Parameters", description="A reference to a resource with additional parameters"),
                AGE_COLUMN,
            ),
        ),
    ),
    _networking(
        "NetworkPolicy",
        "networkpolicies",
        True,
        Strategy(
            has_status=False,
            defaults=networkpolicy_defaults,
            columns=columns(
                Column(
                    "Pod-Selector", description="Selects the pods to which this NetworkPolicy object applies."
                ),
                AGE_COLUMN,
            ),
            row=lambda o: [
                dig(o, "metadata", "name", default=""),
                format_label_selector(dig(o, "spec", "podSelector")),
                since(dig(o, "metadata", "creationTimestamp")),
            ],
        ),
        short_names=("netpol",),
    ),
]

"""A container's environment as the kubelet makes it: service links, env with $(VAR) expansion, fieldRef,
resourceFieldRef, configMapKeyRef, secretKeyRef and envFrom (makeEnvironmentVariables)."""

from __future__ import annotations

import base64
import math
import re
from collections.abc import Awaitable, Callable
from fractions import Fraction
from typing import Any

from kubelite.api.quantity import parse_quantity

Obj = dict[str, Any]
Fetch = Callable[[str, str], Awaitable[Obj | None]]
"""(kind "configmaps" or "secrets", name) -> the object in the pod's namespace, or None if it does not exist."""

_REFERENCE = re.compile(r"\$\$|\$\(([A-Za-z_][A-Za-z0-9_.-]*)\)")
_ENV_NAME = re.compile(r"^[-._a-zA-Z][-._a-zA-Z0-9]*$")


class ConfigError(Exception):
    """The container cannot be configured yet (CreateContainerConfigError): a missing ConfigMap, Secret or key."""


def expand(value: str, env: dict[str, str]) -> str:
    """$(VAR) references to earlier variables expand; $$ escapes; unknown references stay as written."""

    def replace(match: re.Match[str]) -> str:
        if match.group(0) == "$$":
            return "$"
        return env.get(match.group(1), match.group(0))

    return _REFERENCE.sub(replace, value)


def service_env(services: list[Obj], namespace: str, enable_links: bool) -> dict[str, str]:
    """{SVC}_SERVICE_HOST/_PORT and the Docker-link variables for the namespace's Services (when enableServiceLinks)
    and always for the master `kubernetes` Service in default."""
    env: dict[str, str] = {}
    for svc in services:
        meta, spec = svc["metadata"], svc.get("spec") or {}
        is_master = meta.get("namespace") == "default" and meta["name"] == "kubernetes"
        ip = spec.get("clusterIP")
        if not ip or ip == "None" or not (is_master or (enable_links and meta.get("namespace") == namespace)):
            continue
        name = meta["name"].upper().replace("-", "_")
        ports = spec.get("ports") or []
        env[f"{name}_SERVICE_HOST"] = ip
        if ports:
            env[f"{name}_SERVICE_PORT"] = str(ports[0]["port"])
            first = ports[0]
            env[f"{name}_PORT"] = f"{first.get('protocol', 'TCP').lower()}://{ip}:{first['port']}"
        for port in ports:
            if port.get("name"):
                env[f"{name}_SERVICE_PORT_{port['name'].upper().replace('-', '_')}"] = str(port["port"])
            protocol = port.get("protocol", "TCP")
            prefix = f"{name}_PORT_{port['port']}_{protocol}"
            env[prefix] = f"{protocol.lower()}://{ip}:{port['port']}"
            env[f"{prefix}_PROTO"] = protocol.lower()
            env[f"{prefix}_PORT"] = str(port["port"])
            env[f"{prefix}_ADDR"] = ip
    return env


def field_value(pod: Obj, path: str) -> str:
    """A downward API fieldRef value (metadata.name, metadata.labels['k'], status.podIP, spec.nodeName, ...)."""
    meta, spec, status = pod["metadata"], pod.get("spec") or {}, pod.get("status") or {}
    if match := re.fullmatch(r"metadata\.(labels|annotations)\['(.+)'\]", path):
        return (meta.get(match.group(1)) or {}).get(match.group(2), "")
    if path in ("metadata.labels", "metadata.annotations"):
        items = meta.get(path.split(".")[1]) or {}
        return "\n".join(f'{k}="{v}"' for k, v in sorted(items.items()))
    simple = {
        "metadata.name": meta.get("name"), "metadata.namespace": meta.get("namespace"), "metadata.uid": meta.get("uid"),
        "spec.nodeName": spec.get("nodeName"), "spec.serviceAccountName": spec.get("serviceAccountName"),
        "status.hostIP": status.get("hostIP"), "status.podIP": status.get("podIP"),
        "status.hostIPs": ",".join(i["ip"] for i in status.get("hostIPs") or []),
        "status.podIPs": ",".join(i["ip"] for i in status.get("podIPs") or []),
    }
    if path not in simple:
        raise ConfigError(f"unsupported fieldRef {path!r}")
    return str(simple[path] or "")


def resource_value(pod: Obj, ref: Obj, default_container: str, allocatable: dict[str, str]) -> str:
    """A resourceFieldRef value: the container's limit (or the node's allocatable without one) or request,
    divided by the divisor and rounded up, as the downward API reports it."""
    name = ref.get("containerName") or default_container
    container = next((c for c in (pod.get("spec") or {}).get("containers") or [] if c["name"] == name), None)
    if container is None:
        raise ConfigError(f"resourceFieldRef names unknown container {name!r}")
    kind, _, resource = ref["resource"].partition(".")
    resources = container.get("resources") or {}
    value = parse_quantity((resources.get(kind) or {}).get(resource))
    if value is None:
        value = parse_quantity(allocatable.get(resource)) if kind == "limits" else Fraction(0)
        if value is None:
            value = Fraction(0)
    divisor = parse_quantity(ref.get("divisor") or "1") or Fraction(1)
    return str(max(math.ceil(value / divisor), 1 if resource == "cpu" and value else 0))


def _decode(kind: str, data: Obj, key: str) -> str:
    """A ConfigMap's data value, or a Secret's base64 data decoded."""
    if kind == "secrets":
        return base64.b64decode(data[key]).decode(errors="replace")
    return data[key]


async def _key(fetch: Fetch, kind: str, ref: Obj) -> str | None:
    """The value of a configMapKeyRef/secretKeyRef; None when optional and missing."""
    what = "configmap" if kind == "configmaps" else "secret"
    obj = await fetch(kind, ref.get("name", ""))
    if obj is None:
        if ref.get("optional"):
            return None
        raise ConfigError(f'{what} "{ref.get("name", "")}" not found')
    data = {**(obj.get("binaryData") or {}), **(obj.get("data") or {})} if kind == "configmaps" else obj.get("data")
    data = data or {}
    if ref["key"] not in data:
        if ref.get("optional"):
            return None
        raise ConfigError(f"couldn't find key {ref['key']} in {what.capitalize()} "
                          f"{obj['metadata'].get('namespace')}/{ref.get('name')}")
    return _decode(kind, data, ref["key"])


async def container_env(pod: Obj, container: Obj, fetch: Fetch, services: list[Obj],
                        allocatable: dict[str, str]) -> dict[str, str]:
    """The container's full environment, in the kubelet's order: service links, envFrom, then env."""
    spec = pod.get("spec") or {}
    env = service_env(services, pod["metadata"].get("namespace", ""), spec.get("enableServiceLinks", True))
    for source in container.get("envFrom") or []:
        kind, ref = ("configmaps", source["configMapRef"]) if "configMapRef" in source else (
            "secrets", source.get("secretRef") or {})
        obj = await fetch(kind, ref.get("name", ""))
        if obj is None:
            if ref.get("optional"):
                continue
            what = "configmap" if kind == "configmaps" else "secret"
            raise ConfigError(f'{what} "{ref.get("name", "")}" not found')
        for key in sorted(obj.get("data") or {}):
            name = source.get("prefix", "") + key
            if _ENV_NAME.match(name):
                env[name] = _decode(kind, obj["data"], key)
    for var in container.get("env") or []:
        source = var.get("valueFrom")
        if source is None:
            env[var["name"]] = expand(var.get("value", ""), env)
        elif "fieldRef" in source:
            env[var["name"]] = field_value(pod, source["fieldRef"]["fieldPath"])
        elif "resourceFieldRef" in source:
            env[var["name"]] = resource_value(pod, source["resourceFieldRef"], container["name"], allocatable)
        else:
            kind, ref = ("configmaps", source["configMapKeyRef"]) if "configMapKeyRef" in source else (
                "secrets", source["secretKeyRef"])
            value = await _key(fetch, kind, ref)
            if value is not None:
                env[var["name"]] = value
    return env

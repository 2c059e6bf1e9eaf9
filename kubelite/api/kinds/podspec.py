"""PodSpec defaults and validation, shared by Pods and every kind with a pod template."""

from __future__ import annotations

from typing import Any

from kubelite.api.kinds.common import child, non_negative
from kubelite.api.kinds.volumes import validate_claim_spec
from kubelite.api.names import (
    invalid_value,
    is_dns1123_label,
    is_port_name,
    is_port_number,
    not_found,
    required_because,
    validate_annotations,
    validate_labels,
)
from kubelite.api.quantity import HUGEPAGES_PREFIX, parse_quantity
from kubelite.api.strategy import Cause, Obj, duplicate, forbidden, required, unsupported

RESTART_POLICIES = ["Always", "OnFailure", "Never"]
EPHEMERAL_FORBIDDEN = ("ports", "livenessProbe", "readinessProbe", "startupProbe", "lifecycle", "resources",
                       "resizePolicy", "restartPolicy")
"""What an ephemeral (debugging) container may not have: it is never restarted, probed or given resources."""
DNS_POLICIES = ["ClusterFirstWithHostNet", "ClusterFirst", "Default", "None"]
PULL_POLICIES = ["Always", "IfNotPresent", "Never"]
PROTOCOLS = ["SCTP", "TCP", "UDP"]
_PROBES = ("livenessProbe", "readinessProbe", "startupProbe")
_MODE_SOURCES = ("configMap", "secret", "downwardAPI", "projected")


def image_tag(image: str) -> str:
    """The tag of an image reference: 'latest' when it has neither tag nor digest, '' for digests."""
    name, _, digest = image.partition("@")
    last = name.rsplit("/", 1)[-1]
    tag = last.partition(":")[2]
    return tag or ("" if digest else "latest")


def _default_http_get(handler: Any) -> None:
    action = handler.get("httpGet") if isinstance(handler, dict) else None
    if isinstance(action, dict):
        action.setdefault("path", "/")
        action.setdefault("scheme", "HTTP")


def default_container(container: Obj) -> None:
    """SetDefaults_Container and the defaults of what a container holds (ports, probes, env)."""
    if not container.get("imagePullPolicy"):
        container["imagePullPolicy"] = (
            "Always" if image_tag(container.get("image", "")) == "latest" else "IfNotPresent"
        )
    container.setdefault("terminationMessagePath", "/dev/termination-log")
    container.setdefault("terminationMessagePolicy", "File")
    container.setdefault("resources", {})
    for port in container.get("ports") or []:
        port.setdefault("protocol", "TCP")
    for name in _PROBES:
        probe = container.get(name)
        if isinstance(probe, dict):
            for key, value in (
                ("timeoutSeconds", 1),
                ("periodSeconds", 10),
                ("successThreshold", 1),
                ("failureThreshold", 3),
            ):
                probe.setdefault(key, value)
            _default_http_get(probe)
    for hook in (container.get("lifecycle") or {}).values():
        _default_http_get(hook)
    for env in container.get("env") or []:
        field_ref = (env.get("valueFrom") or {}).get("fieldRef")
        if isinstance(field_ref, dict):
            field_ref.setdefault("apiVersion", "v1")


def default_volume(volume: Obj) -> None:
    """SetDefaults_Volume: no source means emptyDir; file-projecting sources get mode 0644."""
    if not any(key != "name" for key in volume):
        volume["emptyDir"] = {}
    for key in _MODE_SOURCES:
        source = volume.get(key)
        if isinstance(source, dict):
            source.setdefault("defaultMode", 420)
    host_path = volume.get("hostPath")
    if isinstance(host_path, dict):
        host_path.setdefault("type", "")


def default_pod_spec(spec: Obj) -> None:
    """SetDefaults_PodSpec plus its containers and volumes: what pods and templates share."""
    spec.setdefault("restartPolicy", "Always")
    spec.setdefault("dnsPolicy", "ClusterFirst")
    spec.setdefault("schedulerName", "default-scheduler")
    spec.setdefault("terminationGracePeriodSeconds", 30)
    if not isinstance(spec.get("securityContext"), dict):
        spec["securityContext"] = {}
    for kind in ("initContainers", "containers", "ephemeralContainers"):
        for container in spec.get(kind) or []:
            default_container(container)
    for volume in spec.get("volumes") or []:
        default_volume(volume)


def default_template(owner_spec: Obj) -> None:
    """Defaults of a pod template held at owner_spec.template."""
    default_pod_spec(child(child(owner_spec, "template"), "spec"))


def _validate_ports(ports: list[Obj], path: str) -> list[Cause]:
    causes: list[Cause] = []
    names: set[str] = set()
    for i, port in enumerate(ports):
        at = f"{path}[{i}]"
        name = port.get("name") or ""
        if name:
            errors = is_port_name(name)
            causes += [invalid_value(f"{at}.name", name, m) for m in errors]
            if not errors and name in names:
                causes.append(duplicate(f"{at}.name", name))
            names.add(name)
        number = port.get("containerPort")
        if not number:
            causes.append(required(f"{at}.containerPort"))
        else:
            causes += [invalid_value(f"{at}.containerPort", number, m) for m in is_port_number(number)]
        if port.get("hostPort"):
            causes += [
                invalid_value(f"{at}.hostPort", port["hostPort"], m) for m in is_port_number(port["hostPort"])
            ]
        protocol = port.get("protocol") or ""
        if not protocol:
            causes.append(required(f"{at}.protocol"))
        elif protocol not in PROTOCOLS:
            causes.append(unsupported(f"{at}.protocol", protocol, PROTOCOLS))
    return causes


def _validate_resources(resources: Obj, path: str) -> list[Cause]:
    causes: list[Cause] = []
    limits, requests = resources.get("limits") or {}, resources.get("requests") or {}
    for kind, values in (("limits", limits), ("requests", requests)):
        for name, value in values.items():
            amount = parse_quantity(value)
            if amount is None:
                causes.append(
                    invalid_value(
                        f"{path}.{kind}[{name}]",
                        str(value),
                        "quantities must match the regular expression "
                        "'^([+-]?[0-9.]+)([eEinumkKMGTP]*[-+]?[0-9]*)$'",
                    )
                )
            elif amount < 0:
                causes.append(
                    invalid_value(f"{path}.{kind}[{name}]", str(value), "must be greater than or equal to 0")
                )
    for name, value in requests.items():
        want, cap = parse_quantity(value), parse_quantity(limits.get(name))
        if not overcommit_allowed(name) and want is not None:
            if cap is None:
                causes.append(invalid_value(f"{path}.requests[{name}]", str(value),
                                            "Limit must be set for non overcommitable resources"))
            elif want != cap:
                causes.append(invalid_value(f"{path}.requests[{name}]", str(value),
                                            f"must be equal to {name} limit of {limits[name]}"))
        elif want is not None and cap is not None and want > cap:
            causes.append(
                invalid_value(
                    f"{path}.requests",
                    str(value),
                    f"must be less than or equal to {name} limit of {limits[name]}",
                )
            )
    hugepages = {n for n in (*limits, *requests) if n.startswith(HUGEPAGES_PREFIX)}
    for name in sorted(hugepages):
        size = parse_quantity(name.removeprefix(HUGEPAGES_PREFIX))
        for kind, values in (("limits", limits), ("requests", requests)):
            amount = parse_quantity(values.get(name))
            if size and amount is not None and amount % size:
                causes.append(invalid_value(f"{path}.{kind}[{name}]", str(values[name]),
                                            f"{values[name]} is not positive integer multiple of "
                                            f"{name.removeprefix(HUGEPAGES_PREFIX)}"))
    if hugepages and not {"cpu", "memory"} & {*limits, *requests}:
        causes.append(forbidden(path, "HugePages require cpu or memory"))
    return causes


def overcommit_allowed(name: str) -> bool:
    """Whether requests may stay below limits: native resources but hugepages (extended ones must match)."""
    native = "/" not in name or "kubernetes.io/" in name
    return native and not name.startswith(HUGEPAGES_PREFIX)


def _validate_container(container: Obj, path: str, volumes: set[str]) -> list[Cause]:
    causes: list[Cause] = []
    name = container.get("name") or ""
    if not name:
        causes.append(required(f"{path}.name"))
    else:
        causes += [invalid_value(f"{path}.name", name, m) for m in is_dns1123_label(name)]
    if not container.get("image"):
        causes.append(required(f"{path}.image"))
    causes += _validate_ports(container.get("ports") or [], f"{path}.ports")
    for i, env in enumerate(container.get("env") or []):
        if not env.get("name"):
            causes.append(required(f"{path}.env[{i}].name"))
    mount_paths: set[str] = set()
    for i, mount in enumerate(container.get("volumeMounts") or []):
        at = f"{path}.volumeMounts[{i}]"
        if not mount.get("name"):
            causes.append(required(f"{at}.name"))
        if mount.get("name") not in volumes:
            causes.append(not_found(f"{at}.name", mount.get("name") or ""))
        mount_path = mount.get("mountPath") or ""
        if not mount_path:
            causes.append(required(f"{at}.mountPath"))
        elif mount_path in mount_paths:
            causes.append(invalid_value(f"{at}.mountPath", mount_path, "must be unique"))
        mount_paths.add(mount_path)
    policy = container.get("imagePullPolicy") or ""
    if not policy:
        causes.append(required(f"{path}.imagePullPolicy"))
    elif policy not in PULL_POLICIES:
        causes.append(unsupported(f"{path}.imagePullPolicy", policy, PULL_POLICIES))
    causes += _validate_resources(container.get("resources") or {}, f"{path}.resources")
    return causes


def _validate_volumes(volumes: list[Obj], path: str) -> list[Cause]:
    causes: list[Cause] = []
    names: set[str] = set()
    for i, volume in enumerate(volumes):
        at = f"{path}[{i}]"
        sources = [key for key in volume if key != "name"]
        if not sources:
            causes.append(required_because(at, "must specify a volume type"))
        causes += [forbidden(f"{at}.{key}", "may not specify more than 1 volume type") for key in sources[1:]]
        if volume.get("ephemeral") is not None:
            template = volume["ephemeral"].get("volumeClaimTemplate")
            causes += (validate_claim_spec(template.get("spec") or {}, f"{at}.ephemeral.volumeClaimTemplate.spec")
                       if isinstance(template, dict) else [required(f"{at}.ephemeral.volumeClaimTemplate")])
        name = volume.get("name") or ""
        if not name:
            causes.append(required(f"{at}.name"))
        else:
            causes += [invalid_value(f"{at}.name", name, m) for m in is_dns1123_label(name)]
        if name in names:
            causes.append(duplicate(f"{at}.name", name))
        names.add(name)
    return causes


def validate_pod_spec(spec: Obj, path: str) -> list[Cause]:
    """The ValidatePodSpec checks users hit: containers, names, images, ports, volumes, policies."""
    volumes = spec.get("volumes") or []
    causes = _validate_volumes(volumes, f"{path}.volumes")
    volume_names = {v.get("name") for v in volumes}
    containers = spec.get("containers") or []
    if not containers:
        causes.append(required(f"{path}.containers"))
    targets = {c.get("name") for kind in ("containers", "initContainers") for c in spec.get(kind) or []}
    seen: set[str] = set()
    for kind in ("containers", "initContainers", "ephemeralContainers"):
        for i, container in enumerate(spec.get(kind) or []):
            at = f"{path}.{kind}[{i}]"
            causes += _validate_container(container, at, volume_names)
            if kind == "ephemeralContainers":
                causes += [forbidden(f"{at}.{field}", "cannot be set for an Ephemeral Container")
                           for field in EPHEMERAL_FORBIDDEN if container.get(field)]
                target = container.get("targetContainerName")
                if target and target not in targets:
                    causes.append(not_found(f"{at}.targetContainerName", target))
            if container.get("name") in seen:
                causes.append(duplicate(f"{at}.name", container["name"]))
            seen.add(container.get("name", ""))
    policy = spec.get("restartPolicy") or ""
    if not policy:
        causes.append(required(f"{path}.restartPolicy"))
    elif policy not in RESTART_POLICIES:
        causes.append(unsupported(f"{path}.restartPolicy", policy, RESTART_POLICIES))
    dns = spec.get("dnsPolicy") or ""
    if dns and dns not in DNS_POLICIES:
        causes.append(unsupported(f"{path}.dnsPolicy", dns, DNS_POLICIES))
    causes += non_negative(spec.get("terminationGracePeriodSeconds"), f"{path}.terminationGracePeriodSeconds")
    deadline = spec.get("activeDeadlineSeconds")
    if isinstance(deadline, int) and deadline <= 0:
        causes.append(
            invalid_value(
                f"{path}.activeDeadlineSeconds", deadline, "must be between 1 and 2147483647, inclusive"
            )
        )
    return causes


def validate_template(template: Any, path: str) -> list[Cause]:
    """ValidatePodTemplateSpec: template present, labels valid, pod spec valid, no ephemeral containers (they are
    only ever added to a running pod)."""
    if not isinstance(template, dict):
        return [required(path)]
    meta = template.get("metadata") or {}
    causes = validate_labels(meta.get("labels"), f"{path}.metadata.labels")
    causes += validate_annotations(meta.get("annotations"), f"{path}.metadata.annotations")
    spec = template.get("spec") or {}
    if spec.get("ephemeralContainers"):
        causes.append(forbidden(f"{path}.spec.ephemeralContainers", "ephemeral containers not allowed in pod template"))
    return causes + validate_pod_spec(spec, f"{path}.spec")

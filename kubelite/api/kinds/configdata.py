"""ConfigMaps and Secrets: key rules, size limits, immutability, Secret types."""

from __future__ import annotations

import base64
import binascii
from typing import Any

from kubelite.api.kinds.common import columns, since
from kubelite.api.names import invalid_value, is_config_map_key, too_long
from kubelite.api.strategy import AGE_COLUMN, Cause, Column, Obj, Strategy, forbidden, required

MAX_SIZE = 1024 * 1024
IMMUTABLE_SET = "field is immutable when `immutable` is set"
_REQUIRED_KEYS = {
    "kubernetes.io/dockercfg": [".dockercfg"],
    "kubernetes.io/dockerconfigjson": [".dockerconfigjson"],
    "kubernetes.io/ssh-auth": ["ssh-privatekey"],
    "kubernetes.io/tls": ["tls.crt", "tls.key"],
}


def _decoded_size(value: Any) -> int:
    try:
        return len(base64.b64decode(str(value), validate=True))
    except (binascii.Error, ValueError):
        return len(str(value))


def _validate_keys(data: dict[str, Any], path: str, other: dict[str, Any], other_name: str) -> list[Cause]:
    causes = [invalid_value(f"{path}[{key}]", key, m) for key in data for m in is_config_map_key(key)]
    causes += [
        invalid_value(f"{path}[{key}]", key, f"duplicate of key present in {other_name}")
        for key in data
        if key in other
    ]
    return causes


def configmap_validate(obj: Obj) -> list[Cause]:
    """ValidateConfigMap: valid keys, not in both data and binaryData, at most 1 MiB."""
    data, binary = obj.get("data") or {}, obj.get("binaryData") or {}
    causes = _validate_keys(data, "data", binary, "binaryData") + _validate_keys(
        binary, "binaryData", data, "data"
    )
    size = sum(len(str(v).encode()) for v in data.values()) + sum(_decoded_size(v) for v in binary.values())
    if size > MAX_SIZE:
        causes.append(too_long("", MAX_SIZE))
    return causes


def _immutable_data(new: Obj, old: Obj, keys: tuple[str, ...]) -> list[Cause]:
    if old.get("immutable") is not True:
        return []
    causes = [] if new.get("immutable") is True else [forbidden("immutable", IMMUTABLE_SET)]
    return causes + [
        forbidden(key, IMMUTABLE_SET) for key in keys if (new.get(key) or {}) != (old.get(key) or {})
    ]


def configmap_validate_update(new: Obj, old: Obj) -> list[Cause]:
    """An immutable ConfigMap keeps its data and stays immutable."""
    return _immutable_data(new, old, ("data", "binaryData"))


CONFIGMAP_COLUMNS = columns(Column("Data", description="Data contains the configuration data."), AGE_COLUMN)


def configmap_row(obj: Obj) -> list[Any]:
    """NAME DATA AGE; DATA counts data and binaryData keys."""
    meta = obj.get("metadata") or {}
    count = len(obj.get("data") or {}) + len(obj.get("binaryData") or {})
    return [meta.get("name", ""), count, since(meta.get("creationTimestamp"))]


def secret_defaults(obj: Obj) -> None:
    """Type Opaque, and stringData folded into data (it is write-only, never stored)."""
    obj.setdefault("type", "Opaque")
    string_data = obj.pop("stringData", None) or {}
    if string_data:
        data = obj.setdefault("data", {})
        for key, value in string_data.items():
            data[key] = base64.b64encode(str(value).encode()).decode()


def secret_validate(obj: Obj) -> list[Cause]:
    """ValidateSecret: valid keys, at most 1 MiB, and the keys each Secret type requires."""
    data = obj.get("data") or {}
    causes = [invalid_value(f"data[{key}]", key, m) for key in data for m in is_config_map_key(key)]
    if sum(_decoded_size(v) for v in data.values()) > MAX_SIZE:
        causes.append(too_long("data", MAX_SIZE))
    kind = obj.get("type", "")
    if kind == "kubernetes.io/service-account-token":
        annotations = (obj.get("metadata") or {}).get("annotations") or {}
        if not annotations.get("kubernetes.io/service-account.name"):
            causes.append(required("metadata.annotations[kubernetes.io/service-account.name]"))
    elif kind == "kubernetes.io/basic-auth" and "username" not in data and "password" not in data:
        causes += [required("data[username]"), required("data[password]")]
    for key in _REQUIRED_KEYS.get(kind, []):
        if key not in data or (kind == "kubernetes.io/ssh-auth" and not data[key]):
            causes.append(required(f"data[{key}]"))
    return causes


def secret_validate_update(new: Obj, old: Obj) -> list[Cause]:
    """A Secret's type is fixed; an immutable Secret keeps its data and stays immutable."""
    causes = (
        []
        if new.get("type") == old.get("type")
        else [invalid_value("type", new.get("type", ""), "field is immutable")]
    )
    return causes + _immutable_data(new, old, ("data",))


SECRET_COLUMNS = columns(
    Column("Type", description="Used to facilitate programmatic handling of secret data."),
    Column("Data", description="Data contains the secret data."),
    AGE_COLUMN,
)


def secret_row(obj: Obj) -> list[Any]:
    """NAME TYPE DATA AGE."""
    meta = obj.get("metadata") or {}
    return [
        meta.get("name", ""),
        obj.get("type", ""),
        len(obj.get("data") or {}),
        since(meta.get("creationTimestamp")),
    ]


CONFIGMAP_STRATEGY = Strategy(
    has_status=False,
    columns=CONFIGMAP_COLUMNS,
    row=configmap_row,
    validate=configmap_validate,
    validate_update=configmap_validate_update,
)
SECRET_STRATEGY = Strategy(
    has_status=False,
    columns=SECRET_COLUMNS,
    row=secret_row,
    selectable_fields=lambda o: {"type": o.get("type", "")},
    defaults=secret_defaults,
    validate=secret_validate,
    validate_update=secret_validate_update,
)

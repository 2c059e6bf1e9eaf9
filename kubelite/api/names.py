"""Kubernetes' name, label, annotation and metadata rules, with upstream's exact messages."""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from typing import Any

from kubelite.api.strategy import Cause, forbidden, required

NameRule = Callable[[str, bool], list[str]]
"""(name, prefix) -> error messages; prefix is True when checking a generateName."""

DNS1123_LABEL_MAX = 63
DNS1123_SUBDOMAIN_MAX = 253
QUALIFIED_NAME_MAX = 63
LABEL_VALUE_MAX = 63
ANNOTATIONS_SIZE_LIMIT = 256 * 1024

_LABEL_FMT = "[a-z0-9]([-a-z0-9]*[a-z0-9])?"
_SUBDOMAIN_FMT = _LABEL_FMT + "(\\." + _LABEL_FMT + ")*"
_DNS1035_FMT = "[a-z]([-a-z0-9]*[a-z0-9])?"
_QNAME_FMT = "([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]"
_LABEL_VALUE_FMT = "(" + _QNAME_FMT + ")?"
_CONFIG_KEY_FMT = "[-._a-zA-Z0-9]+"

_LABEL_MSG = (
    "a lowercase RFC 1123 label must consist of lower case alphanumeric characters or '-', "
    "and must start and end with an alphanumeric character"
)
_SUBDOMAIN_MSG = (
    "a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, "
    "'-' or '.', and must start and end with an alphanumeric character"
)
_DNS1035_MSG = (
    "a DNS-1035 label must consist of lower case alphanumeric characters or '-', "
    "start with an alphabetic character, and end with an alphanumeric character"
)
_QNAME_MSG = (
    "must consist of alphanumeric characters, '-', '_' or '.', "
    "and must start and end with an alphanumeric character"
)
_LABEL_VALUE_MSG = (
    "a valid label must be an empty string or consist of alphanumeric characters, '-', '_' or '.', "
    "and must start and end with an alphanumeric character"
)
_CONFIG_KEY_MSG = "a valid config key must consist of alphanumeric characters, '-', '_' or '.'"


def _full(fmt: str) -> re.Pattern[str]:
    return re.compile("^" + fmt + "$")


_LABEL_RE = _full(_LABEL_FMT)
_SUBDOMAIN_RE = _full(_SUBDOMAIN_FMT)
_DNS1035_RE = _full(_DNS1035_FMT)
_QNAME_RE = _full(_QNAME_FMT)
_LABEL_VALUE_RE = _full(_LABEL_VALUE_FMT)
_CONFIG_KEY_RE = _full(_CONFIG_KEY_FMT)
_PORT_NAME_CHARS_RE = re.compile("^[-a-z0-9]+$")


def regex_error(msg: str, fmt: str, *examples: str) -> str:
    """Upstream's RegexError text: the rule, examples, and the regex itself."""
    if not examples:
        return f"{msg} (regex used for validation is '{fmt}')"
    shown = " or ".join(f"'{e}', " for e in examples)
    return f"{msg} (e.g. {shown}regex used for validation is '{fmt}')"


def max_len_error(length: int) -> str:
    """Upstream's MaxLenError text."""
    return f"must be no more than {length} characters"


def is_dns1123_label(value: str) -> list[str]:
    """Errors for an RFC 1123 label (namespace names, container names, port names of services)."""
    errs = [max_len_error(DNS1123_LABEL_MAX)] if len(value) > DNS1123_LABEL_MAX else []
    if not _LABEL_RE.match(value):
        errs.append(regex_error(_LABEL_MSG, _LABEL_FMT, "my-name", "123-abc"))
    return errs


def is_dns1123_subdomain(value: str) -> list[str]:
    """Errors for an RFC 1123 subdomain, the rule for most object names."""
    errs = [max_len_error(DNS1123_SUBDOMAIN_MAX)] if len(value) > DNS1123_SUBDOMAIN_MAX else []
    if not _SUBDOMAIN_RE.match(value):
        errs.append(regex_error(_SUBDOMAIN_MSG, _SUBDOMAIN_FMT, "example.com"))
    return errs


def is_dns1035_label(value: str) -> list[str]:
    """Errors for an RFC 1035 label (service names: must start with a letter)."""
    errs = [max_len_error(DNS1123_LABEL_MAX)] if len(value) > DNS1123_LABEL_MAX else []
    if not _DNS1035_RE.match(value):
        errs.append(regex_error(_DNS1035_MSG, _DNS1035_FMT, "my-name", "abc-123"))
    return errs


def is_qualified_name(value: str) -> list[str]:
    """Errors for a label or annotation key: optional DNS subdomain prefix, '/', short name."""
    parts = value.split("/")
    errs: list[str] = []
    if len(parts) == 1:
        name = parts[0]
    elif len(parts) == 2:
        prefix, name = parts
        if not prefix:
            errs.append("prefix part must be non-empty")
        else:
            errs.extend("prefix part " + m for m in is_dns1123_subdomain(prefix))
    else:
        return [
            "a qualified name "
            + regex_error(_QNAME_MSG, _QNAME_FMT, "MyName", "my.name", "123-abc")
            + " with an optional DNS subdomain prefix and '/' (e.g. 'example.com/MyName')"
        ]
    if not name:
        errs.append("name part must be non-empty")
    elif len(name) > QUALIFIED_NAME_MAX:
        errs.append("name part " + max_len_error(QUALIFIED_NAME_MAX))
    if not _QNAME_RE.match(name):
        errs.append("name part " + regex_error(_QNAME_MSG, _QNAME_FMT, "MyName", "my.name", "123-abc"))
    return errs


def is_label_value(value: str) -> list[str]:
    """Errors for a label value (may be empty)."""
    errs = [max_len_error(LABEL_VALUE_MAX)] if len(value) > LABEL_VALUE_MAX else []
    if not _LABEL_VALUE_RE.match(value):
        errs.append(regex_error(_LABEL_VALUE_MSG, _LABEL_VALUE_FMT, "MyValue", "my_value", "12345"))
    return errs


def is_config_map_key(value: str) -> list[str]:
    """Errors for a key of ConfigMap or Secret data (it becomes a file name in volumes)."""
    errs = [max_len_error(DNS1123_SUBDOMAIN_MAX)] if len(value) > DNS1123_SUBDOMAIN_MAX else []
    if not _CONFIG_KEY_RE.match(value):
        errs.append(regex_error(_CONFIG_KEY_MSG, _CONFIG_KEY_FMT, "key.name", "KEY_NAME", "key-name"))
    if value == ".":
        errs.append("must not be '.'")
    elif value == "..":
        errs.append("must not be '..'")
    elif value.startswith(".."):
        errs.append("must not start with '..'")
    return errs


def is_port_name(value: str) -> list[str]:
    """Errors for a named container port (IANA service name rules)."""
    errs = [max_len_error(15)] if len(value) > 15 else []
    if not _PORT_NAME_CHARS_RE.match(value):
        errs.append("must contain only alpha-numeric characters (a-z, 0-9), and hyphens (-)")
    if not re.search("[a-z]", value):
        errs.append("must contain at least one letter (a-z)")
    if "--" in value:
        errs.append("must not contain consecutive hyphens")
    if value and (value[0] == "-" or value[-1] == "-"):
        errs.append("must not begin or end with a hyphen")
    return errs


def is_port_number(value: Any) -> list[str]:
    """Errors for a TCP/UDP port number."""
    if isinstance(value, int) and not isinstance(value, bool) and 1 <= value <= 65535:
        return []
    return ["must be between 1 and 65535, inclusive"]


def _mask_trailing_dash(name: str) -> str:
    """A generateName may end in '-'; upstream masks it the same odd way before checking."""
    return name[:-2] + "a" if len(name) > 1 and name.endswith("-") else name


def dns_subdomain_name(name: str, prefix: bool = False) -> list[str]:
    """Name rule of most kinds."""
    return is_dns1123_subdomain(_mask_trailing_dash(name) if prefix else name)


def dns_label_name(name: str, prefix: bool = False) -> list[str]:
    """Name rule of namespaces."""
    return is_dns1123_label(_mask_trailing_dash(name) if prefix else name)


def dns1035_name(name: str, prefix: bool = False) -> list[str]:
    """Name rule of services (their names become DNS labels that must start with a letter)."""
    return is_dns1035_label(_mask_trailing_dash(name) if prefix else name)


def path_segment_name(name: str, prefix: bool = False) -> list[str]:
    """Name rule of RBAC kinds: anything that is a safe URL path segment."""
    if not prefix and name in (".", ".."):
        return [f"may not be '{name}'"]
    return [f"may not contain '{c}'" for c in ("/", "%") if c in name]


# --- field causes that strategy.py's helpers do not cover -------------------------------------


def go_repr(value: Any) -> str:
    """A value as Go's field errors print it: quoted strings, bare numbers, Go map/slice syntax."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return str(value)
    if isinstance(value, str):
        return json.dumps(value, ensure_ascii=False)
    if isinstance(value, dict) and all(isinstance(v, str) for v in value.values()):
        items = ", ".join(f"{json.dumps(k)}:{json.dumps(value[k])}" for k in sorted(value))
        return "map[string]string{" + items + "}"
    if isinstance(value, list) and all(isinstance(v, str) for v in value):
        return "[]string{" + ", ".join(json.dumps(v) for v in value) + "}"
    return json.dumps(value, separators=(",", ":"), sort_keys=True)


def invalid_shown(path: str, shown: str, detail: str) -> Cause:
    """FieldValueInvalid with the value already rendered (Go structs, IntOrString, redactions)."""
    return Cause(path, "FieldValueInvalid", f"{path}: Invalid value: {shown}: {detail}")


def invalid_value(path: str, value: Any, detail: str) -> Cause:
    """FieldValueInvalid with the value printed as upstream prints it (also maps, lists, bools)."""
    return invalid_shown(path, go_repr(value), detail)


def required_because(path: str, detail: str) -> Cause:
    """FieldValueRequired with upstream's explanation appended."""
    return Cause(path, "FieldValueRequired", f"{path}: Required value: {detail}")


def not_found(path: str, value: Any) -> Cause:
    """FieldValueNotFound, e.g. a volume mount naming no volume."""
    return Cause(path, "FieldValueNotFound", f"{path}: Not found: {go_repr(value)}")


def too_long(path: str, limit: int) -> Cause:
    """FieldValueTooLong for a byte limit."""
    return Cause(path, "FieldValueTooLong", f"{path}: Too long: may not be more than {limit} bytes")


# --- metadata ----------------------------------------------------------------------------------


def validate_labels(labels: Any, path: str) -> list[Cause]:
    """Label keys must be qualified names and values valid label values."""
    causes: list[Cause] = []
    for key, value in (labels or {}).items():
        causes += [invalid_value(path, key, m) for m in is_qualified_name(key)]
        causes += [invalid_value(path, value, m) for m in is_label_value(str(value))]
    return causes


def validate_annotations(annotations: Any, path: str) -> list[Cause]:
    """Annotation keys must be qualified names; all annotations together at most 256 KiB."""
    causes: list[Cause] = []
    total = 0
    for key, value in (annotations or {}).items():
        causes += [invalid_value(path, key, m) for m in is_qualified_name(key.lower())]
        total += len(key) + len(str(value))
    if total > ANNOTATIONS_SIZE_LIMIT:
        causes.append(too_long(path, ANNOTATIONS_SIZE_LIMIT))
    return causes


def _validate_owner_references(refs: list[dict[str, Any]], path: str) -> list[Cause]:
    causes: list[Cause] = []
    controller = ""
    for ref in refs:
        api_version = ref.get("apiVersion") or ""
        version = api_version.split("/")[-1] if api_version.count("/") <= 1 else ""
        if not version:
            causes.append(invalid_value(f"{path}.apiVersion", api_version, "version must not be empty"))
        for key in ("kind", "name", "uid"):
            if not ref.get(key):
                causes.append(invalid_value(f"{path}.{key}", ref.get(key) or "", "must not be empty"))
        if ref.get("controller") is True:
            current = f"{ref.get('kind', '')}/{ref.get('name', '')}"
            if controller:
                causes.append(
                    invalid_value(
                        path,
                        refs,
                        "Only one reference can have Controller set to true. "
                        f'Found "true" in references for {controller} and {current}',
                    )
                )
            else:
                controller = current
    return causes


def _validate_finalizers(finalizers: list[str], path: str) -> list[Cause]:
    causes = [invalid_value(path, f, m) for f in finalizers for m in is_qualified_name(f)]
    if "orphan" in finalizers and "foregroundDeletion" in finalizers:
        causes.append(
            invalid_value(path, finalizers, "finalizer orphan and foregroundDeletion cannot be both set")
        )
    return causes


def validate_object_meta(meta: dict[str, Any], namespaced: bool, name_rule: NameRule) -> list[Cause]:
    """ObjectMeta checks every kind shares (upstream ValidateObjectMetaAccessor), under `metadata.`."""
    causes: list[Cause] = []
    generate_name = meta.get("generateName") or ""
    if generate_name:
        causes += [
            invalid_value("metadata.generateName", generate_name, m) for m in name_rule(generate_name, True)
        ]
    name = meta.get("name") or ""
    if not name:
        causes.append(required_because("metadata.name", "name or generateName is required"))
    else:
        causes += [invalid_value("metadata.name", name, m) for m in name_rule(name, False)]
    namespace = meta.get("namespace") or ""
    if namespaced and not namespace:
        causes.append(required("metadata.namespace"))
    elif namespaced:
        causes += [invalid_value("metadata.namespace", namespace, m) for m in dns_label_name(namespace)]
    elif namespace:
        causes.append(forbidden("metadata.namespace", "not allowed on this type"))
    generation = meta.get("generation")
    if isinstance(generation, int) and generation < 0:
        causes.append(invalid_value("metadata.generation", generation, "must be greater than or equal to 0"))
    causes += validate_labels(meta.get("labels"), "metadata.labels")
    causes += validate_annotations(meta.get("annotations"), "metadata.annotations")
    causes += _validate_owner_references(meta.get("ownerReferences") or [], "metadata.ownerReferences")
    causes += _validate_finalizers(meta.get("finalizers") or [], "metadata.finalizers")
    return causes

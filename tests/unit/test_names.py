"""Name, label and metadata rules: upstream's exact messages and field paths."""

from __future__ import annotations

from kubelite.api.names import (
    dns1035_name,
    dns_label_name,
    dns_subdomain_name,
    go_repr,
    is_config_map_key,
    is_dns1035_label,
    is_dns1123_label,
    is_dns1123_subdomain,
    is_label_value,
    is_port_name,
    is_qualified_name,
    path_segment_name,
    validate_annotations,
    validate_labels,
    validate_object_meta,
)

SUBDOMAIN_ERROR = (
    "a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or '.', and must "
    "start and end with an alphanumeric character (e.g. 'example.com', regex used for validation is "
    "'[a-z0-9]([-a-z0-9]*[a-z0-9])?(\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*')"
)
LABEL_ERROR = (
    "a lowercase RFC 1123 label must consist of lower case alphanumeric characters or '-', and must start "
    "and "
    "end with an alphanumeric character (e.g. 'my-name',  or '123-abc', regex used for validation is "
    "'[a-z0-9]([-a-z0-9]*[a-z0-9])?')"
)
DNS1035_ERROR = (
    "a DNS-1035 label must consist of lower case alphanumeric characters or '-', start with an alphabetic "
    "character, and end with an alphanumeric character (e.g. 'my-name',  or 'abc-123', regex used for "
    "validation is '[a-z]([-a-z0-9]*[a-z0-9])?')"
)
QNAME_ERROR = (
    "name part must consist of alphanumeric characters, '-', '_' or '.', and must start and end with an "
    "alphanumeric character (e.g. 'MyName',  or 'my.name',  or '123-abc', regex used for validation is "
    "'([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]')"
)


def test_subdomain() -> None:
    assert is_dns1123_subdomain("my-app.example.com") == []
    assert is_dns1123_subdomain("My_App") == [SUBDOMAIN_ERROR]
    assert is_dns1123_subdomain("a" * 254) == ["must be no more than 253 characters"]
    assert is_dns1123_subdomain("-a") == [SUBDOMAIN_ERROR]


def test_label() -> None:
    assert is_dns1123_label("web-1") == []
    assert is_dns1123_label("1web") == []
    assert is_dns1123_label("a.b") == [LABEL_ERROR]
    assert is_dns1123_label("a" * 64) == ["must be no more than 63 characters"]


def test_dns1035_needs_a_leading_letter() -> None:
    assert is_dns1035_label("web") == []
    assert is_dns1035_label("1web") == [DNS1035_ERROR]


def test_qualified_name() -> None:
    assert is_qualified_name("app.kubernetes.io/name") == []
    assert is_qualified_name("MyName") == []
    assert is_qualified_name("-bad") == [QNAME_ERROR]
    assert is_qualified_name("/name") == ["prefix part must be non-empty"]
    assert is_qualified_name("Example.com/x") == ["prefix part " + SUBDOMAIN_ERROR]
    assert is_qualified_name("a/b/c")[0].startswith("a qualified name must consist of")
    assert is_qualified_name("a/b/c")[0].endswith(
        "with an optional DNS subdomain prefix and '/' (e.g. 'example.com/MyName')"
    )
    assert is_qualified_name("x/" + "a" * 64) == ["name part must be no more than 63 characters"]
    assert is_qualified_name("") == ["name part must be non-empty", QNAME_ERROR]


def test_label_value() -> None:
    assert is_label_value("") == []
    assert is_label_value("v1.2_x") == []
    assert is_label_value("a b")[0].startswith("a valid label must be an empty string or consist of")
    assert is_label_value("a" * 64)[0] == "must be no more than 63 characters"


def test_config_key_and_port_name() -> None:
    assert is_config_map_key("app.properties") == []
    assert is_config_map_key("..data") == ["must not start with '..'"]
    assert is_config_map_key("a b")[0].startswith(
        "a valid config key must consist of alphanumeric characters"
    )
    assert is_port_name("http") == []
    assert is_port_name("8080") == ["must contain at least one letter (a-z)"]
    assert is_port_name("a--b") == ["must not contain consecutive hyphens"]


def test_name_rules() -> None:
    assert path_segment_name("system:viewer") == []
    assert path_segment_name("..") == ["may not be '..'"]
    assert path_segment_name("a/b%c") == ["may not contain '/'", "may not contain '%'"]
    assert dns_subdomain_name("web-", prefix=True) == []
    assert dns_subdomain_name("web-") == [SUBDOMAIN_ERROR]
    assert dns_label_name("kube-system") == []
    assert dns1035_name("9svc") == [DNS1035_ERROR]


def test_go_repr() -> None:
    assert go_repr({"b": "2", "a": "1"}) == 'map[string]string{"a":"1", "b":"2"}'
    assert go_repr(["10.0.0.1"]) == '[]string{"10.0.0.1"}'
    assert go_repr(True) == "true"
    assert go_repr(None) == "null"
    assert go_repr("x") == '"x"'


def _messages(causes: list) -> list[str]:
    return [c.message for c in causes]


def test_object_meta_name_and_namespace() -> None:
    assert validate_object_meta({"name": "web", "namespace": "default"}, True, dns_subdomain_name) == []
    missing = validate_object_meta({"namespace": "default"}, True, dns_subdomain_name)
    assert _messages(missing) == ["metadata.name: Required value: name or generateName is required"]
    assert missing[0].reason == "FieldValueRequired"
    bad = validate_object_meta({"name": "Web", "namespace": "default"}, True, dns_subdomain_name)
    assert _messages(bad) == [f'metadata.name: Invalid value: "Web": {SUBDOMAIN_ERROR}']
    assert bad[0].field == "metadata.name"
    assert _messages(validate_object_meta({"name": "web"}, True, dns_subdomain_name)) == [
        "metadata.namespace: Required value"
    ]
    assert _messages(validate_object_meta({"name": "n1", "namespace": "x"}, False, dns_subdomain_name)) == [
        "metadata.namespace: Forbidden: not allowed on this type"
    ]
    generated = validate_object_meta(
        {"generateName": "Web-", "name": "web-x1", "namespace": "d"}, True, dns_subdomain_name
    )
    assert [c.field for c in generated] == ["metadata.generateName"]


def test_labels_and_annotations() -> None:
    causes = validate_labels({"app": "web", "bad key": "v", "k": "bad value"}, "metadata.labels")
    assert [c.field for c in causes] == ["metadata.labels", "metadata.labels"]
    assert causes[0].message.startswith(
        'metadata.labels: Invalid value: "bad key": name part must consist of'
    )
    assert causes[1].message.startswith('metadata.labels: Invalid value: "bad value": a valid label must be')
    assert validate_annotations({"note": "x" * 1000}, "metadata.annotations") == []
    big = validate_annotations({"note": "x" * (256 * 1024)}, "metadata.annotations")
    assert _messages(big) == ["metadata.annotations: Too long: may not be more than 262144 bytes"]


def test_owner_references_and_finalizers() -> None:
    meta = {
        "name": "a",
        "namespace": "d",
        "ownerReferences": [{"apiVersion": "", "kind": "", "name": "", "uid": ""}],
    }
    assert _messages(validate_object_meta(meta, True, dns_subdomain_name)) == [
        'metadata.ownerReferences.apiVersion: Invalid value: "": version must not be empty',
        'metadata.ownerReferences.kind: Invalid value: "": must not be empty',
        'metadata.ownerReferences.name: Invalid value: "": must not be empty',
        'metadata.ownerReferences.uid: Invalid value: "": must not be empty',
    ]
    owner = {"apiVersion": "apps/v1", "kind": "ReplicaSet", "uid": "u", "controller": True}
    two = {
        "name": "a",
        "namespace": "d",
        "ownerReferences": [{**owner, "name": "one"}, {**owner, "name": "two"}],
    }
    (cause,) = validate_object_meta(two, True, dns_subdomain_name)
    assert cause.message.endswith(
        'Only one reference can have Controller set to true. Found "true" in references '
        "for ReplicaSet/one and ReplicaSet/two"
    )
    bad = validate_object_meta(
        {"name": "a", "namespace": "d", "finalizers": ["ok/x", "no good"]}, True, dns_subdomain_name
    )
    assert [c.field for c in bad] == ["metadata.finalizers"]
    assert bad[0].message.startswith('metadata.finalizers: Invalid value: "no good": name part must consist')

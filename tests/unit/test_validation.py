"""Schema validation: type errors, required fields, enums, formats, unknown fields, pruning, CRD schemas."""


import pytest

from kubelite.api.schema import Schemas
from kubelite.api.validation import prune_unknown, validate

POD = "io.k8s.api.core.v1.Pod"
WIDGET = "com.example.v1.Widget"
WIDGET_SCHEMA = {
    "type": "object",
    "properties": {
        "spec": {
            "type": "object",
            "required": ["size"],
            "properties": {
                "size": {"type": "integer", "minimum": 1, "maximum": 10},
                "port": {"x-kubernetes-int-or-string": True},
                "note": {"type": "string", "nullable": True},
                "plain": {"type": "string"},
                "mode": {"type": "string", "enum": ["fast", "slow"]},
                "name": {"type": "string", "maxLength": 5, "pattern": "^[a-z]+$"},
                "config": {"type": "object", "x-kubernetes-preserve-unknown-fields": True},
                "tags": {"type": "array", "maxItems": 2, "items": {"type": "string"}},
                "workers": {"type": "array", "items": {
                    "type": "object", "required": ["name"], "properties": {"name": {"type": "string"}}}},
                "labels": {"type": "object", "additionalProperties": {"type": "string"}},
                "template": {"type": "object", "x-kubernetes-embedded-resource": True,
                             "x-kubernetes-preserve-unknown-fields": True},
                "empty": {"type": "object"},
            },
        },
        "status": {"type": "object", "x-kubernetes-preserve-unknown-fields": True},
    },
}


def a_pod() -> dict:
    return {
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": "web-1", "namespace": "default", "labels": {"app": "web"},
                     "creationTimestamp": "2024-05-01T10:00:00Z",
                     "ownerReferences": [{"apiVersion": "apps/v1", "kind": "ReplicaSet", "name": "web",
                                          "uid": "1234", "controller": True}]},
        "spec": {
            "containers": [{
                "name": "web", "image": "nginx:1.25",
                "ports": [{"containerPort": 80, "protocol": "TCP"}],
                "env": [{"name": "A", "value": "1"},
                        {"name": "B", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}}],
                "resources": {"limits": {"cpu": "500m", "memory": "128Mi"}, "requests": {"cpu": 0.1}},
                "readinessProbe": {"httpGet": {"path": "/", "port": "http"}, "periodSeconds": 5},
                "volumeMounts": [{"name": "data", "mountPath": "/data"}],
            }],
            "volumes": [{"name": "data", "emptyDir": {}}],
            "restartPolicy": "Always",
            "terminationGracePeriodSeconds": 30,
            "nodeSelector": {"disk": "ssd"},
            "tolerations": [{"key": "k", "operator": "Exists", "effect": "NoSchedule"}],
        },
        "status": {"phase": "Running", "podIP": "10.0.0.5",
                   "conditions": [{"type": "Ready", "status": "True"}]},
    }


@pytest.fixture(scope="module")
def schemas() -> Schemas:
    registry = Schemas()
    registry.register(WIDGET, WIDGET_SCHEMA, ("example.com", "v1", "Widget"))
    return registry


def messages(causes) -> list[str]:
    return [c.message for c in causes]


def test_valid_pod_has_no_causes_and_no_unknown_fields(schemas):
    assert validate(schemas, POD, a_pod(), True) == ([], [])


def test_type_error_uses_the_crd_validator_wording(schemas):
    pod = a_pod()
    pod["spec"]["terminationGracePeriodSeconds"] = "thirty"
    pod["spec"]["containers"][0]["ports"][0]["containerPort"] = "80"
    causes, _ = validate(schemas, POD, pod, True)
    assert messages(causes) == [
        'spec.containers[0].ports[0].containerPort: Invalid value: "string": '
        'spec.containers[0].ports[0].containerPort in body must be of type integer: "string"',
        'spec.terminationGracePeriodSeconds: Invalid value: "string": '
        'spec.terminationGracePeriodSeconds in body must be of type integer: "string"',
    ]
    assert causes[0].field == "spec.containers[0].ports[0].containerPort"
    assert causes[0].reason == "FieldValueInvalid"


def test_structure_type_errors(schemas):
    pod = a_pod()
    pod["spec"]["containers"] = {"name": "web"}
    pod["metadata"]["labels"] = {"app": 3}
    causes, _ = validate(schemas, POD, pod, True)
    assert [c.field for c in causes] == ["metadata.labels[app]", "spec.containers"]
    assert "must be of type array" in causes[1].message


def test_booleans_are_not_integers_and_integers_are_numbers(schemas):
    pod = a_pod()
    pod["spec"]["terminationGracePeriodSeconds"] = True
    pod["spec"]["containers"][0]["resources"]["limits"]["cpu"] = 2
    causes, _ = validate(schemas, POD, pod, True)
    assert messages(causes) == [
        'spec.terminationGracePeriodSeconds: Invalid value: "boolean": '
        'spec.terminationGracePeriodSeconds in body must be of type integer: "boolean"']


def test_int32_range(schemas):
    pod = a_pod()
    pod["spec"]["containers"][0]["ports"][0]["containerPort"] = 2**31
    causes, _ = validate(schemas, POD, pod, True)
    assert messages(causes) == [
        "spec.containers[0].ports[0].containerPort: Invalid value: 2147483648: "
        "spec.containers[0].ports[0].containerPort in body should be less than or equal to 2147483647"]


def test_required_fields(schemas):
    pod = a_pod()
    del pod["spec"]["containers"][0]["name"]
    pod["spec"]["containers"][0]["env"][0]["name"] = None
    causes, _ = validate(schemas, POD, pod, True)
    assert messages(causes) == ["spec.containers[0].env[0].name: Required value",
                                "spec.containers[0].name: Required value"]
    assert {c.reason for c in causes} == {"FieldValueRequired"}


def test_enum(schemas):
    pod = a_pod()
    pod["kind"] = "Service"
    causes, _ = validate(schemas, POD, pod, True)
    assert messages(causes) == ['kind: Unsupported value: "Service": supported values: "Pod"']


def test_null_allowed_where_the_type_list_has_null(schemas):
    pod = a_pod()
    pod["spec"]["nodeSelector"] = None
    pod["metadata"]["labels"] = None
    assert validate(schemas, POD, pod, True) == ([], [])
    pod["spec"]["containers"] = None
    causes, _ = validate(schemas, POD, pod, True)
    assert [c.field for c in causes] == ["spec.containers"]


def test_formats(schemas):
    pod = a_pod()
    pod["metadata"]["creationTimestamp"] = "yesterday"
    pod["spec"]["containers"][0]["resources"]["limits"]["memory"] = "lots"
    causes, _ = validate(schemas, POD, pod, True)
    assert messages(causes) == [
        'metadata.creationTimestamp: Invalid value: "yesterday": '
        'metadata.creationTimestamp in body must be of type date-time: "yesterday"',
        'spec.containers[0].resources.limits[memory]: Invalid value: "lots": '
        "quantities must match the regular expression '^([+-]?[0-9.]+)([eEinumkKMGTP]*[-+]?[0-9]*)$'",
    ]
    secret = {"apiVersion": "v1", "kind": "Secret", "data": {"ok": "aGVsbG8=", "bad": "not base64!"}}
    causes, _ = validate(schemas, "io.k8s.api.core.v1.Secret", secret, True)
    assert [c.field for c in causes] == ["data[bad]"]
    assert "not base64" not in causes[0].message


def test_unknown_fields_with_full_paths(schemas):
    pod = a_pod()
    pod["spec"]["foo"] = 1
    pod["spec"]["containers"][0]["bar"] = {"x": 1}
    pod["spec"]["containers"][0]["env"][1]["valueFrom"]["nope"] = True
    pod["metadata"]["extra"] = "x"
    pod["top"] = 1
    causes, unknown = validate(schemas, POD, pod, True)
    assert causes == []
    assert unknown == ["metadata.extra", "spec.containers[0].env[1].valueFrom.nope", "spec.containers[0].bar",
                       "spec.foo", "top"]
    assert validate(schemas, POD, pod, False) == ([], [])


def test_free_form_fields_have_no_unknown_fields(schemas):
    revision = {"apiVersion": "apps/v1", "kind": "ControllerRevision", "metadata": {"name": "r"},
                "revision": 1, "data": {"anything": {"goes": True}}}
    assert validate(schemas, "io.k8s.api.apps.v1.ControllerRevision", revision, True) == ([], [])
    meta = {"name": "x", "managedFields": [{"manager": "kubectl", "fieldsV1": {"f:spec": {"f:x": {}}}}]}
    assert validate(schemas, "io.k8s.apimachinery.pkg.apis.meta.v1.ObjectMeta", meta, True) == ([], [])


def test_prune_unknown_drops_unknown_fields_of_built_in_kinds(schemas):
    pod = a_pod()
    pod["spec"]["foo"] = 1
    pod["spec"]["containers"][0]["bar"] = 2
    pruned = prune_unknown(schemas, POD, pod)
    assert pruned is pod
    assert pod == a_pod()


def test_crd_schema_validation(schemas):
    widget = {"apiVersion": "example.com/v1", "kind": "Widget", "metadata": {"name": "w"},
              "spec": {"size": 0, "port": 1.5, "mode": "medium", "name": "Too-Long", "tags": ["a", "b", "c"],
                       "workers": [{}], "labels": {"a": 1}}}
    causes, unknown = validate(schemas, WIDGET, widget, True)
    assert unknown == []
    assert messages(causes) == [
        "spec.size: Invalid value: 0: spec.size in body should be greater than or equal to 1",
        'spec.port: Invalid value: "number": spec.port in body must be of type integer or string: "number"',
        'spec.mode: Unsupported value: "medium": supported values: "fast", "slow"',
        'spec.name: Invalid value: "Too-Long": spec.name in body should be at most 5 chars long',
        "spec.name: Invalid value: \"Too-Long\": spec.name in body should match '^[a-z]+$'",
        'spec.tags: Invalid value: "array": spec.tags in body should have at most 2 items',
        "spec.workers[0].name: Required value",
        'spec.labels[a]: Invalid value: "integer": spec.labels[a] in body must be of type string: "integer"',
    ]


def test_crd_int_or_string_nullable_and_missing_required(schemas):
    for port in (8080, "http"):
        assert validate(schemas, WIDGET, {"spec": {"size": 2, "port": port, "note": None}}, True) == ([], [])
    causes, _ = validate(schemas, WIDGET, {"spec": {"port": 1}}, True)
    assert messages(causes) == ["spec.size: Required value"]
    causes, _ = validate(schemas, WIDGET, {"spec": {"size": "2"}}, True)
    assert messages(causes) == [
        'spec.size: Invalid value: "string": spec.size in body must be of type integer: "string"']


def test_crd_unknown_fields_and_preserved_subtrees(schemas):
    widget = {"apiVersion": "example.com/v1", "kind": "Widget", "metadata": {"name": "w", "bogus": 1},
              "spec": {"size": 1, "extra": 1, "config": {"any": {"thing": [1]}}, "empty": {"x": 1},
                       "template": {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p", "nope": 1},
                                    "spec": {"whatever": True}}},
              "status": {"free": "form"}, "top": True}
    causes, unknown = validate(schemas, WIDGET, widget, True)
    assert causes == []
    assert unknown == ["metadata.bogus", "spec.extra", "spec.empty.x", "spec.template.metadata.nope", "top"]


def test_crd_pruning(schemas):
    widget = {"apiVersion": "example.com/v1", "kind": "Widget", "metadata": {"name": "w", "bogus": 1},
              "spec": {"size": 1, "extra": 1, "note": None, "plain": None, "config": {"keep": {"me": 1}},
                       "empty": {"x": 1}, "workers": [{"name": "a", "junk": 1}]},
              "status": {"free": "form"}, "top": True}
    prune_unknown(schemas, WIDGET, widget)
    assert widget == {"apiVersion": "example.com/v1", "kind": "Widget", "metadata": {"name": "w"},
                      "spec": {"size": 1, "note": None, "config": {"keep": {"me": 1}}, "empty": {},
                               "workers": [{"name": "a"}]},
                      "status": {"free": "form"}}


def test_crd_non_nullable_null_is_pruned_not_rejected(schemas):
    widget = {"spec": {"size": 1, "plain": None}}
    assert validate(schemas, WIDGET, widget, True) == ([], [])


def test_odd_input_is_reported_not_crashed_on(schemas):
    secret = {"data": {"k": "ünïcode"}}
    causes, _ = validate(schemas, "io.k8s.api.core.v1.Secret", secret, True)
    assert [c.field for c in causes] == ["data[k]"]
    deep: dict = {}
    for _ in range(5000):
        deep = {"properties": {"x": deep}}
    causes, _ = validate(schemas, "io.k8s.apiextensions-apiserver.pkg.apis.apiextensions.v1.JSONSchemaProps",
                         deep, True)
    assert [c.message for c in causes] == ['<root>: Invalid value: "object": the object is nested too deeply']


def test_crd_limits_of_the_wrong_type_are_ignored():
    registry = Schemas()
    registry.register("com.example.v1.Odd", {"type": "object", "properties": {
        "spec": {"type": "object", "properties": {"n": {"type": "integer", "minimum": "3"},
                                                  "s": {"type": "string", "pattern": 7}}}}})
    assert validate(registry, "com.example.v1.Odd", {"spec": {"n": 1, "s": "x"}}, True) == ([], [])

"""Schemas: loading, lookup, $ref resolution, registered CRD schemas, OpenAPI v2/v3 conversion."""


import pytest

from kubelite.api.schema import INT_OR_STRING, OBJECT_META, QUANTITY, Schemas, default_schemas

DEPLOYMENT = "io.k8s.api.apps.v1.Deployment"
WIDGET = {
    "type": "object",
    "properties": {
        "spec": {"type": "object", "properties": {
            "size": {"type": "integer", "nullable": True},
            "port": {"x-kubernetes-int-or-string": True, "anyOf": [{"type": "integer"}, {"type": "string"}]},
        }},
    },
}


@pytest.fixture(scope="module")
def schemas() -> Schemas:
    return Schemas()


def test_definitions_load_lazily_once():
    fresh = Schemas()
    assert fresh._defs is None
    assert len(fresh.definitions) > 700
    assert fresh.definitions is fresh.definitions


def test_default_schemas_is_one_shared_registry():
    assert default_schemas() is default_schemas()


def test_definition_and_unknown_name(schemas):
    assert "spec" in schemas.definition("io.k8s.api.core.v1.Pod")["properties"]
    with pytest.raises(KeyError):
        schemas.definition("io.k8s.api.core.v1.Nope")
    with pytest.raises(KeyError):
        schemas.node("io.k8s.api.core.v1.Nope")


def test_for_gvk(schemas):
    assert schemas.for_gvk("", "v1", "Pod") == "io.k8s.api.core.v1.Pod"
    assert schemas.for_gvk("apps", "v1", "Deployment") == DEPLOYMENT
    assert schemas.for_gvk("apps", "v1", "Nope") is None


def test_resolve_keeps_patch_strategy_written_beside_the_ref(schemas):
    spec = schemas.definition("io.k8s.api.apps.v1.DeploymentSpec")
    strategy = schemas.resolve(spec["properties"]["strategy"])
    assert "rollingUpdate" in strategy["properties"]
    assert strategy["x-kubernetes-patch-strategy"] == "retainKeys"
    template = schemas.resolve(spec["properties"]["template"])
    assert template is schemas.definition("io.k8s.api.core.v1.PodTemplateSpec")


def test_property_schema(schemas):
    pod_spec = schemas.property_schema(schemas.definition("io.k8s.api.core.v1.Pod"), "spec")
    containers = schemas.property_schema(pod_spec, "containers")
    assert containers["x-kubernetes-patch-merge-key"] == "name"
    labels = schemas.property_schema(schemas.definition(OBJECT_META), "labels")
    assert schemas.property_schema(labels, "any-key") == {"type": ["string", "null"]}
    assert schemas.property_schema(pod_spec, "nope") is None


def test_compiled_node_reads_both_dialects(schemas):
    containers = schemas.node("io.k8s.api.core.v1.PodSpec").props["containers"]
    assert containers.types == {"array"} and containers.merge_key == "name"
    assert "merge" in containers.strategy
    assert containers.items is schemas.node("io.k8s.api.core.v1.Container")
    image = containers.items.props["image"]
    assert image.types == {"string"} and image.nullable
    assert schemas.node(INT_OR_STRING).types == {"integer", "string"}
    assert schemas.node(QUANTITY).types == {"string", "number"}
    assert schemas.node("io.k8s.apimachinery.pkg.runtime.RawExtension").open
    assert not schemas.node("io.k8s.api.core.v1.Container").open


def test_registered_crd_schema(schemas):
    schemas.register("com.example.v1.Widget", WIDGET, ("example.com", "v1", "Widget"))
    try:
        assert schemas.for_gvk("example.com", "v1", "Widget") == "com.example.v1.Widget"
        root = schemas.node("com.example.v1.Widget")
        assert root.crd and not root.open
        assert root.props["metadata"] is schemas.node(OBJECT_META)
        assert root.props["kind"].types == {"string"}
        spec = root.props["spec"]
        assert spec.props["size"].nullable and spec.props["size"].types == {"integer"}
        assert spec.props["port"].types == {"integer", "string"}
    finally:
        schemas.unregister("com.example.v1.Widget")
    assert schemas.for_gvk("example.com", "v1", "Widget") is None
    with pytest.raises(KeyError):
        schemas.node("com.example.v1.Widget")


def test_openapi_v2_document(schemas):
    doc = schemas.openapi_v2({"/api/v1/pods": {"get": {}}})
    assert doc["swagger"] == "2.0" and doc["paths"] == {"/api/v1/pods": {"get": {}}}
    definitions = doc["definitions"]
    pod = definitions["io.k8s.api.core.v1.Pod"]
    assert pod["type"] == "object"
    assert pod["properties"]["spec"]["$ref"] == "#/definitions/io.k8s.api.core.v1.PodSpec"
    assert pod["x-kubernetes-group-version-kind"] == [{"group": "", "kind": "Pod", "version": "v1"}]
    assert definitions[INT_OR_STRING]["type"] == "string"
    assert definitions[INT_OR_STRING]["format"] == "int-or-string"
    assert definitions[QUANTITY]["type"] == "string" and "oneOf" not in definitions[QUANTITY]
    strategy = definitions["io.k8s.api.apps.v1.DeploymentSpec"]["properties"]["strategy"]
    assert strategy["x-kubernetes-patch-strategy"] == "retainKeys"
    assert "#/$defs/" not in str(definitions)
    assert all(not isinstance(t, list) for t in _all_types(definitions))


def test_openapi_v3_components(schemas):
    components = schemas.openapi_v3_components([DEPLOYMENT])["schemas"]
    assert DEPLOYMENT in components and "io.k8s.api.core.v1.Container" in components
    assert "io.k8s.api.core.v1.Node" not in components
    assert components[INT_OR_STRING]["x-kubernetes-int-or-string"] is True
    strategy = components["io.k8s.api.apps.v1.DeploymentSpec"]["properties"]["strategy"]
    assert strategy["allOf"] == [{"$ref": "#/components/schemas/io.k8s.api.apps.v1.DeploymentStrategy"}]
    assert strategy["x-kubernetes-patch-strategy"] == "retainKeys"
    assert len(schemas.openapi_v3_components()["schemas"]) == len(schemas.definitions)


def test_crd_schemas_are_published(schemas):
    schemas.register("com.example.v1.Widget", WIDGET, ("example.com", "v1", "Widget"))
    try:
        v2 = schemas.openapi_v2({})["definitions"]["com.example.v1.Widget"]
        assert v2["properties"]["metadata"] == {"$ref": "#/definitions/" + OBJECT_META}
        gvk = {"group": "example.com", "version": "v1", "kind": "Widget"}
        assert v2["x-kubernetes-group-version-kind"] == [gvk]
        port = v2["properties"]["spec"]["properties"]["port"]
        assert "anyOf" not in port and port["x-kubernetes-int-or-string"] is True
        assert "nullable" not in v2["properties"]["spec"]["properties"]["size"]
        v3 = schemas.openapi_v3_components(["com.example.v1.Widget"])["schemas"]
        assert OBJECT_META in v3
        assert v3["com.example.v1.Widget"]["properties"]["spec"]["properties"]["size"]["nullable"] is True
    finally:
        schemas.unregister("com.example.v1.Widget")
    assert "com.example.v1.Widget" not in schemas.openapi_v2({})["definitions"]


def _all_types(node):
    if isinstance(node, dict):
        for key, value in node.items():
            if key == "type":
                yield value
            else:
                yield from _all_types(value)
    elif isinstance(node, list):
        for item in node:
            yield from _all_types(item)

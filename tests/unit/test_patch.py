"""JSON patch, merge patch and strategic merge patch (the apiserver side of kubectl patch/apply)."""

import copy

import pytest

from kubelite.api.patch import PatchError, json_patch, merge_patch, strategic_merge_patch
from kubelite.api.schema import Schemas

DEPLOYMENT = "io.k8s.api.apps.v1.Deployment"


@pytest.fixture(scope="module")
def schemas() -> Schemas:
    return Schemas()


def a_deployment() -> dict:
    return {
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": "web", "labels": {"app": "web", "tier": "fe"}, "finalizers": ["a", "b"]},
        "spec": {
            "replicas": 2,
            "strategy": {"type": "RollingUpdate", "rollingUpdate": {"maxSurge": 1, "maxUnavailable": 0}},
            "template": {"spec": {
                "containers": [
                    {"name": "app", "image": "app:1", "args": ["--a", "--b"],
                     "env": [{"name": "MODE", "value": "prod"}, {"name": "DEBUG", "value": "0"}]},
                    {"name": "sidecar", "image": "proxy:1"},
                ],
                "volumes": [{"name": "data", "emptyDir": {}}],
            }},
        },
    }


def containers(obj: dict) -> list[dict]:
    return obj["spec"]["template"]["spec"]["containers"]


def pod_spec_patch(**fields) -> dict:
    return {"spec": {"template": {"spec": fields}}}


def smp(schemas, obj, patch):
    return strategic_merge_patch(schemas, DEPLOYMENT, obj, patch)


def test_containers_merge_by_name(schemas):
    patch = pod_spec_patch(containers=[{"name": "sidecar", "image": "proxy:2"}])
    result = smp(schemas, a_deployment(), patch)
    assert containers(result) == [containers(a_deployment())[0], {"name": "sidecar", "image": "proxy:2"}]


def test_new_list_item_goes_first_as_upstream_orders_it(schemas):
    result = smp(schemas, a_deployment(), pod_spec_patch(containers=[{"name": "log", "image": "log:1"}]))
    assert [c["name"] for c in containers(result)] == ["log", "app", "sidecar"]


def test_patch_order_wins_over_server_order(schemas):
    patch = pod_spec_patch(containers=[{"name": "sidecar", "image": "proxy:2"},
                                       {"name": "app", "image": "app:2"}])
    assert [c["name"] for c in containers(smp(schemas, a_deployment(), patch))] == ["sidecar", "app"]


def test_set_element_order(schemas):
    patch = pod_spec_patch(**{"$setElementOrder/containers": [{"name": "sidecar"}, {"name": "app"}],
                              "containers": [{"name": "app", "image": "app:2"}]})
    result = smp(schemas, a_deployment(), patch)
    assert [(c["name"], c["image"]) for c in containers(result)] == [("sidecar", "proxy:1"), ("app", "app:2")]
    assert "$setElementOrder/containers" not in result["spec"]["template"]["spec"]


def test_set_element_order_must_agree_with_the_patch_list(schemas):
    patch = pod_spec_patch(**{"$setElementOrder/containers": [{"name": "app"}, {"name": "sidecar"}],
                              "containers": [{"name": "sidecar", "image": "x"},
                                             {"name": "app", "image": "y"}]})
    with pytest.raises(PatchError, match="doesn't match"):
        smp(schemas, a_deployment(), patch)


def test_delete_env_entry_with_patch_delete(schemas):
    patch = pod_spec_patch(containers=[{"name": "app", "env": [{"name": "DEBUG", "$patch": "delete"}]}])
    result = smp(schemas, a_deployment(), patch)
    assert containers(result)[0]["env"] == [{"name": "MODE", "value": "prod"}]
    assert containers(result)[0]["image"] == "app:1"


def test_delete_whole_container(schemas):
    patch = pod_spec_patch(containers=[{"name": "app", "$patch": "delete"}])
    assert [c["name"] for c in containers(smp(schemas, a_deployment(), patch))] == ["sidecar"]


def test_replace_list_directive(schemas):
    patch = pod_spec_patch(containers=[{"name": "only", "image": "x"}, {"$patch": "replace"}])
    assert containers(smp(schemas, a_deployment(), patch)) == [{"name": "only", "image": "x"}]


def test_replace_map_directive(schemas):
    patch = {"metadata": {"labels": {"$patch": "replace", "new": "1"}}}
    assert smp(schemas, a_deployment(), patch)["metadata"]["labels"] == {"new": "1"}


def test_delete_map_directive(schemas):
    patch = {"spec": {"strategy": {"$patch": "delete"}}}
    assert smp(schemas, a_deployment(), patch)["spec"]["strategy"] == {}


def test_unknown_map_directive(schemas):
    with pytest.raises(PatchError, match="unknown patch type"):
        smp(schemas, a_deployment(), {"metadata": {"$patch": "explode"}})


def test_null_removes_a_field(schemas):
    patch = {"metadata": {"labels": {"tier": None}}, "spec": {"replicas": None, "missing": None}}
    result = smp(schemas, a_deployment(), patch)
    assert result["metadata"]["labels"] == {"app": "web"}
    assert "replicas" not in result["spec"] and "missing" not in result["spec"]


def test_non_merge_lists_are_replaced(schemas):
    patch = pod_spec_patch(containers=[{"name": "app", "args": ["--c"]}])
    assert containers(smp(schemas, a_deployment(), patch))[0]["args"] == ["--c"]


def test_primitive_merge_list_is_a_union(schemas):
    result = smp(schemas, a_deployment(), {"metadata": {"finalizers": ["c", "a"]}})
    assert result["metadata"]["finalizers"] == ["c", "a", "b"]


def test_delete_from_primitive_list(schemas):
    result = smp(schemas, a_deployment(), {"metadata": {"$deleteFromPrimitiveList/finalizers": ["a"]}})
    assert result["metadata"]["finalizers"] == ["b"]


def test_set_element_order_of_primitives(schemas):
    patch = {"metadata": {"$setElementOrder/finalizers": ["b", "c", "a"], "finalizers": ["c"]}}
    assert smp(schemas, a_deployment(), patch)["metadata"]["finalizers"] == ["b", "c", "a"]


def test_retain_keys(schemas):
    patch = {"spec": {"strategy": {"$retainKeys": ["type"], "type": "Recreate"}}}
    assert smp(schemas, a_deployment(), patch)["spec"]["strategy"] == {"type": "Recreate"}


def test_retain_keys_must_name_every_patched_field(schemas):
    patch = {"spec": {"strategy": {"$retainKeys": ["type"], "type": "Recreate", "rollingUpdate": {}}}}
    with pytest.raises(PatchError, match="retainKeys"):
        smp(schemas, a_deployment(), patch)


def test_missing_merge_key(schemas):
    with pytest.raises(PatchError, match="does not contain declared merge key: name"):
        smp(schemas, a_deployment(), pod_spec_patch(containers=[{"image": "x"}]))


def test_directives_do_not_leak_into_new_subtrees(schemas):
    obj = a_deployment()
    del obj["spec"]["template"]["spec"]["volumes"]
    patch = pod_spec_patch(volumes=[{"name": "v", "secret": {"secretName": "s", "optional": None}},
                                    {"name": "gone", "$patch": "delete"}])
    assert smp(schemas, obj, patch)["spec"]["template"]["spec"]["volumes"] == [
        {"name": "v", "secret": {"secretName": "s"}}]


def test_inputs_are_not_mutated(schemas):
    obj, patch = a_deployment(), pod_spec_patch(containers=[{"name": "app", "image": "app:2"}])
    patch_copy = copy.deepcopy(patch)
    result = smp(schemas, obj, patch)
    containers(result)[0]["env"].append({"name": "X"})
    assert obj == a_deployment() and patch == patch_copy


def test_without_schema_it_is_a_merge_patch(schemas):
    cr = {"spec": {"items": [{"name": "a", "v": 1}], "map": {"x": 1, "y": 2}}}
    patch = {"spec": {"items": [{"name": "b"}], "map": {"x": None, "z": 3}}}
    assert strategic_merge_patch(schemas, None, cr, patch) == {"spec": {"items": [{"name": "b"}],
                                                                       "map": {"y": 2, "z": 3}}}


def test_preserved_unknown_fields_merge_like_a_merge_patch(schemas):
    revision = {"data": {"list": [1, 2], "keep": True}}
    result = strategic_merge_patch(schemas, "io.k8s.api.apps.v1.ControllerRevision", revision,
                                   {"data": {"list": [3]}})
    assert result == {"data": {"list": [3], "keep": True}}


def test_replace_strategy_field(schemas):
    pdb = {"spec": {"selector": {"matchLabels": {"a": "1"}}}}
    result = strategic_merge_patch(schemas, "io.k8s.api.policy.v1.PodDisruptionBudget", pdb,
                                   {"spec": {"selector": {"matchLabels": {"b": "2"}}}})
    assert result == {"spec": {"selector": {"matchLabels": {"b": "2"}}}}


def test_strategic_patch_must_be_an_object(schemas):
    with pytest.raises(PatchError):
        smp(schemas, a_deployment(), [1])


def test_merge_patch_rfc7386():
    target = {"a": "b", "c": {"d": "e", "f": "g"}, "list": [1, 2]}
    patch = {"a": "z", "c": {"f": None, "new": {"x": None, "y": 1}}, "list": [3]}
    assert merge_patch(target, patch) == {"a": "z", "c": {"d": "e", "new": {"y": 1}}, "list": [3]}
    assert target == {"a": "b", "c": {"d": "e", "f": "g"}, "list": [1, 2]}
    assert merge_patch({"a": 1}, ["x"]) == ["x"]


def test_json_patch():
    obj = {"metadata": {"labels": {"a": "1"}}, "spec": {"list": [1, 2]}}
    ops = [{"op": "add", "path": "/metadata/labels/b", "value": "2"},
           {"op": "remove", "path": "/spec/list/0"},
           {"op": "replace", "path": "/spec/list/0", "value": 9},
           {"op": "test", "path": "/metadata/labels/a", "value": "1"}]
    assert json_patch(obj, ops) == {"metadata": {"labels": {"a": "1", "b": "2"}}, "spec": {"list": [9]}}
    assert obj == {"metadata": {"labels": {"a": "1"}}, "spec": {"list": [1, 2]}}


@pytest.mark.parametrize("ops, words", [
    ([{"op": "remove", "path": "/nope"}], "non-existent"),
    ([{"op": "test", "path": "/a", "value": 2}], "test operation failed"),
    ([{"op": "frob", "path": "/a"}], "Unknown operation"),
    ([{"path": "/a"}], "does not contain 'op'"),
    ({"op": "add"}, "list of operations"),
    (["nope"], "unable to apply"),
])
def test_json_patch_errors(ops, words):
    with pytest.raises(PatchError, match=words):
        json_patch({"a": 1}, ops)


def test_merge_directive_on_a_map_is_a_plain_merge_but_not_on_a_list(schemas):
    result = smp(schemas, a_deployment(), {"metadata": {"$patch": "merge", "labels": {"x": "1"}}})
    assert result["metadata"]["labels"] == {"app": "web", "tier": "fe", "x": "1"}
    with pytest.raises(PatchError, match="merging lists cannot yet be specified"):
        smp(schemas, a_deployment(), pod_spec_patch(containers=[{"$patch": "merge"}]))


@pytest.mark.parametrize("patch", [
    {"spec": {"strategy": {"$retainKeys": [{"x": 1}]}}},
    {"spec": {"strategy": {"$retainKeys": "type"}}},
    {"metadata": {"$deleteFromPrimitiveList/finalizers": "a"}},
    {"metadata": {"$setElementOrder/finalizers": "a"}},
    pod_spec_patch(**{"$setElementOrder/containers": [{"image": "x"}]}),
    pod_spec_patch(containers=["not-a-map"]),
])
def test_malformed_directives_are_patch_errors(schemas, patch):
    with pytest.raises(PatchError):
        smp(schemas, a_deployment(), patch)


def test_deep_nesting_is_a_patch_error_not_a_crash(schemas):
    deep: dict = {}
    for _ in range(5000):
        deep = {"x": deep}
    with pytest.raises(PatchError, match="nested too deeply"):
        strategic_merge_patch(schemas, None, {}, deep)
    with pytest.raises(PatchError, match="nested too deeply"):
        merge_patch({}, deep)

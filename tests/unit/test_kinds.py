"""Built-in kinds against upstream: registry entries, defaults, validation, updates, fields, tables."""

from __future__ import annotations

import copy
import json
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest

from kubelite.api.kinds.builtin import BUILTIN, name_rule
from kubelite.api.resource import ResourceType
from kubelite.api.strategy import Obj


def ago(seconds: float) -> str:
    """A timestamp this many seconds before now (sub-second precision keeps ages exact)."""
    return (datetime.now(UTC) - timedelta(seconds=seconds)).isoformat().replace("+00:00", "Z")


def resource(plural: str, group: str = "", version: str = "v1") -> ResourceType:
    return next(r for r in BUILTIN if (r.group, r.version, r.plural) == (group, version, plural))


def create(plural: str, obj: Obj, group: str = "") -> Obj:
    """What the machinery does with a new object: prepare_create, then defaults."""
    strategy = resource(plural, group).strategy
    obj = copy.deepcopy(obj)
    if strategy.prepare_create:
        strategy.prepare_create(obj)
    if strategy.defaults:
        strategy.defaults(obj)
    return obj


def errors(plural: str, obj: Obj, group: str = "") -> list[str]:
    validate = resource(plural, group).strategy.validate
    assert validate is not None
    return [c.message for c in validate(obj)]


def update_errors(plural: str, new: Obj, old: Obj, group: str = "") -> list[str]:
    check = resource(plural, group).strategy.validate_update
    assert check is not None
    return [c.message for c in check(new, old)]


def row(plural: str, obj: Obj, group: str = "") -> list[Any]:
    strategy = resource(plural, group).strategy
    cells = strategy.row(obj)
    assert len(cells) == len(strategy.columns)
    return cells


# --- the registry entries ----------------------------------------------------------------------


def test_every_schema_exists() -> None:
    path = (
        Path(kubernetes_validate.__file__).parent / "kubernetes-json-schema/v1.33.0-local/_definitions.json"
    )
    definitions = json.loads(path.read_text())["$defs"]
    missing = [r.schema for r in BUILTIN if r.schema not in definitions]
    assert missing == []
    for r in BUILTIN:
        kinds = definitions[r.schema].get("x-kubernetes-group-version-kind", [])
        assert {"group": r.group, "version": r.version, "kind": r.kind} in kinds, r.schema


def test_no_duplicates_and_expected_set() -> None:
    keys = [(r.group, r.version, r.plural) for r in BUILTIN]
    assert len(keys) == len(set(keys))
    assert len(BUILTIN) == 40
    assert ("apps", "v1", "deployments") in keys and ("autoscaling", "v1", "horizontalpodautoscalers") in keys


def test_names_scopes_and_verbs() -> None:
    assert resource("pods").short_names == ("po",)
    assert resource("customresourcedefinitions", "apiextensions.k8s.io").short_names == ("crd", "crds")
    assert resource("events", "events.k8s.io").short_names == ("ev",)
    assert resource("endpoints").singular == "endpoints"
    all_category = sorted(r.plural for r in BUILTIN if "all" in r.categories)
    assert all_category == [
        "cronjobs",
        "daemonsets",
        "deployments",
        "horizontalpodautoscalers",
        "horizontalpodautoscalers",
        "jobs",
        "pods",
        "replicasets",
        "replicationcontrollers",
        "services",
        "statefulsets",
    ]
    cluster = sorted(r.plural for r in BUILTIN if not r.namespaced)
    assert cluster == [
        "clusterrolebindings",
        "clusterroles",
        "customresourcedefinitions",
        "ingressclasses",
        "namespaces",
        "nodes",
        "persistentvolumes",
        "priorityclasses",
        "selfsubjectaccessreviews",
        "selfsubjectreviews",
        "storageclasses",
        "tokenreviews",
    ]
    assert resource("tokenreviews", "authentication.k8s.io").verbs == ("create",)
    assert not resource("tokenreviews", "authentication.k8s.io").persisted
    assert "deletecollection" not in resource("namespaces").verbs
    assert "deletecollection" in resource("services").verbs


def test_subresources_status_and_scale() -> None:
    for r in BUILTIN:
        assert r.strategy.has_status == ("status" in r.subresources), r.plural
    scalable = sorted(r.plural for r in BUILTIN if r.scale)
    assert scalable == ["deployments", "replicasets", "replicationcontrollers", "statefulsets"]
    assert [r.plural for r in BUILTIN if "scale" in r.subresources] == [
        "replicationcontrollers",
        "deployments",
        "replicasets",
        "statefulsets",
    ]
    assert resource("pods").subresources == ("status", "binding", "eviction", "ephemeralcontainers", "log", "exec",
                                             "attach", "portforward", "proxy")
    assert resource("nodes").subresources == ("status", "proxy")
    assert resource("services").subresources == ("status", "proxy")
    assert resource("deployments", "apps").scale.spec_replicas == ".spec.replicas"  # type: ignore[union-attr]


def test_shared_storage() -> None:
    assert resource("events", "events.k8s.io").storage_group == ""
    assert resource("horizontalpodautoscalers", "autoscaling", "v2").storage_group == "autoscaling"
    assert resource("horizontalpodautoscalers", "autoscaling", "v1").storage_group == "autoscaling"


def test_name_rules_per_kind() -> None:
    assert name_rule(resource("services"))("1svc", False)
    assert not name_rule(resource("pods"))("1pod.x", False)
    assert name_rule(resource("namespaces"))("a.b", False)
    assert not name_rule(resource("clusterroles", "rbac.authorization.k8s.io"))("system:admin", False)


def test_columns_start_with_name_and_rows_match() -> None:
    for r in BUILTIN:
        columns = r.strategy.columns
        names = [c.name for c in columns]
        assert names.count("Name") == 1, r.plural
        name = next(c for c in columns if c.name == "Name")
        assert name.format == "name"
        if r.kind != "Event":
            assert columns[0] is name, r.plural
        cells = r.strategy.row({"metadata": {"name": "x", "creationTimestamp": ago(10)}})
        assert len(cells) == len(columns), r.plural


# --- defaults ----------------------------------------------------------------------------------

BARE_POD = {
    "apiVersion": "v1",
    "kind": "Pod",
    "metadata": {"name": "web", "namespace": "default"},
    "spec": {"containers": [{"name": "web", "image": "nginx"}]},
}


def test_bare_pod_defaults() -> None:
    pod = create("pods", BARE_POD)
    assert pod["spec"] == {
        "containers": [
            {
                "name": "web",
                "image": "nginx",
                "imagePullPolicy": "Always",
                "resources": {},
                "terminationMessagePath": "/dev/termination-log",
                "terminationMessagePolicy": "File",
            }
        ],
        "restartPolicy": "Always",
        "dnsPolicy": "ClusterFirst",
        "schedulerName": "default-scheduler",
        "terminationGracePeriodSeconds": 30,
        "securityContext": {},
        "enableServiceLinks": True,
        "priority": 0,
        "preemptionPolicy": "PreemptLowerPriority",
        "tolerations": [
            {
                "key": "node.kubernetes.io/not-ready",
                "operator": "Exists",
                "effect": "NoExecute",
                "tolerationSeconds": 300,
            },
            {
                "key": "node.kubernetes.io/unreachable",
                "operator": "Exists",
                "effect": "NoExecute",
                "tolerationSeconds": 300,
            },
        ],
    }
    assert pod["status"] == {"phase": "Pending", "qosClass": "BestEffort"}
    assert errors("pods", pod) == []


def test_pod_container_and_volume_defaults() -> None:
    pod = copy.deepcopy(BARE_POD)
    probe = {"httpGet": {"port": 80}}
    pod["spec"]["containers"][0].update(
        {
            "image": "nginx:1.27",
            "ports": [{"containerPort": 80}],
            "livenessProbe": probe,
            "resources": {"limits": {"cpu": "1", "memory": "1Gi"}},
            "env": [{"name": "NODE", "valueFrom": {"fieldRef": {"fieldPath": "spec.nodeName"}}}],
        }
    )
    pod["spec"]["volumes"] = [
        {"name": "a"},
        {"name": "b", "configMap": {"name": "c"}},
        {"name": "c", "secret": {"secretName": "s"}},
    ]
    pod["spec"]["tolerations"] = [{"operator": "Exists"}]
    pod = create("pods", pod)
    container = pod["spec"]["containers"][0]
    assert container["imagePullPolicy"] == "IfNotPresent"
    assert container["ports"] == [{"containerPort": 80, "protocol": "TCP"}]
    assert container["livenessProbe"] == {
        "httpGet": {"port": 80, "path": "/", "scheme": "HTTP"},
        "timeoutSeconds": 1,
        "periodSeconds": 10,
        "successThreshold": 1,
        "failureThreshold": 3,
    }
    assert container["resources"]["requests"] == {"cpu": "1", "memory": "1Gi"}
    assert container["env"][0]["valueFrom"]["fieldRef"]["apiVersion"] == "v1"
    assert pod["spec"]["volumes"] == [
        {"name": "a", "emptyDir": {}},
        {"name": "b", "configMap": {"name": "c", "defaultMode": 420}},
        {"name": "c", "secret": {"secretName": "s", "defaultMode": 420}},
    ]
    assert pod["spec"]["tolerations"] == [{"operator": "Exists"}]
    assert pod["status"]["qosClass"] == "Guaranteed"


@pytest.mark.parametrize(
    ("image", "policy"),
    [
        ("nginx", "Always"),
        ("nginx:latest", "Always"),
        ("localhost:5000/nginx", "Always"),
        ("localhost:5000/nginx:1.2", "IfNotPresent"),
        ("nginx@sha256:" + "a" * 64, "IfNotPresent"),
    ],
)
def test_image_pull_policy(image: str, policy: str) -> None:
    pod = copy.deepcopy(BARE_POD)
    pod["spec"]["containers"][0]["image"] = image
    assert create("pods", pod)["spec"]["containers"][0]["imagePullPolicy"] == policy


def test_qos_classes() -> None:
    pod = copy.deepcopy(BARE_POD)
    pod["spec"]["containers"][0]["resources"] = {"requests": {"cpu": "100m"}}
    assert create("pods", pod)["status"]["qosClass"] == "Burstable"
    pod["spec"]["containers"][0]["resources"] = {
        "requests": {"cpu": "1000m", "memory": "1Gi"},
        "limits": {"cpu": "1", "memory": "1024Mi"},
    }
    assert create("pods", pod)["status"]["qosClass"] == "Guaranteed"


TEMPLATE = {
    "metadata": {"labels": {"app": "web"}},
    "spec": {"containers": [{"name": "web", "image": "nginx"}]},
}


def test_bare_deployment_defaults() -> None:
    deployment = create(
        "deployments",
        {
            "metadata": {"name": "web", "namespace": "default"},
            "spec": {"selector": {"matchLabels": {"app": "web"}}, "template": TEMPLATE},
        },
        "apps",
    )
    spec = deployment["spec"]
    assert spec["replicas"] == 1
    assert spec["strategy"] == {
        "type": "RollingUpdate",
        "rollingUpdate": {"maxUnavailable": "25%", "maxSurge": "25%"},
    }
    assert spec["revisionHistoryLimit"] == 10
    assert spec["progressDeadlineSeconds"] == 600
    pod_spec = spec["template"]["spec"]
    assert pod_spec["restartPolicy"] == "Always" and pod_spec["dnsPolicy"] == "ClusterFirst"
    assert pod_spec["schedulerName"] == "default-scheduler" and pod_spec["securityContext"] == {}
    assert "enableServiceLinks" not in pod_spec and "tolerations" not in pod_spec
    assert pod_spec["containers"][0]["terminationMessagePolicy"] == "File"
    assert errors("deployments", deployment, "apps") == []


def test_workload_defaults() -> None:
    sts = create(
        "statefulsets", {"spec": {"template": TEMPLATE, "volumeClaimTemplates": [{"spec": {}}]}}, "apps"
    )
    assert sts["spec"]["podManagementPolicy"] == "OrderedReady"
    assert sts["spec"]["updateStrategy"] == {"type": "RollingUpdate", "rollingUpdate": {"partition": 0}}
    assert sts["spec"]["persistentVolumeClaimRetentionPolicy"] == {
        "whenDeleted": "Retain",
        "whenScaled": "Retain",
    }
    assert sts["spec"]["volumeClaimTemplates"] == [
        {"spec": {"volumeMode": "Filesystem"}, "status": {"phase": "Pending"}}
    ]
    ds = create("daemonsets", {"spec": {"template": TEMPLATE}}, "apps")
    assert ds["spec"]["updateStrategy"] == {
        "type": "RollingUpdate",
        "rollingUpdate": {"maxUnavailable": 1, "maxSurge": 0},
    }
    assert ds["spec"]["revisionHistoryLimit"] == 10
    assert create("replicasets", {"spec": {"template": TEMPLATE}}, "apps")["spec"]["replicas"] == 1
    rc = create("replicationcontrollers", {"metadata": {"name": "rc"}, "spec": {"template": TEMPLATE}})
    assert rc["spec"]["selector"] == {"app": "web"} and rc["metadata"]["labels"] == {"app": "web"}


def test_bare_service_defaults() -> None:
    service = create(
        "services",
        {
            "metadata": {"name": "web", "namespace": "default"},
            "spec": {"selector": {"app": "web"}, "ports": [{"port": 80}]},
        },
    )
    assert service["spec"] == {
        "selector": {"app": "web"},
        "ports": [{"port": 80, "protocol": "TCP", "targetPort": 80}],
        "type": "ClusterIP",
        "sessionAffinity": "None",
        "internalTrafficPolicy": "Cluster",
        "ipFamilyPolicy": "SingleStack",
        "ipFamilies": ["IPv4"],
    }
    assert service["status"] == {"loadBalancer": {}}
    node_port = create(
        "services",
        {
            "spec": {
                "type": "NodePort",
                "clusterIP": "10.96.0.10",
                "ports": [{"port": 80, "targetPort": "http"}],
            }
        },
    )
    assert node_port["spec"]["externalTrafficPolicy"] == "Cluster"
    assert node_port["spec"]["clusterIPs"] == ["10.96.0.10"]
    assert node_port["spec"]["ports"][0]["targetPort"] == "http"
    headless = create("services", {"spec": {"clusterIP": "None"}})
    assert headless["spec"]["ipFamilyPolicy"] == "RequireDualStack"
    external = create("services", {"spec": {"type": "ExternalName", "externalName": "example.com"}})
    assert "ipFamilies" not in external["spec"] and "internalTrafficPolicy" not in external["spec"]
    balancer = create("services", {"spec": {"type": "LoadBalancer", "sessionAffinity": "ClientIP"}})
    assert balancer["spec"]["allocateLoadBalancerNodePorts"] is True
    assert balancer["spec"]["sessionAffinityConfig"] == {"clientIP": {"timeoutSeconds": 10800}}


def test_bare_job_defaults() -> None:
    job = create(
        "jobs",
        {
            "metadata": {"name": "pi", "namespace": "default", "uid": "u-1"},
            "spec": {
                "template": {
                    "spec": {"restartPolicy": "Never", "containers": [{"name": "pi", "image": "perl"}]}
                }
            },
        },
        "batch",
    )
    spec = job["spec"]
    assert {
        k: spec[k]
        for k in (
            "completions",
            "parallelism",
            "backoffLimit",
            "completionMode",
            "suspend",
            "manualSelector",
            "podReplacementPolicy",
        )
    } == {
        "completions": 1,
        "parallelism": 1,
        "backoffLimit": 6,
        "completionMode": "NonIndexed",
        "suspend": False,
        "manualSelector": False,
        "podReplacementPolicy": "TerminatingOrFailed",
    }
    assert spec["selector"] == {"matchLabels": {"batch.kubernetes.io/controller-uid": "u-1"}}
    assert spec["template"]["metadata"]["labels"] == {
        "batch.kubernetes.io/controller-uid": "u-1",
        "batch.kubernetes.io/job-name": "pi",
        "controller-uid": "u-1",
        "job-name": "pi",
    }
    assert spec["template"]["spec"]["terminationGracePeriodSeconds"] == 30
    assert errors("jobs", job, "batch") == []
    parallel = create("jobs", {"metadata": {"uid": "u"}, "spec": {"parallelism": 3, "template": {}}}, "batch")
    assert "completions" not in parallel["spec"] and parallel["spec"]["parallelism"] == 3
    manual = create(
        "jobs",
        {"spec": {"manualSelector": True, "selector": {"matchLabels": {"a": "b"}}, "template": {}}},
        "batch",
    )
    assert manual["spec"]["selector"] == {"matchLabels": {"a": "b"}}


def test_cronjob_defaults() -> None:
    cronjob = create(
        "cronjobs",
        {
            "spec": {
                "schedule": "*/5 * * * *",
                "jobTemplate": {
                    "spec": {
                        "template": {
                            "spec": {
                                "restartPolicy": "OnFailure",
                                "containers": [{"name": "c", "image": "busybox"}],
                            }
                        }
                    }
                },
            }
        },
        "batch",
    )
    spec = cronjob["spec"]
    assert (
        spec["concurrencyPolicy"],
        spec["suspend"],
        spec["successfulJobsHistoryLimit"],
        spec["failedJobsHistoryLimit"],
    ) == ("Allow", False, 3, 1)
    assert "backoffLimit" not in spec["jobTemplate"]["spec"]
    assert spec["jobTemplate"]["spec"]["template"]["spec"]["dnsPolicy"] == "ClusterFirst"
    assert errors("cronjobs", {"metadata": {"name": "c"}, **cronjob}, "batch") == []


def test_namespace_secret_and_other_defaults() -> None:
    namespace = create("namespaces", {"metadata": {"name": "team"}})
    assert namespace["spec"] == {"finalizers": ["kubernetes"]}
    assert namespace["status"] == {"phase": "Active"}
    assert namespace["metadata"]["labels"] == {"kubernetes.io/metadata.name": "team"}
    secret = create("secrets", {"stringData": {"password": "hunter2"}})
    assert secret == {"type": "Opaque", "data": {"password": "aHVudGVyMg=="}}
    assert create("persistentvolumeclaims", {"spec": {}}) == {
        "spec": {"volumeMode": "Filesystem"},
        "status": {"phase": "Pending"},
    }
    pv = create("persistentvolumes", {"spec": {"hostPath": {"path": "/x"}}})
    assert pv["spec"]["persistentVolumeReclaimPolicy"] == "Retain" and pv["status"] == {"phase": "Pending"}
    assert pv["spec"]["hostPath"] == {"path": "/x", "type": ""}
    assert create("horizontalpodautoscalers", {"spec": {}}, "autoscaling")["spec"]["minReplicas"] == 1
    assert (
        create("priorityclasses", {"value": 5}, "scheduling.k8s.io")["preemptionPolicy"]
        == "PreemptLowerPriority"
    )
    assert create("storageclasses", {"provisioner": "x"}, "storage.k8s.io") == {
        "provisioner": "x",
        "reclaimPolicy": "Delete",
        "volumeBindingMode": "Immediate",
    }
    assert create("endpointslices", {"ports": [{"port": 80}]}, "discovery.k8s.io")["ports"] == [
        {"port": 80, "name": "", "protocol": "TCP"}
    ]
    policy = create("networkpolicies", {"spec": {"egress": [{"ports": [{"port": 53}]}]}}, "networking.k8s.io")
    assert policy["spec"]["policyTypes"] == ["Ingress", "Egress"]
    assert policy["spec"]["egress"][0]["ports"] == [{"port": 53, "protocol": "TCP"}]
    binding = create(
        "rolebindings",
        {
            "roleRef": {"kind": "Role", "name": "r"},
            "subjects": [{"kind": "User", "name": "u"}, {"kind": "ServiceAccount", "name": "s"}],
        },
        "rbac.authorization.k8s.io",
    )
    assert binding["roleRef"]["apiGroup"] == "rbac.authorization.k8s.io"
    assert [s["apiGroup"] for s in binding["subjects"]] == ["rbac.authorization.k8s.io", ""]


def test_hpa_v2_default_metric() -> None:
    hpa = resource("horizontalpodautoscalers", "autoscaling", "v2")
    obj: Obj = {"spec": {"maxReplicas": 3}}
    assert hpa.strategy.defaults is not None
    hpa.strategy.defaults(obj)
    assert obj["spec"]["metrics"] == [
        {
            "type": "Resource",
            "resource": {"name": "cpu", "target": {"type": "Utilization", "averageUtilization": 80}},
        }
    ]


def test_crd_defaults() -> None:
    crd = create(
        "customresourcedefinitions",
        {
            "metadata": {"name": "widgets.example.com"},
            "spec": {
                "group": "example.com",
                "scope": "Namespaced",
                "names": {"plural": "widgets", "kind": "Widget"},
                "versions": [{"name": "v1", "served": True, "storage": True}],
            },
        },
        "apiextensions.k8s.io",
    )
    assert crd["spec"]["names"] == {
        "plural": "widgets",
        "kind": "Widget",
        "singular": "widget",
        "listKind": "WidgetList",
    }
    assert crd["spec"]["conversion"] == {"strategy": "None"}
    assert crd["status"]["storedVersions"] == ["v1"]
    assert errors("customresourcedefinitions", crd, "apiextensions.k8s.io") == []
    crd["metadata"]["name"] = "widget.example.com"
    assert errors("customresourcedefinitions", crd, "apiextensions.k8s.io") == [
        'metadata.name: Invalid value: "widget.example.com": must be spec.names.plural+"."+spec.group'
    ]


# --- validation --------------------------------------------------------------------------------


def pod_with(**spec: Any) -> Obj:
    pod = create("pods", BARE_POD)
    pod["spec"].update(spec)
    return pod


def test_pod_validation() -> None:
    assert errors("pods", pod_with(containers=[])) == ["spec.containers: Required value"]
    bad_name = pod_with(containers=[{**create("pods", BARE_POD)["spec"]["containers"][0], "name": "Web"}])
    assert errors("pods", bad_name) == [
        'spec.containers[0].name: Invalid value: "Web": a lowercase RFC 1123 label must consist of lower '
        "case "
        "alphanumeric characters or '-', and must start and end with an alphanumeric character (e.g. "
        "'my-name',  "
        "or '123-abc', regex used for validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?')"
    ]
    container = create("pods", BARE_POD)["spec"]["containers"][0]
    duplicate = pod_with(initContainers=[dict(container)])
    assert errors("pods", duplicate) == ['spec.initContainers[0].name: Duplicate value: "web"']
    no_image = pod_with(containers=[{**container, "image": ""}])
    assert errors("pods", no_image) == ["spec.containers[0].image: Required value"]
    ports = pod_with(
        containers=[
            {
                **container,
                "ports": [
                    {"containerPort": 70000, "protocol": "TCP"},
                    {"containerPort": 80, "protocol": "XDP"},
                ],
            }
        ]
    )
    assert errors("pods", ports) == [
        "spec.containers[0].ports[0].containerPort: Invalid value: 70000: must be between 1 and 65535, "
        "inclusive",
        'spec.containers[0].ports[1].protocol: Unsupported value: "XDP": supported values: "SCTP", "TCP", '
        '"UDP"',
    ]
    volumes = pod_with(volumes=[{"name": "v", "emptyDir": {}}, {"name": "v", "emptyDir": {}}])
    assert errors("pods", volumes) == ['spec.volumes[1].name: Duplicate value: "v"']
    ephemeral = pod_with(volumes=[{"name": "a", "ephemeral": {}}, {"name": "b", "ephemeral": {
        "volumeClaimTemplate": {"spec": {"accessModes": ["ReadWriteOnce"], "resources": {}}}}}])
    assert errors("pods", ephemeral) == ["spec.volumes[0].ephemeral.volumeClaimTemplate: Required value",
                                         "spec.volumes[1].ephemeral.volumeClaimTemplate.spec.resources[storage]: "
                                         "Required value"]
    assert errors("pods", pod_with(restartPolicy="Sometimes")) == [
        'spec.restartPolicy: Unsupported value: "Sometimes": supported values: "Always", "OnFailure", "Never"'
    ]
    mount = pod_with(containers=[{**container, "volumeMounts": [{"name": "data", "mountPath": "/d"}]}])
    assert errors("pods", mount) == ['spec.containers[0].volumeMounts[0].name: Not found: "data"']
    over = pod_with(
        containers=[{**container, "resources": {"requests": {"cpu": "2"}, "limits": {"cpu": "1"}}}]
    )
    assert errors("pods", over) == [
        'spec.containers[0].resources.requests: Invalid value: "2": must be less than or equal to cpu limit '
        "of 1"
    ]


def deployment(**spec: Any) -> Obj:
    base = create(
        "deployments",
        {
            "metadata": {"name": "web", "namespace": "default"},
            "spec": {"selector": {"matchLabels": {"app": "web"}}, "template": TEMPLATE},
        },
        "apps",
    )
    base["spec"].update(spec)
    return base


def test_deployment_validation() -> None:
    assert errors("deployments", deployment(selector=None), "apps") == ["spec.selector: Required value"]
    assert errors("deployments", deployment(selector={"matchLabels": {"app": "api"}}), "apps") == [
        'spec.template.metadata.labels: Invalid value: map[string]string{"app":"web"}: '
        "`selector` does not match template `labels`"
    ]
    assert errors("deployments", deployment(replicas=-1), "apps") == [
        "spec.replicas: Invalid value: -1: must be greater than or equal to 0"
    ]
    assert errors("deployments", deployment(selector={}), "apps") == [
        "spec.selector: Invalid value: v1.LabelSelector{MatchLabels:map[string]string(nil), "
        "MatchExpressions:[]v1.LabelSelectorRequirement(nil)}: empty selector is invalid for deployment"
    ]
    both_zero = deployment(
        strategy={"type": "RollingUpdate", "rollingUpdate": {"maxUnavailable": 0, "maxSurge": 0}}
    )
    assert errors("deployments", both_zero, "apps") == [
        "spec.strategy.rollingUpdate.maxUnavailable: Invalid value: 0: may not be 0 when `maxSurge` is 0"
    ]
    recreate = deployment(strategy={"type": "Recreate", "rollingUpdate": {}})
    assert errors("deployments", recreate, "apps") == [
        "spec.strategy.rollingUpdate: Forbidden: may not be specified when strategy `type` is 'Recreate'"
    ]
    never = copy.deepcopy(deployment())
    never["spec"]["template"]["spec"]["restartPolicy"] = "Never"
    assert errors("deployments", never, "apps") == [
        'spec.template.spec.restartPolicy: Unsupported value: "Never": supported values: "Always"'
    ]
    expressions = deployment(
        selector={"matchExpressions": [{"key": "app", "operator": "In", "values": ["web"]}]}
    )
    assert errors("deployments", expressions, "apps") == []
    debug = copy.deepcopy(deployment())
    debug["spec"]["template"]["spec"]["ephemeralContainers"] = [
        {"name": "debug", "image": "busybox", "imagePullPolicy": "Always", "terminationMessagePolicy": "File"}
    ]
    assert errors("deployments", debug, "apps") == [
        "spec.template.spec.ephemeralContainers: Forbidden: ephemeral containers not allowed in pod template"
    ]


def test_replica_kinds_validation() -> None:
    rs = create(
        "replicasets", {"spec": {"selector": {"matchLabels": {"app": "x"}}, "template": TEMPLATE}}, "apps"
    )
    assert errors("replicasets", rs, "apps")[0].startswith("spec.template.metadata.labels: Invalid value:")
    sts = create("statefulsets", {"spec": {"selector": {}, "template": TEMPLATE}}, "apps")
    assert errors("statefulsets", sts, "apps")[0].endswith("empty selector is invalid for statefulset")
    mounted = copy.deepcopy(TEMPLATE)
    mounted["spec"]["containers"][0]["volumeMounts"] = [{"name": "data", "mountPath": "/data"}]
    claims = [{"metadata": {"name": "data"}, "spec": {"accessModes": ["ReadWriteOnce"],
                                                      "resources": {"requests": {"storage": "1Gi"}}}}]
    sts = create("statefulsets", {"spec": {"selector": {"matchLabels": {"app": "web"}}, "template": mounted,
                                           "volumeClaimTemplates": claims}}, "apps")
    assert errors("statefulsets", sts, "apps") == [], "a volumeMount may name a volumeClaimTemplate"
    sts["spec"]["volumeClaimTemplates"] = []
    assert errors("statefulsets", sts, "apps") == [
        'spec.template.spec.containers[0].volumeMounts[0].name: Not found: "data"']
    ds = create("daemonsets", {"spec": {"template": TEMPLATE}}, "apps")
    assert errors("daemonsets", ds, "apps") == ["spec.selector: Required value"]
    rc = create("replicationcontrollers", {"spec": {"selector": {"app": "x"}, "template": TEMPLATE}})
    assert errors("replicationcontrollers", rc) == [
        'spec.template.metadata.labels: Invalid value: map[string]string{"app":"web"}: '
        "`selector` does not match template `labels`"
    ]


def service(**spec: Any) -> Obj:
    base = {"metadata": {"name": "web", "namespace": "default"}, "spec": {"selector": {"app": "web"}, **spec}}
    return create("services", base)


def test_service_validation() -> None:
    assert errors("services", service()) == ["spec.ports: Required value"]
    assert errors("services", service(clusterIP="None")) == []
    assert errors("services", service(clusterIP="10.96.0.20", ports=[{"port": 80}])) == []
    assert errors("services", service(ports=[{"port": 0, "targetPort": 8080}])) == [
        "spec.ports[0].port: Invalid value: 0: must be between 1 and 65535, inclusive"
    ]
    assert errors("services", service(ports=[{"port": 80}, {"port": 443}])) == [
        "spec.ports[0].name: Required value",
        "spec.ports[1].name: Required value",
    ]
    assert errors("services", service(ports=[{"name": "a", "port": 80}, {"name": "a", "port": 81}])) == [
        'spec.ports[1].name: Duplicate value: "a"'
    ]
    assert errors("services", service(type="Magic", ports=[{"port": 80}])) == [
        'spec.type: Unsupported value: "Magic": supported values: "ClusterIP", "ExternalName", '
        '"LoadBalancer", '
        '"NodePort"'
    ]
    assert errors("services", service(type="NodePort", ports=[{"port": 80, "nodePort": 80}])) == [
        "spec.ports[0].nodePort: Invalid value: 80: provided port is not in the valid range. "
        "The range of valid ports is 30000-32767"
    ]
    assert errors("services", service(type="NodePort", ports=[{"port": 80, "nodePort": 30080}])) == []
    assert errors("services", service(ports=[{"port": 80, "nodePort": 30080}])) == [
        "spec.ports[0].nodePort: Forbidden: may not be used when `type` is 'ClusterIP'"
    ]
    assert errors("services", service(clusterIP="10.0.0.300", ports=[{"port": 80}])) == [
        'spec.clusterIPs[0]: Invalid value: "10.0.0.300": must be a valid IP address, (e.g. 10.9.8.7 or '
        "2001:db8::ffff)"
    ]
    assert errors("services", service(type="ExternalName")) == ["spec.externalName: Required value"]
    assert errors("services", service(ports=[{"port": 80, "targetPort": "8080"}])) == [
        'spec.ports[0].targetPort: Invalid value: "8080": must contain at least one letter (a-z)'
    ]


def test_config_data_validation() -> None:
    assert errors("configmaps", {"data": {"a b": "x", "ok.key": "y"}}) == [
        'data[a b]: Invalid value: "a b": a valid config key must consist of alphanumeric characters, '
        "'-', '_' or '.' (e.g. 'key.name',  or 'KEY_NAME',  or 'key-name', regex used for validation is "
        "'[-._a-zA-Z0-9]+')"
    ]
    assert errors("configmaps", {"data": {"big": "x" * (1024 * 1024 + 1)}}) == [
        ": Too long: may not be more than 1048576 bytes"
    ]
    assert errors("secrets", {"type": "kubernetes.io/tls", "data": {"tls.crt": "eA=="}}) == [
        "data[tls.key]: Required value"
    ]
    assert errors("secrets", {"type": "Opaque", "data": {"..x": "eA=="}}) == [
        "data[..x]: Invalid value: \"..x\": must not start with '..'"
    ]


def test_job_and_cronjob_validation() -> None:
    job = create(
        "jobs",
        {
            "metadata": {"name": "pi", "uid": "u"},
            "spec": {"template": {"spec": {"containers": [{"name": "pi", "image": "perl"}]}}},
        },
        "batch",
    )
    assert errors("jobs", job, "batch") == [
        'spec.template.spec.restartPolicy: Unsupported value: "Always": supported values: "OnFailure", '
        '"Never"'
    ]
    cronjob = {
        "metadata": {"name": "c"},
        "spec": {
            "schedule": "",
            "jobTemplate": {
                "spec": {
                    "template": {
                        "spec": {"restartPolicy": "Never", "containers": [{"name": "c", "image": "busybox"}]}
                    }
                }
            },
        },
    }
    cronjob = create("cronjobs", cronjob, "batch")
    assert errors("cronjobs", cronjob, "batch") == ["spec.schedule: Required value"]
    cronjob["spec"]["schedule"] = "every minute"
    assert errors("cronjobs", cronjob, "batch") == [
        'spec.schedule: Invalid value: "every minute": expected exactly 5 fields, found 2: every minute'
    ]
    cronjob["spec"]["schedule"] = "61 * * * *"
    assert errors("cronjobs", cronjob, "batch") == [
        'spec.schedule: Invalid value: "61 * * * *": end of range (61) above maximum (59): 61'
    ]
    cronjob["spec"]["schedule"] = "@hourly"
    cronjob["spec"]["timeZone"] = "Mars/Olympus"
    assert errors("cronjobs", cronjob, "batch") == [
        'spec.timeZone: Invalid value: "Mars/Olympus": unknown time zone Mars/Olympus'
    ]
    cronjob["spec"]["timeZone"] = "Europe/Paris"
    cronjob["spec"]["schedule"] = "0 9 * jan-mar mon-fri"
    cronjob["metadata"]["name"] = "c" * 53
    assert errors("cronjobs", cronjob, "batch") == [
        f'metadata.name: Invalid value: "{"c" * 53}": must be no more than 52 characters'
    ]


def test_other_validation() -> None:
    rbac = "rbac.authorization.k8s.io"
    assert errors("rolebindings", {"roleRef": {"apiGroup": rbac, "kind": "Secret", "name": "r"}}, rbac) == [
        'roleRef.kind: Unsupported value: "Secret": supported values: "Role", "ClusterRole"'
    ]
    assert errors("clusterroles", {"rules": [{"verbs": ["get"]}]}, rbac) == [
        "rules[0].apiGroups: Required value: resource rules must supply at least one api group",
        "rules[0].resources: Required value: resource rules must supply at least one resource",
    ]
    assert errors(
        "clusterrolebindings",
        {
            "roleRef": {"apiGroup": rbac, "kind": "ClusterRole", "name": "r"},
            "subjects": [{"kind": "ServiceAccount", "name": "sa"}],
        },
        rbac,
    ) == ["subjects[0].namespace: Required value"]
    assert errors(
        "poddisruptionbudgets", {"spec": {"minAvailable": 1, "maxUnavailable": "150%"}}, "policy"
    ) == [
        "spec: Invalid value: policy.PodDisruptionBudgetSpec{...}: minAvailable and maxUnavailable cannot be "
        "both set",
        "spec.maxUnavailable: Invalid value: 150%: must not be greater than 100%",
    ]
    assert errors(
        "horizontalpodautoscalers",
        {"spec": {"minReplicas": 3, "maxReplicas": 2, "scaleTargetRef": {"kind": "Deployment"}}},
        "autoscaling",
    ) == [
        "spec.maxReplicas: Invalid value: 2: must be greater than or equal to `minReplicas`",
        "spec.scaleTargetRef.name: Required value",
    ]
    ingress = {
        "spec": {
            "rules": [
                {
                    "http": {
                        "paths": [
                            {
                                "path": "api",
                                "pathType": "Prefix",
                                "backend": {"service": {"name": "api", "port": {"number": 80}}},
                            }
                        ]
                    }
                }
            ]
        }
    }
    assert errors("ingresses", ingress, "networking.k8s.io") == [
        'spec.rules[0].http.paths[0].path: Invalid value: "api": must be an absolute path'
    ]
    assert errors("storageclasses", create("storageclasses", {}, "storage.k8s.io"), "storage.k8s.io") == [
        "provisioner: Required value"
    ]
    assert errors(
        "priorityclasses", {"metadata": {"name": "p"}, "value": 2000000000}, "scheduling.k8s.io"
    ) == ["value: Forbidden: maximum allowed value of a user defined priority is 1000000000"]
    assert errors("namespaces", {"spec": {"finalizers": ["custom"]}}) == [
        'spec.finalizers: Invalid value: "custom": name is neither a standard finalizer name nor is it fully '
        "qualified"
    ]
    assert errors("persistentvolumeclaims", {"spec": {}}) == [
        "spec.accessModes: Required value: at least 1 access mode is required",
        "spec.resources[storage]: Required value",
    ]
    assert errors("endpointslices", {"addressType": "IPX"}, "discovery.k8s.io") == [
        'addressType: Unsupported value: "IPX": supported values: "FQDN", "IPv4", "IPv6"'
    ]


# --- update rules ------------------------------------------------------------------------------


def test_pod_updates() -> None:
    old = create("pods", BARE_POD)
    new = copy.deepcopy(old)
    new["spec"]["containers"][0]["image"] = "nginx:1.27"
    new["spec"]["activeDeadlineSeconds"] = 100
    new["spec"]["tolerations"].append({"key": "gpu", "operator": "Exists"})
    assert update_errors("pods", new, old) == []
    command = copy.deepcopy(old)
    command["spec"]["containers"][0]["command"] = ["sleep", "1"]
    (message,) = update_errors("pods", command, old)
    assert message.startswith(
        "spec: Forbidden: pod updates may not change fields other than `spec.containers[*].image`,"
        "`spec.initContainers[*].image`,`spec.activeDeadlineSeconds`,`spec.tolerations` (only additions to "
        "existing tolerations),`spec.terminationGracePeriodSeconds` (allow it to be set to 1 if it was "
        "previously negative)\n"
    )
    assert "spec.containers[0].command" in message
    removed = copy.deepcopy(old)
    removed["spec"]["tolerations"] = []
    assert update_errors("pods", removed, old) == [
        "spec.tolerations: Forbidden: existing toleration can not be modified except its tolerationSeconds"
    ]
    timed = copy.deepcopy(old)
    timed["spec"]["tolerations"][0]["tolerationSeconds"] = 10
    assert update_errors("pods", timed, old) == []
    old_deadline = copy.deepcopy(new)
    longer = copy.deepcopy(new)
    longer["spec"]["activeDeadlineSeconds"] = 200
    assert update_errors("pods", longer, old_deadline) == [
        "spec.activeDeadlineSeconds: Invalid value: 200: must be less than or equal to previous value"
    ]
    extra = copy.deepcopy(old)
    extra["spec"]["containers"].append({"name": "b", "image": "b"})
    assert update_errors("pods", extra, old) == [
        "spec.containers: Forbidden: pod updates may not add or remove containers"
    ]


def test_selector_immutable() -> None:
    old = deployment()
    new = copy.deepcopy(old)
    new["spec"]["selector"] = {"matchLabels": {"app": "web", "tier": "x"}}
    assert update_errors("deployments", new, old, "apps") == [
        'spec.selector: Invalid value: v1.LabelSelector{MatchLabels:map[string]string{"app":"web", '
        '"tier":"x"}, '
        "MatchExpressions:[]v1.LabelSelectorRequirement(nil)}: field is immutable"
    ]
    new = copy.deepcopy(old)
    new["spec"]["replicas"] = 5
    new["spec"]["template"]["spec"]["containers"][0]["image"] = "nginx:2"
    assert update_errors("deployments", new, old, "apps") == []


def test_statefulset_spec_mostly_immutable() -> None:
    old = create(
        "statefulsets",
        {"spec": {"selector": {"matchLabels": {"app": "web"}}, "template": TEMPLATE, "serviceName": "web"}},
        "apps",
    )
    new = copy.deepcopy(old)
    new["spec"]["replicas"] = 3
    assert update_errors("statefulsets", new, old, "apps") == []
    new["spec"]["serviceName"] = "other"
    assert update_errors("statefulsets", new, old, "apps")[0].startswith(
        "spec: Forbidden: updates to statefulset spec for fields other than 'replicas', 'ordinals', "
        "'template'"
    )


def test_service_updates() -> None:
    old = service(clusterIP="10.96.0.20", ports=[{"port": 80}])
    new = copy.deepcopy(old)
    new["spec"]["clusterIP"], new["spec"]["clusterIPs"] = "10.96.0.21", ["10.96.0.21"]
    assert update_errors("services", new, old) == [
        'spec.clusterIPs[0]: Invalid value: []string{"10.96.0.21"}: may not change once set'
    ]
    replaced = {"metadata": old["metadata"], "spec": {"selector": {"app": "web"}, "ports": [{"port": 81}]}}
    strategy = resource("services").strategy
    assert strategy.prepare_update is not None
    strategy.prepare_update(replaced, old)
    assert replaced["spec"]["clusterIP"] == "10.96.0.20" and replaced["spec"]["clusterIPs"] == ["10.96.0.20"]
    assert update_errors("services", create("services", replaced), old) == []
    external = {
        "metadata": old["metadata"],
        "spec": {**copy.deepcopy(old["spec"]), "type": "ExternalName", "externalName": "example.com"},
    }
    strategy.prepare_update(external, old)
    assert "clusterIP" not in external["spec"] and "ipFamilies" not in external["spec"]
    assert update_errors("services", external, old) == []
    assert errors("services", create("services", external)) == []


def test_node_ports_carry_over() -> None:
    old = service(
        type="NodePort", clusterIP="10.96.0.5", ports=[{"name": "http", "port": 80, "nodePort": 30080}]
    )
    replaced = {"spec": {"type": "NodePort", "ports": [{"name": "http", "port": 80}]}}
    resource("services").strategy.prepare_update(replaced, old)  # type: ignore[misc]
    assert replaced["spec"]["ports"][0]["nodePort"] == 30080
    to_cluster_ip = {"spec": {**copy.deepcopy(old["spec"]), "type": "ClusterIP"}}
    resource("services").strategy.prepare_update(to_cluster_ip, old)  # type: ignore[misc]
    assert "nodePort" not in to_cluster_ip["spec"]["ports"][0]
    assert "externalTrafficPolicy" not in to_cluster_ip["spec"]


def test_job_and_config_updates() -> None:
    job = create(
        "jobs",
        {
            "metadata": {"name": "pi", "uid": "u"},
            "spec": {
                "template": {
                    "spec": {"restartPolicy": "Never", "containers": [{"name": "pi", "image": "perl"}]}
                }
            },
        },
        "batch",
    )
    changed = copy.deepcopy(job)
    changed["spec"]["template"]["spec"]["containers"][0]["image"] = "perl:5"
    assert update_errors("jobs", changed, job, "batch") == [
        "spec.template: Invalid value: core.PodTemplateSpec{...}: field is immutable"
    ]
    suspended = copy.deepcopy(job)
    suspended["spec"]["suspend"] = True
    assert update_errors("jobs", suspended, job, "batch") == []
    frozen = {"immutable": True, "data": {"a": "1"}}
    assert update_errors("configmaps", {"immutable": True, "data": {"a": "2"}}, frozen) == [
        "data: Forbidden: field is immutable when `immutable` is set"
    ]
    assert update_errors("configmaps", {"data": {"a": "1"}}, frozen) == [
        "immutable: Forbidden: field is immutable when `immutable` is set"
    ]
    assert update_errors("configmaps", {"data": {"a": "2"}}, {"data": {"a": "1"}}) == []
    assert update_errors("secrets", {"type": "kubernetes.io/tls"}, {"type": "Opaque"}) == [
        'type: Invalid value: "kubernetes.io/tls": field is immutable'
    ]


def test_other_updates() -> None:
    claim = {
        "spec": {
            "accessModes": ["ReadWriteOnce"],
            "resources": {"requests": {"storage": "1Gi"}},
            "volumeMode": "Filesystem",
        },
        "status": {"phase": "Bound"},
    }
    bound = copy.deepcopy(claim)
    bound["spec"]["volumeName"] = "pv-1"
    assert update_errors("persistentvolumeclaims", bound, claim) == []
    grown = copy.deepcopy(bound)
    grown["spec"]["resources"]["requests"]["storage"] = "2Gi"
    assert update_errors("persistentvolumeclaims", grown, bound) == []
    modes = copy.deepcopy(bound)
    modes["spec"]["accessModes"] = ["ReadWriteMany"]
    assert update_errors("persistentvolumeclaims", modes, bound) == [
        "spec: Forbidden: spec is immutable after creation except resources.requests and "
        "volumeAttributesClassName "
        "for bound claims"
    ]
    rbac = "rbac.authorization.k8s.io"
    ref = {"apiGroup": rbac, "kind": "ClusterRole", "name": "view"}
    assert update_errors("rolebindings", {"roleRef": {**ref, "name": "edit"}}, {"roleRef": ref}, rbac) == [
        'roleRef: Invalid value: rbac.RoleRef{APIGroup:"rbac.authorization.k8s.io", Kind:"ClusterRole", '
        'Name:"edit"}: cannot change roleRef'
    ]
    assert update_errors("priorityclasses", {"value": 2}, {"value": 1}, "scheduling.k8s.io") == [
        "value: Forbidden: may not be changed in an update."
    ]
    namespace = create("namespaces", {"metadata": {"name": "team"}})
    strategy = resource("namespaces").strategy
    assert strategy.prepare_update is not None
    sent: Obj = {"metadata": {"name": "team"}}
    strategy.prepare_update(sent, namespace)
    assert sent["spec"] == {"finalizers": ["kubernetes"]}


# --- field selectors ---------------------------------------------------------------------------


def test_selectable_fields() -> None:
    pod = create("pods", BARE_POD)
    pod["spec"]["nodeName"] = "node-1"
    pod["status"]["podIPs"] = [{"ip": "10.244.0.5"}]
    fields = resource("pods").strategy.fields(pod)
    assert fields == {
        "metadata.name": "web",
        "metadata.namespace": "default",
        "spec.nodeName": "node-1",
        "spec.restartPolicy": "Always",
        "spec.schedulerName": "default-scheduler",
        "spec.serviceAccountName": "",
        "spec.hostNetwork": "false",
        "status.phase": "Pending",
        "status.podIP": "10.244.0.5",
        "status.nominatedNodeName": "",
    }
    svc = service(clusterIP="None")
    assert resource("services").strategy.fields(svc)["spec.clusterIP"] == "None"
    assert resource("services").strategy.fields(svc)["spec.type"] == "ClusterIP"
    assert resource("secrets").strategy.fields({"type": "Opaque"})["type"] == "Opaque"
    assert (
        resource("nodes").strategy.fields({"spec": {"unschedulable": True}})["spec.unschedulable"] == "true"
    )
    assert resource("namespaces").strategy.fields({"status": {"phase": "Active"}})["status.phase"] == "Active"
    assert resource("jobs", "batch").strategy.fields({"status": {"succeeded": 2}})["status.successful"] == "2"
    assert resource("replicasets", "apps").strategy.fields({})["status.replicas"] == "0"
    core_event = {
        "involvedObject": {"kind": "Pod", "name": "web", "uid": "u"},
        "reason": "Pulled",
        "type": "Normal",
        "source": {"component": "kubelet"},
        "reportingComponent": "kubelet",
    }
    event_fields = resource("events").strategy.fields(core_event)
    assert event_fields["involvedObject.kind"] == "Pod" and event_fields["involvedObject.uid"] == "u"
    assert event_fields["reason"] == "Pulled" and event_fields["source"] == "kubelet"
    new_event = {
        "regarding": {"kind": "Pod", "name": "web"},
        "reason": "Pulled",
        "type": "Normal",
        "reportingController": "kubelet",
        "note": "pulled",
    }
    new_fields = resource("events", "events.k8s.io").strategy.fields(new_event)
    assert new_fields["involvedObject.name"] == "web" and new_fields["reportingComponent"] == "kubelet"


# --- table rows --------------------------------------------------------------------------------


def running(name: str, restarts: int = 0, finished: str | None = None, ready: bool = True) -> Obj:
    status: Obj = {"name": name, "ready": ready, "restartCount": restarts, "state": {"running": {}}}
    if finished:
        status["lastState"] = {"terminated": {"exitCode": 1, "finishedAt": finished}}
    return status


def pod_status(*containers: Obj, **extra: Any) -> Obj:
    pod = create("pods", BARE_POD)
    pod["metadata"]["creationTimestamp"] = ago(600)
    pod["spec"]["containers"] = [{"name": c["name"], "image": "x"} for c in containers]
    pod["status"] = {"phase": "Running", "containerStatuses": list(containers), **extra}
    return pod


def test_pod_rows() -> None:
    pod = pod_status(running("a", 5, finished=ago(300)), running("b", 0, ready=False))
    pod["spec"]["nodeName"] = "node-1"
    pod["status"]["podIPs"] = [{"ip": "10.244.0.7"}]
    assert row("pods", pod) == [
        "web",
        "1/2",
        "Running",
        "5 (5m ago)",
        "10m",
        "10.244.0.7",
        "node-1",
        "<none>",
        "<none>",
    ]
    crash = pod_status(
        {
            "name": "a",
            "ready": False,
            "restartCount": 4,
            "state": {"waiting": {"reason": "CrashLoopBackOff"}},
            "lastState": {"terminated": {"exitCode": 1, "finishedAt": ago(30)}},
        }
    )
    assert row("pods", crash)[1:4] == ["0/1", "CrashLoopBackOff", "4 (30s ago)"]
    terminating = pod_status(running("a"))
    terminating["metadata"]["deletionTimestamp"] = ago(1)
    assert row("pods", terminating)[2] == "Terminating"
    creating = pod_status(
        {
            "name": "a",
            "ready": False,
            "restartCount": 0,
            "state": {"waiting": {"reason": "ContainerCreating"}},
        },
        phase="Pending",
    )
    assert row("pods", creating)[1:4] == ["0/1", "ContainerCreating", "0"]
    done = pod_status(
        {
            "name": "a",
            "ready": False,
            "restartCount": 0,
            "state": {"terminated": {"exitCode": 0, "reason": "Completed"}},
        },
        phase="Succeeded",
    )
    done["metadata"]["deletionTimestamp"] = ago(1)
    assert row("pods", done)[2] == "Completed"
    pending = create("pods", BARE_POD)
    assert row("pods", pending)[1:4] == ["0/1", "Pending", "0"]
    init = pod_status(
        running("a", ready=False),
        phase="Pending",
        initContainerStatuses=[{"name": "setup", "restartCount": 0, "state": {"running": {}}}],
    )
    init["spec"]["initContainers"] = [{"name": "setup", "image": "x"}]
    assert row("pods", init)[2] == "Init:0/1"
    gated = pod_status(running("a"))
    gated["spec"]["readinessGates"] = [{"conditionType": "example.com/ready"}]
    gated["status"]["conditions"] = [{"type": "example.com/ready", "status": "True"}]
    assert row("pods", gated)[8] == "1/1"


def test_deployment_and_workload_rows() -> None:
    dep = deployment(replicas=3)
    dep["metadata"]["creationTimestamp"] = ago(7200)
    dep["status"] = {"readyReplicas": 2, "updatedReplicas": 3, "availableReplicas": 2}
    assert row("deployments", dep, "apps") == ["web", "2/3", 3, 2, "120m", "web", "nginx", "app=web"]
    rs = create(
        "replicasets",
        {
            "metadata": {"name": "web-1"},
            "spec": {"replicas": 2, "selector": {"matchLabels": {"app": "web"}}, "template": TEMPLATE},
        },
        "apps",
    )
    rs["status"] = {"replicas": 2, "readyReplicas": 1}
    assert row("replicasets", rs, "apps")[:4] == ["web-1", 2, 2, 1]
    assert row("replicasets", rs, "apps")[-1] == "app=web"
    sts = create(
        "statefulsets", {"metadata": {"name": "db"}, "spec": {"replicas": 3, "template": TEMPLATE}}, "apps"
    )
    assert row("statefulsets", sts, "apps")[:2] == ["db", "0/3"]
    ds = create(
        "daemonsets", {"metadata": {"name": "agent"}, "spec": {"template": copy.deepcopy(TEMPLATE)}}, "apps"
    )
    ds["spec"]["template"]["spec"]["nodeSelector"] = {"kubernetes.io/os": "linux"}
    ds["status"] = {
        "desiredNumberScheduled": 2,
        "currentNumberScheduled": 2,
        "numberReady": 1,
        "updatedNumberScheduled": 2,
        "numberAvailable": 1,
    }
    assert row("daemonsets", ds, "apps")[:7] == ["agent", 2, 2, 1, 2, 1, "kubernetes.io/os=linux"]
    revision = {
        "metadata": {
            "name": "web-7c9",
            "ownerReferences": [
                {"apiVersion": "apps/v1", "kind": "StatefulSet", "name": "web", "controller": True}
            ],
        },
        "revision": 2,
    }
    assert row("controllerrevisions", revision, "apps")[:3] == ["web-7c9", "statefulset.apps/web", 2]


def test_service_rows() -> None:
    svc = service(
        type="NodePort",
        clusterIP="10.96.0.10",
        ports=[{"name": "http", "port": 80}, {"name": "https", "port": 443, "nodePort": 30443}],
    )
    svc["metadata"]["creationTimestamp"] = ago(45)
    assert row("services", svc) == [
        "web",
        "NodePort",
        "10.96.0.10",
        "<none>",
        "80/TCP,443:30443/TCP",
        "45s",
        "app=web",
    ]
    balancer = service(type="LoadBalancer", ports=[{"port": 80}])
    assert row("services", balancer)[2:4] == ["<none>", "<pending>"]
    balancer["status"]["loadBalancer"]["ingress"] = [{"ip": "192.0.2.9"}]
    assert row("services", balancer)[3] == "192.0.2.9"
    external = service(type="ExternalName", externalName="db.example.com")
    assert row("services", external)[1:5] == ["ExternalName", "<none>", "db.example.com", "<none>"]


def test_job_and_cronjob_rows() -> None:
    job = create(
        "jobs",
        {
            "metadata": {"name": "pi", "uid": "u", "creationTimestamp": ago(120)},
            "spec": {
                "template": {
                    "spec": {"restartPolicy": "Never", "containers": [{"name": "pi", "image": "perl"}]}
                }
            },
        },
        "batch",
    )
    job["status"] = {
        "succeeded": 1,
        "startTime": ago(100),
        "completionTime": ago(88),
        "conditions": [{"type": "Complete", "status": "True"}],
    }
    assert row("jobs", job, "batch") == [
        "pi",
        "Complete",
        "1/1",
        "12s",
        "2m",
        "pi",
        "perl",
        "batch.kubernetes.io/controller-uid=u",
    ]
    job["status"] = {"startTime": ago(20)}
    assert row("jobs", job, "batch")[1:4] == ["Running", "0/1", "20s"]
    job["spec"].pop("completions")
    job["spec"]["parallelism"] = 3
    assert row("jobs", job, "batch")[2] == "0/1 of 3"
    cronjob = create(
        "cronjobs",
        {
            "metadata": {"name": "tick", "creationTimestamp": ago(90)},
            "spec": {"schedule": "*/1 * * * *", "jobTemplate": {"spec": {"template": {}}}},
        },
        "batch",
    )
    cronjob["status"] = {"active": [{"name": "tick-1"}], "lastScheduleTime": ago(30)}
    assert row("cronjobs", cronjob, "batch")[:7] == [
        "tick",
        "*/1 * * * *",
        "<none>",
        "False",
        1,
        "30s",
        "90s",
    ]


def test_core_rows() -> None:
    node = {
        "metadata": {
            "name": "n1",
            "labels": {"node-role.kubernetes.io/control-plane": ""},
            "creationTimestamp": ago(3 * 86400),
        },
        "spec": {"unschedulable": True},
        "status": {
            "conditions": [{"type": "Ready", "status": "True"}],
            "addresses": [{"type": "InternalIP", "address": "10.0.0.2"}],
            "nodeInfo": {"kubeletVersion": "v1.33.0", "osImage": "Debian GNU/Linux 12"},
        },
    }
    assert row("nodes", node) == [
        "n1",
        "Ready,SchedulingDisabled",
        "control-plane",
        "3d",
        "v1.33.0",
        "10.0.0.2",
        "<none>",
        "Debian GNU/Linux 12",
        "<unknown>",
        "<unknown>",
    ]
    assert row("namespaces", create("namespaces", {"metadata": {"name": "team"}}))[:2] == ["team", "Active"]
    assert (
        row("configmaps", {"metadata": {"name": "c"}, "data": {"a": "1"}, "binaryData": {"b": "AA=="}})[1]
        == 2
    )
    assert row("secrets", {"metadata": {"name": "s"}, "type": "Opaque", "data": {"a": "MQ=="}})[1:3] == [
        "Opaque",
        1,
    ]
    assert row("serviceaccounts", {"metadata": {"name": "default"}})[1] == 0
    endpoints = {
        "metadata": {"name": "web"},
        "subsets": [{"addresses": [{"ip": f"10.0.0.{i}"} for i in range(5)], "ports": [{"port": 80}]}],
    }
    assert row("endpoints", endpoints)[1] == "10.0.0.0:80,10.0.0.1:80,10.0.0.2:80 + 2 more..."
    assert row("endpoints", {"metadata": {"name": "none"}})[1] == "<none>"
    quota = {
        "metadata": {"name": "q"},
        "status": {"hard": {"pods": "10", "limits.cpu": "4"}, "used": {"pods": "3"}},
    }
    assert row("resourcequotas", quota)[1:3] == ["pods: 3/10", "limits.cpu: 0/4"]
    assert row("limitranges", {"metadata": {"name": "l", "creationTimestamp": "2024-05-01T10:00:00Z"}}) == [
        "l",
        "2024-05-01T10:00:00Z",
    ]
    claim = {
        "metadata": {"name": "data"},
        "spec": {"volumeName": "pv-1", "storageClassName": "standard", "volumeMode": "Filesystem"},
        "status": {"phase": "Bound", "capacity": {"storage": "1Gi"}, "accessModes": ["ReadWriteOnce"]},
    }
    assert row("persistentvolumeclaims", claim)[:7] == [
        "data",
        "Bound",
        "pv-1",
        "1Gi",
        "RWO",
        "standard",
        "<unset>",
    ]
    volume = {
        "metadata": {"name": "pv-1"},
        "spec": {
            "capacity": {"storage": "1Gi"},
            "accessModes": ["ReadWriteMany", "ReadWriteOnce"],
            "persistentVolumeReclaimPolicy": "Retain",
            "claimRef": {"namespace": "default", "name": "data"},
        },
        "status": {"phase": "Bound"},
    }
    assert row("persistentvolumes", volume)[:6] == [
        "pv-1",
        "1Gi",
        "RWO,RWX",
        "Retain",
        "Bound",
        "default/data",
    ]


def test_event_rows() -> None:
    event = {
        "metadata": {"name": "web.17a"},
        "involvedObject": {"kind": "Pod", "name": "web", "fieldPath": "spec.containers{web}"},
        "reason": "Pulled",
        "message": 'Pulled image "nginx" ',
        "type": "Normal",
        "source": {"component": "kubelet", "host": "node-1"},
        "firstTimestamp": ago(600),
        "lastTimestamp": ago(60),
        "count": 3,
    }
    assert row("events", event) == [
        "60s",
        "Normal",
        "Pulled",
        "pod/web",
        "spec.containers{web}",
        "kubelet, node-1",
        'Pulled image "nginx"',
        "10m",
        3,
        "web.17a",
    ]
    new_event = {
        "metadata": {"name": "e"},
        "regarding": {"kind": "Node", "name": "n1"},
        "note": "ok",
        "reason": "Ready",
        "type": "Normal",
        "eventTime": ago(5),
        "reportingController": "kubelet",
    }
    assert row("events", new_event, "events.k8s.io") == [
        "5s",
        "Normal",
        "Ready",
        "node/n1",
        "",
        "kubelet",
        "ok",
        "5s",
        1,
        "e",
    ]


def test_other_rows() -> None:
    rbac = "rbac.authorization.k8s.io"
    binding = {
        "metadata": {"name": "b"},
        "roleRef": {"kind": "ClusterRole", "name": "view"},
        "subjects": [
            {"kind": "User", "name": "alice"},
            {"kind": "Group", "name": "devs"},
            {"kind": "ServiceAccount", "namespace": "ci", "name": "bot"},
            {"kind": "User", "name": "bob"},
        ],
    }
    assert row("rolebindings", binding, rbac)[:2] == ["b", "ClusterRole/view"]
    assert row("rolebindings", binding, rbac)[3:] == ["alice, bob", "devs", "ci/bot"]
    hpa = {
        "metadata": {"name": "web"},
        "spec": {
            "scaleTargetRef": {"kind": "Deployment", "name": "web"},
            "minReplicas": 1,
            "maxReplicas": 5,
            "metrics": [
                {
                    "type": "Resource",
                    "resource": {"name": "cpu", "target": {"type": "Utilization", "averageUtilization": 80}},
                }
            ],
        },
        "status": {
            "currentReplicas": 2,
            "currentMetrics": [
                {"type": "Resource", "resource": {"name": "cpu", "current": {"averageUtilization": 45}}}
            ],
        },
    }
    assert row("horizontalpodautoscalers", hpa, "autoscaling")[:6] == [
        "web",
        "Deployment/web",
        "cpu: 45%/80%",
        "1",
        5,
        2,
    ]
    v1 = {
        "metadata": {"name": "web"},
        "spec": {
            "scaleTargetRef": {"kind": "Deployment", "name": "web"},
            "maxReplicas": 5,
            "targetCPUUtilizationPercentage": 50,
        },
    }
    assert row("horizontalpodautoscalers", v1, "autoscaling")[2:4] == ["cpu: <unknown>/50%", "<unset>"]
    pdb = {"metadata": {"name": "p"}, "spec": {"minAvailable": "50%"}, "status": {"disruptionsAllowed": 1}}
    assert row("poddisruptionbudgets", pdb, "policy")[:4] == ["p", "50%", "N/A", 1]
    ingress = {
        "metadata": {"name": "i"},
        "spec": {
            "ingressClassName": "nginx",
            "tls": [{}],
            "rules": [{"host": f"h{i}.example.com"} for i in range(4)],
        },
        "status": {"loadBalancer": {"ingress": [{"ip": "192.0.2.1"}]}},
    }
    assert row("ingresses", ingress, "networking.k8s.io")[:5] == [
        "i",
        "nginx",
        "h0.example.com,h1.example.com,h2.example.com + 1 more...",
        "192.0.2.1",
        "80, 443",
    ]
    assert row("ingresses", {"metadata": {"name": "j"}, "spec": {}}, "networking.k8s.io")[1:5] == [
        "<none>",
        "*",
        "",
        "80",
    ]
    klass = {
        "metadata": {"name": "c"},
        "spec": {
            "controller": "k8s.io/ingress-nginx",
            "parameters": {"apiGroup": "k8s.example.com", "kind": "IngressParameters", "name": "p"},
        },
    }
    assert row("ingressclasses", klass, "networking.k8s.io")[1:3] == [
        "k8s.io/ingress-nginx",
        "IngressParameters.k8s.example.com/p",
    ]
    assert (
        row("networkpolicies", {"metadata": {"name": "n"}, "spec": {"podSelector": {}}}, "networking.k8s.io")[
            1
        ]
        == "<none>"
    )
    storage_class = {
        "metadata": {
            "name": "standard",
            "annotations": {"storageclass.kubernetes.io/is-default-class": "true"},
        },
        "provisioner": "rancher.io/local-path",
    }
    assert row("storageclasses", storage_class, "storage.k8s.io")[:5] == [
        "standard (default)",
        "rancher.io/local-path",
        "Delete",
        "Immediate",
        False,
    ]
    priority = create("priorityclasses", {"metadata": {"name": "high"}, "value": 1000}, "scheduling.k8s.io")
    assert row("priorityclasses", priority, "scheduling.k8s.io")[:3] == ["high", 1000, False]
    assert row("priorityclasses", priority, "scheduling.k8s.io")[4] == "PreemptLowerPriority"
    lease = {"metadata": {"name": "kube-scheduler"}, "spec": {"holderIdentity": "node-1_abc"}}
    assert row("leases", lease, "coordination.k8s.io")[:2] == ["kube-scheduler", "node-1_abc"]
    slice_ = {
        "metadata": {"name": "web-abc"},
        "addressType": "IPv4",
        "ports": [{"port": 80}, {"name": "x"}],
        "endpoints": [{"addresses": ["10.0.0.1"]}, {"addresses": ["10.0.0.2"]}],
    }
    assert row("endpointslices", slice_, "discovery.k8s.io")[:4] == [
        "web-abc",
        "IPv4",
        "80,x",
        "10.0.0.1,10.0.0.2",
    ]
    assert row("endpointslices", {"metadata": {"name": "e"}}, "discovery.k8s.io")[2:4] == [
        "<unset>",
        "<unset>",
    ]


@pytest.mark.parametrize("r", BUILTIN, ids=lambda r: f"{r.group or 'core'}/{r.version}/{r.plural}")
def test_every_hook_copes_with_sparse_objects(r: ResourceType) -> None:
    for sparse in ({}, {"metadata": {"name": "x"}}, {"metadata": {"name": "x"}, "spec": {}, "status": {}}):
        obj = copy.deepcopy(sparse)
        strategy = r.strategy
        if strategy.prepare_create:
            strategy.prepare_create(obj)
        if strategy.defaults:
            strategy.defaults(obj)
        if strategy.validate:
            strategy.validate(obj)
        if strategy.validate_update:
            strategy.validate_update(obj, copy.deepcopy(obj))
        if strategy.prepare_update:
            strategy.prepare_update(copy.deepcopy(sparse), obj)
        assert len(strategy.row(obj)) == len(strategy.columns)
        assert strategy.fields(obj).keys() == strategy.fields({}).keys()

"""The real kubectl against a real kubelite server: what a user does on any cluster."""

from __future__ import annotations

import json
import subprocess
import textwrap
import time
from pathlib import Path

import pytest

from tests.e2e.conftest import KUBECTL, Cluster, token_kubeconfig

KUBECTLS = [KUBECTL] + [f"/usr/lib/google-cloud-sdk/bin/kubectl.1.{minor}" for minor in (27, 32, 33)]

DEPLOYMENT = textwrap.dedent("""\
    apiVersion: apps/v1
    kind: Deployment
    metadata:
      name: web
      labels: {app: web, tier: front}
    spec:
      replicas: 2
      selector:
        matchLabels: {app: web}
      template:
        metadata:
          labels: {app: web}
        spec:
          containers:
          - name: web
            image: busybox:1.36
            env:
            - {name: A, value: "1"}
            - {name: B, value: "2"}
    ---
    apiVersion: v1
    kind: ConfigMap
    metadata:
      name: web-config
    data:
      key: value
    """)


@pytest.mark.parametrize("kubectl", KUBECTLS)
def test_version_and_discovery(cluster: Cluster, kubectl: str) -> None:
    version = json.loads(cluster.kubectl("version", "-o", "json", kubectl=kubectl).stdout)
    assert version["serverVersion"]["gitVersion"].startswith("v1.33.0+kubelite")
    resources = cluster.kubectl("api-resources", kubectl=kubectl).stdout
    for line in ("deployments", "deploy", "apps/v1", "customresourcedefinitions", "leases",
                 "horizontalpodautoscalers"):
        assert line in resources
    versions = cluster.kubectl("api-versions", kubectl=kubectl).stdout.split()
    assert {"v1", "apps/v1", "batch/v1", "autoscaling/v2", "rbac.authorization.k8s.io/v1"} <= set(versions)
    assert "Kubernetes control plane" in cluster.kubectl("cluster-info", kubectl=kubectl).stdout


@pytest.mark.parametrize("kubectl", KUBECTLS)
def test_explain_nested_field(cluster: Cluster, kubectl: str) -> None:
    out = cluster.kubectl("explain", "deployment.spec.strategy.rollingUpdate.maxSurge", kubectl=kubectl).stdout
    assert "maxSurge" in out and "IntOrString" in out or "int-or-string" in out.lower()


def test_default_namespaces_and_kubernetes_service(cluster: Cluster) -> None:
    names = cluster.kubectl("get", "ns", "-o", "name").stdout.split()
    assert {"namespace/default", "namespace/kube-system", "namespace/kube-public",
            "namespace/kube-node-lease"} <= set(names)
    svc = cluster.get_json("svc", "kubernetes", "-n", "default")
    assert svc["spec"]["clusterIP"] == "10.43.0.1"


@pytest.mark.parametrize("kubectl", KUBECTLS)
def test_apply_reapply_removes_field(cluster: Cluster, kubectl: str) -> None:
    ns = "apply-" + kubectl.rsplit(".", 1)[-1].replace("/", "").replace("kubectl", "x")
    cluster.kubectl("create", "namespace", ns, kubectl=kubectl)
    out = cluster.kubectl("apply", "-n", ns, "-f", "-", input=DEPLOYMENT, kubectl=kubectl).stdout
    assert "deployment.apps/web created" in out and "configmap/web-config created" in out
    dep = cluster.get_json("deploy", "web", "-n", ns)
    assert dep["spec"]["strategy"]["type"] == "RollingUpdate"
    assert dep["spec"]["revisionHistoryLimit"] == 10
    assert dep["metadata"]["generation"] == 1
    edited = "\n".join(line for line in DEPLOYMENT.splitlines() if "name: B" not in line) + "\n"
    edited = edited.replace("replicas: 2", "replicas: 3")
    edited = edited.replace("labels: {app: web, tier: front}", "labels: {app: web}")
    out = cluster.kubectl("apply", "-n", ns, "-f", "-", input=edited, kubectl=kubectl).stdout
    assert "deployment.apps/web configured" in out and "configmap/web-config unchanged" in out
    dep = cluster.get_json("deploy", "web", "-n", ns)
    assert dep["spec"]["replicas"] == 3
    assert dep["spec"]["template"]["spec"]["containers"][0]["env"] == [{"name": "A", "value": "1"}]
    assert "tier" not in dep["metadata"]["labels"]
    assert dep["metadata"]["generation"] == 2
    diff = cluster.kubectl("diff", "-n", ns, "-f", "-", input=DEPLOYMENT, check=False, kubectl=kubectl)
    assert diff.returncode == 1, diff.stderr
    assert "replicas: 3" in diff.stdout and "replicas: 2" in diff.stdout
    dry = cluster.kubectl("apply", "--dry-run=server", "-n", ns, "-f", "-", input=DEPLOYMENT, kubectl=kubectl)
    assert "(server dry run)" in dry.stdout
    assert cluster.get_json("deploy", "web", "-n", ns)["spec"]["replicas"] == 3
    cluster.kubectl("delete", "namespace", ns, "--wait=false", kubectl=kubectl)


def test_get_output_formats(cluster: Cluster) -> None:
    cluster.kubectl("create", "configmap", "formats", "--from-literal=a=1", "--from-literal=b=2")
    table = cluster.kubectl("get", "configmap", "formats").stdout.splitlines()
    assert table[0].split() == ["NAME", "DATA", "AGE"]
    assert table[1].split()[:2] == ["formats", "2"]
    assert cluster.kubectl("get", "cm", "formats", "-o", "name").stdout.strip() == "configmap/formats"
    assert cluster.kubectl("get", "cm", "formats", "-o", "jsonpath={.data.a}").stdout == "1"
    custom = cluster.kubectl("get", "cm", "formats", "-o", "custom-columns=N:.metadata.name,A:.data.b").stdout
    assert custom.split() == ["N", "A", "formats", "2"]
    yaml_out = cluster.kubectl("get", "cm", "formats", "-o", "yaml").stdout
    assert "kind: ConfigMap" in yaml_out and "a: \"1\"" in yaml_out
    svc_wide = cluster.kubectl("get", "svc", "kubernetes", "-o", "wide").stdout.splitlines()
    assert svc_wide[0].split() == ["NAME", "TYPE", "CLUSTER-IP", "EXTERNAL-IP", "PORT(S)", "AGE", "SELECTOR"]
    assert svc_wide[1].split()[:5] == ["kubernetes", "ClusterIP", "10.43.0.1", "<none>", "443/TCP"]


def test_selectors(cluster: Cluster) -> None:
    for name, tier in (("sel-a", "front"), ("sel-b", "back"), ("sel-c", "front")):
        cluster.kubectl("create", "configmap", name, "--from-literal=x=y")
        cluster.kubectl("label", "configmap", name, f"tier={tier}", "group=sel")
    names = cluster.kubectl("get", "cm", "-l", "group=sel,tier in (front)", "-o", "name").stdout.split()
    assert names == ["configmap/sel-a", "configmap/sel-c"]
    names = cluster.kubectl("get", "cm", "-l", "group=sel,tier!=front", "-o", "name").stdout.split()
    assert names == ["configmap/sel-b"]
    names = cluster.kubectl("get", "cm", "--field-selector", "metadata.name=sel-b", "-o", "name").stdout.split()
    assert names == ["configmap/sel-b"]
    bad = cluster.kubectl("get", "cm", "--field-selector", "spec.nope=1", check=False)
    assert bad.returncode != 0 and "field label not supported" in bad.stderr


def test_label_annotate_patch_types(cluster: Cluster) -> None:
    cluster.kubectl("create", "configmap", "patchme", "--from-literal=a=1")
    cluster.kubectl("label", "cm", "patchme", "color=blue")
    cluster.kubectl("annotate", "cm", "patchme", "note=hello")
    cluster.kubectl("patch", "cm", "patchme", "--type=merge", "-p", '{"data":{"b":"2"}}')
    cluster.kubectl("patch", "cm", "patchme", "--type=json", "-p", '[{"op":"remove","path":"/data/a"}]')
    cluster.kubectl("patch", "cm", "patchme", "-p", '{"data":{"c":"3"}}')
    cm = cluster.get_json("cm", "patchme")
    assert cm["data"] == {"b": "2", "c": "3"}
    assert cm["metadata"]["labels"] == {"color": "blue"}
    assert cm["metadata"]["annotations"]["note"] == "hello"
    cluster.kubectl("label", "cm", "patchme", "color-")
    assert "labels" not in cluster.get_json("cm", "patchme")["metadata"] or \
        "color" not in cluster.get_json("cm", "patchme")["metadata"]["labels"]


def test_scale_set_image_edit(cluster: Cluster, tmp_path) -> None:
    cluster.kubectl("create", "deployment", "scaler", "--image=busybox:1.36", "--replicas=1")
    cluster.kubectl("scale", "deployment", "scaler", "--replicas=4")
    assert cluster.get_json("deploy", "scaler")["spec"]["replicas"] == 4
    cluster.kubectl("set", "image", "deployment/scaler", "busybox=busybox:1.37")
    dep = cluster.get_json("deploy", "scaler")
    assert dep["spec"]["template"]["spec"]["containers"][0]["image"] == "busybox:1.37"
    editor = tmp_path / "editor.sh"
    editor.write_text("#!/bin/sh\nsed -i 's/replicas: 4/replicas: 5/' \"$1\"\n")
    editor.chmod(0o755)
    cluster.kubectl("edit", "deployment", "scaler", env={"KUBE_EDITOR": str(editor)})
    assert cluster.get_json("deploy", "scaler")["spec"]["replicas"] == 5


def test_create_secret_from_file_and_literal(cluster: Cluster, tmp_path) -> None:
    key = tmp_path / "key.txt"
    key.write_text("s3cret")
    cluster.kubectl("create", "secret", "generic", "creds", f"--from-file={key}", "--from-literal=user=admin")
    secret = cluster.get_json("secret", "creds")
    assert secret["type"] == "Opaque" and set(secret["data"]) == {"key.txt", "user"}
    table = cluster.kubectl("get", "secret", "creds").stdout.splitlines()
    assert table[1].split()[:3] == ["creds", "Opaque", "2"]


def test_watch_receives_later_changes(cluster: Cluster) -> None:
    cluster.kubectl("create", "configmap", "watched", "--from-literal=a=1")
    proc = subprocess.Popen([KUBECTL, "--kubeconfig", str(cluster.kubeconfig), "get", "cm", "watched", "-w",
                             "-o", "name"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        time.sleep(1.5)
        cluster.kubectl("label", "cm", "watched", "changed=yes")
        cluster.kubectl("delete", "cm", "watched")
        time.sleep(1.5)
    finally:
        proc.terminate()
        out, _ = proc.communicate(timeout=10)
    assert out.split().count("configmap/watched") >= 3, out


def _owned_pair(cluster: Cluster, name: str) -> None:
    """A ConfigMap `name` and a dependent `name-child` whose ownerReference blocks the owner's deletion."""
    owner = json.loads(cluster.kubectl("create", "configmap", name, "-o", "json").stdout)
    child = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": f"{name}-child", "ownerReferences": [
        {"apiVersion": "v1", "kind": "ConfigMap", "name": name, "uid": owner["metadata"]["uid"],
         "blockOwnerDeletion": True}]}}
    cluster.kubectl("create", "-f", "-", input=json.dumps(child))


def _gone(cluster: Cluster, name: str, within: float = 30) -> bool:
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        if cluster.kubectl("get", "cm", name, check=False).returncode != 0:
            return True
        time.sleep(0.3)
    return False


def test_delete_cascade_options_and_wait(cluster: Cluster) -> None:
    _owned_pair(cluster, "bg")
    cluster.kubectl("delete", "configmap", "bg", "--cascade=background")
    assert _gone(cluster, "bg") and _gone(cluster, "bg-child"), "background: the garbage collector removes dependents"
    _owned_pair(cluster, "orph")
    cluster.kubectl("delete", "configmap", "orph", "--cascade=orphan", "--timeout=30s")
    assert _gone(cluster, "orph")
    assert "ownerReferences" not in cluster.get_json("cm", "orph-child")["metadata"]
    _owned_pair(cluster, "fg")
    cluster.kubectl("delete", "configmap", "fg", "--cascade=foreground", "--timeout=30s")
    assert _gone(cluster, "fg", 1) and _gone(cluster, "fg-child", 1), "foreground: dependents go before the owner"
    cluster.kubectl("create", "configmap", "waited", "--from-literal=a=1")
    waiter = subprocess.Popen([KUBECTL, "--kubeconfig", str(cluster.kubeconfig), "wait", "--for=delete",
                               "cm/waited", "--timeout=30s"], stdout=subprocess.PIPE, text=True)
    time.sleep(1)
    cluster.kubectl("delete", "cm", "waited", "--wait=false")
    assert waiter.wait(30) == 0
    cluster.kubectl("create", "configmap", "jp", "--from-literal=phase=ready")
    cluster.kubectl("wait", "--for=jsonpath={.data.phase}=ready", "cm/jp", "--timeout=10s")


def test_auth_whoami_and_can_i(cluster: Cluster) -> None:
    out = cluster.kubectl("auth", "whoami").stdout
    assert "system:admin" in out and "system:masters" in out
    assert cluster.kubectl("auth", "can-i", "create", "pods").stdout.strip() == "yes"


def test_create_token_authenticates_as_the_service_account(cluster: Cluster, tmp_path: Path) -> None:
    cluster.kubectl("create", "namespace", "tokens")
    cluster.kubectl("create", "serviceaccount", "robot", "-n", "tokens")
    token = cluster.kubectl("create", "token", "robot", "-n", "tokens", "--duration=20m").stdout.strip()
    as_robot = token_kubeconfig(cluster, tmp_path / "robot.kubeconfig", token)
    review = json.loads(cluster.kubectl("--kubeconfig", str(as_robot), "auth", "whoami", "-o", "json").stdout)
    user = review["status"]["userInfo"]
    assert user["username"] == "system:serviceaccount:tokens:robot"
    assert {"system:serviceaccounts", "system:serviceaccounts:tokens", "system:authenticated"} <= set(user["groups"])
    assert user["uid"] == cluster.get_json("serviceaccount", "robot", "-n", "tokens")["metadata"]["uid"]

    forged = token_kubeconfig(cluster, tmp_path / "forged.kubeconfig", token[:-4] + "AAAA")
    denied = cluster.kubectl("--kubeconfig", str(forged), "get", "pods", check=False)
    assert denied.returncode != 0 and "Unauthorized" in denied.stderr
    other = cluster.kubectl("create", "token", "robot", "-n", "tokens", "--audience=vault").stdout.strip()
    elsewhere = token_kubeconfig(cluster, tmp_path / "vault.kubeconfig", other)
    assert "Unauthorized" in cluster.kubectl("--kubeconfig", str(elsewhere), "get", "pods", check=False).stderr

    short = cluster.kubectl("create", "token", "robot", "-n", "tokens", "--duration=5m", check=False)
    assert short.returncode != 0 and "may not specify a duration less than 10 minutes" in short.stderr
    assert "not found" in cluster.kubectl("create", "token", "nobody", "-n", "tokens", check=False).stderr
    unbound = cluster.kubectl("create", "token", "robot", "-n", "tokens", "--bound-object-kind=Pod",
                              "--bound-object-name=nopod", check=False)
    assert unbound.returncode != 0 and 'pods "nopod" not found' in unbound.stderr
    cluster.kubectl("delete", "namespace", "tokens", "--wait=false")


def test_pods_need_their_service_account(cluster: Cluster) -> None:
    """A pod naming a ServiceAccount that does not exist is refused; one in a namespace made a moment ago gets the
    "default" ServiceAccount the controller-manager makes for it."""
    refused = cluster.kubectl("run", "ghostly", "--image=busybox", "--overrides",
                              json.dumps({"spec": {"serviceAccountName": "ghost"}}), check=False)
    assert refused.returncode != 0
    assert ('pods "ghostly" is forbidden: error looking up service account default/ghost: serviceaccount "ghost" '
            "not found") in refused.stderr
    cluster.kubectl("create", "namespace", "fresh-sa")
    cluster.kubectl("run", "first", "--image=busybox", "-n", "fresh-sa")
    pod = cluster.get_json("pod", "first", "-n", "fresh-sa")
    assert pod["spec"]["serviceAccountName"] == "default"
    assert any(v["name"].startswith("kube-api-access-") for v in pod["spec"]["volumes"])
    cluster.kubectl("delete", "namespace", "fresh-sa", "--wait=false")


def test_crd_and_custom_resources(cluster: Cluster) -> None:
    crd = textwrap.dedent("""\
        apiVersion: apiextensions.k8s.io/v1
        kind: CustomResourceDefinition
        metadata:
          name: widgets.example.com
        spec:
          group: example.com
          scope: Namespaced
          names: {plural: widgets, singular: widget, kind: Widget, shortNames: [wd]}
          versions:
          - name: v1
            served: true
            storage: true
            subresources: {status: {}, scale: {specReplicasPath: .spec.size, statusReplicasPath: .status.size}}
            additionalPrinterColumns:
            - {name: Size, type: integer, jsonPath: .spec.size}
            schema:
              openAPIV3Schema:
                type: object
                properties:
                  spec:
                    type: object
                    properties:
                      size: {type: integer}
                      color: {type: string, enum: [red, blue]}
                  status:
                    type: object
                    properties:
                      size: {type: integer}
        """)
    cluster.kubectl("apply", "-f", "-", input=crd)
    cluster.kubectl("wait", "--for=condition=Established", "crd/widgets.example.com", "--timeout=20s")
    widget = "apiVersion: example.com/v1\nkind: Widget\nmetadata: {name: w1}\nspec: {size: 2, color: red}\n"
    for _ in range(40):
        if cluster.kubectl("apply", "-f", "-", input=widget, check=False).returncode == 0:
            break
        time.sleep(0.25)
    table = cluster.kubectl("get", "wd").stdout.splitlines()
    assert table[0].split() == ["NAME", "SIZE"] and table[1].split() == ["w1", "2"]
    cluster.kubectl("scale", "widget", "w1", "--replicas=5")
    assert cluster.get_json("widget", "w1")["spec"]["size"] == 5
    bad = cluster.kubectl("apply", "-f", "-", input=widget.replace("red", "green"), check=False)
    assert bad.returncode != 0 and "Unsupported value" in bad.stderr
    cluster.kubectl("delete", "widget", "w1")
    cluster.kubectl("delete", "crd", "widgets.example.com")


def test_describe(cluster: Cluster) -> None:
    cluster.kubectl("create", "deployment", "described", "--image=busybox:1.36")
    out = cluster.kubectl("describe", "deployment", "described").stdout
    assert "Name:" in out and "described" in out and "RollingUpdate" in out

"""A real three-node cluster on one host (tests/multinode.py): nodes join with the node token, get distinct pod CIDRs,
and pods reach pods on other nodes directly by pod IP, un-NATed, over host-gw routes and over VXLAN; a node whose agent
dies goes NotReady and its pods are replaced elsewhere; a deleted node's routes go away."""

from __future__ import annotations

import ipaddress
import json
import time
import urllib.request
from collections import Counter
from collections.abc import Iterator

import pytest

from kubelite.kubelet.network.routes import VTEP_MAC_ANNOTATION, VXLAN_DEVICE
from tests.multinode import MultiNodeCluster, eventually, multinode_cluster, pod_routes

APP = "echo"
REPLICAS = 6
BIG = 300_000
"""Bytes of a file fetched across nodes: many full-sized segments, so a wrong MTU shows."""
CGI = r"#!/bin/sh\necho Content-Type: text/plain\necho\necho $REMOTE_ADDR\n"
SERVE = ("mkdir -p /www/cgi-bin && hostname > /www/index.html && "
         f"printf '{CGI}' > /www/cgi-bin/peer && chmod +x /www/cgi-bin/peer && "
         f"head -c {BIG} /dev/zero | tr '\\0' x > /www/big && exec httpd -f -p 0.0.0.0:8080 -h /www")
"""Each replica answers its hostname at /, the client's address (as it sees it) at /cgi-bin/peer, and /big."""
TOLERATE_SECONDS = 5


@pytest.fixture(scope="module", params=["host-gw", "vxlan"])
def cluster(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[MultiNodeCluster]:
    with multinode_cluster(tmp_path_factory.mktemp(f"multinode-{request.param}"), 3, request.param) as running:
        yield running


def _deployment(image: str) -> dict:
    tolerations = [{"key": f"node.kubernetes.io/{key}", "operator": "Exists", "effect": "NoExecute",
                    "tolerationSeconds": TOLERATE_SECONDS} for key in ("not-ready", "unreachable")]
    spread = {"maxSkew": 1, "topologyKey": "kubernetes.io/hostname", "whenUnsatisfiable": "DoNotSchedule",
              "nodeTaintsPolicy": "Honor", "labelSelector": {"matchLabels": {"app": APP}}}
    return {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": APP}, "spec": {
        "replicas": REPLICAS, "selector": {"matchLabels": {"app": APP}}, "template": {
            "metadata": {"labels": {"app": APP}},
            "spec": {"terminationGracePeriodSeconds": 1, "tolerations": tolerations,
                     "topologySpreadConstraints": [spread],
                     "containers": [{"name": "web", "image": image, "command": ["sh", "-c", SERVE]}]}}}}


def _pods(cluster: MultiNodeCluster) -> list[dict]:
    """The app's pods that are not terminating."""
    items = cluster.get_json("pods", "-l", f"app={APP}")["items"]
    return [p for p in items if not p["metadata"].get("deletionTimestamp")]


def _running(pods: list[dict]) -> bool:
    return len(pods) == REPLICAS and all(p["status"].get("phase") == "Running" and p["status"].get("podIP")
                                         for p in pods)


@pytest.fixture(scope="module")
def echo(cluster: MultiNodeCluster) -> list[dict]:
    """The Deployment's pods, all Running."""
    cluster.kubectl("apply", "-f", "-", input=json.dumps(_deployment(cluster.image)))
    cluster.kubectl("rollout", "status", f"deployment/{APP}", "--timeout=90s", timeout=100)
    return eventually(lambda: (lambda pods: pods if _running(pods) else None)(_pods(cluster)), 30,
                      "every replica Running with a pod IP")


def _expected_routes(cluster: MultiNodeCluster, node: str, nodes: dict[str, dict]) -> list[tuple]:
    wanted = []
    for name, other in sorted(nodes.items()):
        if name == node:
            continue
        cidr = other["spec"]["podCIDR"]
        if cluster.backend == "vxlan":
            wanted.append((cidr, str(ipaddress.ip_network(cidr).network_address), VXLAN_DEVICE, ["onlink"]))
        else:
            wanted.append((cidr, cluster.machines[name].address, "eth0", []))
    return sorted(wanted)


def _installed_routes(cluster: MultiNodeCluster, node: str) -> list[tuple]:
    return sorted((r["dst"], r["gateway"], r["dev"], r.get("flags", [])) for r in pod_routes(cluster, node))


def test_nodes_join_with_distinct_pod_cidrs_and_routes(cluster: MultiNodeCluster) -> None:
    nodes = {n["metadata"]["name"]: n for n in cluster.get_json("nodes")["items"]}
    assert sorted(nodes) == ["node-1", "node-2", "node-3"]
    assert all(cluster.node_ready(name) == "True" for name in nodes)
    cidrs = {name: ipaddress.ip_network(n["spec"]["podCIDR"]) for name, n in nodes.items()}
    assert len(set(cidrs.values())) == 3
    assert all(c.prefixlen == 24 and c.subnet_of(ipaddress.ip_network("10.42.0.0/16")) for c in cidrs.values())
    for name, node in nodes.items():
        internal = [a["address"] for a in node["status"]["addresses"] if a["type"] == "InternalIP"]
        assert internal == [cluster.machines[name].address]
    for name in nodes:
        eventually(lambda name=name: _installed_routes(cluster, name) == _expected_routes(cluster, name, nodes), 20,
                   f"{name}'s routes to the other nodes' pods ({_installed_routes(cluster, name)})")
    if cluster.backend != "vxlan":
        assert not any(cluster.run_on(n, "ip", "link", "show", VXLAN_DEVICE, check=False).returncode == 0
                       for n in nodes)
        return
    macs = {name: n["metadata"]["annotations"][VTEP_MAC_ANNOTATION] for name, n in nodes.items()}
    for name in nodes:
        device = json.loads(cluster.run_on(name, "ip", "-j", "-d", "link", "show", VXLAN_DEVICE).stdout)[0]
        assert device["address"] == macs[name] and device["mtu"] == 1450
        info = device["linkinfo"]["info_data"]
        assert (info["id"], info["port"], info["local"], info.get("learning")) == (
            1, 8472, cluster.machines[name].address, False)
        fdb = json.loads(cluster.run_on(name, "bridge", "-j", "fdb", "show", "dev", VXLAN_DEVICE).stdout)
        assert sorted((e["mac"], e["dst"]) for e in fdb if e.get("dst")) == sorted(
            (macs[o], cluster.machines[o].address) for o in nodes if o != name)
        neighbours = json.loads(cluster.run_on(name, "ip", "-j", "neigh", "show", "dev", VXLAN_DEVICE).stdout)
        assert sorted((e["dst"], e["lladdr"], e["state"]) for e in neighbours) == sorted(
            (str(cidrs[o].network_address), macs[o], ["PERMANENT"]) for o in nodes if o != name)


def test_replicas_spread_over_every_node(echo: list[dict]) -> None:
    assert Counter(p["spec"]["nodeName"] for p in echo) == {"node-1": 2, "node-2": 2, "node-3": 2}


def test_pods_reach_pods_on_other_nodes_directly(cluster: MultiNodeCluster, echo: list[dict]) -> None:
    mtu = "1450" if cluster.backend == "vxlan" else "1500"
    clients = {}
    for pod in echo:
        clients.setdefault(pod["spec"]["nodeName"], pod)
    for node, client in sorted(clients.items()):
        name = client["metadata"]["name"]
        assert cluster.kubectl("exec", name, "--", "cat", "/sys/class/net/eth0/mtu").stdout.strip() == mtu
        for target in echo:
            if target["spec"]["nodeName"] == node:
                continue
            url = f"http://{target['status']['podIP']}:8080"
            script = (f"timeout 5 wget -qO- {url}/index.html && timeout 5 wget -qO- {url}/cgi-bin/peer && "
                      f"timeout 5 wget -qO- {url}/big | wc -c")
            answer = eventually(lambda name=name, script=script: cluster.kubectl(
                "exec", name, "--", "sh", "-c", script).stdout.split(), 20,
                f"{name} on {node} reaching {target['metadata']['name']} at {url}")
            assert answer == [target["metadata"]["name"], client["status"]["podIP"], str(BIG)], (
                f"from {name} ({client['status']['podIP']}) on {node} to {url} on {target['spec']['nodeName']}")


def _client(echo: list[dict], node: str = "node-1") -> str:
    return next(p["metadata"]["name"] for p in echo if p["spec"]["nodeName"] == node)


def _answers(cluster: MultiNodeCluster, client: str, url: str, count: int) -> list[str]:
    """What `count` requests from the client pod to url answer (one line each, "" for a failed request)."""
    script = f"for i in $(seq {count}); do timeout 5 wget -qO- {url} || echo; done"
    return cluster.kubectl("exec", client, "--", "sh", "-c", script, timeout=120).stdout.splitlines()


def test_services_and_dns_across_nodes(cluster: MultiNodeCluster, echo: list[dict]) -> None:
    cluster.kubectl("expose", "deployment", APP, "--port=80", "--target-port=8080")
    cluster.kubectl("expose", "deployment", APP, "--name=echo-np", "--type=NodePort", "--port=80",
                    "--target-port=8080")
    headless = {"apiVersion": "v1", "kind": "Service", "metadata": {"name": "echo-headless"},
                "spec": {"clusterIP": "None", "selector": {"app": APP}, "ports": [{"port": 8080}]}}
    cluster.kubectl("apply", "-f", "-", input=json.dumps(headless))
    client = _client(echo)
    names = {p["metadata"]["name"] for p in echo}
    cluster_ip = cluster.get_json("service", APP)["spec"]["clusterIP"]
    for url in (f"http://{APP}", f"http://{APP}.default.svc.cluster.local", f"http://{cluster_ip}"):
        eventually(lambda url=url: set(_answers(cluster, client, url, 1)) <= names and _answers(
            cluster, client, url, 1) != [""], 30, f"an answer from {url}")
    # Random balancing over 6 backends misses one in 30 requests about 2.5 % of the time: ask again then.
    seen = set(_answers(cluster, client, f"http://{APP}", 30))
    if seen != names:
        seen |= set(_answers(cluster, client, f"http://{APP}", 30))
    assert seen == names, f"every backend answers: {sorted(seen)}"

    node_port = cluster.get_json("service", "echo-np")["spec"]["ports"][0]["nodePort"]
    for machine in cluster.machines.values():
        body = urllib.request.urlopen(f"http://{machine.address}:{node_port}/index.html", timeout=5).read()
        assert body.decode().strip() in names, f"NodePort on {machine.name}"

    resolved = cluster.kubectl("exec", client, "--", "nslookup", "echo-headless.default.svc.cluster.local").stdout
    assert all(p["status"]["podIP"] in resolved for p in echo), resolved
    started = time.monotonic()
    missing = cluster.kubectl("exec", client, "--", "nslookup", "nothing-here.default.svc.cluster.local",
                              check=False)
    assert "NXDOMAIN" in missing.stdout + missing.stderr and time.monotonic() - started < 5


def test_readiness_and_empty_services(cluster: MultiNodeCluster, echo: list[dict]) -> None:
    probe = {"exec": {"command": ["test", "-e", "/tmp/ready"]}, "periodSeconds": 1, "failureThreshold": 1}
    gated = {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "gated"}, "spec": {
        "replicas": 2, "selector": {"matchLabels": {"app": "gated"}}, "template": {
            "metadata": {"labels": {"app": "gated"}},
            "spec": {"terminationGracePeriodSeconds": 1, "containers": [{
                "name": "web", "image": cluster.image, "readinessProbe": probe,
                "command": ["sh", "-c", "touch /tmp/ready; " + SERVE]}]}}}}
    cluster.kubectl("apply", "-f", "-", input=json.dumps(gated))
    cluster.kubectl("rollout", "status", "deployment/gated", "--timeout=90s", timeout=100)
    cluster.kubectl("expose", "deployment", "gated", "--port=80", "--target-port=8080")
    pods = cluster.get_json("pods", "-l", "app=gated")["items"]
    sick, healthy = pods[0]["metadata"]["name"], pods[1]["metadata"]["name"]
    client = _client(echo)
    eventually(lambda: set(_answers(cluster, client, "http://gated", 10)) == {sick, healthy}, 30, "both answer")
    cluster.kubectl("exec", sick, "--", "rm", "/tmp/ready")
    eventually(lambda: set(_answers(cluster, client, "http://gated", 10)) == {healthy}, 30,
               "the pod failing its readiness probe leaves the rotation")
    cluster.kubectl("scale", "deployment/gated", "--replicas=0")
    eventually(lambda: not cluster.get_json("pods", "-l", "app=gated")["items"], 60, "no backends")
    time.sleep(1)
    started = time.monotonic()
    refused = cluster.kubectl("exec", client, "--", "timeout", "10", "wget", "-qO-", "http://gated", check=False)
    assert refused.returncode != 0 and time.monotonic() - started < 5, "an empty Service refuses at once"


def test_local_path_volumes_hold_their_pods_to_their_node(cluster: MultiNodeCluster) -> None:
    stateful = {"apiVersion": "apps/v1", "kind": "StatefulSet", "metadata": {"name": "keep"}, "spec": {
        "replicas": 3, "podManagementPolicy": "Parallel", "serviceName": "keep",
        "selector": {"matchLabels": {"app": "keep"}},
        "template": {"metadata": {"labels": {"app": "keep"}}, "spec": {
            "terminationGracePeriodSeconds": 1,
            "containers": [{"name": "c", "image": cluster.image, "command": ["sh", "-c", "exec sleep 3600"],
                            "volumeMounts": [{"name": "data", "mountPath": "/data"}]}]}},
        "volumeClaimTemplates": [{"metadata": {"name": "data"}, "spec": {
            "accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": "16Mi"}}}}]}}
    cluster.kubectl("apply", "-f", "-", input=json.dumps(stateful))
    cluster.kubectl("rollout", "status", "statefulset/keep", "--timeout=90s", timeout=100)
    for index in range(3):
        node = cluster.get_json("pod", f"keep-{index}")["spec"]["nodeName"]
        claim = cluster.get_json("pvc", f"data-keep-{index}")
        assert claim["metadata"]["annotations"]["volume.kubernetes.io/selected-node"] == node
        terms = cluster.get_json("pv", claim["spec"]["volumeName"])["spec"]["nodeAffinity"]["required"]
        assert terms["nodeSelectorTerms"][0]["matchExpressions"][0]["values"] == [node]
    home = cluster.get_json("pod", "keep-0")["spec"]["nodeName"]
    cluster.kubectl("cordon", home)
    cluster.kubectl("delete", "pod", "keep-0")

    def refused() -> bool:
        events = cluster.get_json("events", "--field-selector", "involvedObject.name=keep-0")["items"]
        return any(e["reason"] == "FailedScheduling" and "volume node affinity conflict" in e["message"]
                   for e in events)
    eventually(refused, 30, "keep-0 held back by its volume while its node is cordoned")
    assert cluster.get_json("pod", "keep-0")["status"]["phase"] == "Pending"
    cluster.kubectl("uncordon", home)
    eventually(lambda: (lambda pod: pod["status"].get("phase") == "Running" and pod["spec"]["nodeName"] == home)(
        cluster.get_json("pod", "keep-0")), 60, f"keep-0 Running on {home} again")
    cluster.kubectl("delete", "statefulset", "keep", "--wait=true")
    cluster.kubectl("delete", "pvc", "-l", "app=keep", "--wait=true", "--timeout=60s")
    eventually(lambda: not cluster.get_json("pv")["items"], 60, "the provisioned volumes deleted on their nodes")


def test_a_dead_agent_makes_its_node_not_ready_and_its_pods_move(cluster: MultiNodeCluster,
                                                                 echo: list[dict]) -> None:
    victim = "node-3"
    victim_vtep = str(ipaddress.ip_network(cluster.get_json("node", victim)["spec"]["podCIDR"]).network_address)
    cluster.kill_agent(victim)
    killed = time.monotonic()
    eventually(lambda: cluster.node_ready(victim) == "Unknown", 55, f"{victim} NotReady after its agent died")
    assert time.monotonic() - killed > 20, "NotReady before the node monitor grace period could have passed"
    moved = eventually(lambda: (lambda pods: pods if _running(pods) and all(
        p["spec"]["nodeName"] != victim for p in pods) else None)(_pods(cluster)), 45,
        f"replacements for {victim}'s pods Running elsewhere")
    assert Counter(p["spec"]["nodeName"] for p in moved) == {"node-1": 3, "node-2": 3}
    answers = _answers(cluster, _client(moved), f"http://{APP}", 10)
    assert set(answers) <= {p["metadata"]["name"] for p in moved} and "" not in answers, (
        f"the Service answers from the remaining nodes: {answers}")
    gone = {p["metadata"]["name"] for p in echo if p["spec"]["nodeName"] == victim}
    assert gone.isdisjoint(p["metadata"]["name"] for p in moved)

    cluster.kubectl("delete", "node", victim)
    remaining = {n["metadata"]["name"]: n for n in cluster.get_json("nodes")["items"]}
    for name in remaining:
        eventually(lambda name=name: _installed_routes(cluster, name) == _expected_routes(cluster, name, remaining),
                   20, f"{name} dropping its route to {victim}'s pods ({_installed_routes(cluster, name)})")
        if cluster.backend == "vxlan":
            fdb = cluster.run_on(name, "bridge", "fdb", "show", "dev", VXLAN_DEVICE).stdout
            neighbours = cluster.run_on(name, "ip", "neigh", "show", "dev", VXLAN_DEVICE).stdout
            assert cluster.machines[victim].address not in fdb and victim_vtep not in neighbours.split()

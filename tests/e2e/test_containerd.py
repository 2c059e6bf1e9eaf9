"""The kubelet on containerd through CRI, with the real kubectl: `kubelite server --container-runtime-endpoint` to the
session's containerd (tests/containerd.py), whose runc runs the containers and whose CNI plugins wire pods up from
the config the agent writes; images are built from busybox-static and pushed to containerd's local registry."""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import urllib.request
from collections.abc import Iterator
from ipaddress import ip_address, ip_network
from pathlib import Path

import pytest

from kubelite.kubelet.network.cni import CONFLIST
from tests.containerd import Containerd
from tests.e2e.conftest import KUBECTL, Cluster, free_port, start_server, stop_server
from tests.e2e.test_kubelet import _apply, _pod, _pod_manifest, _running, _status, eventually
from tests.images import busybox_image, push

NODE = "node-cri"
RUN_DIR = Path("/run/kubelite") / NODE
"""The agent's run dir (a tmpfs it mounts; the secret volumes were there)."""
OUTSIDE_NETNS = "kl-cri-outside"
OUTSIDE_LINK = "klcriout0"
OUTSIDE_HOST, OUTSIDE_PEER = "198.51.100.1", "198.51.100.2"
"""A "machine" outside the cluster (TEST-NET-2): a network namespace on a veth that has no route to the pods."""
FETCH = ('fetch() { i=0; while [ $i -lt 30 ]; do out=$(timeout 5 wget -qO- "$1" 2>/dev/null) && '
         '{ echo "$2 $out"; return; }; i=$((i+1)); sleep 1; done; echo "$2 FAILED"; }; ')
"""A shell function for pod scripts: `fetch URL LABEL` prints `LABEL <body>`, retrying for up to 30 s."""


def _ready(c: Cluster) -> bool:
    node = c.get_json("node", NODE)
    return any(x["type"] == "Ready" and x["status"] == "True" for x in node["status"]["conditions"])


@pytest.fixture(scope="module")
def cri(containerd: Containerd, tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Cluster, str]]:
    """A one-node cluster whose agent runs pods on containerd, and the busybox image reference containerd pulls."""
    work = tmp_path_factory.mktemp("cri-e2e")
    push(containerd.registry.url, "busybox", "1.36", busybox_image())
    cluster = start_server(work, free_port(), "--container-runtime-endpoint", containerd.endpoint,
                           "--cni-conf-dir", str(containerd.cni_conf_dir), agent=NODE)
    try:
        eventually(lambda: _ready(cluster), 60, "the node Ready")
        yield cluster, f"{containerd.registry.host}/busybox:1.36"
    finally:
        cluster.kubectl("delete", "deployments,pods", "--all", "--grace-period=1", "--wait=true", "--timeout=90s",
                        check=False, timeout=120)
        try:
            eventually(lambda: not containerd.containers(), 60, "containerd's sandboxes stopped (CNI DEL done)")
        finally:
            stop_server(cluster)
            (containerd.cni_conf_dir / CONFLIST).unlink(missing_ok=True)
            subprocess.run(["umount", str(RUN_DIR)], capture_output=True, check=False)
            shutil.rmtree(RUN_DIR, ignore_errors=True)


@pytest.fixture(scope="module")
def outside(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """An HTTP server on a "machine" outside the cluster, which can answer pods only if they are masqueraded; its
    URL."""
    www = tmp_path_factory.mktemp("outside-www")
    (www / "index.html").write_text("outside\n")
    steps = [["ip", "netns", "add", OUTSIDE_NETNS],
             ["ip", "link", "add", OUTSIDE_LINK, "type", "veth", "peer", "name", "eth0", "netns", OUTSIDE_NETNS],
             ["ip", "addr", "add", f"{OUTSIDE_HOST}/30", "dev", OUTSIDE_LINK],
             ["ip", "link", "set", OUTSIDE_LINK, "up"],
             ["ip", "-n", OUTSIDE_NETNS, "addr", "add", f"{OUTSIDE_PEER}/30", "dev", "eth0"],
             ["ip", "-n", OUTSIDE_NETNS, "link", "set", "eth0", "up"],
             ["ip", "-n", OUTSIDE_NETNS, "link", "set", "lo", "up"]]
    server = None
    try:
        for step in steps:
            subprocess.run(step, check=True, capture_output=True, text=True)
        server = subprocess.Popen(["ip", "netns", "exec", OUTSIDE_NETNS, "busybox", "httpd", "-f", "-p", "8080",
                                   "-h", str(www)], start_new_session=True)
        yield f"http://{OUTSIDE_PEER}:8080/index.html"
    finally:
        if server is not None:
            os.killpg(server.pid, signal.SIGKILL)
            server.wait()
        subprocess.run(["ip", "netns", "del", OUTSIDE_NETNS], capture_output=True, check=False)
        subprocess.run(["ip", "link", "del", OUTSIDE_LINK], capture_output=True, check=False)


def _node(c: Cluster) -> dict:
    return c.get_json("node", NODE)


def _node_ip(c: Cluster) -> str:
    return next(a["address"] for a in _node(c)["status"]["addresses"] if a["type"] == "InternalIP")


def test_pods_run_on_containerd_and_log(cri: tuple[Cluster, str], containerd: Containerd) -> None:
    c, image = cri
    version = _node(c)["status"]["nodeInfo"]["containerRuntimeVersion"]
    assert version.startswith("containerd://1.6."), version
    assert "containerd://" in c.kubectl("get", "nodes", "-o", "wide").stdout
    c.kubectl("run", "talker", f"--image={image}", "--", "sh", "-c",
              "i=0; while true; do echo line $i; i=$((i+1)); sleep 0.2; done")
    eventually(lambda: _running(c, "talker"), 90, "talker Running")
    eventually(lambda: "line 3" in c.kubectl("logs", "talker").stdout, 30, "kubectl logs shows the output")
    container_id = _status(c, "talker")["containerID"]
    assert container_id.startswith("containerd://"), container_id
    assert container_id.removeprefix("containerd://") in containerd.ctr("containers", "ls", "-q").stdout, \
        "containerd runs the container"
    assert container_id.removeprefix("containerd://") in containerd.containers(), "through runc"

    pod_cidr = _node(c)["spec"]["podCIDR"]
    assert ip_address(_pod(c, "talker")["status"]["podIP"]) in ip_network(pod_cidr)
    conflist = json.loads((containerd.cni_conf_dir / CONFLIST).read_text())
    assert conflist["plugins"][0]["ipam"]["ranges"] == [[{"subnet": pod_cidr,
                                                          "gateway": str(ip_network(pod_cidr)[1])}]]
    c.kubectl("delete", "pod", "talker", "--grace-period=1")


def test_pods_reach_each_other_services_and_the_outside(cri: tuple[Cluster, str], outside: str) -> None:
    """Pod to pod by IP on the bridge, a Service by its DNS name (cluster DNS behind its Service), a pod through its
    own Service (hairpin), loopback inside a pod, and a machine outside the cluster (masquerade)."""
    c, image = cri
    serve = "mkdir -p /www && hostname > /www/index.html && exec httpd -f -p 8080 -h /www"
    deployment = {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "echo"}, "spec": {
        "replicas": 2, "selector": {"matchLabels": {"app": "echo"}}, "template": {
            "metadata": {"labels": {"app": "echo"}},
            "spec": {"terminationGracePeriodSeconds": 1,
                     "containers": [{"name": "c", "image": image, "command": ["sh", "-c", serve]}]}}}}
    _apply(c, deployment)
    c.kubectl("expose", "deployment", "echo", "--port=80", "--target-port=8080")
    c.kubectl("create", "service", "clusterip", "mirror", "--tcp=80:8080")
    selfie = _pod_manifest("selfie", image, "mkdir -p /www && hostname > /www/index.html && httpd -p 8080 -h /www && "
                           + FETCH + "fetch http://mirror/ hairpin; exec sleep 3600",
                           terminationGracePeriodSeconds=1)
    selfie["metadata"]["labels"] = {"app": "mirror"}
    _apply(c, selfie)
    c.kubectl("rollout", "status", "deployment/echo", "--timeout=90s", timeout=120)
    replicas = {p["metadata"]["name"]: p["status"]["podIP"] for p in c.get_json("pods", "-l", "app=echo")["items"]}
    assert len(replicas) == 2

    script = (FETCH + " ".join(f"fetch http://{ip}:8080/ pod-{ip};" for ip in replicas.values())
              + " fetch http://echo.default.svc.cluster.local/ service; "
              + f"fetch {outside} outside; "
              + "mkdir -p /lo && echo loopback > /lo/index.html && httpd -p 127.0.0.1:8081 -h /lo && "
              + "fetch http://127.0.0.1:8081/ lo")
    _apply(c, _pod_manifest("prober", image, script, restartPolicy="Never"))
    eventually(lambda: _pod(c, "prober")["status"].get("phase") == "Succeeded", 180, "the prober done")
    lines = dict(line.split(" ", 1) for line in c.kubectl("logs", "prober").stdout.splitlines() if " " in line)
    for name, ip in replicas.items():
        assert lines[f"pod-{ip}"] == name, lines
    assert lines["service"] in replicas, lines
    assert lines["outside"] == "outside", f"traffic leaving the cluster is masqueraded: {lines}"
    assert lines["lo"] == "loopback", lines
    eventually(lambda: "hairpin selfie" in c.kubectl("logs", "selfie").stdout, 60,
               "a pod reaches itself through its Service")
    c.kubectl("delete", "deployment", "echo")
    c.kubectl("delete", "service", "echo", "mirror")
    c.kubectl("delete", "pod", "prober", "selfie", "--grace-period=1")


def test_host_ports_by_the_portmap_plugin(cri: tuple[Cluster, str]) -> None:
    c, image = cri
    porter = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "porter"}, "spec": {
        "terminationGracePeriodSeconds": 1, "containers": [{
            "name": "c", "image": image, "ports": [{"containerPort": 8080, "hostPort": 31081}],
            "command": ["sh", "-c", "mkdir -p /www && echo via the host port > /www/index.html && "
                                    "exec httpd -f -p 8080 -h /www"]}]}}
    _apply(c, porter)
    eventually(lambda: _running(c, "porter"), 90, "porter Running")
    for host in (_node_ip(c), "127.0.0.1"):
        body = eventually(lambda host=host: urllib.request.urlopen(f"http://{host}:31081/index.html", timeout=5).read(),
                          30, f"an answer on the host port at {host}")
        assert body == b"via the host port\n"
    c.kubectl("delete", "pod", "porter", "--grace-period=1")
    eventually(lambda: _refused(_node_ip(c), 31081), 60, "the host port closed with the pod")


def _refused(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=2):
            return False
    except OSError:
        return True


def test_a_crashing_container_restarts(cri: tuple[Cluster, str]) -> None:
    c, image = cri
    c.kubectl("run", "crasher", f"--image={image}", "--", "sh", "-c", "echo about to fail; exit 3")
    eventually(lambda: _status(c, "crasher").get("restartCount", 0) >= 2, 90, "restarts after the first back-off")
    terminated = _status(c, "crasher")["lastState"]["terminated"]
    assert terminated["exitCode"] == 3 and terminated["reason"] == "Error"
    eventually(lambda: _status(c, "crasher").get("state", {}).get("waiting", {}).get("reason") == "CrashLoopBackOff",
               60, "CrashLoopBackOff")
    assert "about to fail" in c.kubectl("logs", "--previous", "crasher").stdout
    c.kubectl("delete", "pod", "crasher", "--grace-period=1")


def test_exec_in_a_containerd_container(cri: tuple[Cluster, str]) -> None:
    c, image = cri
    c.kubectl("run", "shell", f"--image={image}", "--", "sleep", "3600")
    eventually(lambda: _running(c, "shell"), 90, "shell Running")
    assert c.kubectl("exec", "shell", "--", "hostname").stdout.strip() == "shell"
    assert c.kubectl("exec", "-i", "shell", "--", "cat", input="through stdin\n").stdout == "through stdin\n"
    assert c.kubectl("exec", "shell", "--", "sh", "-c", "exit 7", check=False).returncode == 7
    # containerd ends an attach (not the container) when the client's stdin ends, unless the container has
    # stdinOnce, which kubectl debug does not set: so the session's stdin stays open until the answer came
    debug = subprocess.Popen([KUBECTL, "--kubeconfig", str(c.kubeconfig), "debug", "-i", "shell", f"--image={image}",
                              "--target=shell", "--container=dbg", "--", "sh"],
                             stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    assert debug.stdin is not None
    debug.stdin.write("sleep 1; ps -o pid,args; echo debugged\n")
    debug.stdin.flush()
    answer = _read_until(debug, "debugged", 60)
    debug.stdin.write("exit\n")
    debug.stdin.close()
    debug.wait(30)
    assert "sleep 3600" in answer, f"the ephemeral container does not see its target's processes: {answer}"
    c.kubectl("delete", "pod", "shell", "--grace-period=1")


def _read_until(proc: subprocess.Popen[str], marker: str, within: float) -> str:
    """The process's output lines until one holds marker; the process is killed if none comes in time."""
    assert proc.stdout is not None
    timer = threading.Timer(within, proc.kill)
    timer.start()
    seen = ""
    try:
        for line in proc.stdout:
            seen += line
            if marker in line:
                return seen
    finally:
        timer.cancel()
    raise AssertionError(f"no {marker!r} within {within} s: {seen!r}")


def test_an_agent_restart_leaves_pods_to_containerd(cri: tuple[Cluster, str]) -> None:
    """The agent dies; containerd keeps the container running, and the new agent (which writes the CNI config and
    takes the bridge again) adopts it and starts new pods with a network."""
    c, image = cri
    c.kubectl("run", "survivor", f"--image={image}", "--", "sh", "-c", "while true; do echo tick; sleep 1; done")
    eventually(lambda: _running(c, "survivor") and _status(c, "survivor").get("ready"), 90, "survivor Running")
    before = _status(c, "survivor")
    agent = c.component_pid("agent")
    assert agent is not None
    os.kill(agent, signal.SIGKILL)
    eventually(lambda: c.component_pid("agent") not in (None, agent), 30, "the supervisor restarts the agent")
    c.kubectl("run", "newcomer", f"--image={image}", "--", "sleep", "3600")
    eventually(lambda: _running(c, "newcomer") and _pod(c, "newcomer")["status"].get("podIP"), 90,
               "a new pod Running with an IP")
    after = _status(c, "survivor")
    assert after["containerID"] == before["containerID"] and after["restartCount"] == before["restartCount"]
    assert "running" in after["state"]
    assert c.kubectl("logs", "--tail=2", "survivor").stdout.split() == ["tick", "tick"]
    c.kubectl("delete", "pod", "survivor", "newcomer", "--grace-period=1")


def test_an_unreachable_endpoint_is_a_clear_startup_error(cri: tuple[Cluster, str], containerd: Containerd,
                                                         tmp_path: Path) -> None:
    """No socket at all, and a socket that is no CRI runtime (containerd's ttrpc one): one line each saying what
    is wrong and what to do, no traceback, exit 1."""
    c, _ = cri
    for endpoint, says in ((f"unix://{tmp_path}/missing.sock", "does not exist"),
                           (f"{containerd.endpoint}.ttrpc", "cannot use the CRI runtime")):
        agent = subprocess.run(
            [sys.executable, "-m", "kubelite", "agent", "--kubeconfig", str(c.kubeconfig), "--node-name", "cri-bad",
             "--data-dir", str(tmp_path / "data"), "--container-runtime-endpoint", endpoint,
             "--cni-conf-dir", str(tmp_path / "net.d")], capture_output=True, text=True, timeout=90)
        assert agent.returncode == 1, agent.stderr
        assert "Traceback" not in agent.stderr, agent.stderr
        error = agent.stderr.strip().splitlines()[-1]
        assert error.startswith("Error: ") and endpoint in error and says in error, error
        assert "--container-runtime-endpoint" in error, error
    assert not (tmp_path / "net.d").exists(), "nothing is written before the runtime answers"
    assert c.kubectl("get", "node", "cri-bad", check=False).returncode != 0, "the node never registered"

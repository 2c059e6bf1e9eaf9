"""kubectl logs, exec and port-forward end to end: the real kubectl, a real `kubelite server`, and this test's own
kubelet server over the runc runtime, registered as a Node with a Pod bound to it.

The node side runs in a thread with its own event loop, so kubectl can be run (blocking) from the test.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import hashlib
import json
import os
import pty
import re
import select
import struct
import subprocess
import termios
import threading
import time
import urllib.request
from collections.abc import Coroutine, Iterator
from pathlib import Path
from typing import Any, TypeVar

import pytest
from kubernetes import client as k8s
from kubernetes import config as k8s_config
from kubernetes.stream import portforward as k8s_portforward
from kubernetes.stream import stream as k8s_stream

from kubelite.kubelet.server import KubeletServer
from tests.e2e.conftest import API_ONLY, KUBECTL, Cluster, free_port, start_server, stop_server
from tests.integration.test_kubelet_server import Pod, node_dir, start_pod, stop_pod

T = TypeVar("T")
KUBECTL_127 = "/usr/lib/google-cloud-sdk/bin/kubectl.1.27"
KUBECTLS = [KUBECTL] + ([KUBECTL_127] if Path(KUBECTL_127).exists() else [])
"""The current kubectl (WebSockets: v5 exec, SPDY tunnelled for port-forward) and 1.27 (legacy SPDY upgrades)."""
NODE = "node-streaming"
CONTAINERS = ["main", "restarted", "long", "reader", "ticker"]


class NodeSide:
    """The runtime, the pod and the kubelet server, on an event loop in a thread of their own."""

    def __init__(self, base: Path, client_ca: Path):
        self.base = base
        self.client_ca = client_ca
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, name="kubelet", daemon=True)
        self.thread.start()
        self.pod: Pod | None = None
        self.server: KubeletServer | None = None

    def call(self, coro: Coroutine[Any, Any, T], timeout: float = 60) -> T:
        """Run a coroutine on the node's loop and wait for its result."""
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    async def start(self) -> None:
        self.pod = await start_pod(self.base)
        self.server = KubeletServer(self.pod.runtime, self.pod.locate, self.client_ca, address="127.0.0.1", port=0,
                                    node_name=NODE)
        await self.server.start()

    async def stop(self) -> None:
        if self.server is not None:
            await self.server.stop()
        if self.pod is not None:
            await stop_pod(self.pod)

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self.call(self.stop())
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    running = start_server(tmp_path_factory.mktemp("streaming"), free_port(), *API_ONLY)
    yield running
    stop_server(running)


def api(cluster: Cluster, method: str, path: str, body: Any = None,
        content_type: str = "application/json") -> dict[str, Any]:
    status, answer = cluster.http(method, path, json.dumps(body) if body is not None else None, content_type)
    assert status < 300, (status, answer)
    return answer


@pytest.fixture(scope="module")
def node(cluster: Cluster) -> Iterator[NodeSide]:
    with node_dir() as base:
        side = NodeSide(base, cluster.data_dir / "server" / "tls" / "client-ca.crt")
        try:
            side.call(side.start())
            assert side.server is not None and side.pod is not None
            api(cluster, "POST", "/api/v1/nodes", {"apiVersion": "v1", "kind": "Node", "metadata": {"name": NODE}})
            api(cluster, "PATCH", f"/api/v1/nodes/{NODE}/status", {"status": {
                "addresses": [{"type": "InternalIP", "address": "127.0.0.1"}, {"type": "Hostname", "address": NODE}],
                "daemonEndpoints": {"kubeletEndpoint": {"Port": side.server.port}}}},
                "application/merge-patch+json")
            for name, node_name in (("web", NODE), ("floating", None)):
                spec: dict[str, Any] = {"containers": [{"name": c, "image": "busybox"} for c in CONTAINERS]}
                if node_name:
                    spec["nodeName"] = node_name
                api(cluster, "POST", "/api/v1/namespaces/default/pods",
                    {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name}, "spec": spec})
            api(cluster, "PATCH", "/api/v1/namespaces/default/pods/web/status", {"status": {
                "phase": "Running", "podIP": "127.0.0.1"}}, "application/merge-patch+json")
            yield side
        finally:
            side.close()


def logs_eventually(cluster: Cluster, kubectl: str, *args: str, expect: str) -> str:
    deadline = time.monotonic() + 15
    while True:
        out = cluster.kubectl("logs", *args, kubectl=kubectl).stdout
        if expect in out or time.monotonic() > deadline:
            return out
        time.sleep(0.2)


@pytest.mark.parametrize("kubectl", KUBECTLS)
def test_logs(cluster: Cluster, node: NodeSide, kubectl: str) -> None:
    out = logs_eventually(cluster, kubectl, "web", "-c", "main", expect="warning")
    assert sorted(out.splitlines()) == ["started", "warning"]
    assert len(cluster.kubectl("logs", "web", "-c", "main", "--tail=1", kubectl=kubectl).stdout.splitlines()) == 1
    stamped = cluster.kubectl("logs", "web", "-c", "main", "--timestamps", kubectl=kubectl).stdout
    assert all(re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{9}Z (started|warning)", line)
               for line in stamped.splitlines()), stamped
    assert cluster.kubectl("logs", "web", "-c", "long", "--limit-bytes=5", kubectl=kubectl).stdout == "xxxxx"
    logs_eventually(cluster, kubectl, "web", "-c", "restarted", expect="second life")
    assert cluster.kubectl("logs", "web", "-c", "restarted", "--previous", kubectl=kubectl).stdout == "first life\n"
    failed = cluster.kubectl("logs", "web", "-c", "nope", kubectl=kubectl, check=False)
    assert failed.returncode != 0 and "container nope is not valid for pod web" in failed.stderr
    failed = cluster.kubectl("logs", "web", "-c", "main", "--previous", kubectl=kubectl, check=False)
    assert 'previous terminated container "main" in pod "web" not found' in failed.stderr


@pytest.mark.parametrize("kubectl", KUBECTLS)
def test_logs_follow_streams_promptly(cluster: Cluster, node: NodeSide, kubectl: str) -> None:
    assert node.pod is not None
    node.call(node.pod.run("ticker", "for i in 1 2 3 4 5; do echo tick $i; sleep 0.4; done"))
    started = time.monotonic()
    follow = subprocess.Popen([kubectl, "--kubeconfig", str(cluster.kubeconfig), "logs", "-f", "web", "-c", "ticker"],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert follow.stdout is not None
        first = follow.stdout.readline()
        first_at = time.monotonic() - started
        rest = follow.stdout.read()
        assert follow.wait(20) == 0, follow.stderr.read() if follow.stderr else ""
    finally:
        follow.kill()
    assert first == "tick 1\n" and rest == "tick 2\ntick 3\ntick 4\ntick 5\n"
    assert first_at < 1.5, f"the first line took {first_at:.1f}s: follow must stream, not wait for the end"


@pytest.mark.parametrize("kubectl", KUBECTLS)
def test_exec_output_exit_code_and_stdin(cluster: Cluster, node: NodeSide, kubectl: str) -> None:
    result = cluster.kubectl("exec", "web", "-c", "main", "--", "sh", "-c", "echo out; echo err >&2; exit 3",
                             kubectl=kubectl, check=False)
    assert (result.returncode, result.stdout) == (3, "out\n")
    assert "err\n" in result.stderr and "command terminated with exit code 3" in result.stderr
    piped = cluster.kubectl("exec", "-i", "web", "-c", "main", "--", "sh", "-c", "cat; echo end",
                            input="first\nsecond\n", kubectl=kubectl, timeout=30)
    assert piped.stdout == "first\nsecond\nend\n"
    missing = cluster.kubectl("exec", "web", "-c", "nope", "--", "true", kubectl=kubectl, check=False)
    assert missing.returncode != 0 and "nope" in missing.stderr


def run_in_terminal(argv: list[str], keys: bytes, rows: int, columns: int, timeout: float = 30) -> tuple[int, bytes]:
    """Run argv on a fresh pseudo-terminal of the given size, typing keys; its exit code and what it showed."""
    master, slave = pty.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", rows, columns, 0, 0))
    proc = subprocess.Popen(argv, stdin=slave, stdout=slave, stderr=slave, start_new_session=True)
    os.close(slave)
    shown = b""
    typed = False
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            ready, _, _ = select.select([master], [], [], 0.2)
            if ready:
                try:
                    chunk = os.read(master, 65536)
                except OSError:
                    break
                if not chunk:
                    break
                shown += chunk
            if not typed and b"# " in shown:
                os.write(master, keys)
                typed = True
            if proc.poll() is not None and not ready:
                break
        return proc.wait(5), shown
    finally:
        proc.kill()
        os.close(master)


@pytest.mark.parametrize("kubectl", KUBECTLS)
def test_exec_with_a_terminal(cluster: Cluster, node: NodeSide, kubectl: str) -> None:
    code, shown = run_in_terminal([kubectl, "--kubeconfig", str(cluster.kubeconfig), "exec", "-it", "web", "-c",
                                   "main", "--", "sh"], b"tty; stty size; exit 6\r", rows=37, columns=111)
    assert b"/dev/pts/" in shown and b"37 111" in shown, shown
    assert code == 6, shown


@pytest.mark.parametrize("kubectl", KUBECTLS)
def test_attach_to_a_running_container(cluster: Cluster, node: NodeSide, kubectl: str) -> None:
    attach = subprocess.Popen([kubectl, "--kubeconfig", str(cluster.kubeconfig), "attach", "-i", "web", "-c",
                               "reader"], stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                              text=True)
    try:
        assert attach.stdin is not None and attach.stdout is not None
        attach.stdin.write("hello\n")
        attach.stdin.flush()
        line = ""
        deadline = time.monotonic() + 15
        while line != "got hello\n" and time.monotonic() < deadline:
            line = attach.stdout.readline()
        assert line == "got hello\n"
    finally:
        attach.kill()
        attach.wait(10)


@pytest.mark.parametrize("kubectl", KUBECTLS)
def test_copy_files_in_and_out(cluster: Cluster, node: NodeSide, kubectl: str, tmp_path: Path) -> None:
    source = tmp_path / "source.bin"
    source.write_bytes(os.urandom(300_000))
    cluster.kubectl("cp", str(source), "web:/tmp/copied.bin", "-c", "main", kubectl=kubectl)
    digest = cluster.kubectl("exec", "web", "-c", "main", "--", "sha256sum", "/tmp/copied.bin", kubectl=kubectl)
    assert digest.stdout.split()[0] == hashlib.sha256(source.read_bytes()).hexdigest()
    cluster.kubectl("cp", "web:/tmp/copied.bin", str(tmp_path / "back.bin"), "-c", "main", kubectl=kubectl)
    assert (tmp_path / "back.bin").read_bytes() == source.read_bytes()


@pytest.mark.parametrize("kubectl", KUBECTLS)
def test_port_forward_to_the_pod(cluster: Cluster, node: NodeSide, kubectl: str) -> None:
    cluster.kubectl("exec", "web", "-c", "main", "--", "sh", "-c",
                    "[ -f /www/big ] || head -c 4000000 /dev/urandom > /www/big", kubectl=kubectl)
    digest = cluster.kubectl("exec", "web", "-c", "main", "--", "sha256sum", "/www/big", kubectl=kubectl)
    forward = subprocess.Popen([kubectl, "--kubeconfig", str(cluster.kubeconfig), "port-forward", "pod/web",
                                ":8080"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert forward.stdout is not None
        line = forward.stdout.readline()
        match = re.search(r"127\.0\.0\.1:(\d+) -> 8080", line)
        assert match, (line, forward.stderr.read() if forward.poll() is not None and forward.stderr else "")
        for _ in range(3):
            with urllib.request.urlopen(f"http://127.0.0.1:{match[1]}/index.html", timeout=10) as answer:
                assert answer.read() == b"hello-from-pod\n"
        with urllib.request.urlopen(f"http://127.0.0.1:{match[1]}/big", timeout=30) as answer:
            assert hashlib.sha256(answer.read()).hexdigest() == digest.stdout.split()[0]
        assert forward.poll() is None
    finally:
        forward.terminate()
        forward.wait(10)


def test_python_client_exec_and_port_forward(cluster: Cluster, node: NodeSide) -> None:
    configuration = k8s.Configuration()
    k8s_config.load_kube_config(str(cluster.kubeconfig), client_configuration=configuration)
    core = k8s.CoreV1Api(k8s.ApiClient(configuration))
    out = k8s_stream(core.connect_get_namespaced_pod_exec, "web", "default", container="main",
                     command=["sh", "-c", "echo from-python"], stderr=True, stdin=False, stdout=True, tty=False)
    assert out == "from-python\n"
    forwarded = k8s_portforward(core.connect_get_namespaced_pod_portforward, "web", "default", ports="8080")
    sock = forwarded.socket(8080)
    sock.setblocking(True)
    sock.sendall(b"GET /index.html HTTP/1.0\r\n\r\n")
    received = b""
    while chunk := sock.recv(4096):
        received += chunk
    sock.close()
    forwarded.close()
    assert received.startswith(b"HTTP/1.") and received.endswith(b"hello-from-pod\n")


def test_api_checks_before_reaching_the_kubelet(cluster: Cluster, node: NodeSide) -> None:
    status, answer = cluster.http("GET", "/api/v1/namespaces/default/pods/web/log")
    assert status == 400 and answer["reason"] == "BadRequest"
    assert answer["message"] == (f"a container name must be specified for pod web, choose one of: "
                                 f"[{' '.join(CONTAINERS)}]")
    status, answer = cluster.http("GET", "/api/v1/namespaces/default/pods/web/log?container=main&tailLines=-1")
    assert (status, answer["reason"], answer["details"]["kind"]) == (422, "Invalid", "PodLogOptions")
    status, answer = cluster.http("GET", "/api/v1/namespaces/default/pods/web/log?container=main&follow=perhaps")
    assert (status, answer["reason"]) == (400, "BadRequest")
    status, answer = cluster.http("GET", "/api/v1/namespaces/default/pods/floating/log?container=main")
    assert (status, answer) == (200, {"text": ""})
    status, answer = cluster.http("POST", "/api/v1/namespaces/default/pods/floating/exec?container=main&command=ls")
    assert (status, answer["message"]) == (400, "pod floating does not have a host assigned")
    status, answer = cluster.http("POST", "/api/v1/namespaces/default/pods/web/exec?container=main&command=ls")
    assert (status, answer["message"]) == (400, "Upgrade request required")
    status, answer = cluster.http("GET", "/api/v1/namespaces/default/pods/ghost/log")
    assert status == 404
    status, answer = cluster.http("GET", "/api/v1/namespaces/default/pods/web/log?container=ticker&tailLines=1")
    assert status == 200
    resources = {r["name"]: r for r in cluster.http("GET", "/api/v1")[1]["resources"]}
    assert resources["pods/log"]["verbs"] == ["get"] and resources["pods/log"]["kind"] == "Pod"
    for sub, kind in (("exec", "PodExecOptions"), ("attach", "PodAttachOptions"),
                      ("portforward", "PodPortForwardOptions")):
        assert (resources[f"pods/{sub}"]["kind"], resources[f"pods/{sub}"]["verbs"]) == (kind, ["create", "get"])

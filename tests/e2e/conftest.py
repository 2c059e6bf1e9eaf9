"""A real kubelite server on loopback for end-to-end tests with the real kubectl."""

from __future__ import annotations

import http.client
import json
import os
import random
import signal
import socket
import ssl
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

KUBECTL = os.environ.get("KUBECTL", "/usr/bin/kubectl")
API_ONLY = ("--disable-scheduler", "--disable-controller-manager", "--disable-admission-plugins", "ServiceAccount")
"""start_server arguments for tests that run the component under test themselves, alone (without the
controller-manager no ServiceAccount is made, so pods are admitted without one, as upstream's integration tests do)."""


def free_port() -> int:
    """A port free for both TCP and UDP on loopback, below the kernel's ephemeral range (ip_local_port_range
    starts at 32768) so that no outgoing connection is given it between this check and the server's bind."""
    while True:
        port = random.randrange(20000, 32768)
        with socket.socket() as tcp, socket.socket(type=socket.SOCK_DGRAM) as udp:
            try:
                tcp.bind(("127.0.0.1", port))
                udp.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port


@dataclass
class Cluster:
    """A running `kubelite server` and how to reach it."""

    data_dir: Path
    kubeconfig: Path
    port: int
    proc: subprocess.Popen[bytes]
    log: Path

    def kubectl(self, *args: str, input: str | None = None, check: bool = True, kubectl: str = KUBECTL,
                env: dict[str, str] | None = None, timeout: float = 60) -> subprocess.CompletedProcess[str]:
        """Run kubectl against this cluster; with check, a failure shows kubectl's own output."""
        result = subprocess.run([kubectl, "--kubeconfig", str(self.kubeconfig), *args], input=input,
                                capture_output=True, text=True, timeout=timeout,
                                env={**os.environ, **(env or {})})
        if check and result.returncode != 0:
            raise AssertionError(f"kubectl {' '.join(args)} failed ({result.returncode}):\n"
                                 f"{result.stdout}\n{result.stderr}")
        return result

    def component_pid(self, name: str) -> int | None:
        """The pid of the supervised `kubelite NAME` child of the server process, if one runs."""
        for entry in Path("/proc").iterdir():
            if not entry.name.isdigit():
                continue
            try:
                argv = (entry / "cmdline").read_bytes().split(b"\0")
                ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            if ppid == self.proc.pid and name.encode() in argv:
                return int(entry.name)
        return None

    def get_json(self, *args: str) -> dict:
        return json.loads(self.kubectl("get", *args, "-o", "json").stdout)

    def ssl_context(self, client_cert: bool = True) -> ssl.SSLContext:
        tls = self.data_dir / "server" / "tls"
        ctx = ssl.create_default_context(cafile=str(tls / "server-ca.crt"))
        if client_cert:
            ctx.load_cert_chain(tls / "client-admin.crt", tls / "client-admin.key")
        return ctx

    def http(self, method: str, path: str, body: bytes | str | None = None, content_type: str = "application/json",
             client_cert: bool = True, headers: dict[str, str] | None = None) -> tuple[int, dict]:
        """One raw HTTPS request as the admin (or anonymous); returns (status, decoded JSON body)."""
        conn = http.client.HTTPSConnection("127.0.0.1", self.port, context=self.ssl_context(client_cert),
                                           timeout=30)
        try:
            conn.request(method, path, body=body, headers={"Content-Type": content_type, **(headers or {})})
            response = conn.getresponse()
            raw = response.read()
        finally:
            conn.close()
        if response.getheader("Content-Type", "").startswith("application/json"):
            return response.status, json.loads(raw)
        return response.status, {"text": raw.decode()}


def start_server(data_dir: Path, port: int, *extra_args: str, agent: str = "") -> Cluster:
    """Start `kubelite server` (plus extra_args) and wait until the API answers (and, with the controller-manager,
    until the default namespace has its ServiceAccount); without its local agent unless `agent` names the node it
    should register."""
    kubeconfig = data_dir / "kubeconfig.yaml"
    log = data_dir / "server.log"
    node = ["--node-name", agent] if agent else ["--disable-agent"]
    proc = subprocess.Popen(
        [sys.executable, "-m", "kubelite", "server", *node, "--data-dir", str(data_dir),
         "--bind-address", "127.0.0.1", "--https-port", str(port), "--write-kubeconfig", str(kubeconfig),
         *extra_args],
        stdout=log.open("ab"), stderr=subprocess.STDOUT, start_new_session=True)
    cluster = Cluster(data_dir, kubeconfig, port, proc, log)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"kubelite server exited: {log.read_text()[-3000:]}")
        if kubeconfig.exists():
            ready = cluster.kubectl("get", "--raw", "/readyz", check=False, timeout=10)
            waited_for = ("serviceaccount" if "--disable-controller-manager" not in extra_args else "namespace",
                          "default")
            if ready.returncode == 0 and cluster.kubectl("get", *waited_for, check=False).returncode == 0:
                return cluster
        time.sleep(0.3)
    stop_server(cluster)
    raise RuntimeError(f"kubelite server not ready in 60 s: {log.read_text()[-3000:]}")


def stop_server(cluster: Cluster, sig: int = signal.SIGTERM) -> None:
    if cluster.proc.poll() is None:
        os.killpg(cluster.proc.pid, sig)
        try:
            cluster.proc.wait(20)
        except subprocess.TimeoutExpired:
            os.killpg(cluster.proc.pid, signal.SIGKILL)
            cluster.proc.wait()


@pytest.fixture(scope="session")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    running = start_server(tmp_path_factory.mktemp("kubelite"), free_port())
    yield running
    stop_server(running)


def token_kubeconfig(cluster: Cluster, path: Path, token: str) -> Path:
    """A kubeconfig with the cluster's server and CA and only a bearer token (no client certificate)."""
    admin = json.loads(cluster.kubectl("config", "view", "--raw", "-o", "json").stdout)
    config = {"apiVersion": "v1", "kind": "Config", "clusters": admin["clusters"], "current-context": "sa",
              "contexts": [{"name": "sa", "context": {"cluster": admin["clusters"][0]["name"], "user": "sa"}}],
              "users": [{"name": "sa", "user": {"token": token}}]}
    path.write_text(json.dumps(config))
    return path

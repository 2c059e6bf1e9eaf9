"""Real containers with the real kubectl: `kubelite server` with its local agent (runc, overlayfs, the pod network),
images built from busybox-static and pushed to a local docker-registry."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import time
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web

from tests.e2e.conftest import KUBECTL, Cluster, free_port, start_server, stop_server, token_kubeconfig
from tests.images import busybox_image, push
from tests.registry import start_registry, stop_registry

NODE = "node-e2e"


def eventually(check: Callable[[], Any], within: float = 60, what: str = "") -> Any:
    deadline = time.monotonic() + within
    last: Any = None
    while time.monotonic() < deadline:
        try:
            last = check()
        except (AssertionError, KeyError, IndexError, OSError, json.JSONDecodeError) as exc:
            last = exc
        else:
            if last:
                return last
        time.sleep(0.5)
    raise AssertionError(f"not within {within} s: {what} (last: {last!r})")


@pytest.fixture(scope="module")
def node(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Cluster, str]]:
    """A one-node cluster with a real agent, and the busybox image reference it can pull."""
    work = tmp_path_factory.mktemp("kubelet-e2e")
    registry = start_registry(work / "registry")
    push(registry.url, "busybox", "1.36", busybox_image())
    cluster = start_server(work, free_port(), agent=NODE)
    try:
        eventually(lambda: _ready(cluster), 60, "the node Ready")
        yield cluster, f"{registry.url.removeprefix('http://')}/busybox:1.36"
    finally:
        cluster.kubectl("delete", "pods", "--all", "--grace-period=1", "--wait=true", "--timeout=60s", check=False)
        stop_server(cluster)
        stop_registry(registry)


def _ready(c: Cluster) -> bool:
    node = c.get_json("node", NODE)
    return any(x["type"] == "Ready" and x["status"] == "True" for x in node["status"]["conditions"])


def _pod(c: Cluster, name: str) -> dict:
    return c.get_json("pod", name)


def _status(c: Cluster, name: str, index: int = 0) -> dict:
    return (_pod(c, name)["status"].get("containerStatuses") or [{}])[index]


def _apply(c: Cluster, manifest: dict) -> None:
    c.kubectl("apply", "-f", "-", input=json.dumps(manifest))


def _pod_manifest(name: str, image: str, script: str, **spec: Any) -> dict:
    container = {"name": "c", "image": image, "command": ["sh", "-c", script], **spec.pop("container", {})}
    return {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name},
            "spec": {"containers": [container], "terminationGracePeriodSeconds": 5, **spec}}


def _running(c: Cluster, name: str) -> bool:
    return _pod(c, name)["status"].get("phase") == "Running"


def test_pod_runs_logs_and_exec(node: tuple[Cluster, str]) -> None:
    c, image = node
    c.kubectl("run", "talker", f"--image={image}", "--", "sh", "-c",
              "i=0; while true; do echo line $i; i=$((i+1)); sleep 0.2; done")
    eventually(lambda: _running(c, "talker"), 60, "talker Running")
    eventually(lambda: "line 3" in c.kubectl("logs", "talker").stdout, 30, "kubectl logs shows the output")
    follow = subprocess.Popen([KUBECTL, "--kubeconfig", str(c.kubeconfig), "logs", "-f", "--tail=1", "talker"],
                              stdout=subprocess.PIPE, text=True)
    try:
        assert follow.stdout is not None
        seen = [follow.stdout.readline() for _ in range(5)]
    finally:
        follow.kill()
        follow.wait()
    numbers = [int(line.split()[1]) for line in seen]
    assert numbers == sorted(numbers) and numbers[-1] - numbers[0] == 4, seen
    assert c.kubectl("exec", "talker", "--", "hostname").stdout.strip() == "talker"
    resolv = c.kubectl("exec", "talker", "--", "cat", "/etc/resolv.conf").stdout
    assert "nameserver 10.43.0.10" in resolv and "search default.svc.cluster.local svc.cluster.local" in resolv
    ps = c.kubectl("exec", "talker", "--", "ps", "-o", "pid,comm").stdout.splitlines()[1:]
    assert ps and ps[0].split()[0] == "1" and len(ps) < 6, ps
    assert not any("kubelite" in line or "python" in line for line in ps)
    interfaces = c.kubectl("exec", "talker", "--", "cat", "/proc/net/dev").stdout
    assert {line.split(":")[0].strip() for line in interfaces.splitlines()[2:]} == {"lo", "eth0"}
    echoed = c.kubectl("exec", "-i", "talker", "--", "cat", input="through stdin\n").stdout
    assert echoed == "through stdin\n"
    failed = c.kubectl("exec", "talker", "--", "sh", "-c", "exit 7", check=False)
    assert failed.returncode == 7
    c.kubectl("exec", "talker", "--", "touch", "/written-inside")
    assert not Path("/written-inside").exists()


def test_port_forward_reaches_a_pod(node: tuple[Cluster, str]) -> None:
    c, image = node
    _apply(c, _pod_manifest("web", image, "mkdir -p /www && echo hello from the pod > /www/index.html && "
                                          "exec httpd -f -p 8080 -h /www"))
    eventually(lambda: _running(c, "web"), 60, "web Running")
    port = free_port()
    forward = subprocess.Popen([KUBECTL, "--kubeconfig", str(c.kubeconfig), "port-forward", "pod/web",
                                f"{port}:8080"], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        body = eventually(lambda: urllib.request.urlopen(f"http://127.0.0.1:{port}/index.html", timeout=5).read(),
                          30, "an answer through port-forward")
        assert body == b"hello from the pod\n"
    finally:
        forward.kill()
        forward.wait()


PROXIED_SCRIPT = (
    "mkdir -p /www/sub /www/cgi-bin && echo hello through the proxy > /www/sub/index.html && "
    "printf '#!/bin/sh\\necho Content-Type: text/plain\\necho\\necho \"$REQUEST_METHOD [$HTTP_AUTHORIZATION] "
    "$QUERY_STRING\"\\n' > /www/cgi-bin/env && chmod +x /www/cgi-bin/env && exec httpd -f -p 8080 -h /www")


def test_proxy_subresources_reach_the_kubelet_pods_and_services(node: tuple[Cluster, str]) -> None:
    c, image = node
    pod = _pod_manifest("proxied", image, PROXIED_SCRIPT, container={"ports": [{"containerPort": 8080,
                                                                                "name": "http"}]})
    pod["metadata"]["labels"] = {"app": "proxied"}
    _apply(c, pod)
    _apply(c, {"apiVersion": "v1", "kind": "Service", "metadata": {"name": "proxied"},
               "spec": {"selector": {"app": "proxied"}, "ports": [{"name": "web", "port": 80, "targetPort": "http"}]}})
    eventually(lambda: _running(c, "proxied"), 60, "proxied Running")

    def raw(path: str) -> str:
        return c.kubectl("get", "--raw", path).stdout

    assert raw(f"/api/v1/nodes/{NODE}/proxy/healthz") == "ok"
    summary = eventually(lambda: [p for p in json.loads(raw(f"/api/v1/nodes/{NODE}/proxy/stats/summary"))["pods"]
                                  if p["podRef"]["name"] == "proxied"], 30, "the pod in the node's stats summary")
    assert summary[0]["podRef"]["namespace"] == "default"
    assert "proxied" in raw(f"/api/v1/nodes/{NODE}:10250/proxy/pods")
    metrics = raw(f"/api/v1/nodes/{NODE}/proxy/metrics/resource")
    assert 'container_cpu_usage_seconds_total{container="c",namespace="default",pod="proxied"} ' in metrics
    page = "hello through the proxy\n"
    pods = "/api/v1/namespaces/default/pods"
    assert raw(f"{pods}/proxied/proxy/sub/index.html") == page  # the first declared port
    assert raw(f"{pods}/http:proxied:8080/proxy/sub/index.html") == page
    services = "/api/v1/namespaces/default/services"
    eventually(lambda: raw(f"{services}/proxied:web/proxy/sub/index.html") == page, 30, "the service's endpoint")
    assert raw(f"{services}/proxied:80/proxy/sub/index.html") == page  # a port number names the service port
    assert raw(f"{pods}/proxied/proxy/cgi-bin/env?a=1&b=2").strip() == "GET [] a=1&b=2"

    token = c.kubectl("create", "token", "default").stdout.strip()
    code, answer = c.http("GET", f"{pods}/proxied/proxy/cgi-bin/env", client_cert=False,
                          headers={"Authorization": f"Bearer {token}"})
    assert code == 200 and answer["text"].strip() == "GET []", answer  # the caller's credentials stay here

    port = free_port()
    proxy = subprocess.Popen([KUBECTL, "--kubeconfig", str(c.kubeconfig), "proxy", f"--port={port}"],
                             stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        body = eventually(lambda: urllib.request.urlopen(
            f"http://127.0.0.1:{port}{services}/proxied:web/proxy/sub/index.html", timeout=5).read(),
            30, "an answer through kubectl proxy")
        assert body == page.encode()
    finally:
        proxy.kill()
        proxy.wait()

    for path, message in (("/api/v1/nodes/nowhere/proxy/healthz", 'nodes "nowhere" not found'),
                          (f"{pods}/proxied:9/proxy/", "error trying to reach service"),
                          (f"{services}/proxied:81/proxy/", 'no service port 81 found for service "proxied"'),
                          (f"{pods}/ftp:proxied:21/proxy/", 'invalid pod request "ftp:proxied:21"')):
        failed = c.kubectl("get", "--raw", path, check=False)
        assert failed.returncode != 0 and message in failed.stderr, (path, failed.stderr)


def test_oom_kill_crash_loop_and_bad_image(node: tuple[Cluster, str]) -> None:
    c, image = node
    _apply(c, _pod_manifest("hog", image, "x=$(head -c 200000000 /dev/zero | tr '\\0' a); echo done",
                            container={"resources": {"limits": {"memory": "40Mi"}}}))
    c.kubectl("run", "crasher", f"--image={image}", "--", "sh", "-c", "echo about to fail; exit 3")
    c.kubectl("run", "missing", f"--image={image.rsplit(':', 1)[0]}:no-such-tag")
    eventually(lambda: _status(c, "hog").get("lastState", {}).get("terminated", {}).get("reason") == "OOMKilled",
               60, "OOMKilled")
    assert _status(c, "hog")["lastState"]["terminated"]["exitCode"] == 137
    eventually(lambda: _status(c, "hog")["restartCount"] >= 1, 60, "the OOM-killed container restarted")

    eventually(lambda: _status(c, "crasher").get("state", {}).get("waiting", {}).get("reason") == "CrashLoopBackOff",
               60, "CrashLoopBackOff")
    eventually(lambda: _status(c, "crasher")["restartCount"] >= 2, 60, "restarts after the first back-off")
    terminated = _status(c, "crasher")["lastState"]["terminated"]
    assert terminated["exitCode"] == 3 and terminated["reason"] == "Error"
    eventually(lambda: "Back-off restarting failed container" in c.kubectl(
        "get", "events", "--field-selector", "involvedObject.name=crasher,reason=BackOff").stdout, 30,
               "a BackOff event")

    eventually(lambda: _status(c, "missing").get("state", {}).get("waiting", {}).get("reason")
               in ("ErrImagePull", "ImagePullBackOff"), 60, "a pull error")
    eventually(lambda: _status(c, "missing")["state"]["waiting"]["reason"] == "ImagePullBackOff", 60,
               "ImagePullBackOff")
    eventually(lambda: (lambda d: "Failed to pull image" in d and "not found" in d)(
        c.kubectl("describe", "pod", "missing").stdout), 30, "a Failed event naming the registry's error")
    c.kubectl("delete", "pod", "hog", "crasher", "missing", "--grace-period=1")


def test_probes_restart_and_gate_readiness(node: tuple[Cluster, str]) -> None:
    c, image = node
    sick = _pod_manifest("sick", image, "touch /tmp/healthy; sleep 4; rm /tmp/healthy; sleep 3600",
                         container={"livenessProbe": {"exec": {"command": ["test", "-e", "/tmp/healthy"]},
                                                      "periodSeconds": 1, "failureThreshold": 2}})
    sick["spec"]["containers"].append({**sick["spec"]["containers"][0], "name": "d"})  # both fail at once
    _apply(c, sick)
    _apply(c, _pod_manifest("slow", image, "sleep 4; touch /tmp/ready; sleep 3600",
                            container={"readinessProbe": {"exec": {"command": ["test", "-e", "/tmp/ready"]},
                                                          "periodSeconds": 1}}))
    eventually(lambda: _running(c, "slow"), 60, "slow Running")
    assert _status(c, "slow")["ready"] is False
    eventually(lambda: _status(c, "slow")["ready"] is True, 30, "Ready once the probe passes")
    ready = next(x for x in _pod(c, "slow")["status"]["conditions"] if x["type"] == "Ready")
    assert ready["status"] == "True"
    eventually(lambda: _status(c, "sick")["restartCount"] >= 1 and _status(c, "sick", 1)["restartCount"] >= 1, 60,
               "a liveness restart of both containers")
    eventually(lambda: "Liveness probe failed" in c.kubectl("describe", "pod", "sick").stdout, 30,
               "an Unhealthy event")
    c.kubectl("delete", "pod", "sick", "slow", "--grace-period=1")


def test_grpc_probes_ask_the_pods_health_service(node: tuple[Cluster, str]) -> None:
    """A hostNetwork pod's gRPC probes reach the node's address, where this test serves grpc.health.v1 with
    grpcio: NOT_SERVING keeps it unready, SERVING makes it Ready, a failing liveness service restarts it."""
    from concurrent import futures

    import grpc
    from grpc_health.v1 import health, health_pb2, health_pb2_grpc

    c, image = node
    status = health_pb2.HealthCheckResponse
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=2))
    servicer = health.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(servicer, server)
    port = server.add_insecure_port("0.0.0.0:0")
    servicer.set("app", status.NOT_SERVING)
    servicer.set("live", status.SERVING)
    server.start()
    try:
        _apply(c, _pod_manifest("grpc-probed", image, "sleep 3600", hostNetwork=True, container={
            "readinessProbe": {"grpc": {"port": port, "service": "app"}, "periodSeconds": 1},
            "livenessProbe": {"grpc": {"port": port, "service": "live"}, "periodSeconds": 1,
                              "failureThreshold": 2}}))
        eventually(lambda: _running(c, "grpc-probed"), 60, "grpc-probed Running")
        eventually(lambda: 'Readiness probe failed: service unhealthy (responded with "NOT_SERVING")'
                   in c.kubectl("describe", "pod", "grpc-probed").stdout, 30, "an Unhealthy event")
        assert _status(c, "grpc-probed")["ready"] is False
        servicer.set("app", status.SERVING)
        eventually(lambda: _status(c, "grpc-probed")["ready"] is True, 30, "Ready once the service serves")
        assert _status(c, "grpc-probed")["restartCount"] == 0
        servicer.set("live", status.NOT_SERVING)
        eventually(lambda: _status(c, "grpc-probed")["restartCount"] >= 1, 60, "a liveness restart")
    finally:
        c.kubectl("delete", "pod", "grpc-probed", "--grace-period=1", check=False)
        server.stop(None)


def test_seccomp_profiles_confine_containers(node: tuple[Cluster, str]) -> None:
    """RuntimeDefault filters the container (new user namespaces refused), Unconfined does not, a Localhost profile
    from the node's seccomp dir applies its own rules, and a missing one is a CreateContainerError."""
    c, image = node
    probe = ("grep Seccomp: /proc/self/status; if unshare -U true; then echo userns-allowed; "
             "else echo userns-refused; fi; mkdir /tmp/made && echo mkdir-allowed; sleep 3600")
    profiles = c.data_dir / "agent" / "seccomp"
    profiles.mkdir(parents=True, exist_ok=True)
    (profiles / "no-mkdir.json").write_text(json.dumps({"defaultAction": "SCMP_ACT_ALLOW", "syscalls": [
        {"names": ["mkdir", "mkdirat"], "action": "SCMP_ACT_ERRNO", "errnoRet": 13}]}))
    cases = {"confined": {"type": "RuntimeDefault"}, "unconfined": {"type": "Unconfined"},
             "custom": {"type": "Localhost", "localhostProfile": "no-mkdir.json"},
             "lost": {"type": "Localhost", "localhostProfile": "missing.json"}}
    for name, profile in cases.items():
        _apply(c, _pod_manifest(name, image, probe, securityContext={"seccompProfile": profile}))
    for name in ("confined", "unconfined", "custom"):
        eventually(lambda n=name: "mkdir" in c.kubectl("logs", n).stdout or "Permission denied" in c.kubectl(
            "logs", n).stdout, 60, f"{name} ran its checks")
    confined = c.kubectl("logs", "confined").stdout
    assert "Seccomp:\t2" in confined and "userns-refused" in confined and "mkdir-allowed" in confined
    unconfined = c.kubectl("logs", "unconfined").stdout
    assert "Seccomp:\t0" in unconfined and "userns-allowed" in unconfined
    custom = c.kubectl("logs", "custom").stdout
    assert "Seccomp:\t2" in custom and "mkdir-allowed" not in custom and "Permission denied" in custom
    waiting = eventually(lambda: _status(c, "lost").get("state", {}).get("waiting", {}).get("reason") ==
                         "CreateContainerError" and _status(c, "lost")["state"]["waiting"], 60,
                         "a missing profile refused")
    assert "missing.json" in waiting["message"]
    c.kubectl("delete", "pod", *cases, "--grace-period=1")


SERVICE_ACCOUNT_DIR = "/var/run/secrets/kubernetes.io/serviceaccount"


def test_pods_get_service_account_credentials_as_upstream_mounts_them(node: tuple[Cluster, str],
                                                                      tmp_path: Path) -> None:
    c, image = node
    c.kubectl("run", "incluster", f"--image={image}", "--", "sleep", "3600")
    _apply(c, _pod_manifest("optout", image, "sleep 3600", automountServiceAccountToken=False))
    eventually(lambda: _running(c, "incluster") and _running(c, "optout"), 60, "both pods Running")
    pod = _pod(c, "incluster")
    assert pod["spec"]["serviceAccountName"] == "default"
    (volume,) = [v for v in pod["spec"]["volumes"] if v["name"].startswith("kube-api-access-")]
    assert volume["projected"]["sources"][0]["serviceAccountToken"] == {"expirationSeconds": 3607, "path": "token"}
    assert {"name": volume["name"], "readOnly": True, "mountPath": SERVICE_ACCOUNT_DIR} in \
        pod["spec"]["containers"][0]["volumeMounts"]
    token = c.kubectl("exec", "incluster", "--", "cat", f"{SERVICE_ACCOUNT_DIR}/token").stdout.strip()
    assert c.kubectl("exec", "incluster", "--", "cat", f"{SERVICE_ACCOUNT_DIR}/namespace").stdout == "default"
    ca = c.kubectl("exec", "incluster", "--", "cat", f"{SERVICE_ACCOUNT_DIR}/ca.crt").stdout
    assert ca.startswith("-----BEGIN CERTIFICATE-----")
    assert c.kubectl("exec", "incluster", "--", "stat", "-f", "-c", "%T", SERVICE_ACCOUNT_DIR).stdout.strip() == \
        "tmpfs", "the token is kept in memory on the node, as upstream keeps it"
    review = json.loads(c.kubectl("--kubeconfig", str(token_kubeconfig(c, tmp_path / "pod.kubeconfig", token)),
                                  "auth", "whoami", "-o", "json").stdout)["status"]["userInfo"]
    assert review["username"] == "system:serviceaccount:default:default", review
    assert review["extra"]["authentication.kubernetes.io/pod-name"] == ["incluster"], review
    assert review["extra"]["authentication.kubernetes.io/pod-uid"] == [pod["metadata"]["uid"]], review

    assert not [v for v in _pod(c, "optout")["spec"].get("volumes") or [] if v["name"].startswith("kube-api-access")]
    assert c.kubectl("exec", "optout", "--", "ls", SERVICE_ACCOUNT_DIR, check=False).returncode != 0
    c.kubectl("delete", "pod", "incluster", "optout", "--grace-period=1")


def test_init_containers_volumes_configmaps_and_secrets(node: tuple[Cluster, str]) -> None:
    c, image = node
    c.kubectl("create", "configmap", "settings", "--from-literal=greeting=hello", "--from-literal=file.txt=from a file")
    c.kubectl("create", "secret", "generic", "creds", "--from-literal=password=s3cret")
    mount = [{"name": "shared", "mountPath": "/shared"}]
    manifest = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "assembled"}, "spec": {
        "initContainers": [
            {"name": "first", "image": image, "command": ["sh", "-c", "echo first >> /shared/order"],
             "volumeMounts": mount},
            {"name": "second", "image": image, "command": ["sh", "-c", "echo second >> /shared/order"],
             "volumeMounts": mount}],
        "containers": [
            {"name": "writer", "image": image, "volumeMounts": mount,
             "command": ["sh", "-c", "echo from the writer > /shared/note; sleep 3600"]},
            {"name": "reader", "image": image,
             "command": ["sh", "-c", "while [ ! -e /shared/note ]; do sleep 0.2; done; cat /shared/order /shared/note"
                                     " /config/file.txt; echo; cat /secret/password; echo; "
                                     "echo env $GREETING $PASSWORD; sleep 3600"],
             "env": [{"name": "GREETING", "valueFrom": {"configMapKeyRef": {"name": "settings", "key": "greeting"}}},
                     {"name": "PASSWORD", "valueFrom": {"secretKeyRef": {"name": "creds", "key": "password"}}}],
             "volumeMounts": [*mount, {"name": "config", "mountPath": "/config"},
                              {"name": "secret", "mountPath": "/secret"}]}],
        "volumes": [{"name": "shared", "emptyDir": {}}, {"name": "config", "configMap": {"name": "settings"}},
                    {"name": "secret", "secret": {"secretName": "creds"}}]}}
    _apply(c, manifest)
    eventually(lambda: _running(c, "assembled"), 60, "assembled Running")
    out = eventually(lambda: (lambda text: text if "env" in text else "")(
        c.kubectl("logs", "assembled", "-c", "reader").stdout), 30, "the reader's output")
    assert out.splitlines() == ["first", "second", "from the writer", "from a file", "s3cret", "env hello s3cret"]
    inits = _pod(c, "assembled")["status"]["initContainerStatuses"]
    assert [s["state"]["terminated"]["reason"] for s in inits] == ["Completed", "Completed"]
    c.kubectl("delete", "pod", "assembled", "--grace-period=1")


def test_sigterm_is_trapped_within_the_grace_period(node: tuple[Cluster, str]) -> None:
    c, image = node
    _apply(c, _pod_manifest("graceful", image, "trap 'echo shutting down cleanly; exit 0' TERM; echo up; "
                                               "while true; do sleep 0.2; done", terminationGracePeriodSeconds=20))
    eventually(lambda: "up" in c.kubectl("logs", "graceful").stdout, 60, "graceful up")
    follow = subprocess.Popen([KUBECTL, "--kubeconfig", str(c.kubeconfig), "logs", "-f", "graceful"],
                              stdout=subprocess.PIPE, text=True)
    time.sleep(1)
    started = time.monotonic()
    c.kubectl("delete", "pod", "graceful", "--wait=true", "--timeout=30s")
    took = time.monotonic() - started
    out, _ = follow.communicate(timeout=20)
    assert "shutting down cleanly" in out
    assert took < 15, f"a trapped SIGTERM should end the pod well within its 20 s grace period, took {took:.1f}s"


def test_pods_waiting_out_their_grace_period_hold_up_no_other_pod(node: tuple[Cluster, str]) -> None:
    """More pods than the agent has workers, each ignoring SIGTERM for 60 s, are deleted; a new pod still starts at
    once, the old ones are not killed before their grace period ends, and a delete with a shorter one ends them
    sooner."""
    c, image = node
    c.kubectl("create", "deployment", "stubborn", f"--image={image}", "--replicas=12", "--", "sleep", "3600")
    c.kubectl("patch", "deployment", "stubborn", "-p",
              '{"spec":{"template":{"spec":{"terminationGracePeriodSeconds":60}}}}')
    eventually(lambda: _phases(c, "app=stubborn") == ["Running"] * 12, 120, "12 stubborn replicas Running")
    c.kubectl("scale", "deployment", "stubborn", "--replicas=0")
    eventually(lambda: all(p["metadata"].get("deletionTimestamp")
                           for p in c.get_json("pods", "-l", "app=stubborn")["items"]), 30, "all stubborn pods deleted")
    started = time.monotonic()
    c.kubectl("run", "prompt", f"--image={image}", "--", "sleep", "3600")
    eventually(lambda: _running(c, "prompt"), 30, "the new pod Running")
    took = time.monotonic() - started
    assert took < 20, f"the new pod waited {took:.1f}s for pods in their grace period"
    assert _phases(c, "app=stubborn") == ["Running"] * 12, "the stubborn pods were killed before their grace period"
    started = time.monotonic()
    c.kubectl("delete", "pods", "-l", "app=stubborn", "--grace-period=2", "--wait=true", "--timeout=30s")
    assert time.monotonic() - started < 20, "a shorter grace period did not end the pods sooner"
    c.kubectl("delete", "deployment", "stubborn")
    c.kubectl("delete", "pod", "prompt", "--grace-period=1")


def test_websockets_pass_through_the_proxy_subresource(node: tuple[Cluster, str]) -> None:
    c, _ = node
    address = next(a["address"] for a in c.get_json("node", NODE)["status"]["addresses"] if a["type"] == "InternalIP")

    async def talk() -> tuple[str, str | None]:
        async def echo(request: web.Request) -> web.WebSocketResponse:
            ws = web.WebSocketResponse(protocols=("chat",))
            await ws.prepare(request)
            async for message in ws:
                await ws.send_str(f"{request.path_qs} {message.data}")
            return ws

        app = web.Application()
        app.router.add_get("/{tail:.*}", echo)
        runner = web.AppRunner(app)
        await runner.setup()
        port = free_port()
        await web.TCPSite(runner, address, port).start()
        try:
            url = f"wss://127.0.0.1:{c.port}/api/v1/nodes/{NODE}:{port}/proxy/talk?x=1"
            async with aiohttp.ClientSession() as session, session.ws_connect(
                    url, protocols=("chat",), ssl=c.ssl_context()) as ws:
                await ws.send_str("hello")
                reply = await ws.receive(timeout=10)
                return reply.data, ws.protocol
        finally:
            await runner.cleanup()

    assert asyncio.run(talk()) == ("/talk?x=1 hello", "chat")


def test_huge_pages_are_node_resources_that_pods_ask_for_and_mount(node: tuple[Cluster, str]) -> None:
    c, image = node
    pages = Path("/proc/sys/vm/nr_hugepages")
    before = pages.read_text()
    pages.write_text("2\n")
    try:
        assert int(pages.read_text()) == 2, "the kernel could not set two 2 MiB pages aside"
        eventually(lambda: c.get_json("node", NODE)["status"]["capacity"].get("hugepages-2Mi") == "4Mi", 30,
                   "the node's capacity counting the pages set aside")
        assert c.get_json("node", NODE)["status"]["allocatable"]["hugepages-2Mi"] == "4Mi"
        asking = {"limits": {"hugepages-2Mi": "2Mi", "memory": "64Mi"}}
        mounted = {"resources": asking, "volumeMounts": [{"name": "pages", "mountPath": "/hugepages"}]}
        _apply(c, _pod_manifest("huge", image, "grep /hugepages /proc/mounts; exec sleep 3600", container=mounted,
                                volumes=[{"name": "pages", "emptyDir": {"medium": "HugePages"}}]))
        eventually(lambda: _running(c, "huge"), 60, "huge Running")
        mount = eventually(lambda: c.kubectl("logs", "huge").stdout, 30, "the pod's mounts")
        assert mount.split()[2] == "hugetlbfs" and "pagesize=2M" in mount, mount
        _apply(c, _pod_manifest("greedy", image, "exec sleep 3600",
                                container={"resources": {"limits": {"hugepages-2Mi": "4Mi", "memory": "64Mi"}}}))
        eventually(lambda: "Insufficient hugepages-2Mi" in json.dumps(c.get_json("pod", "greedy")["status"]), 30,
                   "greedy unschedulable: only 2Mi of huge pages are left")
        alone = _pod_manifest("alone", image, "true", container={"resources": {"limits": {"hugepages-2Mi": "2Mi"}}})
        refused = c.kubectl("apply", "-f", "-", input=json.dumps(alone), check=False)
        assert refused.returncode != 0 and "HugePages require cpu or memory" in refused.stderr, refused.stderr
    finally:
        c.kubectl("delete", "pod", "huge", "greedy", "--grace-period=1", "--ignore-not-found", "--wait=true")
        pages.write_text(before)


def test_kubectl_debug_runs_an_ephemeral_container_that_sees_its_target(node: tuple[Cluster, str]) -> None:
    c, image = node
    _apply(c, _pod_manifest("debuggee", image, "echo up; exec sleep 3600"))
    eventually(lambda: _running(c, "debuggee"), 60, "debuggee Running")
    before = _status(c, "debuggee")
    session = c.kubectl("debug", "-i", "debuggee", f"--image={image}", "--target=c", "--container=dbg", "--",
                        "sh", input="ps -o pid,args; echo done-$((6*7))\nexit\n")
    assert "done-42" in session.stdout, session.stdout
    assert "sleep 3600" in session.stdout, f"the debug container does not see its target's processes: {session.stdout}"
    pod = _pod(c, "debuggee")
    (debugger,) = pod["spec"]["ephemeralContainers"]
    assert debugger["name"] == "dbg" and debugger["targetContainerName"] == "c"
    eventually(lambda: "terminated" in _pod(c, "debuggee")["status"]["ephemeralContainerStatuses"][0]["state"], 30,
               "the debug container's status")
    after = _pod(c, "debuggee")["status"]
    assert after["phase"] == "Running" and after["containerStatuses"][0]["containerID"] == before["containerID"]
    assert after["containerStatuses"][0]["restartCount"] == 0
    assert "done-42" in c.kubectl("logs", "debuggee", "-c", "dbg").stdout
    refused = c.kubectl("debug", "debuggee", f"--image={image}", "--target=nope", "--container=dbg2", check=False)
    assert refused.returncode != 0 and "targetContainerName" in refused.stderr, refused.stderr
    c.kubectl("delete", "pod", "debuggee", "--grace-period=1")


def _phases(c: Cluster, selector: str) -> list[str]:
    return sorted(p["status"].get("phase", "") for p in c.get_json("pods", "-l", selector)["items"])


def test_replicas_reach_each_other_by_pod_ip(node: tuple[Cluster, str]) -> None:
    c, image = node
    deployment = {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "echo"}, "spec": {
        "replicas": 2, "selector": {"matchLabels": {"app": "echo"}}, "template": {
            "metadata": {"labels": {"app": "echo"}},
            "spec": {"containers": [{"name": "c", "image": image, "command": ["sh", "-c",
                     "mkdir -p /www && hostname > /www/index.html && exec httpd -f -p 8080 -h /www"]}]}}}}
    _apply(c, deployment)
    c.kubectl("rollout", "status", "deployment/echo", "--timeout=90s")
    pods = c.get_json("pods", "-l", "app=echo")["items"]
    assert len(pods) == 2
    first, second = pods
    answer = c.kubectl("exec", first["metadata"]["name"], "--", "timeout", "5", "wget", "-qO-",
                       f"http://{second['status']['podIP']}:8080/index.html").stdout
    assert answer.strip() == second["metadata"]["name"]
    c.kubectl("delete", "deployment", "echo")


def test_agent_restart_leaves_containers_running(node: tuple[Cluster, str]) -> None:
    """`kill -9` of the agent: its successor adopts the containers untouched, and still learns the exit code of one
    that ends later (it is no longer the agent's child)."""
    c, image = node
    c.kubectl("run", "survivor", f"--image={image}", "--", "sh", "-c", "while true; do echo tick; sleep 1; done")
    c.kubectl("run", "finisher", f"--image={image}", "--restart=Never", "--", "sh", "-c",
              "while [ ! -e /tmp/go ]; do sleep 0.2; done; exit 3")
    eventually(lambda: _running(c, "survivor") and _status(c, "survivor").get("ready"), 60, "survivor Running")
    eventually(lambda: _running(c, "finisher"), 60, "finisher Running")
    before = _status(c, "survivor")
    ip = _pod(c, "survivor")["status"]["podIP"]
    reservation = Path("/run/kubelite") / NODE / "network" / "ipam" / ip
    assert reservation.exists(), "the pod network's reservations live in the run directory, in memory"
    agent = c.component_pid("agent")
    assert agent is not None
    os.kill(agent, signal.SIGKILL)
    eventually(lambda: c.component_pid("agent") not in (None, agent), 30, "the supervisor restarts the agent")
    time.sleep(12)
    after = _status(c, "survivor")
    assert after["containerID"] == before["containerID"] and after["restartCount"] == before["restartCount"]
    assert "state" in after and "running" in after["state"]
    assert _pod(c, "survivor")["status"]["podIP"] == ip and reservation.exists()
    lines = c.kubectl("logs", "--tail=2", "survivor").stdout.split()
    assert lines == ["tick", "tick"]
    c.kubectl("exec", "finisher", "--", "touch", "/tmp/go")
    eventually(lambda: _pod(c, "finisher")["status"].get("phase") == "Failed", 30, "finisher Failed")
    terminated = _status(c, "finisher")["state"]["terminated"]
    assert (terminated["exitCode"], terminated["reason"]) == (3, "Error")
    c.kubectl("delete", "pod", "survivor", "finisher", "--grace-period=1")


def test_sidecars_termination_messages_and_host_ports(node: tuple[Cluster, str]) -> None:
    c, image = node
    manifest = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "helped"}, "spec": {
        "restartPolicy": "Never", "terminationGracePeriodSeconds": 2,
        "initContainers": [{"name": "sidecar", "image": image, "restartPolicy": "Always",
                            "command": ["sh", "-c", "while true; do sleep 1; done"]}],
        "containers": [{"name": "main", "image": image,
                        "command": ["sh", "-c", "echo finished the job > /dev/termination-log; exit 4"]}]}}
    _apply(c, manifest)
    eventually(lambda: _pod(c, "helped")["status"].get("phase") == "Failed", 60, "the main container's failure")
    main = _status(c, "helped")["state"]["terminated"]
    assert main["exitCode"] == 4 and main["message"] == "finished the job\n"
    sidecar = _pod(c, "helped")["status"]["initContainerStatuses"][0]
    assert sidecar["name"] == "sidecar" and "running" not in sidecar["state"], "the sidecar stops with the pod"

    host = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "porter"}, "spec": {"containers": [{
        "name": "c", "image": image, "ports": [{"containerPort": 8080, "hostPort": 31080}],
        "command": ["sh", "-c", "mkdir -p /www && echo via the host port > /www/index.html && "
                                "exec httpd -f -p 8080 -h /www"]}]}}
    _apply(c, host)
    eventually(lambda: _running(c, "porter"), 60, "porter Running")
    body = eventually(lambda: urllib.request.urlopen("http://127.0.0.1:31080/index.html", timeout=5).read(), 30,
                      "an answer on the host port")
    assert body == b"via the host port\n"
    c.kubectl("delete", "pod", "helped", "porter", "--grace-period=1")


def test_host_network_pod_sees_the_node(node: tuple[Cluster, str]) -> None:
    c, image = node
    _apply(c, _pod_manifest("hostnet", image, "sleep 3600", hostNetwork=True))
    eventually(lambda: _running(c, "hostnet"), 60, "hostnet Running")
    pod = _pod(c, "hostnet")
    assert pod["status"]["podIP"] == pod["status"]["hostIP"]
    interfaces = c.kubectl("exec", "hostnet", "--", "cat", "/proc/net/dev").stdout
    assert "kubelite0" in interfaces, "a hostNetwork pod shares the node's interfaces"
    c.kubectl("delete", "pod", "hostnet", "--grace-period=1")


def test_configmap_and_secret_changes_reach_pods_at_once(node: tuple[Cluster, str]) -> None:
    """The kubelet watches the ConfigMaps and Secrets its pods use: a pod waiting for a missing Secret starts as soon
    as it is created, and an update reaches a mounted file within seconds (the periodic refresh alone takes a
    minute)."""
    c, image = node
    c.kubectl("create", "configmap", "live", "--from-literal=value=first")
    manifest = _pod_manifest("reloader", image, "sleep 3600")
    manifest["spec"]["containers"][0]["volumeMounts"] = [{"name": "live", "mountPath": "/live"},
                                                         {"name": "late", "mountPath": "/late"}]
    manifest["spec"]["volumes"] = [{"name": "live", "configMap": {"name": "live"}},
                                   {"name": "late", "secret": {"secretName": "late"}}]
    _apply(c, manifest)
    eventually(lambda: "secret \"late\" not found" in c.kubectl("describe", "pod", "reloader").stdout, 30,
               "a FailedMount event for the missing Secret")
    assert not _running(c, "reloader")
    c.kubectl("create", "secret", "generic", "late", "--from-literal=key=arrived")
    eventually(lambda: _running(c, "reloader"), 5, "reloader Running soon after its Secret was created")
    assert c.kubectl("exec", "reloader", "--", "cat", "/live/value", "/late/key").stdout == "firstarrived"
    c.kubectl("patch", "configmap", "live", "-p", '{"data": {"value": "second"}}')
    c.kubectl("patch", "secret", "late", "-p", '{"stringData": {"key": "changed"}}')
    eventually(lambda: c.kubectl("exec", "reloader", "--", "cat", "/live/value", "/late/key").stdout
               == "secondchanged", 15, "the new values in the mounted files")
    c.kubectl("delete", "pod", "reloader", "--grace-period=1")
    c.kubectl("delete", "configmap", "live")
    c.kubectl("delete", "secret", "late")


def test_statefulset_keeps_its_data_on_a_provisioned_local_path_volume(node: tuple[Cluster, str]) -> None:
    c, image = node
    assert "local-path (default)" in c.kubectl("get", "storageclass").stdout
    _apply(c, {"apiVersion": "apps/v1", "kind": "StatefulSet", "metadata": {"name": "db"}, "spec": {
        "replicas": 1, "serviceName": "db", "selector": {"matchLabels": {"app": "db"}},
        "template": {"metadata": {"labels": {"app": "db"}}, "spec": {
            "terminationGracePeriodSeconds": 1,
            "containers": [{"name": "c", "image": image, "command": [
                "sh", "-c", "test -f /data/first || date > /data/first; exec sleep 3600"],
                "volumeMounts": [{"name": "data", "mountPath": "/data"}]}]}},
        "volumeClaimTemplates": [{"metadata": {"name": "data"}, "spec": {
            "accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": "64Mi"}}}}]}})
    c.kubectl("rollout", "status", "statefulset/db", "--timeout=90s")
    claim = c.get_json("pvc", "data-db-0")
    assert claim["status"]["phase"] == "Bound" and claim["spec"]["storageClassName"] == "local-path"
    assert claim["metadata"]["annotations"]["volume.kubernetes.io/selected-node"] == NODE
    volume = c.get_json("pv", claim["spec"]["volumeName"])
    directory = Path(volume["spec"]["hostPath"]["path"])
    assert directory.parent == c.data_dir / "storage" and (directory / "first").is_file()
    first = c.kubectl("exec", "db-0", "--", "cat", "/data/first").stdout
    c.kubectl("exec", "db-0", "--", "sh", "-c", "echo kept > /data/marker")
    uid = _pod(c, "db-0")["metadata"]["uid"]
    c.kubectl("delete", "pod", "db-0")
    eventually(lambda: _pod(c, "db-0")["metadata"]["uid"] != uid and _running(c, "db-0"), 90, "db-0 back")
    assert c.kubectl("exec", "db-0", "--", "cat", "/data/first", "/data/marker").stdout == first + "kept\n"

    c.kubectl("delete", "pvc", "data-db-0", "--wait=false")
    time.sleep(1)
    assert c.get_json("pvc", "data-db-0")["metadata"]["deletionTimestamp"], "kept while db-0 uses it"
    assert (directory / "marker").is_file()
    c.kubectl("delete", "statefulset", "db", "--wait=true")
    eventually(lambda: c.kubectl("get", "pv", volume["metadata"]["name"], check=False).returncode != 0, 90,
               "the provisioned volume deleted")
    assert not directory.exists(), "the agent removed the volume's directory"
    assert c.kubectl("get", "pvc", "data-db-0", check=False).returncode != 0


def test_ephemeral_volume_lives_and_goes_with_its_pod(node: tuple[Cluster, str]) -> None:
    c, image = node
    manifest = _pod_manifest("scratch", image, "echo data > /scratch/file; exec sleep 3600")
    manifest["spec"]["containers"][0]["volumeMounts"] = [{"name": "work", "mountPath": "/scratch"}]
    manifest["spec"]["volumes"] = [{"name": "work", "ephemeral": {"volumeClaimTemplate": {"spec": {
        "accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": "32Mi"}}}}}}]
    _apply(c, manifest)
    eventually(lambda: _running(c, "scratch"), 90, "scratch Running")
    claim = c.get_json("pvc", "scratch-work")
    assert claim["status"]["phase"] == "Bound"
    assert claim["metadata"]["ownerReferences"][0]["uid"] == _pod(c, "scratch")["metadata"]["uid"]
    directory = Path(c.get_json("pv", claim["spec"]["volumeName"])["spec"]["hostPath"]["path"])
    assert (directory / "file").read_text() == "data\n"
    c.kubectl("delete", "pod", "scratch", "--grace-period=1")
    eventually(lambda: c.kubectl("get", "pv", claim["spec"]["volumeName"], check=False).returncode != 0, 90,
               "the claim and its volume gone with the pod")
    assert not directory.exists()


def test_services_and_cluster_dns(node: tuple[Cluster, str]) -> None:
    c, image = node
    deployment = {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "web"}, "spec": {
        "replicas": 2, "selector": {"matchLabels": {"app": "web"}}, "template": {
            "metadata": {"labels": {"app": "web"}},
            "spec": {"terminationGracePeriodSeconds": 1, "containers": [{"name": "c", "image": image, "command": [
                "sh", "-c", "mkdir -p /www && hostname > /www/index.html && exec httpd -f -p 8080 -h /www"]}]}}}}
    _apply(c, deployment)
    c.kubectl("rollout", "status", "deployment/web", "--timeout=90s")
    c.kubectl("expose", "deployment", "web", "--port=80", "--target-port=8080")
    c.kubectl("expose", "deployment", "web", "--name=web-nodeport", "--type=NodePort", "--port=80",
              "--target-port=8080")
    headless = {"apiVersion": "v1", "kind": "Service", "metadata": {"name": "web-headless"},
                "spec": {"clusterIP": "None", "selector": {"app": "web"}, "ports": [{"port": 8080}]}}
    _apply(c, headless)
    c.kubectl("run", "client", f"--image={image}", "--", "sleep", "3600")
    eventually(lambda: _running(c, "client"), 60, "client Running")
    backends = {p["metadata"]["name"] for p in c.get_json("pods", "-l", "app=web")["items"]}
    cluster_ip = c.get_json("service", "web")["spec"]["clusterIP"]

    def fetch(url: str) -> str:
        return c.kubectl("exec", "client", "--", "timeout", "5", "wget", "-qO-", url, check=False).stdout.strip()

    for url in ("http://web", "http://web.default.svc.cluster.local", f"http://{cluster_ip}"):
        assert eventually(lambda url=url: fetch(url), 30, f"an answer from {url}") in backends
    answers = {fetch("http://web") for _ in range(30)}
    assert answers == backends, f"every backend answers over 30 requests: {answers}"

    node_port = c.get_json("service", "web-nodeport")["spec"]["ports"][0]["nodePort"]
    node_ip = next(a["address"] for a in c.get_json("node", NODE)["status"]["addresses"] if a["type"] == "InternalIP")
    assert urllib.request.urlopen(f"http://{node_ip}:{node_port}/index.html", timeout=5).read().decode().strip() \
        in backends

    c.kubectl("expose", "deployment", "web", "--name=web-lb", "--type=LoadBalancer", "--port=8081",
              "--target-port=8080")
    external = eventually(lambda: c.get_json("service", "web-lb")["status"]["loadBalancer"]["ingress"][0]["ip"], 30,
                          "an EXTERNAL-IP from ServiceLB")
    assert external == node_ip and external in c.kubectl("get", "service", "web-lb").stdout
    assert urllib.request.urlopen(f"http://{external}:8081/index.html", timeout=5).read().decode().strip() \
        in backends

    resolved = c.kubectl("exec", "client", "--", "nslookup", "web-headless.default.svc.cluster.local").stdout
    pod_ips = {p["status"]["podIP"] for p in c.get_json("pods", "-l", "app=web")["items"]}
    assert all(ip in resolved for ip in pod_ips), resolved
    started = time.monotonic()
    missing = c.kubectl("exec", "client", "--", "nslookup", "no-such-service.default.svc.cluster.local", check=False)
    assert missing.returncode != 0 and "NXDOMAIN" in missing.stdout + missing.stderr
    assert time.monotonic() - started < 5

    c.kubectl("scale", "deployment/web", "--replicas=0")
    eventually(lambda: not c.get_json("pods", "-l", "app=web")["items"], 60, "no backends")
    started = time.monotonic()
    refused = c.kubectl("exec", "client", "--", "timeout", "10", "wget", "-qO-", "http://web", check=False)
    assert refused.returncode != 0 and time.monotonic() - started < 5, "a Service without endpoints refuses at once"
    c.kubectl("delete", "deployment", "web")
    c.kubectl("delete", "service", "web", "web-nodeport", "web-headless", "web-lb")
    c.kubectl("delete", "pod", "client", "--grace-period=1")

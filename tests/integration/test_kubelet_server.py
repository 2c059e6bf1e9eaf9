"""The kubelet's HTTPS server on loopback over the real runc runtime: logs, exec, attach, port-forward, stats, auth."""

from __future__ import annotations

import asyncio
import contextlib
import os
import secrets
import shutil
import ssl
import subprocess
import tempfile
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import orjson
import pytest
import pytest_asyncio
from prometheus_client.parser import text_string_to_metric_families

from kubelite.apiserver import pki
from kubelite.kubelet.runtime import cgroups, syscalls
from kubelite.kubelet.runtime.base import ContainerConfig, ContainerState, SandboxConfig
from kubelite.kubelet.runtime.runc import RuncRuntime
from kubelite.kubelet.server import KubeletServer, Located, LocateError
from kubelite.kubelet.streaming import channels, spdy
from tests.integration.test_runtime_runc import BusyboxImage, build_busybox_layer

pytestmark = pytest.mark.asyncio(loop_scope="module")
LONG_LINE = 40000
"""Longer than the runtime's 16 KiB line limit: written as P pieces, read back as one line."""


@dataclass
class Pod:
    """One sandbox and its containers by name (each name's attempts, latest last)."""

    runtime: RuncRuntime
    sandbox_id: str
    config: SandboxConfig
    image: BusyboxImage
    containers: dict[str, list[str]] = field(default_factory=dict)

    def api_object(self) -> dict[str, Any]:
        return {"metadata": {"name": self.config.name, "namespace": self.config.namespace, "uid": self.config.uid},
                "spec": {"containers": [{"name": n} for n in self.containers]}}

    async def run(self, name: str, script: str, **kwargs: Any) -> str:
        attempt = len(self.containers.get(name, []))
        config = ContainerConfig(name=name, image=self.image, command=["sh", "-c", script], attempt=attempt,
                                 log_path=f"{name}/{attempt}.log", **kwargs)
        container_id = await self.runtime.create_container(self.sandbox_id, config, self.config)
        await self.runtime.start_container(container_id)
        self.containers.setdefault(name, []).append(container_id)
        return container_id

    async def locate(self, namespace: str, pod: str, container: str, previous: bool) -> Located:
        if (namespace, pod) != (self.config.namespace, self.config.name):
            raise LocateError(f'pod "{pod}" does not exist', 404)
        if not container:
            return Located(self.api_object(), self.sandbox_id)
        attempts = self.containers.get(container)
        if not attempts:
            raise LocateError(f'container "{container}" in pod "{pod}" is waiting to start: ContainerCreating')
        if previous:
            if len(attempts) < 2:
                raise LocateError(f'previous terminated container "{container}" in pod "{pod}" not found')
            return Located(self.api_object(), self.sandbox_id, await self.runtime.container_status(attempts[-2]))
        return Located(self.api_object(), self.sandbox_id, await self.runtime.container_status(attempts[-1]))


@dataclass
class Credentials:
    """Client TLS contexts: the API server's, a system:masters user's, a node's (forbidden), another CA's."""

    tls: pki.Pki
    base: Path

    def context(self, cn: str | None, orgs: list[str], foreign: bool = False) -> ssl.SSLContext:
        context = ssl.create_default_context()
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
        if cn is None:
            return context
        if foreign:
            other = pki.ensure_pki(self.base / "other", [])
            cert, key = pki.issue_client_cert(other, cn, orgs)
        else:
            cert, key = pki.issue_client_cert(self.tls, cn, orgs)
        path = self.base / f"{cn.replace(':', '_')}-{secrets.token_hex(4)}"
        path.with_suffix(".crt").write_bytes(cert)
        path.with_suffix(".key").write_bytes(key)
        context.load_cert_chain(path.with_suffix(".crt"), path.with_suffix(".key"))
        return context


@contextlib.contextmanager
def node_dir() -> Iterator[Path]:
    """A scratch directory for one node's runtime (state, run, logs, image layer) and its own cgroup root;
    whatever runc left there is removed afterwards."""
    base = Path(tempfile.mkdtemp(prefix="kl-ks-"))
    cgroup_root = f"/kubelite-ks-{secrets.token_hex(4)}"
    (base / "cgroup").write_text(cgroup_root)
    try:
        yield base
    finally:
        run_root = base / "run" / "runc"
        for name in os.listdir(run_root) if run_root.exists() else []:
            subprocess.run(["runc", "--root", str(run_root), "delete", "--force", name], capture_output=True)
        for line in reversed(Path("/proc/self/mountinfo").read_text().splitlines()):
            point = line.split(" ")[4]
            if point.startswith(f"{base}/"):
                syscalls.umount(point, syscalls.MNT_DETACH)
        cgroups.remove(cgroup_root)
        shutil.rmtree(base, ignore_errors=True)


async def start_pod(base: Path, name: str = "web") -> Pod:
    """A started runtime with one pod: main (httpd on 8080 serving hello-from-pod, one line on stdout and one on
    stderr), restarted (a first life that exited, a second that runs), long (a 40000-byte line), reader (stdin)."""
    runtime = RuncRuntime(layers_dir=base / "layers", run_dir=base / "run", cgroup_root=(base / "cgroup").read_text())
    await runtime.start()
    uid = secrets.token_hex(8)
    config = SandboxConfig(name=name, namespace="default", uid=uid, hostname=name,
                           log_directory=str(base / "logs" / f"default_{name}_{uid}"))
    image = BusyboxImage([build_busybox_layer(base / "layer")], {"config": {}})
    the_pod = Pod(runtime, await runtime.run_pod_sandbox(config), config, image)
    await the_pod.run("main", "mkdir -p /www; echo hello-from-pod > /www/index.html; echo started; "
                              "echo warning >&2; exec httpd -f -p 8080 -h /www")
    await the_pod.run("restarted", "echo first life; exit 1")
    await _wait_exited(runtime, the_pod.containers["restarted"][0])
    await the_pod.run("restarted", "echo second life; exec sleep 1000")
    await the_pod.run("long", f"head -c {LONG_LINE} /dev/zero | tr '\\0' x; echo; echo after; exec sleep 1000")
    await the_pod.run("reader", "while read line; do echo \"got $line\"; done", stdin=True)
    return the_pod


async def stop_pod(the_pod: Pod) -> None:
    await the_pod.runtime.remove_pod_sandbox(the_pod.sandbox_id)
    await the_pod.runtime.close()


@pytest.fixture(scope="module")
def workdir() -> Iterator[Path]:
    with node_dir() as base:
        yield base


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def pod(workdir: Path) -> AsyncIterator[Pod]:
    the_pod = await start_pod(workdir)
    try:
        yield the_pod
    finally:
        await stop_pod(the_pod)


async def _wait_exited(runtime: RuncRuntime, container_id: str) -> None:
    events = runtime.subscribe_events()
    try:
        async with asyncio.timeout(10):
            while (await runtime.container_status(container_id)).state != ContainerState.EXITED:
                await events.get()
    finally:
        runtime.unsubscribe_events(events)


@pytest.fixture(scope="module")
def credentials(workdir: Path) -> Credentials:
    return Credentials(pki.ensure_pki(workdir / "tls", []), workdir)


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def kubelet(pod: Pod, credentials: Credentials) -> AsyncIterator[KubeletServer]:
    async def list_pods() -> list[dict[str, Any]]:
        return [pod.api_object()]

    server = KubeletServer(pod.runtime, pod.locate, credentials.tls.client_ca.cert_path, list_pods=list_pods,
                           address="127.0.0.1", port=0, node_name="node-a")
    await server.start()
    try:
        yield server
    finally:
        await server.stop()


@pytest_asyncio.fixture(loop_scope="module")
async def http(credentials: Credentials) -> AsyncIterator[aiohttp.ClientSession]:
    context = credentials.context("kube-apiserver-kubelet-client", ["system:masters"])
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(ssl=context)) as session:
        yield session


def url(kubelet: KubeletServer, path: str, scheme: str = "https") -> str:
    return f"{scheme}://127.0.0.1:{kubelet.port}{path}"


async def get_text(http: aiohttp.ClientSession, kubelet: KubeletServer, path: str) -> tuple[int, str]:
    async with http.get(url(kubelet, path)) as response:
        return response.status, await response.text()


async def eventually_logged(http: aiohttp.ClientSession, kubelet: KubeletServer, path: str, text: str) -> str:
    async with asyncio.timeout(10):
        while True:
            _, body = await get_text(http, kubelet, path)
            if text in body:
                return body
            await asyncio.sleep(0.1)


# ---- authentication and the small endpoints


async def test_only_the_apiserver_and_masters_may_call(kubelet: KubeletServer, credentials: Credentials) -> None:
    async def status_with(context: ssl.SSLContext) -> int:
        async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(ssl=context)) as session, \
                session.get(url(kubelet, "/healthz")) as response:
            return response.status

    assert await status_with(credentials.context("kube-apiserver-kubelet-client", [])) == 200
    assert await status_with(credentials.context("admin", ["system:masters"])) == 200
    assert await status_with(credentials.context(None, [])) == 401
    assert await status_with(credentials.context("system:node:node-a", ["system:nodes"])) == 403
    with pytest.raises(aiohttp.ClientError):
        await status_with(credentials.context("kube-apiserver-kubelet-client", ["system:masters"], foreign=True))


async def test_pods_and_stats_summary(kubelet: KubeletServer, http: aiohttp.ClientSession, pod: Pod) -> None:
    async with http.get(url(kubelet, "/pods")) as response:
        listed = await response.json()
    assert listed["kind"] == "PodList" and listed["items"][0]["metadata"]["uid"] == pod.config.uid
    for _ in range(2):
        async with http.get(url(kubelet, "/stats/summary")) as response:
            summary = await response.json()
        await asyncio.sleep(0.2)
    assert summary["node"]["nodeName"] == "node-a"
    assert summary["node"]["cpu"]["usageCoreNanoSeconds"] > 0 and "usageNanoCores" in summary["node"]["cpu"]
    assert summary["node"]["memory"]["workingSetBytes"] > 0
    [stats] = [p for p in summary["pods"] if p["podRef"]["uid"] == pod.config.uid]
    main = next(c for c in stats["containers"] if c["name"] == "main")
    assert main["memory"]["workingSetBytes"] > 0 and main["cpu"]["usageCoreNanoSeconds"] > 0
    assert "usageNanoCores" in main["cpu"] and stats["memory"]["workingSetBytes"] >= main["memory"]["workingSetBytes"]


async def test_resource_metrics_as_prometheus_text(kubelet: KubeletServer, http: aiohttp.ClientSession,
                                                   pod: Pod) -> None:
    async with http.get(url(kubelet, "/metrics/resource")) as response:
        assert response.status == 200 and response.headers["Content-Type"].startswith("text/plain; version=0.0.4")
        text = await response.text()
    families = {f.name: f for f in text_string_to_metric_families(text)}
    assert families["container_cpu_usage_seconds"].type == "counter"

    def value(family: str, **labels: str) -> float:
        [sample] = [s for s in families[family].samples if s.labels == labels]
        return sample.value

    where = {"namespace": "default", "pod": "web"}
    assert value("container_cpu_usage_seconds", container="main", **where) > 0
    assert value("container_memory_working_set_bytes", container="main", **where) > 0
    assert time.time() - 600 < value("container_start_time_seconds", container="main", **where) <= time.time()
    assert value("pod_memory_working_set_bytes", **where) >= value("container_memory_working_set_bytes",
                                                                    container="main", **where)
    assert value("pod_cpu_usage_seconds", **where) > 0
    assert value("node_cpu_usage_seconds") > 0 and value("node_memory_working_set_bytes") > 0
    assert value("resource_scrape_error") == 0


# ---- logs


async def test_logs_plain_tail_timestamps_and_limit(kubelet: KubeletServer, http: aiohttp.ClientSession) -> None:
    body = await eventually_logged(http, kubelet, "/containerLogs/default/web/main", "warning")
    assert body in ("started\nwarning\n", "warning\nstarted\n")
    assert (await get_text(http, kubelet, "/containerLogs/default/web/main?tailLines=1"))[1].count("\n") == 1
    assert (await get_text(http, kubelet, "/containerLogs/default/web/main?tailLines=0"))[1] == ""
    _, stamped = await get_text(http, kubelet, "/containerLogs/default/web/main?timestamps=true")
    for line in stamped.splitlines():
        stamp, _, text = line.partition(" ")
        assert len(stamp) == 30 and stamp.endswith("Z") and text in ("started", "warning")
    assert (await get_text(http, kubelet, "/containerLogs/default/web/main?limitBytes=3"))[1] in ("sta", "war")
    assert (await get_text(http, kubelet, "/containerLogs/default/web/main?sinceSeconds=3600"))[1] == body
    future = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(time.time() + 3600))
    assert (await get_text(http, kubelet, f"/containerLogs/default/web/main?sinceTime={future}"))[1] == ""


async def test_logs_join_partial_lines(kubelet: KubeletServer, http: aiohttp.ClientSession, pod: Pod) -> None:
    body = await eventually_logged(http, kubelet, "/containerLogs/default/web/long", "after")
    assert body == "x" * LONG_LINE + "\nafter\n"
    log_path = (await pod.runtime.container_status(pod.containers["long"][-1])).log_path
    assert b" stdout P " in await asyncio.to_thread(Path(log_path).read_bytes)
    assert (await get_text(http, kubelet, "/containerLogs/default/web/long?tailLines=2"))[1] == body


async def test_logs_previous_and_errors(kubelet: KubeletServer, http: aiohttp.ClientSession) -> None:
    await eventually_logged(http, kubelet, "/containerLogs/default/web/restarted", "second life")
    assert await get_text(http, kubelet, "/containerLogs/default/web/restarted?previous=true") == (
        200, "first life\n")
    assert await get_text(http, kubelet, "/containerLogs/default/web/main?previous=true") == (
        400, 'previous terminated container "main" in pod "web" not found')
    assert await get_text(http, kubelet, "/containerLogs/default/web/nope") == (
        400, 'container "nope" in pod "web" is waiting to start: ContainerCreating')
    assert (await get_text(http, kubelet, "/containerLogs/default/gone/main"))[0] == 404
    assert (await get_text(http, kubelet, "/containerLogs/default/web/main?tailLines=-1"))[0] == 422
    assert (await get_text(http, kubelet, "/containerLogs/default/web/main?follow=maybe"))[0] == 400


async def test_logs_follow_until_the_container_exits(kubelet: KubeletServer, http: aiohttp.ClientSession,
                                                     pod: Pod) -> None:
    await pod.run("ticker", "for i in 1 2 3 4; do echo tick $i; sleep 0.3; done")
    seen: list[tuple[float, str]] = []
    started = time.monotonic()
    async with asyncio.timeout(15), http.get(url(kubelet, "/containerLogs/default/web/ticker?follow=true")) as resp:
        async for chunk in resp.content.iter_any():
            seen.append((time.monotonic() - started, chunk.decode()))
    assert "".join(text for _, text in seen) == "tick 1\ntick 2\ntick 3\ntick 4\n"
    assert len(seen) >= 3, "lines must arrive as they are written, not all at the end"
    assert seen[-1][0] < 5


async def test_logs_follow_across_rotation(kubelet: KubeletServer, http: aiohttp.ClientSession, pod: Pod) -> None:
    await pod.run("rotating", "echo before; sleep 1; echo after; sleep 0.5")
    log_path = Path((await pod.runtime.container_status(pod.containers["rotating"][-1])).log_path)
    async with asyncio.timeout(15), http.get(url(kubelet, "/containerLogs/default/web/rotating?follow=1")) as resp:
        assert await resp.content.readline() == b"before\n"
        os.rename(log_path, log_path.with_name(f"{log_path.name}.20240101-000000"))
        await pod.runtime.reopen_container_log(pod.containers["rotating"][-1])
        assert await resp.content.read() == b"after\n"
    assert await get_text(http, kubelet, "/containerLogs/default/web/rotating") == (200, "before\nafter\n")


def open_files(path: str) -> int:
    """How many descriptors of this process have the file open."""
    count = 0
    for fd in os.listdir("/proc/self/fd"):
        with contextlib.suppress(OSError):
            count += os.readlink(f"/proc/self/fd/{fd}") == path
    return count


async def test_logs_follow_ends_when_the_client_goes_away(kubelet: KubeletServer, credentials: Credentials,
                                                          pod: Pod) -> None:
    log_path = (await pod.runtime.container_status(pod.containers["restarted"][-1])).log_path
    writers = open_files(log_path)
    context = credentials.context("kube-apiserver-kubelet-client", [])
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(ssl=context)) as session, \
            session.get(url(kubelet, "/containerLogs/default/web/restarted?follow=true")) as response:
        assert await response.content.readline() == b"second life\n"
        assert open_files(log_path) == writers + 1
    for _ in range(50):
        if open_files(log_path) == writers:
            break
        await asyncio.sleep(0.1)
    assert open_files(log_path) == writers, "the kubelet must stop following once its client is gone"


# ---- exec and attach over channel WebSockets


@dataclass
class Outcome:
    """What an exec session sent back, by channel, and its final Status."""

    output: dict[int, bytes]
    status: dict[str, Any] | None


async def read_session(ws: aiohttp.ClientWebSocketResponse, codec: channels.ChannelCodec) -> Outcome:
    output: dict[int, bytes] = {}
    status = None
    async for message in ws:
        if message.type not in (aiohttp.WSMsgType.BINARY, aiohttp.WSMsgType.TEXT):
            break
        channel, data = codec.decode(message.data)
        if channel == channels.ERROR and data:
            status = orjson.loads(data)
        else:
            output[channel] = output.get(channel, b"") + data
    return Outcome(output, status)


def exec_path(command: list[str], **flags: int) -> str:
    query = "&".join([f"command={c}" for c in command] + [f"{k}={v}" for k, v in flags.items()])
    return f"/exec/default/web/main?{query}"


async def test_exec_v5_streams_and_exit_code(kubelet: KubeletServer, http: aiohttp.ClientSession) -> None:
    path = exec_path(["sh", "-c", "echo%20out;echo%20err%20>%262;exit%203"], stdout=1, stderr=1)
    async with asyncio.timeout(15), http.ws_connect(url(kubelet, path, "wss"), protocols=(channels.V5,)) as ws:
        assert ws.protocol == channels.V5
        outcome = await read_session(ws, channels.ChannelCodec(channels.V5))
    assert outcome.output == {channels.STDOUT: b"out\n", channels.STDERR: b"err\n"}
    assert outcome.status is not None and outcome.status["reason"] == "NonZeroExitCode"
    assert outcome.status["details"]["causes"] == [{"reason": "ExitCode", "message": "3"}]


async def test_exec_v5_stdin_and_its_close(kubelet: KubeletServer, http: aiohttp.ClientSession) -> None:
    path = exec_path(["cat"], stdin=1, stdout=1, stderr=1)
    async with asyncio.timeout(15), http.ws_connect(url(kubelet, path, "wss"), protocols=(channels.V5,)) as ws:
        await ws.send_bytes(bytes([channels.STDIN]) + b"through stdin\n")
        await ws.send_bytes(bytes([channels.CLOSE, channels.STDIN]))
        outcome = await read_session(ws, channels.ChannelCodec(channels.V5))
    assert outcome.output[channels.STDOUT] == b"through stdin\n"
    assert outcome.status == {"metadata": {}, "status": "Success"}


async def test_exec_v4_and_base64(kubelet: KubeletServer, http: aiohttp.ClientSession) -> None:
    for protocol in (channels.V4, channels.V4_BASE64):
        path = exec_path(["sh", "-c", "echo%20hi"], stdout=1)
        async with asyncio.timeout(15), http.ws_connect(url(kubelet, path, "wss"),
                                                        protocols=("v9.nothing", protocol)) as ws:
            assert ws.protocol == protocol
            outcome = await read_session(ws, channels.ChannelCodec(protocol))
        assert outcome.output[channels.STDOUT] == b"hi\n"
        assert outcome.status == {"metadata": {}, "status": "Success"}


async def test_exec_tty_and_resize(kubelet: KubeletServer, http: aiohttp.ClientSession) -> None:
    path = exec_path(["sh"], stdin=1, stdout=1, stderr=1, tty=1)
    async with asyncio.timeout(15), http.ws_connect(url(kubelet, path, "wss"), protocols=(channels.V5,)) as ws:
        await ws.send_bytes(bytes([channels.RESIZE]) + b'{"Width":101,"Height":33}')
        await ws.send_bytes(bytes([channels.STDIN]) + b"tty; stty size; exit 4\n")
        outcome = await read_session(ws, channels.ChannelCodec(channels.V5))
    assert channels.STDERR not in outcome.output
    assert b"/dev/pts/" in outcome.output[channels.STDOUT] and b"33 101" in outcome.output[channels.STDOUT]
    assert outcome.status is not None and outcome.status["details"]["causes"][0]["message"] == "4"


async def test_exec_errors_before_and_after_upgrade(kubelet: KubeletServer, http: aiohttp.ClientSession) -> None:
    async with http.get(url(kubelet, exec_path(["true"]))) as response:
        assert response.status == 400
        assert await response.text() == "you must specify at least 1 of stdin, stdout, stderr"
    async with http.get(url(kubelet, exec_path(["true"], stdout=1))) as response:
        assert (response.status, await response.text()) == (400, "Upgrade request required")
    with pytest.raises(aiohttp.WSServerHandshakeError) as refused:
        await http.ws_connect(url(kubelet, "/exec/default/web/nope?command=true&stdout=1", "wss"),
                              protocols=(channels.V5,))
    assert refused.value.status == 400
    path = exec_path(["/no/such/binary"], stdout=1)
    async with asyncio.timeout(15), http.ws_connect(url(kubelet, path, "wss"), protocols=(channels.V5,)) as ws:
        outcome = await read_session(ws, channels.ChannelCodec(channels.V5))
    assert outcome.status is not None and outcome.status["status"] == "Failure"


async def test_attach_writes_stdin_and_reads_output(kubelet: KubeletServer, http: aiohttp.ClientSession) -> None:
    path = "/attach/default/web/reader?stdin=1&stdout=1&stderr=1"
    async with asyncio.timeout(15), http.ws_connect(url(kubelet, path, "wss"), protocols=(channels.V5,)) as ws:
        await ws.send_bytes(bytes([channels.STDIN]) + b"hello\n")
        received = b""
        while b"got hello\n" not in received:
            message = await ws.receive()
            assert message.type == aiohttp.WSMsgType.BINARY
            channel, data = channels.ChannelCodec(channels.V5).decode(message.data)
            received += data if channel == channels.STDOUT else b""


# ---- port-forward


class SpdyClient:
    """kubectl's side of a SPDY port-forward session, tunnelled in WebSocket messages."""

    def __init__(self, ws: aiohttp.ClientWebSocketResponse):
        self.ws = ws
        self.compressor = spdy.HeaderCompressor()
        self.parser = spdy.FrameParser()
        self.next_id = 1
        self.frames: dict[int, list[spdy.Frame]] = {}
        self.pings: list[int] = []

    async def send(self, frame: spdy.Frame) -> None:
        await self.ws.send_bytes(spdy.encode(frame, self.compressor))

    async def open(self, headers: dict[str, str], fin: bool = False) -> int:
        stream_id, self.next_id = self.next_id, self.next_id + 2
        await self.send(spdy.SynStream(stream_id, {k: [v] for k, v in headers.items()},
                                       flags=spdy.FLAG_FIN if fin else 0))
        return stream_id

    async def pump(self) -> None:
        message = await self.ws.receive()
        assert message.type == aiohttp.WSMsgType.BINARY, message
        for frame in self.parser.feed(message.data):
            if isinstance(frame, spdy.Ping):
                self.pings.append(frame.ping_id)
            else:
                self.frames.setdefault(getattr(frame, "stream_id", 0), []).append(frame)

    async def until_fin(self, stream_id: int) -> bytes:
        """The data of a stream up to its FIN (SYN_REPLY must come first)."""
        while True:
            frames = self.frames.get(stream_id, [])
            if any(isinstance(f, spdy.DataFrame) and f.flags & spdy.FLAG_FIN for f in frames):
                assert isinstance(frames[0], spdy.SynReply)
                return b"".join(f.data for f in frames if isinstance(f, spdy.DataFrame))
            assert not any(isinstance(f, spdy.RstStream) for f in frames), frames
            await self.pump()

    async def request(self, port: int, request_id: int, payload: bytes) -> tuple[bytes, bytes]:
        """One forwarded connection: (what came back on the data stream, what the error stream said)."""
        headers = {"streamtype": "error", "port": str(port), "requestid": str(request_id)}
        error = await self.open(headers, fin=True)
        data = await self.open({**headers, "streamtype": "data"})
        await self.send(spdy.DataFrame(data, payload))
        return await self.until_fin(data), await self.until_fin(error)


async def test_port_forward_spdy_over_websocket(kubelet: KubeletServer, http: aiohttp.ClientSession) -> None:
    async with asyncio.timeout(20), http.ws_connect(url(kubelet, "/portForward/default/web", "wss"),
                                                    protocols=(channels.SPDY_TUNNEL,)) as ws:
        assert ws.protocol == channels.SPDY_TUNNEL
        client = SpdyClient(ws)
        await client.send(spdy.Ping(1))
        request = b"GET /index.html HTTP/1.0\r\n\r\n"
        first, second = await client.request(8080, 0, request), await client.request(8080, 1, request)
        for body, error in (first, second):
            assert body.startswith(b"HTTP/1.") and body.endswith(b"hello-from-pod\n") and error == b""
        body, error = await client.request(9, 2, b"")
        assert body == b"" and b"error forwarding port 9 to pod web" in error
        assert client.pings == [1]


async def test_port_forward_channel_protocol(kubelet: KubeletServer, http: aiohttp.ClientSession) -> None:
    path = "/portForward/default/web?ports=8080"
    async with asyncio.timeout(20), http.ws_connect(url(kubelet, path, "wss"),
                                                    protocols=(channels.V5, channels.V4)) as ws:
        assert ws.protocol == channels.V4
        prefixes = [await ws.receive_bytes() for _ in range(2)]
        assert prefixes == [bytes([0]) + (8080).to_bytes(2, "little"), bytes([1]) + (8080).to_bytes(2, "little")]
        await ws.send_bytes(bytes([0]) + b"GET /index.html HTTP/1.0\r\n\r\n")
        received = b""
        async for message in ws:
            if message.type != aiohttp.WSMsgType.BINARY:
                break
            assert message.data[0] == 0
            received += message.data[1:]
    assert received.startswith(b"HTTP/1.") and received.endswith(b"hello-from-pod\n")
    async with http.get(url(kubelet, "/portForward/default/web?ports=x"),
                        headers={"Connection": "Upgrade", "Upgrade": "websocket", "Sec-WebSocket-Version": "13",
                                 "Sec-WebSocket-Key": "dGhlIHNhbXBsZSBub25jZQ==",
                                 "Sec-WebSocket-Protocol": channels.V4}) as response:
        assert response.status == 400

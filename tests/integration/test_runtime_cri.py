"""CriRuntime and CriImageService against a real containerd 1.6, as root: sandboxes (host and pod network),
containers, CRI logs, exits, stop, lists, exec, attach, port-forward, stats, events, images, concurrency."""

from __future__ import annotations

import asyncio
import json
import os
import re
import shutil
import subprocess
import tempfile
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from kubelite.kubelet.grpcchannel import Channel
from kubelite.kubelet.images.config import AuthConfig
from kubelite.kubelet.images.errors import ImageError, ImageNotFound
from kubelite.kubelet.runtime import cgroups
from kubelite.kubelet.runtime.base import (
    ContainerConfig,
    ContainerEventType,
    ContainerState,
    DNSConfig,
    LinuxResources,
    Mount,
    NotFoundError,
    RuntimeServiceError,
    SandboxConfig,
    SandboxState,
    SecurityContext,
)
from kubelite.kubelet.runtime.cri import CriRuntime
from kubelite.kubelet.runtime.criimages import CriImageService
from tests import images
from tests.containerd import Containerd
from tests.registry import PASSWORD, USERNAME, Registry

CONTAINERD = shutil.which("containerd")
CNI_BIN = Path("/usr/lib/cni")
BRIDGE = "klcritest0"
POD_SUBNET = "10.231.7.0/24"
CGROUP_ROOT = "/kubelite-cri-test"
CRI_LINE = re.compile(rb"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d+(Z|[+-]\d\d:\d\d) (stdout|stderr) (F|P) (.*)$")

pytestmark = pytest.mark.skipif(os.geteuid() != 0 or CONTAINERD is None or not CNI_BIN.is_dir(),
                                reason="needs root, containerd and the CNI plugins")


# ---- fixtures (containerd itself comes from tests/containerd.py)

def bridge_conflist(ipam_dir: Path) -> dict[str, object]:
    """A bridge network for pod-network sandboxes, with host-local addresses kept in ipam_dir."""
    return {"cniVersion": "0.4.0", "name": "kubelite-cri-test", "plugins": [
        {"type": "bridge", "bridge": BRIDGE, "isGateway": True, "ipMasq": False,
         "ipam": {"type": "host-local", "ranges": [[{"subnet": POD_SUBNET}]], "dataDir": str(ipam_dir)}}]}


@dataclass
class Setup:
    """The session's containerd, with this module's images and network."""

    containerd: Containerd
    busybox: str
    """A busybox image reference (command sh)."""
    user_image: str
    """A busybox image that runs as user nobody."""
    logs: Path


@pytest.fixture(scope="module")
def setup(containerd: Containerd, basic_registry: Registry, tmp_path_factory: pytest.TempPathFactory
          ) -> Iterator[Setup]:
    """Images in containerd's registry (and a private one behind basic auth), and a CNI bridge config while the
    module runs."""
    registry = containerd.registry
    images.push(registry.url, "kubelite/busybox", "test", images.busybox_image())
    images.push(registry.url, "kubelite/nobody", "test", images.busybox_image(user="nobody"))
    images.push(basic_registry.direct_url, "private/busybox", "test", images.busybox_image())
    containerd.trust(basic_registry)
    workdir = tmp_path_factory.mktemp("cri")
    conflist = containerd.cni_conf_dir / "10-kubelite-cri-test.conflist"
    conflist.write_text(json.dumps(bridge_conflist(workdir / "ipam")))
    try:
        yield Setup(containerd, f"{registry.host}/kubelite/busybox:test", f"{registry.host}/kubelite/nobody:test",
                    workdir / "logs")
    finally:
        conflist.unlink(missing_ok=True)
        subprocess.run(["ip", "link", "del", BRIDGE], check=False, capture_output=True)
        cgroups.remove(CGROUP_ROOT)


@pytest.fixture
async def runtime(setup: Setup) -> AsyncIterator[CriRuntime]:
    pulling = CriImageService(setup.containerd.endpoint)
    await pulling.pull(setup.busybox)
    await pulling.close()
    cri = CriRuntime(setup.containerd.endpoint, cgroup_root=CGROUP_ROOT, poll_interval=0.2)
    await cri.start()
    made = {s.id for s in await cri.list_pod_sandboxes()}
    yield cri
    for sandbox in await cri.list_pod_sandboxes():
        if sandbox.id not in made:
            await cri.remove_pod_sandbox(sandbox.id)
    await cri.close()


@pytest.fixture
async def image_service(setup: Setup) -> AsyncIterator[CriImageService]:
    service = CriImageService(setup.containerd.endpoint)
    yield service
    await service.close()


@dataclass
class Pod:
    """A sandbox and the config it was made with."""

    id: str
    config: SandboxConfig


async def run_sandbox(runtime: CriRuntime, setup: Setup, name: str = "pod") -> Pod:
    """A host-network sandbox (no CNI involved)."""
    uid = str(uuid.uuid4())
    config = SandboxConfig(name=name, namespace="cri-test", uid=uid, hostname=name,
                           log_directory=str(setup.logs / f"cri-test_{name}_{uid}"), host_network=True,
                           labels={"io.kubernetes.pod.uid": uid}, annotations={"note": "kept"})
    return Pod(await runtime.run_pod_sandbox(config), config)


async def run_container(runtime: CriRuntime, setup: Setup, pod: Pod, script: str, name: str = "c",
                        start: bool = True, **options: object) -> str:
    """A busybox container running `sh -c script`, logging to <name>/0.log; started unless told otherwise."""
    config = ContainerConfig(name=name, image=_NoRootfs(), image_name=setup.busybox, command=["sh", "-c", script],
                             log_path=f"{name}/0.log", **options)  # type: ignore[arg-type]
    container_id = await runtime.create_container(pod.id, config, pod.config)
    if start:
        await runtime.start_container(container_id)
    return container_id


@dataclass
class _NoRootfs:
    """What RootfsImage asks for; the CRI runtime unpacks the image itself and ignores it."""

    layer_dirs: list[Path] = field(default_factory=list)
    config: dict[str, object] = field(default_factory=dict)


def pod_cgroup_exists(pod: Pod) -> bool:
    memory = cgroups.path_in("memory", f"{CGROUP_ROOT}/pod{pod.config.uid}")
    return memory is not None and memory.exists()


def rotate(path: str) -> list[bytes]:
    """Rename the log away (as the kubelet's log rotation does); what it held."""
    Path(path).rename(path + ".1")
    return read_lines(path + ".1")


def read_lines(path: str) -> list[bytes]:
    return Path(path).read_bytes().splitlines()


async def wait_state(runtime: CriRuntime, container_id: str, state: ContainerState, limit: float = 20):
    deadline = time.monotonic() + limit
    while True:
        status = await runtime.container_status(container_id)
        if status.state == state:
            return status
        if time.monotonic() > deadline:
            raise AssertionError(f"container {container_id} is {status.state}, not {state}")
        await asyncio.sleep(0.1)


# ---- tests

async def test_version(runtime: CriRuntime):
    version = await runtime.version()
    assert version.name == "containerd"
    assert version.version.startswith("1.6")


async def test_sandbox_status_gives_back_the_config(runtime: CriRuntime, setup: Setup):
    pod = await run_sandbox(runtime, setup)
    status = await runtime.pod_sandbox_status(pod.id)
    assert status.state == SandboxState.READY
    assert status.created_at > 0
    assert status.config.name == pod.config.name and status.config.uid == pod.config.uid
    assert status.config.host_network and status.config.log_directory == pod.config.log_directory
    assert status.config.labels == pod.config.labels
    assert status.config.annotations == pod.config.annotations
    assert status.config.cgroup_parent == f"{CGROUP_ROOT}/pod{pod.config.uid}"


async def test_container_output_goes_to_a_cri_log(runtime: CriRuntime, setup: Setup):
    pod = await run_sandbox(runtime, setup)
    container_id = await run_container(runtime, setup, pod, "echo hello; echo oops >&2")
    status = await wait_state(runtime, container_id, ContainerState.EXITED)
    assert (status.exit_code, status.reason) == (0, "Completed")
    assert status.log_path == f"{pod.config.log_directory}/c/0.log"
    assert status.sandbox_id == pod.id and status.name == "c" and status.image == setup.busybox
    lines = [CRI_LINE.match(line) for line in read_lines(status.log_path)]
    assert all(lines)
    assert sorted((m.group(2), m.group(4)) for m in lines if m) == [(b"stderr", b"oops"), (b"stdout", b"hello")]


async def test_exit_code_and_reason_of_a_failing_container(runtime: CriRuntime, setup: Setup):
    pod = await run_sandbox(runtime, setup)
    container_id = await run_container(runtime, setup, pod, "sleep 0.2; exit 3")
    status = await wait_state(runtime, container_id, ContainerState.EXITED)
    assert (status.exit_code, status.reason) == (3, "Error")
    assert 0 < status.created_at <= status.started_at < status.finished_at


async def test_oom_killed_container_says_so(runtime: CriRuntime, setup: Setup):
    pod = await run_sandbox(runtime, setup)
    container_id = await run_container(runtime, setup, pod, "tail /dev/zero",
                                       resources=LinuxResources(memory_limit_in_bytes=16 << 20, oom_score_adj=-997))
    status = await wait_state(runtime, container_id, ContainerState.EXITED)
    assert (status.exit_code, status.reason) == (137, "OOMKilled")


async def test_stop_waits_for_the_grace_period_then_kills(runtime: CriRuntime, setup: Setup):
    pod = await run_sandbox(runtime, setup)
    polite = await run_container(runtime, setup, pod, "trap 'exit 0' TERM; while true; do sleep 0.1; done", "polite")
    stubborn = await run_container(runtime, setup, pod, "trap '' TERM; while true; do sleep 0.1; done", "stubborn")
    await asyncio.sleep(0.3)
    started = time.monotonic()
    await runtime.stop_container(polite, 10)
    assert time.monotonic() - started < 5
    assert (await runtime.container_status(polite)).exit_code == 0
    started = time.monotonic()
    await runtime.stop_container(stubborn, 1)
    assert 0.9 < time.monotonic() - started < 8
    status = await runtime.container_status(stubborn)
    assert (status.state, status.exit_code) == (ContainerState.EXITED, 137)


async def test_lists_filter_by_sandbox_and_state(runtime: CriRuntime, setup: Setup):
    first, second = await run_sandbox(runtime, setup, "first"), await run_sandbox(runtime, setup, "second")
    running = await run_container(runtime, setup, first, "sleep 1000", "running")
    created = await run_container(runtime, setup, first, "true", "created", start=False)
    other = await run_container(runtime, setup, second, "exit 1", "other")
    await wait_state(runtime, other, ContainerState.EXITED)
    assert {c.id for c in await runtime.list_containers(first.id)} == {running, created}
    assert [c.id for c in await runtime.list_containers(first.id, ContainerState.CREATED)] == [created]
    listed = await runtime.list_containers(state=ContainerState.EXITED)
    assert other in {c.id for c in listed}
    assert [c.exit_code for c in listed if c.id == other] == [1]
    assert [c.sandbox_id for c in await runtime.list_containers(second.id)] == [second.id]
    await runtime.stop_pod_sandbox(second.id)
    ready = {s.id for s in await runtime.list_pod_sandboxes(SandboxState.READY)}
    not_ready = {s.id for s in await runtime.list_pod_sandboxes(SandboxState.NOTREADY)}
    assert first.id in ready and second.id in not_ready and second.id not in ready
    everything = await runtime.list_pod_sandboxes()
    assert [s.config.name for s in everything if s.id in (first.id, second.id)] == ["first", "second"]


async def test_missing_objects_are_not_found_and_removal_is_idempotent(runtime: CriRuntime, setup: Setup):
    with pytest.raises(NotFoundError):
        await runtime.container_status("0" * 64)
    with pytest.raises(NotFoundError):
        await runtime.pod_sandbox_status("0" * 64)
    with pytest.raises(NotFoundError):
        await runtime.start_container("0" * 64)
    await runtime.remove_container("0" * 64)
    await runtime.stop_pod_sandbox("0" * 64)
    await runtime.remove_pod_sandbox("0" * 64)
    pod = await run_sandbox(runtime, setup)
    container_id = await run_container(runtime, setup, pod, "sleep 1000")
    await runtime.remove_container(container_id)
    with pytest.raises(NotFoundError):
        await runtime.container_status(container_id)
    await runtime.remove_pod_sandbox(pod.id)
    await runtime.remove_pod_sandbox(pod.id)
    assert not pod_cgroup_exists(pod)
    with pytest.raises(RuntimeServiceError):
        await runtime.create_container(pod.id, ContainerConfig("x", _NoRootfs(), setup.busybox), pod.config)


async def test_exec_sync_returns_output_and_exit_code(runtime: CriRuntime, setup: Setup):
    pod = await run_sandbox(runtime, setup)
    container_id = await run_container(runtime, setup, pod, "sleep 1000")
    code, out, err = await runtime.exec_sync(container_id, ["sh", "-c", "echo out; echo err >&2; exit 4"])
    assert (code, out, err) == (4, b"out\n", b"err\n")
    started = time.monotonic()
    with pytest.raises(TimeoutError):
        await runtime.exec_sync(container_id, ["sleep", "30"], timeout_s=1)
    assert time.monotonic() - started < 10


async def test_exec_streams_output_stdin_and_a_terminal(runtime: CriRuntime, setup: Setup):
    pod = await run_sandbox(runtime, setup)
    container_id = await run_container(runtime, setup, pod, "sleep 1000")
    session = await runtime.exec(container_id, ["sh", "-c", "echo out; echo err >&2; exit 3"])
    assert await read_all(session.read_stdout) == b"out\n"
    assert await read_all(session.read_stderr) == b"err\n"
    assert await session.wait() == 3
    await session.close()

    session = await runtime.exec(container_id, ["sh", "-c", "cat; echo done >&2; exit 2"], stdin=True)
    await session.write_stdin(b"through stdin\n")
    await session.write_stdin(b"x" * 300_000)
    await session.close_stdin()
    output, errors = await asyncio.gather(read_all(session.read_stdout), read_all(session.read_stderr))
    assert output == b"through stdin\n" + b"x" * 300_000 and errors == b"done\n"
    assert await session.wait() == 2
    await session.close()

    session = await runtime.exec(container_id, ["sh"], tty=True, stdin=True)
    await session.resize(100, 30)
    await session.write_stdin(b"stty size; exit 7\n")
    output = await read_all(session.read_stdout)
    assert b"30 100" in output
    assert await session.read_stderr() == b""
    assert await session.wait() == 7
    await session.close()

    session = await runtime.exec(container_id, ["no-such-command"])
    await read_all(session.read_stdout)
    assert b"no-such-command" in await read_all(session.read_stderr)
    assert await session.wait() != 0
    await session.close()


async def read_all(read, limit: float = 10) -> bytes:
    out = b""
    async with asyncio.timeout(limit):
        while chunk := await read():
            out += chunk
    return out


async def test_attach_follows_output_and_feeds_stdin(runtime: CriRuntime, setup: Setup):
    pod = await run_sandbox(runtime, setup)
    container_id = await run_container(runtime, setup, pod, "read line; echo got $line; exit 5", stdin=True,
                                       stdin_once=True)
    session = await runtime.attach(container_id, stdin=True)
    await session.write_stdin(b"hello\n")
    assert await read_all(session.read_stdout) == b"got hello\n"
    assert await session.wait() == 5
    await session.close()

    ticking = await run_container(runtime, setup, pod, "while true; do echo tick; sleep 0.1; done", "ticker",
                                  tty=True)
    session = await runtime.attach(ticking)
    async with asyncio.timeout(10):
        assert b"tick" in await session.read_stdout()
    await session.close()


async def test_pod_network_sandbox_with_dns_sysctls_and_port_forward(runtime: CriRuntime, setup: Setup):
    uid = str(uuid.uuid4())
    config = SandboxConfig(name="net", namespace="cri-test", uid=uid, hostname="net-host",
                           log_directory=str(setup.logs / f"cri-test_net_{uid}"),
                           dns=DNSConfig(["10.43.0.10"], ["cri-test.svc.cluster.local"], ["ndots:5"]),
                           sysctls={"net.ipv4.ip_unprivileged_port_start": "0"})
    pod = Pod(await runtime.run_pod_sandbox(config), config)
    status = await runtime.pod_sandbox_status(pod.id)
    assert status.ip.startswith(POD_SUBNET.rsplit(".", 1)[0] + ".")
    assert status.config.dns == config.dns and status.config.sysctls == config.sysctls
    container_id = await run_container(runtime, setup, pod,
                                       "while true; do echo hello from the pod | nc -l -p 8080; done")
    script = "hostname; cat /etc/resolv.conf; cat /proc/sys/net/ipv4/ip_unprivileged_port_start"
    code, out, _ = await runtime.exec_sync(container_id, ["sh", "-c", script])
    assert code == 0
    text = out.decode()
    assert text.startswith("net-host\n")
    assert "nameserver 10.43.0.10" in text and "search cri-test.svc.cluster.local" in text and "ndots:5" in text
    assert text.endswith("\n0\n")
    reader, writer = await runtime.port_forward(pod.id, 8080)
    try:
        async with asyncio.timeout(10):
            assert await reader.readline() == b"hello from the pod\n"
    finally:
        writer.close()


async def test_shared_process_namespace(runtime: CriRuntime, setup: Setup):
    uid = str(uuid.uuid4())
    config = SandboxConfig(name="shared", namespace="cri-test", uid=uid, host_network=True,
                           share_process_namespace=True, log_directory=str(setup.logs / f"cri-test_shared_{uid}"))
    pod = Pod(await runtime.run_pod_sandbox(config), config)
    await run_container(runtime, setup, pod, "exec sleep 1234", "sleeper")
    looker = await run_container(runtime, setup, pod, "sleep 1000", "looker")
    code, out, _ = await runtime.exec_sync(looker, ["ps"])
    assert code == 0 and b"sleep 1234" in out


async def test_log_reopens_after_rotation(runtime: CriRuntime, setup: Setup):
    pod = await run_sandbox(runtime, setup)
    container_id = await run_container(runtime, setup, pod, "i=0; while true; do echo line $i; i=$((i+1)); "
                                                            "sleep 0.1; done")
    status = await runtime.container_status(container_id)
    await asyncio.sleep(0.5)
    rotated = rotate(status.log_path)
    await runtime.reopen_container_log(container_id)
    await asyncio.sleep(0.5)
    assert rotated and read_lines(status.log_path)


async def test_stats_report_cpu_and_memory(runtime: CriRuntime, setup: Setup):
    pod = await run_sandbox(runtime, setup)
    container_id = await run_container(runtime, setup, pod, "i=0; while [ $i -lt 20000 ]; do i=$((i+1)); done; "
                                                            "sleep 1000")
    await asyncio.sleep(2)
    stats = await runtime.container_stats(container_id)
    assert stats.container_id == container_id
    assert stats.cpu_usage_core_nanoseconds > 0
    assert stats.memory_usage_bytes > 0 and stats.memory_working_set_bytes > 0
    assert stats.timestamp > 0


async def test_polling_turns_state_changes_into_events(runtime: CriRuntime, setup: Setup):
    pod = await run_sandbox(runtime, setup)
    events = runtime.subscribe_events()
    try:
        await asyncio.sleep(0.5)
        container_id = await run_container(runtime, setup, pod, "sleep 0.5")
        seen: list[ContainerEventType] = []
        async with asyncio.timeout(15):
            while ContainerEventType.STOPPED not in seen:
                event = await events.get()
                if event.container_id == container_id:
                    assert event.sandbox_id == pod.id
                    seen.append(event.type)
            await runtime.remove_container(container_id)
            while ContainerEventType.DELETED not in seen:
                event = await events.get()
                if event.container_id == container_id:
                    seen.append(event.type)
        assert seen[-2:] == [ContainerEventType.STOPPED, ContainerEventType.DELETED]
        assert ContainerEventType.STARTED in seen or ContainerEventType.CREATED in seen
    finally:
        runtime.unsubscribe_events(events)


async def test_many_containers_start_at_once_over_one_connection(runtime: CriRuntime, setup: Setup):
    pod = await run_sandbox(runtime, setup)
    channel = runtime.client.channel
    unary, in_flight, peak = channel.unary, 0, 0

    async def counting(*args: object, **kwargs: object) -> bytes:
        nonlocal in_flight, peak
        in_flight += 1
        peak = max(peak, in_flight)
        try:
            return await unary(*args, **kwargs)  # type: ignore[arg-type]
        finally:
            in_flight -= 1

    channel.unary = counting  # type: ignore[method-assign]
    connection = channel._connection
    ids = await asyncio.gather(*(run_container(runtime, setup, pod, "sleep 1000", f"c{i}") for i in range(10)))
    assert channel._connection is connection
    assert peak >= 10
    statuses = await runtime.list_containers(pod.id, ContainerState.RUNNING)
    assert {s.id for s in statuses} == set(ids)


@pytest.fixture
def shared() -> Iterator[str]:
    """A host directory anyone may read (pytest's temporary directories are root's alone)."""
    with tempfile.TemporaryDirectory(prefix="kubelite-cri-mount-") as path:
        Path(path).chmod(0o755)
        (Path(path) / "data.txt").write_text("from the host\n")
        yield path


async def test_security_and_mounts_reach_the_container(runtime: CriRuntime, setup: Setup, shared: str):
    pod = await run_sandbox(runtime, setup)
    container_id = await run_container(
        runtime, setup, pod, "sleep 1000", env={"GREETING": "hi there"}, working_dir="/tmp",
        mounts=[Mount(shared, "/data", readonly=True)],
        security=SecurityContext(run_as_user=65534, run_as_group=65534, supplemental_groups=[1234],
                                 readonly_rootfs=True, no_new_privs=True))
    script = "id -u; id -g; id -G; pwd; echo $GREETING; cat /data/data.txt; touch /x 2>/dev/null || echo ro"
    code, out, _ = await runtime.exec_sync(container_id, ["sh", "-c", script])
    lines = out.decode().splitlines()
    assert code == 0
    assert lines[:2] == ["65534", "65534"] and "1234" in lines[2].split()
    assert lines[3:] == ["/tmp", "hi there", "from the host", "ro"]


async def test_images_pull_get_list_remove_and_usage(image_service: CriImageService, setup: Setup):
    image = await image_service.pull(setup.user_image)
    assert image.id.startswith("sha256:")
    assert setup.user_image in image.names
    assert image.digests and image.digests[0].startswith(setup.user_image.rsplit(":", 1)[0] + "@sha256:")
    assert image.size > 0 and image.layer_dirs == []
    assert image.config == {"User": "nobody"}
    assert (await image_service.get(image.id)).names == image.names
    assert image.id in {i.id for i in await image_service.list()}
    assert await image_service.usage() > 0
    busybox = await image_service.pull(setup.busybox)
    assert busybox.config == {}
    assert await image_service.remove(setup.user_image) == sorted(image.names + image.digests)
    assert await image_service.get(setup.user_image) is None
    with pytest.raises(ImageNotFound):
        await image_service.remove(setup.user_image)


async def test_pull_failures_are_image_errors(image_service: CriImageService, setup: Setup):
    with pytest.raises(ImageError, match="not found"):
        await image_service.pull(f"{setup.containerd.registry.host}/kubelite/missing:none")


async def test_pull_sends_the_registry_credentials(image_service: CriImageService, basic_registry: Registry):
    ref = f"{basic_registry.host}/private/busybox:test"
    with pytest.raises(ImageError):
        await image_service.pull(ref)
    image = await image_service.pull(ref, {basic_registry.host: AuthConfig(USERNAME, PASSWORD)})
    assert ref in image.names


async def test_runtime_and_images_share_one_channel(setup: Setup):
    channel = Channel(setup.containerd.endpoint)
    runtime, service = CriRuntime(channel), CriImageService(channel)
    try:
        assert (await runtime.version()).name == "containerd"
        assert await service.get(setup.busybox) is not None
        await runtime.close()
        await service.close()
        assert await service.get(setup.busybox) is not None
    finally:
        await channel.close()

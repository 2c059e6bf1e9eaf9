"""The runc runtime against real runc, as root: sandboxes, containers, logs, exits, exec, attach, re-adoption."""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import json
import os
import re
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from kubelite.kubelet.runtime import cgroups, namespaces, syscalls
from kubelite.kubelet.runtime.base import (
    Capabilities,
    ContainerConfig,
    ContainerEvent,
    ContainerEventType,
    ContainerState,
    DNSConfig,
    FailedPreconditionError,
    LinuxResources,
    Mount,
    NotFoundError,
    RuntimeServiceError,
    SandboxConfig,
    SandboxState,
    SecurityContext,
)
from kubelite.kubelet.runtime.bundle import CAPABILITY_NAMES
from kubelite.kubelet.runtime.runc import RuncRuntime, host_info
from kubelite.kubelet.runtime.runccli import find_runc

BUSYBOX = Path("/usr/bin/busybox")
ROOT = Path(__file__).resolve().parents[2]
CRI_LINE = re.compile(rb"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{9}Z (stdout|stderr) (F|P) (.*)$")
PASSWD = "root:x:0:0:root:/root:/bin/sh\napp:x:1000:1000:app:/home/app:/bin/sh\nnobody:x:65534:65534::/:/bin/false\n"
GROUP = "root:x:0:\napp:x:1000:\nextra:x:2000:app\nnogroup:x:65534:\n"


@dataclass
class BusyboxImage:
    """A one-layer image made of the host's static busybox: what RootfsImage asks for."""

    layer_dirs: list[Path]
    config: dict[str, Any] = field(default_factory=dict)


def build_busybox_layer(target: Path) -> Path:
    """A layer directory: bin/busybox with every applet linked to it, /etc/passwd and /etc/group, /tmp."""
    (target / "bin").mkdir(parents=True)
    shutil.copy2(BUSYBOX, target / "bin" / "busybox")
    applets = subprocess.run([str(BUSYBOX), "--list"], capture_output=True, text=True, check=True).stdout.split()
    for applet in applets:
        if applet != "busybox":
            (target / "bin" / applet).symlink_to("busybox")
    (target / "etc").mkdir()
    (target / "etc" / "passwd").write_text(PASSWD)
    (target / "etc" / "group").write_text(GROUP)
    (target / "tmp").mkdir(mode=0o1777)
    (target / "tmp").chmod(0o1777)
    (target / "home" / "app").mkdir(parents=True)
    return target


@pytest.fixture(scope="module")
def layer() -> Iterator[Path]:
    """The busybox layer, shared by the module's tests (read-only under their overlays)."""
    directory = Path(tempfile.mkdtemp(prefix="kl-layer-"))
    try:
        yield build_busybox_layer(directory / "layer")
    finally:
        shutil.rmtree(directory)


@pytest.fixture
def image(layer: Path) -> BusyboxImage:
    """The busybox image with an image config whose Env the containers must see."""
    return BusyboxImage([layer], {"config": {"Env": ["FROM_IMAGE=yes"], "Cmd": ["sh"]}})


@dataclass
class Node:
    """Where one test's runtime keeps its state: short paths (unix sockets), its own cgroup root."""

    base: Path
    layers: Path
    run: Path
    logs: Path
    cgroup_root: str

    def runtime(self, **kwargs: Any) -> RuncRuntime:
        """A runtime instance over this node's state (a second one adopts what the first left)."""
        return RuncRuntime(layers_dir=self.layers, run_dir=self.run, cgroup_root=self.cgroup_root, **kwargs)


def mounts_under(path: Path) -> list[str]:
    """Mount points at or below path in this mount namespace."""
    found = []
    for line in Path("/proc/self/mountinfo").read_text().splitlines():
        point = line.split(" ")[4]
        if point == str(path) or point.startswith(f"{path}/"):
            found.append(point)
    return found


def runc_containers(root: Path) -> list[str]:
    """Containers runc keeps state for under a root."""
    return sorted(os.listdir(root)) if root.exists() else []


def leftovers(node: Node, pod_cgroup: str) -> list[str]:
    """Whatever a removed pod left behind: mounts, runc state, cgroups, namespace files, state files."""
    left = mounts_under(node.base) + runc_containers(node.run / "runc")
    left += [str(root) for root in cgroups.hierarchies().values() if (root / pod_cgroup.lstrip("/")).exists()]
    for directory in (node.run / "netns", node.run / "ipcns", node.run / "utsns", node.run / "shm",
                      node.run / "sandboxes", node.run / "containers", node.run / "state" / "sandboxes",
                      node.run / "state" / "containers", node.layers):
        left += [str(p) for p in directory.glob("*")]
    return left


@pytest.fixture
def node() -> Iterator[Node]:
    """A fresh node; afterwards, even when the test failed: kill runc containers, unmount, remove cgroups."""
    base = Path(tempfile.mkdtemp(prefix="kl-"))
    spot = Node(base, base / "layers", base / "run", base / "logs", f"/kubelite-test-{secrets.token_hex(4)}")
    try:
        yield spot
    finally:
        for container in runc_containers(spot.run / "runc"):
            subprocess.run([find_runc(), "--root", str(spot.run / "runc"), "delete", "--force", container],
                           capture_output=True)
        for point in sorted(mounts_under(base), key=len, reverse=True):
            syscalls.umount(point, syscalls.MNT_DETACH)
        cgroups.remove(spot.cgroup_root)
        shutil.rmtree(base, ignore_errors=True)


@pytest.fixture
async def runtime(node: Node) -> AsyncIterator[RuncRuntime]:
    """A started runtime on the node; its pods are removed afterwards."""
    rt = node.runtime()
    await rt.start()
    try:
        yield rt
    finally:
        for sandbox in await rt.list_pod_sandboxes():
            await rt.remove_pod_sandbox(sandbox.id)
        await rt.close()


def pod(node: Node, name: str = "web", **kwargs: Any) -> SandboxConfig:
    """A pod's sandbox config with a unique uid and its log directory on the node."""
    uid = secrets.token_hex(8)
    return SandboxConfig(name=name, namespace="default", uid=uid, hostname=name,
                         log_directory=str(node.logs / f"default_{name}_{uid}"), **kwargs)


def container(image: BusyboxImage, script: str, name: str = "main", **kwargs: Any) -> ContainerConfig:
    """A container running a shell script, logging to <name>/0.log."""
    return ContainerConfig(name=name, image=image, command=["sh", "-c", script], log_path=f"{name}/0.log", **kwargs)


async def run(rt: RuncRuntime, sandbox_id: str, sandbox: SandboxConfig, config: ContainerConfig) -> str:
    """Create and start a container."""
    container_id = await rt.create_container(sandbox_id, config, sandbox)
    await rt.start_container(container_id)
    return container_id


async def next_event(queue: asyncio.Queue[ContainerEvent], container_id: str,
                     kind: ContainerEventType) -> ContainerEvent:
    """The next event of that kind for that container (callers bound the wait)."""
    while True:
        event = await queue.get()
        if event.container_id == container_id and event.type == kind:
            return event


async def run_to_exit(rt: RuncRuntime, sandbox_id: str, sandbox: SandboxConfig, config: ContainerConfig) -> Any:
    """Create and start a container, and return its status once it exited."""
    events = rt.subscribe_events()
    try:
        container_id = await run(rt, sandbox_id, sandbox, config)
        async with asyncio.timeout(20):
            await next_event(events, container_id, ContainerEventType.STOPPED)
    finally:
        rt.unsubscribe_events(events)
    return await rt.container_status(container_id)


def log_lines(path: str) -> list[tuple[str, str, bytes]]:
    """(stream, tag, content) of every line of a CRI log file, each checked against the format."""
    lines = []
    for raw in Path(path).read_bytes().splitlines():
        match = CRI_LINE.match(raw)
        assert match, f"not a CRI log line: {raw!r}"
        lines.append((match.group(1).decode(), match.group(2).decode(), match.group(3)))
    return lines


async def eventually(check: Callable[[], Awaitable[bool] | bool]) -> None:
    """Poll check (sync or async) until it is true; callers bound the wait."""
    while True:
        result = check()
        if await result if inspect.isawaitable(result) else result:
            return
        await asyncio.sleep(0.05)


def log_has(path: str, content: bytes) -> bool:
    """Whether the log file exists and contains content."""
    return Path(path).exists() and content in Path(path).read_bytes()


def parent_of(pid: int) -> int:
    """The parent pid (0 once the process is gone)."""
    try:
        return int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1])
    except FileNotFoundError:
        return 0


def host_sysctl(name: str) -> str:
    """A sysctl's value as the test process sees it (the host's namespaces)."""
    return Path("/proc/sys", name.replace(".", "/")).read_text().strip()


async def test_echo_logs_and_exit_codes_promptly(runtime: RuncRuntime, node: Node, image: BusyboxImage) -> None:
    config = pod(node)
    sandbox_id = await runtime.run_pod_sandbox(config)
    status = await runtime.pod_sandbox_status(sandbox_id)
    assert status.state == SandboxState.READY and namespaces.is_pinned(Path(status.netns_path))
    events = runtime.subscribe_events()
    script = "echo hello; echo $FROM_IMAGE; echo oops >&2; printf partial"
    for code, reason in ((0, "Completed"), (3, "Error")):
        container_id = await runtime.create_container(
            sandbox_id, container(image, f"{script}; exit {code}", name=f"c{code}"), config)
        async with asyncio.timeout(5):
            await next_event(events, container_id, ContainerEventType.CREATED)
        started = time.monotonic()
        await runtime.start_container(container_id)
        async with asyncio.timeout(5):
            await next_event(events, container_id, ContainerEventType.STOPPED)
        assert time.monotonic() - started < 1.0
        result = await runtime.container_status(container_id)
        assert (result.state, result.exit_code, result.reason) == (ContainerState.EXITED, code, reason)
        assert result.started_at >= result.created_at > 0 and result.finished_at >= result.started_at
        assert result.log_path == f"{config.log_directory}/c{code}/0.log"
        lines = log_lines(result.log_path)
        assert [(s, t, c) for s, t, c in lines if s == "stdout"] == [
            ("stdout", "F", b"hello"), ("stdout", "F", b"yes"), ("stdout", "F", b"partial")]
        assert ("stderr", "F", b"oops") in lines
    listed = await runtime.list_containers(sandbox_id=sandbox_id, state=ContainerState.EXITED)
    assert sorted(c.name for c in listed) == ["c0", "c3"]


async def test_stop_sends_sigterm_then_sigkill(runtime: RuncRuntime, node: Node, image: BusyboxImage) -> None:
    config = pod(node)
    sandbox_id = await runtime.run_pod_sandbox(config)
    polite = await run(runtime, sandbox_id, config, container(
        image, "trap 'echo got TERM; exit 0' TERM; echo ready; while :; do sleep 0.05; done", name="polite"))
    stubborn = await run(runtime, sandbox_id, config, container(
        image, "trap '' TERM; echo ready; while :; do sleep 0.05; done", name="stubborn"))
    for container_id in (polite, stubborn):
        log_path = (await runtime.container_status(container_id)).log_path
        async with asyncio.timeout(10):
            await eventually(lambda p=log_path: log_has(p, b"ready"))
    started = time.monotonic()
    await runtime.stop_container(polite, 10)
    assert time.monotonic() - started < 5
    status = await runtime.container_status(polite)
    assert (status.exit_code, status.reason) == (0, "Completed")
    assert ("stdout", "F", b"got TERM") in log_lines(status.log_path)
    started = time.monotonic()
    await runtime.stop_container(stubborn, 1.0)
    assert time.monotonic() - started >= 1.0
    status = await runtime.container_status(stubborn)
    assert (status.state, status.exit_code, status.reason) == (ContainerState.EXITED, 137, "Error")


async def test_memory_limit_is_oom_killed(runtime: RuncRuntime, node: Node, image: BusyboxImage) -> None:
    config = pod(node)
    sandbox_id = await runtime.run_pod_sandbox(config)
    limited = container(image, "echo start; exec dd if=/dev/zero of=/dev/null bs=256M count=1",
                        resources=LinuxResources(memory_limit_in_bytes=32 << 20, cpu_shares=512, cpu_quota=50000,
                                                 cpu_period=100000, oom_score_adj=-998))
    status = await run_to_exit(runtime, sandbox_id, config, limited)
    assert (status.exit_code, status.reason) == (137, "OOMKilled")
    assert log_lines(status.log_path) == [("stdout", "F", b"start")]


async def test_pod_shares_network_and_hostname_but_not_pids(runtime: RuncRuntime, node: Node,
                                                             image: BusyboxImage) -> None:
    config = pod(node, name="duo")
    sandbox_id = await runtime.run_pod_sandbox(config)
    server = await run(runtime, sandbox_id, config, container(
        image, "while :; do echo pong | nc -l -p 8080; done", name="server"))
    client = await run(runtime, sandbox_id, config, container(image, "sleep 1000", name="client"))

    async def answered() -> bool:
        code, out, _ = await runtime.exec_sync(client, ["nc", "127.0.0.1", "8080"], timeout_s=5)
        return code == 0 and out.strip() == b"pong"

    async with asyncio.timeout(10):
        await eventually(answered)
    for container_id in (server, client):
        assert (await runtime.exec_sync(container_id, ["hostname"]))[1].strip() == b"duo"
    _, processes, _ = await runtime.exec_sync(client, ["ps", "-o", "comm"])
    assert "sleep" in processes.decode() and "nc" not in processes.decode()
    _, processes, _ = await runtime.exec_sync(server, ["ps", "-o", "comm"])
    assert "sleep" not in processes.decode().split()


async def test_shared_process_namespace(runtime: RuncRuntime, node: Node, image: BusyboxImage) -> None:
    config = pod(node, share_process_namespace=True)
    sandbox_id = await runtime.run_pod_sandbox(config)
    first = await run(runtime, sandbox_id, config, container(image, "exec sleep 1001", name="first"))
    second = await run(runtime, sandbox_id, config, container(image, "exec sleep 1002", name="second"))
    _, out, _ = await runtime.exec_sync(second, ["ps", "-o", "pid,args"])
    assert "sleep 1001" in out.decode() and "sleep 1002" in out.decode()
    pid_one = next(line for line in out.decode().splitlines() if line.split()[0] == "1")
    assert "busybox" in pid_one
    await runtime.exec_sync(first, ["sh", "-c", "sleep 0.1 & exit 0"])
    await asyncio.sleep(0.5)
    _, out, _ = await runtime.exec_sync(first, ["ps", "-o", "stat,args"])
    assert not [line for line in out.decode().splitlines() if line.startswith("Z")], out.decode()


async def test_exec_sync_output_exit_code_and_timeout(runtime: RuncRuntime, node: Node, image: BusyboxImage) -> None:
    config = pod(node)
    sandbox_id = await runtime.run_pod_sandbox(config)
    container_id = await run(runtime, sandbox_id, config, container(image, "sleep 1000"))
    code, out, err = await runtime.exec_sync(container_id, ["sh", "-c", "echo out; echo err >&2; exit 7"])
    assert (code, out, err) == (7, b"out\n", b"err\n")
    started = time.monotonic()
    with pytest.raises(TimeoutError):
        await runtime.exec_sync(container_id, ["sleep", "30"], timeout_s=0.5)
    assert time.monotonic() - started < 5
    _, processes, _ = await runtime.exec_sync(container_id, ["ps", "-o", "args"])
    assert "sleep 30" not in processes.decode()


async def test_streaming_exec_with_pipes_and_tty(runtime: RuncRuntime, node: Node, image: BusyboxImage) -> None:
    config = pod(node)
    sandbox_id = await runtime.run_pod_sandbox(config)
    container_id = await run(runtime, sandbox_id, config, container(image, "sleep 1000"))
    piped = await runtime.exec(container_id, ["sh", "-c", "cat; echo done >&2"], stdin=True)
    await piped.write_stdin(b"through the pipe\n")
    await piped.close_stdin()
    assert await piped.read_stdout() == b"through the pipe\n"
    assert await piped.read_stderr() == b"done\n"
    assert await piped.wait() == 0

    tty = await runtime.exec(container_id, ["sh"], tty=True, stdin=True)
    await tty.resize(100, 30)
    await tty.write_stdin(b"tty; stty size; echo $((6 * 7)); exit 5\n")
    seen = b""
    async with asyncio.timeout(10):
        while chunk := await tty.read_stdout():
            seen += chunk
    assert b"/dev/pts/" in seen and b"30 100" in seen and b"42" in seen
    assert await tty.wait() == 5


async def test_attach_to_stdin_and_output(runtime: RuncRuntime, node: Node, image: BusyboxImage) -> None:
    config = pod(node)
    sandbox_id = await runtime.run_pod_sandbox(config)
    container_id = await run(runtime, sandbox_id, config, container(
        image, "while read line; do echo \"got $line\"; done; echo bye; exit 4", stdin=True, stdin_once=True))
    session = await runtime.attach(container_id, stdin=True)
    await session.write_stdin(b"one\n")
    assert await session.read_stdout() == b"got one\n"
    await session.close_stdin()
    assert await session.read_stdout() == b"bye\n"
    assert await session.wait() == 4
    await session.close()
    assert [c for _, _, c in log_lines((await runtime.container_status(container_id)).log_path)] == [
        b"got one", b"bye"]


async def test_port_forward_reaches_pod_loopback(runtime: RuncRuntime, node: Node, image: BusyboxImage) -> None:
    config = pod(node)
    sandbox_id = await runtime.run_pod_sandbox(config)
    await run(runtime, sandbox_id, config, container(image, "while :; do echo pong | nc -l -p 8081; done"))
    with pytest.raises(OSError):
        await asyncio.open_connection("127.0.0.1", 8081)
    async with asyncio.timeout(10):
        while True:
            try:
                reader, writer = await runtime.port_forward(sandbox_id, 8081)
            except ConnectionRefusedError:
                await asyncio.sleep(0.05)
                continue
            break
    assert await reader.readline() == b"pong\n"
    writer.close()


async def test_security_settings(runtime: RuncRuntime, node: Node, image: BusyboxImage) -> None:
    config = pod(node)
    sandbox_id = await runtime.run_pod_sandbox(config)
    readonly = await run(runtime, sandbox_id, config, container(
        image, "sleep 1000", name="ro", security=SecurityContext(readonly_rootfs=True, no_new_privs=True)))
    code, _, err = await runtime.exec_sync(readonly, ["touch", "/file"])
    assert code != 0 and b"Read-only file system" in err
    assert (await runtime.exec_sync(readonly, ["touch", "/dev/shm/file"]))[0] == 0
    assert (await runtime.exec_sync(readonly, ["wc", "-c", "/proc/timer_list"]))[1].split()[0] == b"0"
    _, status, _ = await runtime.exec_sync(readonly, ["cat", "/proc/self/status"])
    assert re.search(rb"NoNewPrivs:\s+1", status)
    assert int(re.search(rb"CapEff:\s+([0-9a-f]+)", status).group(1), 16) == 0xa80425fb
    user = await run(runtime, sandbox_id, config, container(
        image, "sleep 1000", name="user", security=SecurityContext(
            run_as_user=1000, supplemental_groups=[3000], capabilities=Capabilities(add=["NET_ADMIN"],
                                                                                    drop=["MKNOD"]))))
    assert (await runtime.exec_sync(user, ["id", "-u"]))[1] == b"1000\n"
    assert sorted((await runtime.exec_sync(user, ["id", "-G"]))[1].split()) == [b"1000", b"2000", b"3000"]
    _, status, _ = await runtime.exec_sync(user, ["cat", "/proc/1/status"])
    bounding = int(re.search(rb"CapBnd:\s+([0-9a-f]+)", status).group(1), 16)
    assert bounding & (1 << 12) and not bounding & (1 << 27)


async def test_pod_dns_sysctls_and_hosts(runtime: RuncRuntime, node: Node, image: BusyboxImage) -> None:
    port_start = host_sysctl("net.ipv4.ip_unprivileged_port_start")
    config = pod(node, dns=DNSConfig(["10.96.0.10"], ["default.svc.cluster.local", "svc.cluster.local"], ["ndots:5"]),
                 sysctls={"net.ipv4.ip_unprivileged_port_start": "0", "kernel.shmmni": "2048"})
    sandbox_id = await runtime.run_pod_sandbox(config)
    container_id = await run(runtime, sandbox_id, config, container(image, "sleep 1000"))

    async def cat(path: str) -> bytes:
        return (await runtime.exec_sync(container_id, ["cat", path]))[1]

    assert await cat("/etc/resolv.conf") == (b"search default.svc.cluster.local svc.cluster.local\n"
                                             b"nameserver 10.96.0.10\noptions ndots:5\n")
    assert await cat("/etc/hostname") == b"web\n"
    assert b"localhost" in await cat("/etc/hosts")
    assert await cat("/proc/sys/net/ipv4/ip_unprivileged_port_start") == b"0\n"
    assert await cat("/proc/sys/kernel/shmmni") == b"2048\n"
    assert host_sysctl("net.ipv4.ip_unprivileged_port_start") == port_start
    for bad in (pod(node, sysctls={"kernel.panic": "1"}), pod(node, host_network=True, sysctls={"net.core.x": "1"}),
                pod(node, host_ipc=True, sysctls={"kernel.shmmax": "1"})):
        with pytest.raises(ValueError):
            await runtime.run_pod_sandbox(bad)
    assert [s.id for s in await runtime.list_pod_sandboxes()] == [sandbox_id]


async def test_host_namespaces_privileged_and_orphans(node: Node, image: BusyboxImage) -> None:
    runtime = node.runtime(orphan_sweep_s=0.1)
    await runtime.start()
    try:
        config = pod(node, host_network=True, host_pid=True, host_ipc=True)
        sandbox_id = await runtime.run_pod_sandbox(config)
        assert (await runtime.pod_sandbox_status(sandbox_id)).netns_path == ""
        container_id = await run(runtime, sandbox_id, config, container(
            image, "(sleep 1 &); sleep 1000", security=SecurityContext(privileged=True)))
        status = await runtime.container_status(container_id)
        _, out, _ = await runtime.exec_sync(container_id, ["ps", "-o", "pid,ppid,args"])
        rows = [line.split(None, 2) for line in out.decode().splitlines()[1:]]
        assert str(os.getpid()) in [row[0] for row in rows], "the host's processes are visible"
        orphan = next(int(pid) for pid, ppid, args in rows if args == "sleep 1" and int(ppid) == os.getpid())
        assert (await runtime.exec_sync(container_id, ["hostname"]))[1].decode().strip() == os.uname().nodename
        _, proc_status, _ = await runtime.exec_sync(container_id, ["cat", "/proc/self/status"])
        effective = int(re.search(rb"CapEff:\s+([0-9a-f]+)", proc_status).group(1), 16)
        assert effective == sum(1 << CAPABILITY_NAMES.index(c) for c in host_info().capabilities)
        assert (await runtime.exec_sync(container_id, ["test", "-c", "/dev/kmsg"]))[0] == 0
        async with asyncio.timeout(5):
            await eventually(lambda: parent_of(orphan) == 0)
        assert status.state == ContainerState.RUNNING
    finally:
        for sandbox in await runtime.list_pod_sandboxes():
            await runtime.remove_pod_sandbox(sandbox.id)
        await runtime.close()


async def test_tty_container_attach_and_log(runtime: RuncRuntime, node: Node, image: BusyboxImage) -> None:
    config = pod(node)
    sandbox_id = await runtime.run_pod_sandbox(config)
    container_id = await run(runtime, sandbox_id, config, container(
        image, "tty; while read line; do echo got $line; done", tty=True, stdin=True))
    session = await runtime.attach(container_id, stdin=True)
    await session.resize(120, 40)
    await session.write_stdin(b"hi\n")
    seen = b""
    async with asyncio.timeout(10):
        while b"got hi" not in seen:
            seen += await session.read_stdout()
    await session.close()
    await runtime.stop_container(container_id, 0)
    contents = [c for _, _, c in log_lines((await runtime.container_status(container_id)).log_path)]
    assert [c for c in contents if c.startswith(b"/dev/pts/")] and b"got hi" in contents
    assert not [c for c in contents if c.endswith(b"\r")]


async def test_reopen_log_after_rename(runtime: RuncRuntime, node: Node, image: BusyboxImage) -> None:
    config = pod(node)
    sandbox_id = await runtime.run_pod_sandbox(config)
    container_id = await run(runtime, sandbox_id, config, container(
        image, "i=0; while :; do i=$((i+1)); echo $i; sleep 0.02; done"))
    path = Path((await runtime.container_status(container_id)).log_path)
    async with asyncio.timeout(10):
        await eventually(lambda: len(log_lines(str(path))) > 3)
    os.rename(path, path.with_name("0.log.rotated"))
    await runtime.reopen_container_log(container_id)
    async with asyncio.timeout(10):
        await eventually(lambda: log_has(str(path), b"F"))
    await runtime.stop_container(container_id, 0)
    numbers = [int(c) for name in ("0.log.rotated", "0.log") for _, _, c in log_lines(str(path.with_name(name)))]
    assert numbers == list(range(1, len(numbers) + 1))


async def test_mounts_and_stats(runtime: RuncRuntime, node: Node, image: BusyboxImage) -> None:
    shared = node.base / "shared"
    shared.mkdir()
    (shared / "data").write_text("from the host\n")
    config = pod(node)
    sandbox_id = await runtime.run_pod_sandbox(config)
    container_id = await run(runtime, sandbox_id, config, container(
        image, "while :; do :; done", mounts=[Mount(str(shared), "/mnt/shared", readonly=True)],
        resources=LinuxResources(cpu_quota=20000, cpu_period=100000)))
    assert (await runtime.exec_sync(container_id, ["cat", "/mnt/shared/data"]))[1] == b"from the host\n"
    assert (await runtime.exec_sync(container_id, ["touch", "/mnt/shared/new"]))[0] != 0
    await asyncio.sleep(0.3)
    stats = await runtime.container_stats(container_id)
    assert stats.cpu_usage_core_nanoseconds > 0 and stats.memory_usage_bytes > 0
    assert 0 < stats.memory_working_set_bytes <= stats.memory_usage_bytes


async def test_remove_cleans_up(runtime: RuncRuntime, node: Node, image: BusyboxImage) -> None:
    config = pod(node, share_process_namespace=True)
    sandbox_id = await runtime.run_pod_sandbox(config)
    container_id = await run(runtime, sandbox_id, config, container(image, "sleep 1000"))
    netns = (await runtime.pod_sandbox_status(sandbox_id)).netns_path
    pod_cgroup = f"{node.cgroup_root}/pod{config.uid}"
    assert cgroups.path_in("memory", f"{pod_cgroup}/{container_id}").exists()
    assert len(mounts_under(node.base)) >= 5
    layer, bundle = node.layers / container_id, node.run / "containers" / container_id / "bundle"
    assert (layer / "upper").is_dir() and (bundle / "config.json").is_file(), "writable layer on disk, bundle in run"
    await runtime.remove_container(container_id)
    assert not cgroups.path_in("memory", f"{pod_cgroup}/{container_id}").exists()
    assert not layer.exists() and not bundle.parent.exists()
    with pytest.raises(KeyError):
        await runtime.container_status(container_id)
    await runtime.remove_pod_sandbox(sandbox_id)
    assert leftovers(node, pod_cgroup) == []
    assert not namespaces.is_pinned(Path(netns))
    assert await runtime.list_pod_sandboxes() == []


class BrokenNetwork:
    """A network plugin whose setup fails after it was handed the namespace; it records its calls."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, str, bool]] = []

    async def setup(self, sandbox_id: str, netns_path: str, config: SandboxConfig) -> str:
        self.calls.append(("setup", sandbox_id, namespaces.is_pinned(Path(netns_path))))
        raise RuntimeError("no addresses left")

    async def teardown(self, sandbox_id: str, netns_path: str, config: SandboxConfig) -> None:
        self.calls.append(("teardown", sandbox_id, namespaces.is_pinned(Path(netns_path))))


async def test_failures_leave_nothing_behind(node: Node, image: BusyboxImage) -> None:
    network = BrokenNetwork()
    runtime = node.runtime(network=network)
    await runtime.start()
    try:
        broken = pod(node)
        with pytest.raises(RuntimeError, match="no addresses left"):
            await runtime.run_pod_sandbox(broken)
        assert [(call, pinned) for call, _, pinned in network.calls] == [("setup", True), ("teardown", True)]
        assert await runtime.list_pod_sandboxes() == []
        assert leftovers(node, f"{node.cgroup_root}/pod{broken.uid}") == []

        config = pod(node, host_network=True)
        sandbox_id = await runtime.run_pod_sandbox(config)
        assert len(network.calls) == 2, "a host-network pod never reaches the plugin"
        with pytest.raises(RuntimeServiceError, match="nope"):
            await runtime.create_container(sandbox_id, ContainerConfig(name="bad", image=image, command=["/nope"]),
                                           config)
        assert await runtime.list_containers() == []
        container_id = await run(runtime, sandbox_id, config, container(image, "sleep 1000"))
        with pytest.raises(FailedPreconditionError):
            await runtime.start_container(container_id)
        with pytest.raises(NotFoundError):
            await runtime.container_status("0" * 64)
        with pytest.raises(NotFoundError):
            await runtime.pod_sandbox_status("0" * 64)
        await runtime.remove_container("0" * 64)
        await runtime.stop_pod_sandbox("0" * 64)
        await runtime.remove_pod_sandbox(sandbox_id)
        await runtime.remove_pod_sandbox(sandbox_id)
        assert leftovers(node, f"{node.cgroup_root}/pod{config.uid}") == []
    finally:
        for sandbox in await runtime.list_pod_sandboxes():
            await runtime.remove_pod_sandbox(sandbox.id)
        await runtime.close()


AGENT = """
import asyncio, json, sys, time
from pathlib import Path
sys.path.insert(0, {root!r})
from kubelite.kubelet.runtime.base import ContainerConfig, SandboxConfig
from kubelite.kubelet.runtime.bundle import CAPABILITY_NAMES
from kubelite.kubelet.runtime.runc import RuncRuntime, host_info
from kubelite.kubelet.runtime.runccli import find_runc
from tests.integration.test_runtime_runc import BusyboxImage

async def main():
    rt = RuncRuntime(layers_dir=Path({layers!r}), run_dir=Path({run!r}), cgroup_root={cgroup!r})
    await rt.start()
    config = SandboxConfig(name="kept", namespace="default", uid="kept-uid", log_directory={logs!r})
    sandbox_id = await rt.run_pod_sandbox(config)
    script = "i=0; while :; do i=$((i+1)); echo tick $i; sleep 0.05; done"
    image = BusyboxImage([Path({layer!r})])
    container_id = await rt.create_container(sandbox_id, ContainerConfig(
        name="ticker", image=image, command=["sh", "-c", script], log_path="ticker/0.log"), config)
    await rt.start_container(container_id)
    print(json.dumps([sandbox_id, container_id]), flush=True)
    await asyncio.sleep(3600)

asyncio.run(main())
"""


async def test_new_instance_adopts_running_container(node: Node, layer: Path) -> None:
    code = AGENT.format(root=str(ROOT), layers=str(node.layers), run=str(node.run), cgroup=node.cgroup_root,
                        logs=str(node.logs), layer=str(layer))
    agent = await asyncio.create_subprocess_exec(sys.executable, "-c", code, stdout=asyncio.subprocess.PIPE)
    syscalls.set_child_subreaper(False)
    try:
        assert agent.stdout is not None
        async with asyncio.timeout(30):
            sandbox_id, container_id = json.loads(await agent.stdout.readline())
        # Kill the agent between two ticks, not while it copies one: a line it has read but not yet written when
        # SIGKILL lands is the one thing a restart cannot recover.
        first_log = node.logs / "ticker" / "0.log"
        async with asyncio.timeout(10):
            await eventually(lambda: first_log.exists() and len(log_lines(str(first_log))) >= 1)
    finally:
        with contextlib.suppress(ProcessLookupError):
            agent.kill()
        await agent.wait()
    rt = node.runtime()
    await rt.start()
    try:
        assert [s.id for s in await rt.list_pod_sandboxes(SandboxState.READY)] == [sandbox_id]
        status = await rt.container_status(container_id)
        assert status.state == ContainerState.RUNNING and status.pid > 0
        assert parent_of(status.pid) != os.getpid(), "the container must not be a child of the new instance"
        ticks = len(log_lines(status.log_path))
        async with asyncio.timeout(10):
            await eventually(lambda: len(log_lines(status.log_path)) > ticks + 5)
        numbers = [int(c.split()[1]) for _, _, c in log_lines(status.log_path)]
        assert numbers == list(range(1, len(numbers) + 1)), "lines lost or repeated across the restart"
        events = rt.subscribe_events()
        os.kill(status.pid, signal.SIGKILL)
        async with asyncio.timeout(2):
            await next_event(events, container_id, ContainerEventType.STOPPED)
        status = await rt.container_status(container_id)
        assert (status.state, status.reason, status.exit_code) == (ContainerState.EXITED, "Error", 137), \
            "an adopted container's exit code comes from the kernel's process events"
    finally:
        for sandbox in await rt.list_pod_sandboxes():
            await rt.remove_pod_sandbox(sandbox.id)
        await rt.close()
    assert mounts_under(node.base) == []


async def test_adopted_container_takes_stdin_and_reports_exit(node: Node, image: BusyboxImage) -> None:
    first = node.runtime()
    await first.start()
    config = pod(node)
    sandbox_id = await first.run_pod_sandbox(config)
    container_id = await run(first, sandbox_id, config, container(image, "read x; echo $x; exit 9", stdin=True))
    await first.close()
    second = node.runtime()
    await second.start()
    try:
        assert (await second.container_status(container_id)).state == ContainerState.RUNNING
        session = await second.attach(container_id, stdin=True)
        await session.write_stdin(b"go\n")
        assert await asyncio.wait_for(session.wait(), 5) == 9
        status = await second.container_status(container_id)
        assert (status.state, status.exit_code, status.reason) == (ContainerState.EXITED, 9, "Error")
        assert log_lines(status.log_path) == [("stdout", "F", b"go")]
    finally:
        await second.remove_pod_sandbox(sandbox_id)
        await second.close()


async def test_a_reboot_leaves_nothing_behind(node: Node, image: BusyboxImage) -> None:
    """A reboot ends the containers and empties the run directory (a tmpfs, with the records) and the cgroups; a new
    instance then knows no sandbox or container and removes the writable layers left on disk."""
    first = node.runtime()
    await first.start()
    config = pod(node)
    sandbox_id = await first.run_pod_sandbox(config)
    container_id = await run(first, sandbox_id, config, container(image, "sleep 1000"))
    pid = (await first.container_status(container_id)).pid
    await first.close()
    assert (node.layers / container_id / "upper").is_dir()
    os.kill(pid, signal.SIGKILL)
    await asyncio.to_thread(os.waitpid, pid, 0)
    for point in reversed(mounts_under(node.run)):
        syscalls.umount(point, syscalls.MNT_DETACH)
    shutil.rmtree(node.run)
    pod_cgroup = f"{node.cgroup_root}/pod{config.uid}"
    cgroups.remove(f"{pod_cgroup}/{container_id}")
    cgroups.remove(pod_cgroup)
    second = node.runtime()
    await second.start()
    try:
        assert await second.list_pod_sandboxes() == [] and await second.list_containers() == []
        assert leftovers(node, pod_cgroup) == []
    finally:
        await second.close()

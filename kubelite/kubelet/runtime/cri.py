"""RuntimeService over a CRI runtime (containerd, CRI-O) at a gRPC endpoint (unix:///run/containerd/containerd.sock).

The runtime does the work (sandboxes, networking through its CNI config, images, logs, exec); this client maps our
dataclasses to CRI messages (criproto) and its gRPC errors to ours. Container events come from polling
ListContainers while someone listens, as the generic PLEG does: CRI 1.6 runtimes have no reliable event stream.
Exec, attach and port-forward go to the streaming server whose URL the runtime returns (cristreams, crispdy).
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import time
from collections.abc import Awaitable, Callable
from typing import TypeVar

from kubelite.kubelet.grpcchannel import DEADLINE_EXCEEDED, FAILED_PRECONDITION, NOT_FOUND, Channel, RpcError
from kubelite.kubelet.runtime import cgroups, criproto, crispdy
from kubelite.kubelet.runtime.base import (
    ContainerConfig,
    ContainerEvent,
    ContainerEventType,
    ContainerState,
    ContainerStats,
    ContainerStatus,
    FailedPreconditionError,
    NotFoundError,
    RuntimeService,
    RuntimeServiceError,
    RuntimeVersion,
    SandboxConfig,
    SandboxState,
    SandboxStatus,
    StreamSession,
)
from kubelite.kubelet.runtime.cristreams import StreamClient

log = logging.getLogger(__name__)
T = TypeVar("T")

REQUEST_TIMEOUT = 120.0
"""Deadline of a runtime call, as the kubelet's --runtime-request-timeout (2 minutes)."""
ATTACH_EXIT_POLLS = 40
"""How often (every 50 ms) an ended attach asks whether the container has exited, to tell its exit code."""
POLL_INTERVAL = 1.0
"""How often ListContainers is polled for events while someone subscribes."""
EVENT_OF_STATE = {ContainerState.CREATED: ContainerEventType.CREATED,
                  ContainerState.RUNNING: ContainerEventType.STARTED,
                  ContainerState.EXITED: ContainerEventType.STOPPED}


class DeadlineError(RuntimeServiceError, TimeoutError):
    """The call (or, for ExecSync, the command) ran past its deadline."""


def runtime_error(exc: RpcError) -> RuntimeServiceError:
    """Our error for a CRI call's gRPC status: NotFound, FailedPrecondition, DeadlineExceeded (also a
    TimeoutError), else RuntimeServiceError with the runtime's message."""
    if exc.code == NOT_FOUND:
        return NotFoundError(exc.message)
    if exc.code == FAILED_PRECONDITION:
        return FailedPreconditionError(exc.message)
    if exc.code == DEADLINE_EXCEEDED:
        return DeadlineError(exc.message)
    return RuntimeServiceError(exc.message or str(exc))


class CriClient:
    """Calls of one CRI service over a channel (its own for an endpoint string, or one shared with the other
    service), with errors as RuntimeServiceError and its subclasses."""

    def __init__(self, endpoint: str | Channel, service: str):
        self.owns_channel = not isinstance(endpoint, Channel)
        self.channel = Channel(endpoint, "kubelite-kubelet") if isinstance(endpoint, str) else endpoint
        self.service = service

    async def call(self, method: str, request: bytes, decode: Callable[[bytes], T],
                   deadline: float | None = REQUEST_TIMEOUT) -> T:
        """One unary call, its reply decoded."""
        try:
            reply = await self.channel.unary(self.service + method, request, deadline)
        except RpcError as exc:
            raise runtime_error(exc) from None
        except OSError as exc:
            raise RuntimeServiceError(f"the container runtime at {self.channel.target} is unreachable: {exc}") \
                from None
        try:
            return decode(reply)
        except ValueError as exc:
            raise RuntimeServiceError(f"{method}: {exc}") from None

    async def close(self) -> None:
        """Close the channel if this client made it."""
        if self.owns_channel:
            await self.channel.close()


def _ignore(_reply: bytes) -> None:
    """For calls whose reply is empty."""


class CriRuntime(RuntimeService):
    """RuntimeService on a CRI runtime; see the module docstring."""

    def __init__(self, endpoint: str | Channel, cgroup_root: str = "/kubelite", poll_interval: float = POLL_INTERVAL):
        self.client = CriClient(endpoint, criproto.RUNTIME_SERVICE)
        self.cgroup_root = "/" + cgroup_root.strip("/")
        self.poll_interval = poll_interval
        self.streams = StreamClient()
        self._subscribers: list[asyncio.Queue[ContainerEvent]] = []
        self._poller: asyncio.Task[None] | None = None

    async def _call(self, method: str, request: bytes, decode: Callable[[bytes], T],
                    deadline: float | None = REQUEST_TIMEOUT) -> T:
        return await self.client.call(method, request, decode, deadline)

    # ---- lifecycle of the client

    async def start(self) -> None:
        """Check that the runtime answers (its state is its own: nothing to load)."""
        await self.version()

    async def close(self) -> None:
        """Stop polling, end port-forwards, close the channel (if ours); containers keep running."""
        self._subscribers.clear()
        await self._stop_polling()
        await self.streams.close()
        await self.client.close()

    async def version(self) -> RuntimeVersion:
        """The runtime's name and version, e.g. containerd 1.6.20~ds1."""
        return await self._call("Version", criproto.version_request(), criproto.decode_version)

    # ---- sandboxes

    def _resolved(self, config: SandboxConfig) -> SandboxConfig:
        """The config with its pod cgroup filled in (cgroupfs path), as the runc runtime places pods."""
        if config.cgroup_parent:
            return config
        return dataclasses.replace(config, cgroup_parent=f"{self.cgroup_root}/pod{config.uid}")

    async def run_pod_sandbox(self, config: SandboxConfig) -> str:
        """RunPodSandbox: the runtime makes the namespaces and the network (its CNI config)."""
        return await self._call("RunPodSandbox", criproto.run_pod_sandbox_request(self._resolved(config)),
                                criproto.decode_sandbox_id)

    async def stop_pod_sandbox(self, sandbox_id: str) -> None:
        """StopPodSandbox (a sandbox already gone counts as stopped)."""
        with contextlib.suppress(NotFoundError):
            await self._call("StopPodSandbox", criproto.sandbox_request(sandbox_id), _ignore)

    async def remove_pod_sandbox(self, sandbox_id: str) -> None:
        """StopPodSandbox, RemovePodSandbox (with its containers), then the pod cgroup when empty: the runtime
        leaves that behind (idempotent)."""
        try:
            status = await self.pod_sandbox_status(sandbox_id)
        except NotFoundError:
            return
        await self.stop_pod_sandbox(sandbox_id)
        with contextlib.suppress(NotFoundError):
            await self._call("RemovePodSandbox", criproto.sandbox_request(sandbox_id), _ignore)
        if status.config.cgroup_parent:
            await asyncio.to_thread(cgroups.remove, status.config.cgroup_parent)

    async def pod_sandbox_status(self, sandbox_id: str) -> SandboxStatus:
        """PodSandboxStatus: state, IP and the config the sandbox was made with."""
        return await self._call("PodSandboxStatus", criproto.sandbox_request(sandbox_id),
                                criproto.decode_pod_sandbox_status)

    async def list_pod_sandboxes(self, state: SandboxState | None = None) -> list[SandboxStatus]:
        """ListPodSandbox, then the status of each (for its IP), concurrently; sandboxes removed meanwhile are left
        out."""
        listed = await self._call("ListPodSandbox", criproto.list_pod_sandbox_request(state),
                                  criproto.decode_list_pod_sandbox)
        found = await asyncio.gather(*(self._unless_gone(self.pod_sandbox_status(s.id)) for s in listed))
        return sorted((s for s in found if s is not None), key=lambda s: s.created_at)

    @staticmethod
    async def _unless_gone(call: Awaitable[T]) -> T | None:
        try:
            return await call
        except NotFoundError:
            return None

    # ---- containers

    async def create_container(self, sandbox_id: str, config: ContainerConfig, sandbox_config: SandboxConfig) -> str:
        """CreateContainer from the image reference the pod asked for (pulled through the same runtime). The OOM
        score adjustment is kept at 0 or above: negative values fail on machines without CAP_SYS_RESOURCE."""
        resources = dataclasses.replace(config.resources, oom_score_adj=max(0, config.resources.oom_score_adj))
        config = dataclasses.replace(config, resources=resources)
        return await self._call("CreateContainer",
                                criproto.create_container_request(sandbox_id, config, self._resolved(sandbox_config)),
                                criproto.decode_container_id)

    async def start_container(self, container_id: str) -> None:
        """StartContainer."""
        await self._call("StartContainer", criproto.container_request(container_id), _ignore)

    async def stop_container(self, container_id: str, timeout_s: float) -> None:
        """StopContainer: the stop signal, SIGKILL after timeout_s (the call may take that long)."""
        await self._call("StopContainer", criproto.stop_container_request(container_id, timeout_s), _ignore,
                         REQUEST_TIMEOUT + timeout_s)

    async def remove_container(self, container_id: str) -> None:
        """RemoveContainer (idempotent; the log file stays)."""
        with contextlib.suppress(NotFoundError):
            await self._call("RemoveContainer", criproto.container_request(container_id), _ignore)

    async def container_status(self, container_id: str) -> ContainerStatus:
        """ContainerStatus: state, times, exit code and reason."""
        return await self._call("ContainerStatus", criproto.container_request(container_id),
                                criproto.decode_container_status)

    async def list_containers(self, sandbox_id: str | None = None,
                              state: ContainerState | None = None) -> list[ContainerStatus]:
        """ListContainers, then the status of each (times, exit codes), concurrently; oldest first."""
        listed = await self._call("ListContainers", criproto.list_containers_request(sandbox_id, state),
                                  criproto.decode_list_containers)
        found = await asyncio.gather(*(self._unless_gone(self.container_status(c.id)) for c in listed))
        out = []
        for item, status in zip(listed, found, strict=True):
            if status is not None:
                status.sandbox_id = status.sandbox_id or item.sandbox_id
                out.append(status)
        return sorted(out, key=lambda c: c.created_at)

    async def reopen_container_log(self, container_id: str) -> None:
        """ReopenContainerLog."""
        await self._call("ReopenContainerLog", criproto.container_request(container_id), _ignore)

    async def container_stats(self, container_id: str) -> ContainerStats:
        """ContainerStats: CPU time and memory from the runtime's cgroup readings."""
        return await self._call("ContainerStats", criproto.container_request(container_id),
                                criproto.decode_container_stats)

    # ---- exec, attach, port-forward

    async def exec_sync(self, container_id: str, cmd: list[str], timeout_s: float = 0) -> tuple[int, bytes, bytes]:
        """ExecSync; TimeoutError (DeadlineError) when the command outlives timeout_s (> 0)."""
        return await self._call("ExecSync", criproto.exec_sync_request(container_id, cmd, timeout_s),
                                criproto.decode_exec_sync, REQUEST_TIMEOUT + timeout_s if timeout_s > 0 else None)

    async def _session(self, url: str, stdin: bool, tty: bool,
                       exit_code: Callable[[int], Awaitable[int]] | None = None) -> StreamSession:
        """The session at a streaming URL: over SPDY when it carries a pipe's input, whose end only SPDY can tell
        a pre-v5 server (containerd 1.6), else over a channel WebSocket."""
        if stdin and not tty:
            return await crispdy.open_session(url, stdin, tty, exit_code)
        return await self.streams.session(url, tty, exit_code)

    async def exec(self, container_id: str, cmd: list[str], tty: bool = False, stdin: bool = False) -> StreamSession:
        """Exec for a streaming URL, then the session there."""
        url = await self._call("Exec", criproto.exec_request(container_id, cmd, tty, stdin), criproto.decode_url)
        return await self._session(url, stdin, tty)

    async def attach(self, container_id: str, stdin: bool = False) -> StreamSession:
        """Attach for a streaming URL, then the session there; its exit code is the container's."""
        tty = await self._call("ContainerStatus", criproto.container_request(container_id),
                               criproto.decode_container_tty)
        url = await self._call("Attach", criproto.attach_request(container_id, stdin, tty), criproto.decode_url)

        async def exit_code(session_code: int) -> int:
            """The container's exit code once the runtime has recorded its exit (a moment after its output
            ended), else the session's."""
            for _ in range(ATTACH_EXIT_POLLS):
                status = await self.container_status(container_id)
                if status.state == ContainerState.EXITED:
                    return status.exit_code
                await asyncio.sleep(0.05)
            return session_code

        return await self._session(url, stdin, tty, exit_code)

    async def port_forward(self, sandbox_id: str, port: int) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        """PortForward for a streaming URL, then a connection to the port through it."""
        url = await self._call("PortForward", criproto.port_forward_request(sandbox_id, [port]), criproto.decode_url)
        return await self.streams.port_forward(url, port)

    # ---- events

    def subscribe_events(self) -> asyncio.Queue[ContainerEvent]:
        """A queue fed with the container events polling finds from now on."""
        queue: asyncio.Queue[ContainerEvent] = asyncio.Queue()
        self._subscribers.append(queue)
        if self._poller is None or self._poller.done():
            self._poller = asyncio.create_task(self._poll())
        return queue

    def unsubscribe_events(self, queue: asyncio.Queue[ContainerEvent]) -> None:
        """Stop feeding the queue; polling stops with the last subscriber."""
        with contextlib.suppress(ValueError):
            self._subscribers.remove(queue)
        if not self._subscribers and self._poller is not None:
            self._poller.cancel()
            self._poller = None

    async def _stop_polling(self) -> None:
        poller, self._poller = self._poller, None
        if poller is not None:
            poller.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await poller

    async def _snapshot(self) -> dict[str, tuple[str, ContainerState]]:
        listed = await self._call("ListContainers", criproto.list_containers_request(),
                                  criproto.decode_list_containers)
        return {c.id: (c.sandbox_id, c.state) for c in listed}

    async def _poll(self) -> None:
        """Compare ListContainers with the previous listing: a new or changed state is an event, a container gone
        is DELETED."""
        known: dict[str, tuple[str, ContainerState]] | None = None
        while True:
            try:
                current = await self._snapshot()
            except RuntimeServiceError as exc:
                log.warning("polling the container runtime for events failed: %s", exc)
            else:
                if known is not None:
                    self._emit_changes(known, current)
                known = current
            await asyncio.sleep(self.poll_interval)

    def _emit_changes(self, before: dict[str, tuple[str, ContainerState]],
                      after: dict[str, tuple[str, ContainerState]]) -> None:
        now = time.time_ns()
        events = []
        for container_id, (sandbox_id, state) in after.items():
            previous = before.get(container_id)
            if (previous is None or previous[1] != state) and state in EVENT_OF_STATE:
                events.append(ContainerEvent(container_id, sandbox_id, EVENT_OF_STATE[state], now))
        for container_id, (sandbox_id, _) in before.items():
            if container_id not in after:
                events.append(ContainerEvent(container_id, sandbox_id, ContainerEventType.DELETED, now))
        for event in events:
            for queue in self._subscribers:
                queue.put_nowait(event)

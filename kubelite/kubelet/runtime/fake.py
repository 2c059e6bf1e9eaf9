"""A fake CRI-shaped runtime for hollow nodes: sandboxes and containers live in memory and start at once."""

from __future__ import annotations

import itertools
import time
from dataclasses import dataclass, field

SANDBOX_READY = "SANDBOX_READY"
SANDBOX_NOTREADY = "SANDBOX_NOTREADY"
CONTAINER_CREATED = "CONTAINER_CREATED"
CONTAINER_RUNNING = "CONTAINER_RUNNING"
CONTAINER_EXITED = "CONTAINER_EXITED"
RUNTIME_NAME = "fake"
RUNTIME_VERSION = "0.1.0"


class NotFoundError(KeyError):
    """No sandbox or container with that id (CRI's NotFound)."""


@dataclass(slots=True)
class PodSandbox:
    """One pod's sandbox: its identity, IP and state."""

    id: str
    name: str
    namespace: str
    uid: str
    ip: str
    created_at: float
    state: str = SANDBOX_READY
    containers: list[str] = field(default_factory=list)


@dataclass(slots=True)
class ContainerConfig:
    """What create_container needs: name, image, and (for tests) the code it exits with at once, if any."""

    name: str
    image: str
    exit_code: int | None = None
    runs_for: float = 0.0
    """Seconds the container runs before it exits with exit_code (a `sleep N`)."""


@dataclass(slots=True)
class Container:
    """One container and its state; exited containers keep their exit code until removed."""

    id: str
    sandbox_id: str
    name: str
    image: str
    exit_code: int | None
    created_at: float
    state: str = CONTAINER_CREATED
    started_at: float = 0.0
    finished_at: float = 0.0
    runs_for: float = 0.0

    @property
    def reason(self) -> str:
        """The kubelet's reason for a terminated container: Completed for 0, Error otherwise."""
        return "Completed" if self.exit_code == 0 else "Error"


class FakeRuntime:
    """RuntimeService verbs over dicts; a container runs until stopped unless its config says it exits."""

    def __init__(self) -> None:
        self.sandboxes: dict[str, PodSandbox] = {}
        self.containers: dict[str, Container] = {}
        self._ids = itertools.count(1)

    def _new_id(self) -> str:
        return f"{next(self._ids):064x}"

    def run_pod_sandbox(self, name: str, namespace: str, uid: str, ip: str) -> str:
        """Create a ready sandbox with the given IP and return its id."""
        sandbox = PodSandbox(self._new_id(), name, namespace, uid, ip, time.time())
        self.sandboxes[sandbox.id] = sandbox
        return sandbox.id

    def stop_pod_sandbox(self, sandbox_id: str) -> None:
        """Stop every container of the sandbox and mark it not ready (idempotent, like CRI)."""
        sandbox = self.sandboxes.get(sandbox_id)
        if sandbox is None:
            return
        for container_id in sandbox.containers:
            self.stop_container(container_id)
        sandbox.state = SANDBOX_NOTREADY

    def remove_pod_sandbox(self, sandbox_id: str) -> None:
        """Stop and forget the sandbox and its containers (idempotent)."""
        self.stop_pod_sandbox(sandbox_id)
        sandbox = self.sandboxes.pop(sandbox_id, None)
        for container_id in sandbox.containers if sandbox else ():
            self.containers.pop(container_id, None)

    def pod_sandbox_status(self, sandbox_id: str) -> PodSandbox:
        """The sandbox, or NotFoundError."""
        try:
            return self.sandboxes[sandbox_id]
        except KeyError:
            raise NotFoundError(sandbox_id) from None

    def create_container(self, sandbox_id: str, config: ContainerConfig) -> str:
        """Create a container in a ready sandbox and return its id."""
        sandbox = self.pod_sandbox_status(sandbox_id)
        if sandbox.state != SANDBOX_READY:
            raise ValueError(f"sandbox {sandbox_id} is not ready")
        container = Container(self._new_id(), sandbox_id, config.name, config.image, config.exit_code, time.time(),
                              runs_for=config.runs_for)
        self.containers[container.id] = container
        sandbox.containers.append(container.id)
        return container.id

    def start_container(self, container_id: str) -> None:
        """Start a created container; one configured with an exit code exits after runs_for seconds."""
        container = self.container_status(container_id)
        if container.state != CONTAINER_CREATED:
            raise ValueError(f"container {container_id} is {container.state}, not created")
        container.started_at = time.time()
        container.state = CONTAINER_RUNNING
        self._settle(container)

    @staticmethod
    def _settle(container: Container) -> None:
        """Move a running container whose run time is over to exited."""
        if container.state == CONTAINER_RUNNING and container.exit_code is not None and \
                time.time() >= container.started_at + container.runs_for:
            container.state = CONTAINER_EXITED
            container.finished_at = container.started_at + container.runs_for

    def stop_container(self, container_id: str) -> None:
        """Stop a running container as SIGKILL would (exit code 137); no-op otherwise."""
        container = self.containers.get(container_id)
        if container is not None and container.state == CONTAINER_RUNNING:
            container.state = CONTAINER_EXITED
            container.exit_code = 137
            container.finished_at = time.time()

    def container_status(self, container_id: str) -> Container:
        """The container, or NotFoundError."""
        try:
            return self.containers[container_id]
        except KeyError:
            raise NotFoundError(container_id) from None

    def list_containers(self, sandbox_id: str) -> list[Container]:
        """The containers of a sandbox, in creation order."""
        containers = [self.containers[c] for c in self.pod_sandbox_status(sandbox_id).containers]
        for container in containers:
            self._settle(container)
        return containers

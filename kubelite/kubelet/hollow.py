"""Hollow nodes (kubemark's idea): many simulated kubelets in one process, on one client and one pod informer."""

from __future__ import annotations

import asyncio
import ipaddress
import itertools
import logging
import platform
import re
import shlex
import time
import uuid
import zlib
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from kubelite.client.config import ClientConfig, load_config
from kubelite.client.errors import CONNECTION_ERRORS, ApiError, is_already_exists, is_not_found
from kubelite.client.informer import Informer
from kubelite.client.resources import NODES, PODS
from kubelite.client.rest import ApiClient
from kubelite.client.store import NODE_NAME_INDEX, key_of
from kubelite.client.timestamps import now_time, time_at
from kubelite.client.workqueue import WorkQueue
from kubelite.kubelet.heartbeat import KUBELET_VERSION, node_conditions, renew_lease
from kubelite.kubelet.podstatus import TERMINAL, condition
from kubelite.kubelet.runtime.fake import (
    CONTAINER_RUNNING,
    RUNTIME_NAME,
    RUNTIME_VERSION,
    Container,
    ContainerConfig,
    FakeRuntime,
)

log = logging.getLogger(__name__)

Obj = dict[str, Any]
EXIT_CODE_ANNOTATION = "kubelite.io/hollow-exit-code"
"""On a pod with restartPolicy Never or OnFailure: the code its containers exit with at once."""
TICK = 0.1
"""Seconds between batches: a periodic action reaches interval/TICK slices of the nodes in turn."""
REGISTER_CONCURRENCY = 32
REGISTER_BACKOFF_MAX = 7.0
POD_WORKERS = 8
CIDR_RECHECK = 5.0
"""Seconds before asking the API server again for a node's podCIDR that was not assigned yet."""
NODE_ADDRESSES = ipaddress.ip_network("10.192.0.0/10")
FALLBACK_POD_RANGE = ipaddress.ip_network("172.16.0.0/12")
"""Where pod IPs come from (a /24 per node) while the node has no podCIDR."""


class IpPool:
    """The pod IPs of one node subnet: the first host address is the gateway, the rest go round-robin."""

    def __init__(self, cidr: str):
        self.network = ipaddress.ip_network(cidr)
        self._size = min(self.network.num_addresses, 1 << 16)
        self._used: set[int] = set()
        self._next = 2

    def allocate(self) -> str:
        """A free address (ValueError when the subnet is full)."""
        for step in range(self._size - 3):
            offset = 2 + (self._next - 2 + step) % (self._size - 3)
            if offset not in self._used:
                self._used.add(offset)
                self._next = offset + 1
                return str(self.network[offset])
        raise ValueError(f"no free pod IP in {self.network}")

    def reserve(self, ip: str) -> None:
        """Mark an address in use (a pod that already had it); ignored when outside the subnet."""
        address = ipaddress.ip_address(ip)
        if address in self.network:
            self._used.add(int(address) - int(self.network.network_address))

    def release(self, ip: str) -> None:
        """Free an address."""
        address = ipaddress.ip_address(ip)
        if address in self.network:
            self._used.discard(int(address) - int(self.network.network_address))


@dataclass(slots=True)
class HollowNode:
    """One simulated node: its identity, last known Lease, pod subnet and pod IPs."""

    name: str
    index: int
    address: str
    uid: str = ""
    ready_since: str = ""
    lease: Obj | None = None
    pod_cidr: str = ""
    cidr_checked: float = 0.0
    pool: IpPool | None = None


@dataclass(slots=True)
class RunningPod:
    """What the hollow kubelet started for a pod: its sandbox and the pool its IP came from."""

    uid: str
    sandbox_id: str
    ip: str
    pool: IpPool | None


@dataclass
class NodeTemplate:
    """What every hollow node reports: capacity, labels and taints."""

    cpu: str = "4"
    memory: str = "16Gi"
    pods: int = 110
    labels: dict[str, str] = field(default_factory=dict)
    taints: list[Obj] = field(default_factory=list)


def node_address(fleet: str, index: int) -> str:
    """A fake InternalIP, distinct per index and (very likely) per fleet (named by its first node)."""
    base = (zlib.crc32(fleet.encode()) % 64) << 16
    return str(NODE_ADDRESSES[(base + index + 1) % NODE_ADDRESSES.num_addresses])


def node_object(node: HollowNode, template: NodeTemplate) -> Obj:
    """The Node a hollow kubelet registers."""
    capacity = {"cpu": template.cpu, "memory": template.memory, "pods": str(template.pods),
                "ephemeral-storage": "100Gi", "hugepages-1Gi": "0", "hugepages-2Mi": "0"}
    machine = uuid.uuid5(uuid.NAMESPACE_DNS, node.name)
    labels = {"kubernetes.io/hostname": node.name, "kubernetes.io/os": "linux", "kubernetes.io/arch": "amd64",
              "beta.kubernetes.io/os": "linux", "beta.kubernetes.io/arch": "amd64", **template.labels}
    return {
        "apiVersion": "v1", "kind": "Node",
        "metadata": {"name": node.name, "labels": labels,
                     "annotations": {"volumes.kubernetes.io/controller-managed-attach-detach": "true"}},
        "spec": {"taints": list(template.taints)} if template.taints else {},
        "status": {
            "capacity": capacity, "allocatable": dict(capacity),
            "addresses": [{"type": "InternalIP", "address": node.address}, {"type": "Hostname", "address": node.name}],
            "daemonEndpoints": {"kubeletEndpoint": {"Port": 10250}},
            "nodeInfo": {"machineID": machine.hex, "systemUUID": str(machine), "bootID": str(uuid.uuid4()),
                         "kernelVersion": platform.release(), "osImage": "kubelite hollow node",
                         "containerRuntimeVersion": f"{RUNTIME_NAME}://{RUNTIME_VERSION}",
                         "kubeletVersion": KUBELET_VERSION, "kubeProxyVersion": "", "operatingSystem": "linux",
                         "architecture": "amd64"},
            "conditions": node_conditions(node.ready_since, node.ready_since),
        },
    }


def exit_code_of(pod: Obj) -> int | None:
    """The exit code the annotation asks for (1 if not a number); None (run forever) under restartPolicy Always."""
    value = (pod["metadata"].get("annotations") or {}).get(EXIT_CODE_ANNOTATION)
    if value is None or (pod.get("spec") or {}).get("restartPolicy", "Always") == "Always":
        return None
    return int(value) if value.strip().lstrip("-").isdigit() else 1


_EXIT = re.compile(r"exit\s+(\d+)")


def command_behaviour(argv: list[str]) -> tuple[int | None, float]:
    """(exit code or None to run until deleted, seconds before it exits) for the commands a real container
    would end on: `true`, `false`, `sleep N`, `sh -c "exit N"` (and scripts made only of these)."""
    if not argv:
        return None, 0.0
    program = argv[0].rsplit("/", 1)[-1]
    if program in ("sh", "bash", "ash") and len(argv) >= 3 and argv[1] == "-c":
        script = argv[2].strip()
        if match := _EXIT.fullmatch(script):
            return int(match.group(1)), 0.0
        return command_behaviour(shlex.split(script)) if ";" not in script and "&" not in script else (None, 0.0)
    if program == "true":
        return 0, 0.0
    if program == "false":
        return 1, 0.0
    if program == "sleep" and len(argv) == 2:
        try:
            return 0, float(argv[1])
        except ValueError:
            return None, 0.0
    return None, 0.0


def container_behaviour(pod: Obj, container: Obj) -> tuple[int | None, float]:
    """How a hollow container ends: the test annotation if set, else what its command does; never under Always."""
    if (pod.get("spec") or {}).get("restartPolicy", "Always") == "Always":
        return None, 0.0
    annotated = exit_code_of(pod)
    if annotated is not None:
        return annotated, 0.0
    return command_behaviour([*(container.get("command") or []), *(container.get("args") or [])])


def _container_status(pod: Obj, container: Container, restart_policy: str) -> Obj:
    """The kubelet's ContainerStatus of one fake container."""
    base = {"name": container.name, "image": container.image, "imageID": f"fake://{container.image}",
            "containerID": f"fake://{container.id}", "restartCount": 0, "lastState": {}}
    if container.state == CONTAINER_RUNNING:
        return {**base, "state": {"running": {"startedAt": time_at(container.started_at)}}, "ready": True,
                "started": True}
    terminated = {"exitCode": container.exit_code, "reason": container.reason,
                  "startedAt": time_at(container.started_at), "finishedAt": time_at(container.finished_at),
                  "containerID": f"fake://{container.id}"}
    if restart_policy == "OnFailure" and container.exit_code != 0:
        meta = pod["metadata"]
        message = (f"back-off 10s restarting failed container={container.name} "
                   f"pod={meta['name']}_{meta.get('namespace')}({meta.get('uid')})")
        return {**base, "state": {"waiting": {"reason": "CrashLoopBackOff", "message": message}},
                "lastState": {"terminated": terminated}, "restartCount": 1, "ready": False, "started": False}
    return {**base, "state": {"terminated": terminated}, "ready": False, "started": False}


def pod_status(pod: Obj, host_ip: str, pod_ip: str, containers: list[Container],
               init_containers: list[Container]) -> Obj:
    """The status a kubelet would post for a pod whose (fake) containers are in the given states."""
    spec, old = pod.get("spec") or {}, pod.get("status") or {}
    restart_policy = spec.get("restartPolicy", "Always")
    statuses = [_container_status(pod, c, restart_policy) for c in containers]
    exited = [s["state"].get("terminated") for s in statuses]
    if statuses and all(exited):
        phase = "Succeeded" if all(t["exitCode"] == 0 for t in exited) else "Failed"
    else:
        phase = "Running"
    now, conditions = now_time(), old.get("conditions") or []
    unready = [s["name"] for s in statuses if not s["ready"]]
    reason, message = ("PodCompleted", "") if phase in TERMINAL else (
        ("ContainersNotReady", f"containers with unready status: [{' '.join(unready)}]") if unready else ("", ""))
    ours = [
        condition(conditions, "PodReadyToStartContainers", phase not in TERMINAL, now),
        condition(conditions, "Initialized", True, now),
        condition(conditions, "Ready", not unready, now, reason, message),
        condition(conditions, "ContainersReady", not unready, now, reason, message),
        condition(conditions, "PodScheduled", True, now),
    ]
    owned = {c["type"] for c in ours}
    status: Obj = {
        "phase": phase, "conditions": ours + [c for c in conditions if c.get("type") not in owned],
        "hostIP": host_ip, "hostIPs": [{"ip": host_ip}], "podIP": pod_ip, "podIPs": [{"ip": pod_ip}],
        "startTime": old.get("startTime") or now, "containerStatuses": statuses,
    }
    if init_containers:
        status["initContainerStatuses"] = [_container_status(pod, c, "Never") for c in init_containers]
    return status


def _contains(current: Obj, desired: Obj) -> bool:
    """True when every field of desired already has that value in current."""
    return all(current.get(key) == value for key, value in desired.items())


class HollowFleet:
    """The hollow kubelets of one process: registration, staggered heartbeats, and pod workers."""

    def __init__(self, client: ApiClient, names: list[str], template: NodeTemplate, *,
                 lease_interval: float = 10.0, status_interval: float = 40.0):
        self.client = client
        self.template = template
        self.lease_interval = lease_interval
        self.status_interval = status_interval
        self.nodes = {name: HollowNode(name, i, node_address(names[0], i)) for i, name in enumerate(names)}
        self.runtime = FakeRuntime()
        self.pods = Informer(client, PODS)
        self.queue = WorkQueue()
        self._running: dict[str, RunningPod] = {}

    async def run(self) -> None:
        """Register every node, then heartbeat and run their pods until cancelled."""
        limit = asyncio.Semaphore(REGISTER_CONCURRENCY)

        async def register(node: HollowNode) -> None:
            """Register, retrying as the kubelet does (backoff doubling up to 7 s) until it works."""
            delay = 0.1
            while True:
                try:
                    async with limit:
                        await self._register(node)
                    return
                except (ApiError, *CONNECTION_ERRORS) as exc:
                    log.warning("registering hollow node %s failed: %s; retrying in %.1fs", node.name, exc, delay)
                    await asyncio.sleep(delay)
                    delay = min(delay * 2, REGISTER_BACKOFF_MAX)

        await asyncio.gather(*(register(node) for node in self.nodes.values()))
        log.info("registered %d hollow nodes", len(self.nodes))
        self.pods.add_handlers(on_add=self._pod_event, on_update=lambda _old, new: self._pod_event(new),
                               on_delete=self._pod_event)
        self.pods.start()
        try:
            await self.pods.wait_synced()
            async with asyncio.TaskGroup() as group:
                group.create_task(self._every(self.lease_interval, self._renew_lease, "lease renewal"))
                group.create_task(self._every(self.status_interval, self._heartbeat, "node status update"))
                for _ in range(POD_WORKERS):
                    group.create_task(self._pod_worker())
        finally:
            self.queue.shutdown()
            await self.pods.stop()

    async def _register(self, node: HollowNode) -> None:
        """Create the Node with its status (or adopt an existing one and post its status), then its Lease."""
        node.ready_since = now_time()
        body = node_object(node, self.template)
        try:
            registered = await self.client.create(NODES, body)
        except ApiError as exc:
            if not is_already_exists(exc):
                raise
            registered = await self.client.patch(NODES, node.name, {"status": body["status"]}, type="strategic",
                                                 subresource="status")
        node.uid = registered["metadata"]["uid"]
        node.pod_cidr = (registered.get("spec") or {}).get("podCIDR", "")
        await self._renew_lease(node)

    async def _renew_lease(self, node: HollowNode) -> None:
        node.lease = await renew_lease(self.client, node.name, node.uid, node.lease)

    async def _heartbeat(self, node: HollowNode) -> None:
        """Post the node conditions with a fresh heartbeat, learn the podCIDR, and resync the node's pods."""
        conditions = node_conditions(now_time(), node.ready_since)
        updated = await self.client.patch(NODES, node.name, {"status": {"conditions": conditions}},
                                          type="strategic", subresource="status")
        node.pod_cidr = (updated.get("spec") or {}).get("podCIDR", "") or node.pod_cidr
        for pod in self.pods.store.by_index(NODE_NAME_INDEX, node.name):
            self.queue.add(key_of(pod))

    async def _every(self, interval: float, action: Callable[[HollowNode], Awaitable[None]], what: str) -> None:
        """Run `action` on every node once per interval: a batch of nodes every TICK, spread evenly."""
        nodes = list(self.nodes.values())
        slots = max(1, min(len(nodes), round(interval / TICK)))
        batches = [nodes[slot::slots] for slot in range(slots)]
        pending: dict[int, asyncio.Task[None]] = {}
        loop = asyncio.get_running_loop()
        start = loop.time()
        try:
            for n in itertools.count():
                slot = n % slots
                if slot not in pending or pending[slot].done():
                    pending[slot] = asyncio.create_task(self._batch(batches[slot], action, what))
                await asyncio.sleep(max(0.0, start + (n + 1) * interval / slots - loop.time()))
        finally:
            for task in pending.values():
                task.cancel()

    @staticmethod
    async def _batch(nodes: list[HollowNode], action: Callable[[HollowNode], Awaitable[None]], what: str) -> None:
        results = await asyncio.gather(*(action(node) for node in nodes), return_exceptions=True)
        errors = [r for r in results if isinstance(r, Exception)]
        if errors:
            log.warning("%s failed for %d of %d hollow nodes: %s", what, len(errors), len(nodes), errors[0])

    def _pod_event(self, pod: Obj) -> None:
        if (pod.get("spec") or {}).get("nodeName") in self.nodes:
            self.queue.add(key_of(pod))

    async def _pod_worker(self) -> None:
        while (key := await self.queue.get()) is not None:
            try:
                await self._sync_pod(key)
                self.queue.forget(key)
            except Exception as exc:
                log.warning("hollow kubelet: syncing pod %s failed: %s", key, exc,
                            exc_info=not isinstance(exc, ApiError))
                self.queue.add_rate_limited(key)
            finally:
                self.queue.done(key)

    async def _sync_pod(self, key: str) -> None:
        """Start, report, or finish one pod, like a kubelet's pod worker."""
        pod = self.pods.store.get(key)
        running = self._running.get(key)
        if running is not None and (pod is None or pod["metadata"].get("uid") != running.uid):
            self._stop(key)
            running = None
        node = self.nodes.get(((pod or {}).get("spec") or {}).get("nodeName", ""))
        if pod is None or node is None:
            return
        meta = pod["metadata"]
        if meta.get("deletionTimestamp"):
            self._stop(key)
            await self._finish(pod)
            return
        if running is None:
            if (pod.get("status") or {}).get("phase") in TERMINAL:
                return
            running = await self._start(key, pod, node)
        containers = self.runtime.list_containers(running.sandbox_id)
        inits = len((pod.get("spec") or {}).get("initContainers") or [])
        status = pod_status(pod, node.address, running.ip, containers[inits:], containers[:inits])
        if not _contains(pod.get("status") or {}, status):
            await self.client.patch(PODS, meta["name"], {"status": status}, meta["namespace"], subresource="status")
        if status["phase"] in TERMINAL:
            self._stop(key)

    async def _start(self, key: str, pod: Obj, node: HollowNode) -> RunningPod:
        """Run the pod's sandbox (with an IP) and its init and regular containers on the fake runtime."""
        meta, spec = pod["metadata"], pod.get("spec") or {}
        old_ip = (pod.get("status") or {}).get("podIP")
        pool = None
        if spec.get("hostNetwork"):
            ip = node.address
        else:
            pool = await self._pool(node)
            if old_ip:
                pool.reserve(old_ip)
            ip = old_ip or pool.allocate()
        sandbox = self.runtime.run_pod_sandbox(meta["name"], meta["namespace"], meta["uid"], ip)
        for container in spec.get("initContainers") or []:
            sidecar = container.get("restartPolicy") == "Always"
            self._run_container(sandbox, container, (None, 0.0) if sidecar else (0, 0.0))
        longest = 0.0
        for container in spec.get("containers") or []:
            exit_code, runs_for = container_behaviour(pod, container)
            self._run_container(sandbox, container, (exit_code, runs_for))
            if exit_code is not None:
                longest = max(longest, runs_for)
        if longest:
            self.queue.add_after(key, longest + 0.05)
        running = self._running[key] = RunningPod(meta["uid"], sandbox, ip, pool)
        return running

    def _run_container(self, sandbox: str, container: Obj, behaviour: tuple[int | None, float]) -> None:
        config = ContainerConfig(container["name"], container.get("image", ""), *behaviour)
        self.runtime.start_container(self.runtime.create_container(sandbox, config))

    async def _pool(self, node: HollowNode) -> IpPool:
        """The node's pod IP pool: from its podCIDR (asked for now and then until assigned), else a fake /24."""
        if not node.pod_cidr and time.monotonic() - node.cidr_checked > CIDR_RECHECK:
            node.cidr_checked = time.monotonic()
            node.pod_cidr = ((await self.client.get(NODES, node.name)).get("spec") or {}).get("podCIDR", "")
        if node.pool is None or (node.pod_cidr and str(node.pool.network) != node.pod_cidr):
            fallback = ipaddress.ip_network((int(FALLBACK_POD_RANGE.network_address) + (node.index % 4096) * 256, 24))
            node.pool = IpPool(node.pod_cidr or str(fallback))
        return node.pool

    def _stop(self, key: str) -> None:
        """Tear the pod's sandbox down and give its IP back."""
        running = self._running.pop(key, None)
        if running is not None:
            self.runtime.remove_pod_sandbox(running.sandbox_id)
            if running.pool is not None:
                running.pool.release(running.ip)

    async def _finish(self, pod: Obj) -> None:
        """Delete a gracefully deleted pod for good once its containers are gone, as the kubelet does."""
        meta = pod["metadata"]
        try:
            await self.client.delete(PODS, meta["name"], meta["namespace"], grace_period_seconds=0,
                                     preconditions={"uid": meta["uid"]})
        except ApiError as exc:
            if not (is_not_found(exc) or exc.code == 409):
                raise


def fleet_names(prefix: str, count: int) -> list[str]:
    """The names of `count` hollow nodes: PREFIX-0 … PREFIX-<count-1>."""
    return [f"{prefix}-{i}" for i in range(count)]


async def run_hollow_nodes(kubeconfig: str | ClientConfig | None, names: list[str], cpu: str = "4",
                           memory: str = "16Gi", pods: int = 110, labels: dict[str, str] | None = None,
                           taints: list | None = None, *, lease_interval: float = 10.0,
                           status_interval: float = 40.0) -> None:
    """Run hollow nodes with these names until cancelled, given a kubeconfig path or a ClientConfig."""
    template = NodeTemplate(cpu, memory, pods, dict(labels or {}), list(taints or []))
    qps = 20 + len(names) / 4
    config = kubeconfig if isinstance(kubeconfig, ClientConfig) else load_config(kubeconfig)
    async with ApiClient(config, qps=qps, burst=int(2 * qps),
                         user_agent=f"kubelite-hollow-node/{KUBELET_VERSION}") as client:
        fleet = HollowFleet(client, names, template, lease_interval=lease_interval,
                            status_interval=status_interval)
        await fleet.run()

"""`kubelite agent`: the kubelet of this machine, wiring a runtime with its images and pod network (the embedded runc
runtime, image store and bridge; or a CRI runtime such as containerd, its image service and the CNI config the agent
writes for it), volumes, probes and pod workers to the API server (a pod informer for this node, a work queue of pod
keys)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from kubelite.client.config import ClientConfig
from kubelite.client.errors import ApiError
from kubelite.client.events import EventRecorder
from kubelite.client.informer import SharedInformerFactory
from kubelite.client.join import CLIENT_CA_PATH, node_client_config
from kubelite.client.resources import PODS, SERVICES
from kubelite.client.rest import ApiClient
from kubelite.client.store import key_of
from kubelite.client.workqueue import WorkQueue
from kubelite.dns.app import run_dns
from kubelite.kubelet.eviction import EvictionManager, Thresholds
from kubelite.kubelet.heartbeat import KUBELET_VERSION
from kubelite.kubelet.imagepull import ImagePuller, ImageService
from kubelite.kubelet.images.config import load_registries
from kubelite.kubelet.images.store import ImageStore
from kubelite.kubelet.localpath import LocalPathCleaner
from kubelite.kubelet.network import dnsfiles
from kubelite.kubelet.network.cni import DEFAULT_CONF_DIR, CniNetwork
from kubelite.kubelet.network.plugin import BridgeNetwork
from kubelite.kubelet.network.routes import DEFAULT_BACKEND, RouteManager, pod_mtu
from kubelite.kubelet.node import KUBELET_PORT, Machine, NodeAgent, default_address
from kubelite.kubelet.podworker import NodeInfo, PodWorkers
from kubelite.kubelet.probes import Prober
from kubelite.kubelet.runtime import syscalls
from kubelite.kubelet.runtime.base import DNSConfig, RuntimeService, RuntimeServiceError, RuntimeVersion
from kubelite.kubelet.runtime.runc import RuncRuntime
from kubelite.kubelet.server import KubeletServer, Located
from kubelite.kubelet.tokens import TokenManager
from kubelite.kubelet.volumes import VolumeManager
from kubelite.proxy.proxier import Proxier

log = logging.getLogger(__name__)
Obj = dict[str, Any]
POD_WORKERS = 8
DNS_PORT = 53
NODE_HOSTS = Path("/etc/hosts")
RESYNC = 10.0
"""Every pod of the node is synced at least this often (probes, back-offs and volume refreshes ride on it)."""
RUNTIME_START_TIMEOUT = 30.0
"""How long a CRI runtime may take to answer its first calls."""


@dataclass
class AgentConfig:
    """How this kubelet runs: where it keeps state, who it is, and the cluster's DNS."""

    data_dir: Path = Path("/var/lib/kubelite")
    node_name: str = field(default_factory=lambda: socket.gethostname().lower())
    node_ip: str = ""
    labels: dict[str, str] = field(default_factory=dict)
    taints: list[Obj] = field(default_factory=list)
    pod_cidr: str = "10.42.0.0/24"
    """Until node IPAM assigns one."""
    cluster_cidr: str = "10.42.0.0/16"
    cluster_dns: str = "10.43.0.10"
    cluster_domain: str = "cluster.local"
    private_registry: Path = Path("/etc/kubelite/registries.yaml")
    kubelet_port: int = KUBELET_PORT
    thresholds: Thresholds = field(default_factory=Thresholds)
    resolv_conf: Path = Path("/etc/resolv.conf")
    cleanup: bool = False
    """Remove the Service rules when the agent stops (containers keep running either way)."""
    pod_network_backend: str = DEFAULT_BACKEND
    """How pods reach pods on other nodes: host-gw (routes via node IPs) or vxlan (an overlay)."""
    container_runtime_endpoint: str = ""
    """A CRI runtime's socket (unix:///run/containerd/containerd.sock); empty: the embedded runc runtime."""
    cni_conf_dir: Path = DEFAULT_CONF_DIR
    """Where the CRI runtime reads its CNI network config, which the agent writes."""

    @property
    def agent_dir(self) -> Path:
        return self.data_dir / "agent"

    @property
    def run_dir(self) -> Path:
        """Host-global runtime state (namespace pins, runc's root) kept apart per node, so agents never collide."""
        return Path("/run/kubelite") / self.node_name


def state_on_tmpfs(path: Path) -> None:
    """Keep the node's runtime state (runc's root, bundles, records, namespace pins, the pod network's reservations,
    secret and token volumes) in memory, as /run is on most systems: where it is on disk, mount a tmpfs here, but
    only while nothing but empty directories is there, so that the state of containers already running is never
    hidden."""
    path.mkdir(parents=True, exist_ok=True)
    if syscalls.filesystem_type(str(path)) == syscalls.TMPFS_MAGIC or any(
            not entry.is_dir() or entry.is_symlink() or os.path.ismount(entry) for entry in path.rglob("*")):
        return
    syscalls.mount("tmpfs", str(path), "tmpfs", syscalls.MS_NOSUID | syscalls.MS_NODEV, "mode=0755")
    log.info("mounted a tmpfs on %s for the runtime's state (this machine's /run is not one)", path)


class AgentStartError(Exception):
    """The agent cannot start; the message says why and what to do."""


def cri_endpoint(text: str) -> str:
    """A CRI endpoint as `unix:///path`: from that form or a bare absolute path (as k3s takes it); ValueError for
    anything else (only unix sockets are supported, as upstream's kubelet on Linux)."""
    path = text.removeprefix("unix://")
    if not path.startswith("/") or "://" in path:
        raise ValueError(f"{text!r} is not a unix socket endpoint: write unix:///path/to/runtime.sock")
    return f"unix://{path}"


def socket_problem(path: Path) -> str:
    """What keeps a client from connecting to a unix socket at path, "" if nothing visible does."""
    if path.is_socket():
        return ""
    return f"{path} is not a socket" if path.exists() else f"{path} does not exist"


class Kubelet:
    """One node's kubelet; run() until cancelled, containers keep running when it stops."""

    def __init__(self, client: ApiClient, config: AgentConfig):
        self.client = client
        self.config = config
        self.address = config.node_ip or default_address()
        self.network: BridgeNetwork | CniNetwork
        self.runtime: RuntimeService
        self.images: ImageService
        if config.container_runtime_endpoint:
            self._use_cri(config.container_runtime_endpoint)
        else:
            self._use_runc()
        self.informers = SharedInformerFactory(client)
        self.proxier = Proxier(self.informers, config.node_name, config.cluster_cidr)
        self.local_paths = LocalPathCleaner(client, self.informers, config.node_name, config.labels)
        self.routes = RouteManager(client, config.node_name, self.address, config.pod_network_backend,
                                   on_pod_cidr=self._pod_cidr, informers=self.informers)
        self.recorder = EventRecorder(client, "kubelet", config.node_name)
        self.queue = WorkQueue()
        self.pods = self.informers.informer(PODS, field_selector=f"spec.nodeName={config.node_name}")
        self.services = self.informers.informer(SERVICES)
        self.machine = Machine(config.agent_dir, config.thresholds)
        self.prober = Prober(self.runtime, self.recorder, self.queue.add)
        host_resolv = config.resolv_conf.read_text() if config.resolv_conf.exists() else None
        self._host_dns = dnsfiles.parse_resolv_conf(host_resolv) if host_resolv is not None else None
        self.workers: PodWorkers | None = None
        self.server: KubeletServer | None = None

    def _use_runc(self) -> None:
        """The embedded runtime: runc, the agent's image store and its in-process bridge network, whose state lives
        with the runtime's in the run directory, in memory: mounted first, before they make their directories."""
        config = self.config
        state_on_tmpfs(config.run_dir)
        self.network = BridgeNetwork(config.run_dir / "network", pod_cidr=config.pod_cidr,
                                     cluster_cidr=config.cluster_cidr)
        self.runtime = RuncRuntime(layers_dir=config.agent_dir / "layers", run_dir=config.run_dir,
                                   cgroup_root=f"/kubelite/{config.node_name}", network=self.network)
        self.images = ImageStore(config.agent_dir / "images", load_registries(config.private_registry))

    def _use_cri(self, endpoint: str) -> None:
        """A CRI runtime: its runtime and image services over one gRPC connection, pods in this node's cgroup as
        with runc, the pod network by its CNI plugins from the config this agent writes (registries.yaml does not
        apply: registries are the runtime's to configure)."""
        from kubelite.kubelet.runtime.cri import CriRuntime
        from kubelite.kubelet.runtime.criimages import CriImageService
        config = self.config
        self.network = CniNetwork(config.cni_conf_dir, config.agent_dir / "network", pod_cidr=config.pod_cidr,
                                  cluster_cidr=config.cluster_cidr)
        if config.private_registry.exists():
            log.warning("%s is not used with --container-runtime-endpoint: configure registries in the runtime "
                        "(containerd: config_path and hosts.toml)", config.private_registry)
        runtime = CriRuntime(endpoint, cgroup_root=f"/kubelite/{config.node_name}")
        self.runtime = runtime
        self.images = CriImageService(runtime.client.channel)

    async def _start_runtime(self) -> RuntimeVersion:
        """Start the runtime and ask its version. A CRI runtime is reached first, before anything on the machine
        changes (the run dir then goes in memory for the secret volumes); one that cannot be reached is an
        AgentStartError."""
        endpoint = self.config.container_runtime_endpoint
        if not endpoint:
            await self.runtime.start()
            return await self.runtime.version()
        version = await self._connect(endpoint)
        await asyncio.to_thread(state_on_tmpfs, self.config.run_dir)
        return version

    async def _connect(self, endpoint: str) -> RuntimeVersion:
        """The CRI runtime started and its version, or an AgentStartError saying what is wrong and what to do."""
        from kubelite.kubelet.grpcchannel import RpcError
        problem = await asyncio.to_thread(socket_problem, Path(endpoint.removeprefix("unix://")))
        if problem:
            raise AgentStartError(f"no CRI runtime listens at {endpoint}: {problem}. Start the runtime (e.g. "
                                  "containerd) first, or point --container-runtime-endpoint at its socket.")
        try:
            async with asyncio.timeout(RUNTIME_START_TIMEOUT):
                await self.runtime.start()
                return await self.runtime.version()
        except (OSError, TimeoutError, RpcError, RuntimeServiceError) as exc:
            reason = str(exc) or type(exc).__name__
            if isinstance(exc, TimeoutError) and not str(exc):
                reason = f"no answer in {RUNTIME_START_TIMEOUT:.0f} s"
            raise AgentStartError(f"cannot use the CRI runtime at {endpoint}: {reason}. Is a CRI runtime (containerd "
                                  "with its cri plugin enabled) running there? Check its log, or point "
                                  "--container-runtime-endpoint at the right socket.") from None

    def dns(self, pod: Obj) -> DNSConfig | None:
        """The pod's resolv.conf settings (cluster DNS first for ClusterFirst pods)."""
        return dnsfiles.pod_dns_config(pod, self._host_dns, [self.config.cluster_dns], self.config.cluster_domain,
                                       [self.address])

    def hosts(self, pod: Obj, ip: str) -> str:
        """The pod's /etc/hosts; only a hostNetwork pod's includes the node's, so only then is that file read."""
        node_hosts = ""
        if (pod.get("spec") or {}).get("hostNetwork") and NODE_HOSTS.exists():
            node_hosts = NODE_HOSTS.read_text()
        return dnsfiles.hosts_file(pod, [ip], self.config.cluster_domain, node_hosts)

    async def run(self) -> None:
        """Start the runtime (adopting what a previous agent left), register, then sync pods until cancelled."""
        self.network.mtu = await pod_mtu(self.config.pod_network_backend, self.address)
        version = await self._start_runtime()
        await self.network.start([s.id for s in await self.runtime.list_pod_sandboxes()])
        node = NodeAgent(self.client, self.config.node_name, self.address, self.machine,
                         f"{version.name}://{version.version}", labels=self.config.labels, taints=self.config.taints,
                         port=self.config.kubelet_port, on_pod_cidr=self._pod_cidr)
        await node.register()
        puller = ImagePuller(self.images, self.recorder)
        self.workers = PodWorkers(
            client=self.client, runtime=self.runtime, runtime_name=version.name, puller=puller,
            volumes=VolumeManager(self.config.agent_dir / "pods", self.config.run_dir / "pods",
                                  tokens=TokenManager(self.client).token),
            prober=self.prober, recorder=self.recorder,
            node=NodeInfo(self.config.node_name, self.address, self.machine.allocatable(), self.machine.memory(),
                          self.config.agent_dir / "seccomp"),
            dns=self.dns, hosts=self.hosts, services=self.services.store.list, requeue=self._requeue)
        await self._serve()
        adopted = await self.workers.adopt()
        self.pods.add_handlers(on_add=self._enqueue, on_update=lambda _old, new: self._enqueue(new),
                               on_delete=self._enqueue)
        self.informers.start()
        events = self.runtime.subscribe_events()
        try:
            await asyncio.gather(self.pods.wait_synced(), self.services.wait_synced())
            for key in adopted:
                self.queue.add(key)
            log.info("kubelet %s ready: %d pods bound here", self.config.node_name, len(self.pods.store))
            async with asyncio.TaskGroup() as group:
                group.create_task(node.run())
                group.create_task(self.routes.run())
                group.create_task(self._container_events(events))
                group.create_task(self._resync())
                group.create_task(self._eviction(puller).run())
                group.create_task(self._cluster_dns())
                group.create_task(self.proxier.run(asyncio.Event()))
                group.create_task(self.local_paths.run(asyncio.Event()))
                group.create_task(self.network.run())
                for _ in range(POD_WORKERS):
                    group.create_task(self._worker())
        finally:
            self.runtime.unsubscribe_events(events)
            self.queue.shutdown()
            await self.prober.close()
            await self.informers.stop()
            await self.workers.objects.close()
            await self.recorder.close()
            if self.server is not None:
                await self.server.stop()
            await self.images.close()
            await self.runtime.close()
            if self.config.cleanup:
                await self.proxier.cleanup()

    async def _serve(self) -> None:
        """The kubelet's HTTPS API for the API server (logs, exec, attach, port-forward, stats), trusting only
        client certificates of the cluster's client CA."""
        ca = await self.client.request("GET", CLIENT_CA_PATH)
        ca_file = self.config.agent_dir / "client-ca.crt"
        ca_file.write_text(ca["clientCA"])
        self.server = KubeletServer(self.runtime, self._locate, ca_file, list_pods=self._list_pods,
                                    port=self.config.kubelet_port, node_name=self.config.node_name)
        await self.server.start()

    async def _locate(self, namespace: str, name: str, container: str, previous: bool) -> Located:
        assert self.workers is not None
        return await self.workers.locate(self.pods.store.get_by_name(namespace, name), namespace, name, container,
                                         previous)

    async def _list_pods(self) -> list[Obj]:
        return self.pods.store.list()

    async def _cluster_dns(self) -> None:
        """This node's share of the cluster DNS, on its address, port 53, behind the kube-dns Service (every node
        answers, so names resolve while any node is up). A busy port is logged, not fatal."""
        try:
            await run_dns(self.client, self.address, DNS_PORT, node_name=self.config.node_name,
                          zone=self.config.cluster_domain, advertise_address=self.address,
                          service_ip=self.config.cluster_dns, resolv_conf=str(self.config.resolv_conf),
                          informers=self.informers)
        except OSError as exc:
            log.error("cluster DNS not served on %s:%d: %s", self.address, DNS_PORT, exc)

    def _eviction(self, puller: ImagePuller) -> EvictionManager:
        """Node-pressure eviction over this node's signals, pods and images."""
        assert self.workers is not None
        workers = self.workers

        async def collect_images(target: int) -> int:
            in_use = {c.image for c in await self.runtime.list_containers()}
            return await puller.collect(in_use, target)

        return EvictionManager(self.config.thresholds, lambda: asyncio.to_thread(self.machine.signals),
                               self.pods.store.list, workers.memory_usage, collect_images, workers.evict)

    def _pod_cidr(self, cidr: str) -> None:
        try:
            self.network.set_pod_cidr(cidr)
        except ValueError as exc:
            log.error("cannot use podCIDR %s: %s", cidr, exc)

    def _enqueue(self, pod: Obj) -> None:
        self.queue.add(key_of(pod))

    def _requeue(self, key: str, delay: float) -> None:
        if delay <= 0:
            self.queue.add(key)
        else:
            self.queue.add_after(key, delay)

    async def _container_events(self, events: asyncio.Queue) -> None:
        """A container that starts or stops wakes its pod's worker at once (the evented PLEG)."""
        while True:
            event = await events.get()
            assert self.workers is not None
            for record in self.workers.records.values():
                if record.sandbox_id == event.sandbox_id:
                    self.queue.add(record.key)

    async def _resync(self) -> None:
        while True:
            await asyncio.sleep(RESYNC)
            for pod in self.pods.store.list():
                self.queue.add(key_of(pod))

    async def _worker(self) -> None:
        assert self.workers is not None
        while (key := await self.queue.get()) is not None:
            try:
                await self.workers.sync(key, self.pods.store.get(key))
                self.queue.forget(key)
            except Exception as exc:
                log.warning("syncing pod %s failed: %s", key, exc, exc_info=not isinstance(exc, ApiError))
                self.queue.add_rate_limited(key)
            finally:
                self.queue.done(key)


async def run_agent(client_config: ClientConfig, config: AgentConfig, *, joined_with_token: bool = False) -> None:
    """Run the kubelet until cancelled; an agent that joined with the node token first gets its own certificate."""
    if joined_with_token:
        client_config = await node_client_config(client_config, config.node_name, config.agent_dir)
    async with ApiClient(client_config, qps=50, burst=100,
                         user_agent=f"kubelite-kubelet/{KUBELET_VERSION}") as client:
        kubelet = Kubelet(client, config)
        with contextlib.suppress(asyncio.CancelledError):
            await kubelet.run()

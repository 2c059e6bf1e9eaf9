"""The Service proxy on real namespaces (root): an in-process API server, the Proxier programming its own nft
table, three "pods" on the real pod network (bridge, veths, NAT table) answering their names, and an "outside"
host routed through the node. Every test uses its own bridge, CIDRs, namespaces and tables and removes them."""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
import subprocess
import threading
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestServer

from kubelite.apiserver.app import ApiServer, ApiServerConfig
from kubelite.apiserver.authn import UserInfo
from kubelite.client import ApiClient, ApiError, ClientConfig, SharedInformerFactory, is_not_found
from kubelite.client.resources import ENDPOINTSLICES, NODES, PODS, SERVICES
from kubelite.controllers.endpointslice import EndpointSliceController
from kubelite.controllers.servicelb import ServiceLBController
from kubelite.kubelet.network.plugin import BridgeNetwork
from kubelite.proxy.proxier import Proxier, cleanup
from kubelite.storage.memory import MemoryBackend
from tests.integration.test_network import Namespaces, ip_cmd, link_outside, ns_socket, pod_config

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="network namespaces and nftables need root")

Obj = dict[str, Any]
SUFFIX = f"{os.getpid() % 10000}"
BRIDGE = f"kptest{SUFFIX}"
NET_TABLE = f"kptest-net-{SUFFIX}"
TABLE = f"kptest-proxy-{SUFFIX}"
POD_CIDR = "10.95.0.0/24"
CLUSTER_CIDR = "10.95.0.0/16"
GATEWAY = "10.95.0.1"
SERVICE_CIDR = "10.94.0.0/16"
NODE = "node-a"
NODE_IP = "10.96.0.1"
"""The node's address on the link to the outside namespace: a node address that is not loopback."""
OUTSIDE_IP = "10.96.0.2"
OUTSIDE_VETH = f"kptout{SUFFIX}"
POD_PORT = 8080
UDP_PORT = 5353
NODE_PORT = 31000 + int(SUFFIX) % 700
"""Fixed NodePorts, unlikely to be one a real cluster on this machine allocated."""


@dataclass
class Pod:
    name: str
    path: str
    ip: str


class Backend:
    """A pod's servers: TCP and UDP, answering every request with "<pod name> <client address it sees>"."""

    def __init__(self, pod: Pod) -> None:
        self.name = pod.name
        self.tcp = ns_socket(pod.path)
        self.tcp.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.tcp.bind(("0.0.0.0", POD_PORT))
        self.tcp.listen(64)
        self.udp = ns_socket(pod.path, socket.SOCK_DGRAM)
        self.udp.bind(("0.0.0.0", UDP_PORT))
        self.threads = [threading.Thread(target=self._serve_tcp, daemon=True),
                        threading.Thread(target=self._serve_udp, daemon=True)]
        for thread in self.threads:
            thread.start()

    def _serve_tcp(self) -> None:
        while True:
            try:
                conn, peer = self.tcp.accept()
            except OSError:
                return
            with conn:
                conn.sendall(f"{self.name} {peer[0]}".encode())

    def _serve_udp(self) -> None:
        while True:
            try:
                _, peer = self.udp.recvfrom(64)
                if peer is None:
                    return
                self.udp.sendto(f"{self.name} {peer[0]}".encode(), peer)
            except OSError:
                return

    def close(self) -> None:
        for sock in (self.tcp, self.udp):
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
            sock.close()
        for thread in self.threads:
            thread.join(timeout=5)


def _ask(path: str | None, ip: str, port: int, udp: bool, timeout: float) -> tuple[str, str]:
    with ns_socket(path, socket.SOCK_DGRAM if udp else socket.SOCK_STREAM) as sock:
        sock.settimeout(timeout)
        sock.connect((ip, port))
        if udp:
            sock.send(b"?")
        name, peer = sock.recv(64).decode().split()
        return name, peer


async def ask(path: str | None, ip: str, port: int, *, udp: bool = False, wait: float = 3.0) -> tuple[str, str]:
    """One request from the namespace at path (None: the host), giving up after `wait` seconds:
    (the pod that answered, the source address it saw)."""
    return await asyncio.to_thread(_ask, path, ip, port, udp, wait)


async def ask_many(path: str | None, ip: str, port: int, count: int = 30, udp: bool = False) -> list[tuple[str, str]]:
    return [await ask(path, ip, port, udp=udp) for _ in range(count)]


def nft_table() -> str:
    return subprocess.run(["nft", "list", "table", "ip", TABLE], capture_output=True, text=True, check=False).stdout


async def eventually(check: Callable[[], bool], within: float = 5.0) -> float:
    """Wait until check() holds; returns the seconds it took."""
    started = time.monotonic()
    while not check():
        assert time.monotonic() - started < within, "condition not reached in time"
        await asyncio.sleep(0.01)
    return time.monotonic() - started


class Cluster:
    """The API, the proxier's node and its pods; helpers to declare Services and their endpoint slices."""

    def __init__(self, client: ApiClient, proxier: Proxier, pods: dict[str, Pod], outside: str) -> None:
        self.client = client
        self.proxier = proxier
        self.pods = pods
        self.outside = outside

    async def service(self, name: str, ports: list[Obj], **spec: Any) -> Obj:
        """Create a Service without selector in the default namespace."""
        return await self.client.create(SERVICES, {"metadata": {"name": name}, "spec": {"ports": ports, **spec}},
                                        "default")

    async def endpoints(self, service: str, members: list[tuple[str, Obj]], node: str = NODE,
                        ports: list[Obj] | None = None) -> Obj:
        """Create or replace the Service's one slice: (pod name, conditions) pairs on `node`."""
        body = {"apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice", "addressType": "IPv4",
                "metadata": {"name": f"{service}-manual", "labels": {"kubernetes.io/service-name": service}},
                "endpoints": [{"addresses": [self.pods[name].ip], "conditions": conditions, "nodeName": node}
                              for name, conditions in members],
                "ports": ports or [{"name": "", "port": POD_PORT, "protocol": "TCP"}]}
        try:
            existing = await self.client.get(ENDPOINTSLICES, f"{service}-manual", "default")
        except ApiError as exc:
            if not is_not_found(exc):
                raise
            return await self.client.create(ENDPOINTSLICES, body, "default")
        body["metadata"]["resourceVersion"] = existing["metadata"]["resourceVersion"]
        return await self.client.update(ENDPOINTSLICES, body, "default")

    async def programmed(self, *texts: str, present: bool = True) -> float:
        """Wait until every text is (or is no longer) in the kernel's table; returns the seconds it took."""
        return await eventually(lambda: all((text in nft_table()) == present for text in texts))


READY = {"ready": True, "serving": True, "terminating": False}
NOT_READY = {"ready": False, "serving": False, "terminating": False}
DRAINING = {"ready": False, "serving": True, "terminating": True}


def dnat(pod: Pod, port: int = POD_PORT) -> str:
    return f"dnat to {pod.ip}:{port}"


@pytest.fixture
async def cluster(tmp_path: Path) -> AsyncIterator[Cluster]:
    async with contextlib.AsyncExitStack() as stack:
        api = ApiServer(ApiServerConfig(data_dir=tmp_path / "api", service_cidr=SERVICE_CIDR,
                                          disable_admission_plugins=["ServiceAccount"]), backend=MemoryBackend())
        await api.open()
        stack.push_async_callback(api.stop)
        api.authenticator.add_token("t", UserInfo("admin", groups=("system:masters",)))
        http = TestServer(api.application())
        await http.start_server()
        stack.push_async_callback(http.close)
        client = ApiClient(ClientConfig(server=str(http.make_url("")).rstrip("/"),
                                        headers={"Authorization": "Bearer t"}))
        stack.push_async_callback(client.close)

        namespaces = Namespaces()
        stack.callback(namespaces.cleanup)
        network = BridgeNetwork(tmp_path / "net", POD_CIDR, CLUSTER_CIDR, bridge=BRIDGE, table=NET_TABLE)
        stack.push_async_callback(network.destroy)
        pods = {}
        for name in ("a", "b", "c"):
            path = namespaces.make(f"proxy-{name}")
            pods[name] = Pod(name, path, await network.setup(f"proxy-{name}", path, pod_config(name)))
            stack.callback(Backend(pods[name]).close)
        outside = namespaces.make("proxy-outside")
        stack.callback(ip_cmd, None, "link", "del", OUTSIDE_VETH, check=False)
        await asyncio.to_thread(link_outside, outside, NODE_IP, OUTSIDE_IP, OUTSIDE_VETH)

        informers = SharedInformerFactory(client)
        stack.push_async_callback(informers.stop)
        proxier = Proxier(informers, NODE, CLUSTER_CIDR, TABLE)
        stack.push_async_callback(proxier.cleanup)
        stop = asyncio.Event()
        task = asyncio.create_task(proxier.run(stop))
        stack.push_async_callback(asyncio.wait_for, task, 10)
        stack.callback(stop.set)
        await eventually(lambda: proxier.syncs > 0)
        yield Cluster(client, proxier, pods, outside)


def cluster_ip(service: Obj) -> str:
    return service["spec"]["clusterIP"]


async def test_cluster_ip_balances_keeps_pod_sources_masquerades_the_host_and_hairpins(cluster: Cluster) -> None:
    a, b, c = cluster.pods["a"], cluster.pods["b"], cluster.pods["c"]
    web = await cluster.service("web", [{"port": 80, "targetPort": POD_PORT}])
    await cluster.endpoints("web", [("a", READY), ("b", READY), ("c", READY)])
    await cluster.programmed(dnat(a), dnat(b), dnat(c))
    ip = cluster_ip(web)

    from_host = await ask_many(None, ip, 80)
    assert {name for name, _ in from_host} == {"a", "b", "c"}, "30 requests reach every endpoint"
    assert {peer for _, peer in from_host} == {GATEWAY}, "the host's traffic is masqueraded to the bridge"

    from_pod = await ask_many(a.path, ip, 80)
    assert {name for name, _ in from_pod} == {"a", "b", "c"}
    for name, peer in from_pod:
        assert peer == (GATEWAY if name == "a" else a.ip), f"{name} saw {peer}: pods keep their source, " \
                                                          "hairpin traffic is masqueraded"
    with pytest.raises(ConnectionRefusedError):  # a port the Service does not define
        await ask(None, ip, 81)


async def test_udp_balances_and_forgets_flows_to_a_removed_endpoint(cluster: Cluster) -> None:
    ports = [{"name": "", "port": UDP_PORT, "protocol": "UDP"}]
    dns = await cluster.service("dns", [{"port": 53, "protocol": "UDP", "targetPort": UDP_PORT}])
    await cluster.endpoints("dns", [("a", READY), ("b", READY)], ports=ports)
    await cluster.programmed(dnat(cluster.pods["a"], UDP_PORT), dnat(cluster.pods["b"], UDP_PORT))
    answers = await ask_many(cluster.pods["c"].path, cluster_ip(dns), 53, udp=True)
    assert {name for name, _ in answers} == {"a", "b"}
    assert {peer for _, peer in answers} == {cluster.pods["c"].ip}

    with ns_socket(cluster.pods["c"].path, socket.SOCK_DGRAM) as sock:
        sock.settimeout(3)
        sock.connect((cluster_ip(dns), 53))
        sock.send(b"?")
        first = (await asyncio.to_thread(sock.recv, 64)).decode().split()[0]
        other = "b" if first == "a" else "a"
        syncs = cluster.proxier.syncs
        await cluster.endpoints("dns", [(other, READY)], ports=ports)
        await cluster.programmed(dnat(cluster.pods[first], UDP_PORT), present=False)
        await eventually(lambda: cluster.proxier.syncs > syncs)
        sock.send(b"?")
        assert (await asyncio.to_thread(sock.recv, 64)).decode().split()[0] == other, \
            "the flow pinned to the removed endpoint was forgotten"


async def test_client_ip_affinity_sticks_across_syncs(cluster: Cluster) -> None:
    sticky = await cluster.service("sticky", [{"port": 80, "targetPort": POD_PORT}], sessionAffinity="ClientIP")
    await cluster.endpoints("sticky", [("a", READY), ("b", READY), ("c", READY)])
    await cluster.programmed(dnat(cluster.pods["c"]), "update @affinity-")
    ip = cluster_ip(sticky)
    from_host = {name for name, _ in await ask_many(None, ip, 80, count=10)}
    from_pod = {name for name, _ in await ask_many(cluster.pods["b"].path, ip, 80, count=10)}
    assert len(from_host) == 1 and len(from_pod) == 1

    def remembered() -> bool:
        return any(f"{{ {cluster.pods['b'].ip} expires" in line for line in nft_table().splitlines())

    assert remembered(), "the client's address is in its endpoint's affinity set"
    syncs = cluster.proxier.syncs
    await cluster.service("unrelated", [{"port": 80}])
    await eventually(lambda: cluster.proxier.syncs > syncs)
    assert remembered(), "another Service's change keeps the affinity sets"
    assert {name for name, _ in await ask_many(None, ip, 80, count=10)} == from_host


async def test_node_port_on_loopback_node_address_and_from_outside(cluster: Cluster) -> None:
    await cluster.service("np", [{"port": 80, "targetPort": POD_PORT, "nodePort": NODE_PORT}], type="NodePort")
    await cluster.endpoints("np", [("a", READY), ("b", READY), ("c", READY)])
    await cluster.programmed(f"tcp . {NODE_PORT} : goto external-", dnat(cluster.pods["c"]))
    for path, address in ((None, "127.0.0.1"), (None, NODE_IP), (cluster.outside, NODE_IP),
                          (cluster.pods["a"].path, NODE_IP)):
        answers = await ask_many(path, address, NODE_PORT)
        assert {name for name, _ in answers} == {"a", "b", "c"}, (path, address)
        assert {peer for _, peer in answers} == {GATEWAY}, "externalTrafficPolicy Cluster masquerades"


async def test_external_traffic_policy_local_keeps_the_client_address(cluster: Cluster) -> None:
    a, b = cluster.pods["a"], cluster.pods["b"]
    await cluster.service("local", [{"port": 80, "targetPort": POD_PORT, "nodePort": NODE_PORT + 1}],
                          type="NodePort", externalTrafficPolicy="Local")
    await cluster.client.create(ENDPOINTSLICES, {
        "metadata": {"name": "local-remote", "labels": {"kubernetes.io/service-name": "local"}},
        "addressType": "IPv4", "ports": [{"name": "", "port": POD_PORT, "protocol": "TCP"}],
        "endpoints": [{"addresses": [b.ip], "conditions": READY, "nodeName": "node-b"}]}, "default")
    await cluster.endpoints("local", [("a", READY)])
    await cluster.programmed(dnat(a), dnat(b))
    from_outside = await ask_many(cluster.outside, NODE_IP, NODE_PORT + 1, count=15)
    assert set(from_outside) == {("a", OUTSIDE_IP)}, "outside clients reach local endpoints with their own address"
    from_pod = await ask_many(cluster.pods["c"].path, NODE_IP, NODE_PORT + 1)
    assert {name for name, _ in from_pod} == {"a", "b"}, "pods are served by every endpoint"

    await cluster.endpoints("local", [])
    await cluster.programmed(dnat(a), present=False)
    with pytest.raises(TimeoutError):  # no local endpoint: outside traffic is dropped
        await ask(cluster.outside, NODE_IP, NODE_PORT + 1, wait=0.5)
    assert {name for name, _ in await ask_many(None, NODE_IP, NODE_PORT + 1, count=5)} == {"b"}, \
        "the node itself still reaches the remote endpoint"


async def refused_within(path: str | None, ip: str, port: int, limit: float = 1.0, udp: bool = False) -> None:
    started = time.monotonic()
    with pytest.raises(ConnectionRefusedError):
        await ask(path, ip, port, udp=udp, wait=5)
    assert time.monotonic() - started < limit, "refused quickly, not after a timeout"


async def test_a_service_without_endpoints_refuses_fast(cluster: Cluster) -> None:
    empty = await cluster.service("empty", [
        {"name": "http", "port": 80, "targetPort": POD_PORT, "nodePort": NODE_PORT + 2},
        {"name": "dns", "port": 53, "protocol": "UDP"}], type="NodePort")
    await cluster.programmed(f"{cluster_ip(empty)} . tcp . 80 : goto reject-chain")
    await refused_within(None, cluster_ip(empty), 80)
    await refused_within(cluster.pods["a"].path, cluster_ip(empty), 80)
    await refused_within(None, "127.0.0.1", NODE_PORT + 2)
    await refused_within(cluster.outside, NODE_IP, NODE_PORT + 2)
    await refused_within(cluster.pods["a"].path, cluster_ip(empty), 53, udp=True)

    http = [{"name": "http", "port": POD_PORT, "protocol": "TCP"}]
    await cluster.endpoints("empty", [("a", READY)], ports=http)
    await cluster.programmed(dnat(cluster.pods["a"]))
    assert (await ask(None, cluster_ip(empty), 80))[0] == "a"
    await cluster.endpoints("empty", [], ports=http)
    await cluster.programmed(dnat(cluster.pods["a"]), present=False)
    await refused_within(None, cluster_ip(empty), 80)  # scaled to zero: refused, not hanging


async def test_not_ready_endpoints_leave_the_rotation_within_a_second(cluster: Cluster) -> None:
    a, b, c = cluster.pods["a"], cluster.pods["b"], cluster.pods["c"]
    web = await cluster.service("web", [{"port": 80, "targetPort": POD_PORT}])
    await cluster.endpoints("web", [("a", READY), ("b", READY), ("c", READY)])
    await cluster.programmed(dnat(a), dnat(b), dnat(c))
    await cluster.endpoints("web", [("a", READY), ("b", READY), ("c", NOT_READY)])
    assert await cluster.programmed(dnat(c), present=False) < 1.0, "rules follow the change within 1 s"
    assert {name for name, _ in await ask_many(None, cluster_ip(web), 80)} == {"a", "b"}

    await cluster.endpoints("web", [("a", NOT_READY), ("b", DRAINING), ("c", NOT_READY)])
    await cluster.programmed(dnat(a), present=False)
    assert {name for name, _ in await ask_many(None, cluster_ip(web), 80, count=10)} == {"b"}, \
        "with nothing ready, endpoints still serving while terminating take the traffic"


async def test_load_balancer_gets_node_addresses_and_serves_on_them(cluster: Cluster) -> None:
    client = cluster.client
    node = await client.create(NODES, {"metadata": {"name": NODE}})
    node["status"] = {"addresses": [{"type": "InternalIP", "address": NODE_IP}],
                      "conditions": [{"type": "Ready", "status": "True"}]}
    node = await client.update_status(NODES, node)
    stop = asyncio.Event()
    informers = SharedInformerFactory(client)
    controller = ServiceLBController(client, informers)
    task = asyncio.create_task(controller.run(stop))
    try:
        await cluster.service("lb", [{"port": 18080, "targetPort": POD_PORT}], type="LoadBalancer")
        await cluster.endpoints("lb", [("a", READY), ("b", READY)])
        await cluster.programmed(f"{NODE_IP} . tcp . 18080 : goto external-", dnat(cluster.pods["b"]))
        lb = await client.get(SERVICES, "lb", "default")
        assert lb["status"]["loadBalancer"]["ingress"] == [{"ip": NODE_IP}]
        answers = await ask_many(cluster.outside, NODE_IP, 18080)
        assert {name for name, _ in answers} == {"a", "b"}

        node["status"]["conditions"] = [{"type": "Ready", "status": "False"}]
        await client.update_status(NODES, node)
        await cluster.programmed(f"{NODE_IP} . tcp . 18080", present=False)
        assert (await client.get(SERVICES, "lb", "default"))["status"].get("loadBalancer") == {}
    finally:
        stop.set()
        await asyncio.wait_for(task, 10)
        await informers.stop()


async def test_slices_written_by_the_endpointslice_controller(cluster: Cluster) -> None:
    client = cluster.client
    for name in ("a", "b"):
        pod = await client.create(PODS, {"metadata": {"name": f"pod-{name}", "labels": {"app": "sel"}}, "spec": {
            "nodeName": NODE, "containers": [{"name": "c", "image": "busybox"}]}}, "default")
        pod["status"] = {"phase": "Running", "podIP": cluster.pods[name].ip, "podIPs": [{"ip": cluster.pods[name].ip}],
                         "conditions": [{"type": "Ready", "status": "True"}]}
        await client.update_status(PODS, pod, "default")
    stop = asyncio.Event()
    task = asyncio.create_task(EndpointSliceController(client).run(stop))
    try:
        sel = await cluster.service("sel", [{"port": 80, "targetPort": POD_PORT}], selector={"app": "sel"},
                                    internalTrafficPolicy="Local")
        await cluster.programmed(dnat(cluster.pods["a"]), dnat(cluster.pods["b"]))
        assert {name for name, _ in await ask_many(None, cluster_ip(sel), 80)} == {"a", "b"}, \
            "the controller's slices name this node, so internalTrafficPolicy Local keeps both"
    finally:
        stop.set()
        await asyncio.wait_for(task, 10)


async def test_cleanup_removes_the_table_and_a_later_sync_restores_it(cluster: Cluster) -> None:
    web = await cluster.service("web", [{"port": 80, "targetPort": POD_PORT}])
    await cluster.endpoints("web", [("a", READY)])
    await cluster.programmed(dnat(cluster.pods["a"]))
    await cluster.proxier.cleanup()
    assert nft_table() == ""
    with pytest.raises(OSError):
        await ask(None, cluster_ip(web), 80, wait=0.5)
    await cluster.endpoints("web", [("b", READY)])
    await cluster.programmed(dnat(cluster.pods["b"]), "chain nat-output")
    assert (await ask(None, cluster_ip(web), 80))[0] == "b"


async def test_a_table_changed_behind_its_back_is_rebuilt_after_the_failed_update(cluster: Cluster) -> None:
    web = await cluster.service("web", [{"port": 80, "targetPort": POD_PORT}])
    await cluster.endpoints("web", [("a", READY)])
    await cluster.programmed(dnat(cluster.pods["a"]))
    await cleanup(TABLE)
    await cluster.endpoints("web", [("a", READY), ("c", READY)])
    await cluster.programmed(dnat(cluster.pods["a"]), dnat(cluster.pods["c"]), "chain nat-prerouting")
    assert {name for name, _ in await ask_many(None, cluster_ip(web), 80)} == {"a", "c"}

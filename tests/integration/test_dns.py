"""The cluster DNS against an in-process API server, served as run_dns serves it, on loopback; queried with dnslib
over UDP and TCP and with busybox nslookup; a fake upstream resolver on another port stands in for the host's."""

from __future__ import annotations

import asyncio
import contextlib
import random
import socket
import struct
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestServer
from dnslib import CLASS, EDNS0, QTYPE, RCODE, RR, A, DNSError, DNSQuestion, DNSRecord

from kubelite.apiserver.app import ApiServer, ApiServerConfig
from kubelite.apiserver.authn import UserInfo
from kubelite.client import ApiClient, ApiError, ClientConfig, SharedInformerFactory, is_not_found
from kubelite.client.resources import ENDPOINTSLICES, NAMESPACES, SERVICES
from kubelite.dns.app import ClusterDns
from kubelite.dns.records import ClusterIndex
from kubelite.dns.server import DnsServer
from kubelite.storage.memory import MemoryBackend
from tests.e2e.conftest import free_port

Obj = dict[str, Any]
FOLLOW = 1.0
"""Answers must follow API changes within this many seconds."""


class FakeUpstream(asyncio.DatagramProtocol):
    """An external resolver: example.test A 192.0.2.1 (TTL 60), many.test with 200 addresses, NXDOMAIN otherwise."""

    def __init__(self) -> None:
        self.queries: list[str] = []
        self.transport: asyncio.DatagramTransport | None = None

    def reply(self, data: bytes) -> bytes:
        request = DNSRecord.parse(data)
        name = str(request.q.qname).lower()
        self.queries.append(name)
        reply = request.reply()
        if name == "example.test." and request.q.qtype == QTYPE.A:
            reply.add_answer(RR(request.q.qname, QTYPE.A, ttl=60, rdata=A("192.0.2.1")))
        elif name == "many.test.":
            for i in range(200):
                reply.add_answer(RR(request.q.qname, QTYPE.A, ttl=60, rdata=A(f"192.0.2.{i}")))
        elif name != "example.test.":
            reply.header.rcode = RCODE.NXDOMAIN
        return bytes(reply.pack())

    def connection_made(self, transport: Any) -> None:
        self.transport = transport

    def datagram_received(self, data: bytes, addr: Any) -> None:
        try:
            reply = self.reply(data)
        except DNSError:
            return
        if len(reply) > 512:
            reply = bytes(DNSRecord.parse(reply).truncate().pack())
        assert self.transport is not None
        self.transport.sendto(reply, addr)

    async def serve_tcp(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        with contextlib.suppress(asyncio.IncompleteReadError, ConnectionError):
            while True:
                size = struct.unpack("!H", await reader.readexactly(2))[0]
                reply = self.reply(await reader.readexactly(size))
                writer.write(struct.pack("!H", len(reply)) + reply)
                await writer.drain()
        writer.close()


@pytest.fixture
async def upstream() -> AsyncIterator[tuple[FakeUpstream, int]]:
    """A fake resolver on one free port for both UDP and TCP (a port free for UDP may be taken for TCP: retry)."""
    fake = FakeUpstream()
    loop = asyncio.get_running_loop()
    for attempt in range(5):
        transport, _ = await loop.create_datagram_endpoint(lambda: fake, local_addr=("127.0.0.1", 0))
        port = transport.get_extra_info("sockname")[1]
        try:
            tcp = await asyncio.start_server(fake.serve_tcp, "127.0.0.1", port)
            break
        except OSError:
            transport.close()
            if attempt == 4:
                raise
    yield fake, port
    tcp.close()
    transport.close()


@pytest.fixture
async def client(tmp_path: Path) -> AsyncIterator[ApiClient]:
    api = ApiServer(ApiServerConfig(data_dir=tmp_path), backend=MemoryBackend())
    await api.open()
    api.authenticator.add_token("t", UserInfo("admin", groups=("system:masters",)))
    http = TestServer(api.application())
    await http.start_server()
    config = ClientConfig(server=str(http.make_url("")).rstrip("/"), headers={"Authorization": "Bearer t"})
    async with ApiClient(config) as api_client:
        yield api_client
    await http.close()
    await api.stop()


class Dns:
    """The cluster DNS serving in a task as run_dns does (cancel it to stop), on a port it picks itself (a port
    chosen beforehand could be taken by the time it binds), and how to query it."""

    def __init__(self, client: ApiClient, upstream_port: int):
        self.informers = SharedInformerFactory(client)
        self.server = ClusterDns(client, "127.0.0.1", 0, node_name="node-a", upstreams=[("127.0.0.1", upstream_port)],
                                 informers=self.informers)
        self.task = asyncio.create_task(self._serve())

    async def _serve(self) -> None:
        await self.server.start()
        try:
            await asyncio.Event().wait()
        finally:
            await self.server.stop()
            await self.informers.stop()

    @property
    def port(self) -> int:
        return self.server.port

    async def query(self, name: str, qtype: str = "A", *, tcp: bool = False, edns: bool = False,
                    wait: float = 3) -> DNSRecord:
        request = DNSRecord.question(name, qtype)
        if edns:
            request.add_ar(EDNS0(udp_len=1232))
        raw = await asyncio.to_thread(request.send, "127.0.0.1", self.port, tcp=tcp, timeout=wait)
        reply = DNSRecord.parse(raw)
        assert reply.header.id == request.header.id
        return reply

    async def addresses(self, name: str, **kwargs: Any) -> list[str]:
        reply = await self.query(name, **kwargs)
        return sorted(str(rr.rdata) for rr in reply.rr if rr.rtype == QTYPE.A)


@pytest.fixture
async def dns(client: ApiClient, upstream: tuple[FakeUpstream, int]) -> AsyncIterator[Dns]:
    server = Dns(client, upstream[1])
    async with asyncio.timeout(15):
        while True:
            assert not server.task.done(), server.task
            with contextlib.suppress(OSError):
                if (await server.query("cluster.local", "SOA", wait=0.2)).rr:
                    break
            await asyncio.sleep(0.05)
    yield server
    server.task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await server.task


async def eventually(check: Callable[[], Awaitable[bool]], within: float = FOLLOW) -> float:
    """Seconds until check() holds; fails if that takes longer than `within`."""
    start = time.monotonic()
    while not await check():
        assert time.monotonic() - start < within, "not within the deadline"
        await asyncio.sleep(0.02)
    return time.monotonic() - start


def _service(name: str, **spec: Any) -> Obj:
    return {"apiVersion": "v1", "kind": "Service", "metadata": {"name": name},
            "spec": {"ports": [{"name": "http", "port": 80, "protocol": "TCP"}], **spec}}


def _slice(name: str, service: str, ips: list[str], hostnames: bool = False) -> Obj:
    return {"apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
            "metadata": {"name": name, "labels": {"kubernetes.io/service-name": service}},
            "addressType": "IPv4", "ports": [{"name": "http", "port": 8080, "protocol": "TCP"}],
            "endpoints": [{"addresses": [ip], "conditions": {"ready": True},
                           **({"hostname": f"{service}-{i}"} if hostnames else {})} for i, ip in enumerate(ips)]}


async def test_answers_follow_services_and_endpoints(client: ApiClient, dns: Dns) -> None:
    web = await client.create(SERVICES, _service("web"), "default")
    ip = web["spec"]["clusterIP"]
    await eventually(lambda: _has(dns, "web.default.svc.cluster.local", [ip]))
    await client.create(SERVICES, _service("db", clusterIP="None"), "default")
    await client.create(ENDPOINTSLICES, _slice("db-x", "db", ["10.42.0.10", "10.42.0.11"], hostnames=True), "default")
    await eventually(lambda: _has(dns, "db.default.svc.cluster.local", ["10.42.0.10", "10.42.0.11"]))
    assert await dns.addresses("db-1.db.default.svc.cluster.local") == ["10.42.0.11"]
    firsts = [str((await dns.query("db.default.svc.cluster.local")).rr[0].rdata) for _ in range(2)]
    assert sorted(firsts) == ["10.42.0.10", "10.42.0.11"], "addresses take turns at the front"
    srv = await dns.query("_http._tcp.db.default.svc.cluster.local", "SRV")
    assert sorted(str(rr.rdata) for rr in srv.rr) == ["0 50 8080 db-0.db.default.svc.cluster.local.",
                                                      "0 50 8080 db-1.db.default.svc.cluster.local."]
    ptr = await dns.query("10.0.42.10.in-addr.arpa", "PTR")
    assert [str(rr.rdata) for rr in ptr.rr] == ["db-0.db.default.svc.cluster.local."]
    current = await client.get(ENDPOINTSLICES, "db-x", "default")
    current["endpoints"] = current["endpoints"][1:]
    await client.update(ENDPOINTSLICES, current)
    await eventually(lambda: _has(dns, "db.default.svc.cluster.local", ["10.42.0.11"]))
    await client.delete(SERVICES, "web", "default")
    await eventually(lambda: _rcode(dns, "web.default.svc.cluster.local", RCODE.NXDOMAIN))
    await client.create(NAMESPACES, {"metadata": {"name": "team"}})
    await eventually(lambda: _rcode(dns, "team.svc.cluster.local", RCODE.NOERROR))
    assert (await dns.query("web.svc.cluster.local")).header.rcode == RCODE.NXDOMAIN


async def _has(dns: Dns, name: str, ips: list[str]) -> bool:
    return await dns.addresses(name) == sorted(ips)


async def _rcode(dns: Dns, name: str, rcode: int) -> bool:
    return (await dns.query(name)).header.rcode == rcode


async def test_nxdomain_nodata_and_case(client: ApiClient, dns: Dns) -> None:
    web = await client.create(SERVICES, _service("web"), "default")
    await eventually(lambda: _has(dns, "web.default.svc.cluster.local", [web["spec"]["clusterIP"]]))
    start = time.monotonic()
    missing = await dns.query("google.com.default.svc.cluster.local")
    assert time.monotonic() - start < 0.1
    assert missing.header.rcode == RCODE.NXDOMAIN and missing.header.aa and not missing.rr
    assert [QTYPE[rr.rtype] for rr in missing.auth] == ["SOA"]
    nodata = await dns.query("web.default.svc.cluster.local", "AAAA")
    assert nodata.header.rcode == RCODE.NOERROR and not nodata.rr and QTYPE[nodata.auth[0].rtype] == "SOA"
    mixed = await dns.query("Web.DEFAULT.svc.Cluster.Local.")
    assert str(mixed.q.qname) == "Web.DEFAULT.svc.Cluster.Local."
    assert [(str(rr.rname), str(rr.rdata)) for rr in mixed.rr] == [("Web.DEFAULT.svc.Cluster.Local.",
                                                                    web["spec"]["clusterIP"])]


async def test_tcp_and_busybox_nslookup(client: ApiClient, dns: Dns) -> None:
    web = await client.create(SERVICES, _service("web"), "default")
    ip = web["spec"]["clusterIP"]
    await eventually(lambda: _has(dns, "web.default.svc.cluster.local", [ip]))
    assert await dns.addresses("web.default.svc.cluster.local", tcp=True) == [ip]
    found = await _nslookup(dns.port, "web.default.svc.cluster.local")
    assert f"Address: {ip}" in found
    missing = await _nslookup(dns.port, "nope.default.svc.cluster.local")
    assert "NXDOMAIN" in missing
    srv = await _nslookup(dns.port, "-type=srv", "_http._tcp.web.default.svc.cluster.local")
    assert "0 100 80 web.default.svc.cluster.local" in srv
    reverse = await _nslookup(dns.port, ip)
    assert "web.default.svc.cluster.local" in reverse


async def _nslookup(port: int, *args: str) -> str:
    process = await asyncio.create_subprocess_exec(
        "busybox", "nslookup", f"-port={port}", "-timeout=2", *args, "127.0.0.1",
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT)
    out, _ = await process.communicate()
    return out.decode()


async def test_large_answers_truncate_over_udp_and_complete_over_tcp(client: ApiClient, dns: Dns) -> None:
    await client.create(SERVICES, _service("big", clusterIP="None"), "default")
    ips = [f"10.42.{i // 200}.{i % 200 + 1}" for i in range(100)]
    await client.create(ENDPOINTSLICES, _slice("big-x", "big", ips), "default")
    await eventually(lambda: _has_tcp(dns, "big.default.svc.cluster.local", ips), within=2)
    plain = await dns.query("big.default.svc.cluster.local")
    assert plain.header.tc and 0 < len(plain.rr) < 100 and len(plain.pack()) <= 512
    edns = await dns.query("big.default.svc.cluster.local", edns=True)
    assert edns.header.tc and len(plain.rr) < len(edns.rr) < 100 and len(edns.pack()) <= 1232
    assert [rr.rtype for rr in edns.ar] == [QTYPE.OPT]
    whole = await dns.query("big.default.svc.cluster.local", tcp=True)
    assert not whole.header.tc and len(whole.rr) == 100
    small = await dns.query("cluster.local", "SOA", edns=True)
    assert not small.header.tc and [rr.rtype for rr in small.ar] == [QTYPE.OPT]


async def _has_tcp(dns: Dns, name: str, ips: list[str]) -> bool:
    return await dns.addresses(name, tcp=True) == sorted(ips)


async def test_forwarding_with_cache(dns: Dns, upstream: tuple[FakeUpstream, int]) -> None:
    fake, _ = upstream
    first = await dns.query("example.test")
    assert [str(rr.rdata) for rr in first.rr] == ["192.0.2.1"]
    again = await dns.query("EXAMPLE.test")
    assert [str(rr.rdata) for rr in again.rr] == ["192.0.2.1"] and str(again.q.qname) == "EXAMPLE.test."
    assert fake.queries.count("example.test.") == 1, "the second answer came from the cache"
    assert (await dns.query("nothing.test")).header.rcode == RCODE.NXDOMAIN
    over_tcp = await dns.query("other.test", tcp=True)
    assert over_tcp.header.rcode == RCODE.NXDOMAIN
    many = await dns.query("many.test")
    assert many.header.tc
    many_tcp = await dns.query("many.test", tcp=True)
    assert len(many_tcp.rr) == 200
    reverse = await dns.query("1.2.0.192.in-addr.arpa", "PTR")
    assert reverse.header.rcode == RCODE.NXDOMAIN and "1.2.0.192.in-addr.arpa." in fake.queries


async def test_external_names_are_followed(client: ApiClient, dns: Dns) -> None:
    await client.create(SERVICES, {"apiVersion": "v1", "kind": "Service", "metadata": {"name": "ext"},
                                   "spec": {"type": "ExternalName", "externalName": "example.test"}}, "default")

    async def chased() -> bool:
        reply = await dns.query("ext.default.svc.cluster.local")
        return [(QTYPE[rr.rtype], str(rr.rdata)) for rr in reply.rr] == [
            ("CNAME", "example.test."), ("A", "192.0.2.1")]

    await eventually(chased)
    await client.create(SERVICES, {"apiVersion": "v1", "kind": "Service", "metadata": {"name": "alias"},
                                   "spec": {"type": "ExternalName",
                                            "externalName": "web.default.svc.cluster.local"}}, "default")
    web = await client.create(SERVICES, _service("web"), "default")

    async def aliased(rcode: int, ips: list[str]) -> bool:
        reply = await dns.query("alias.default.svc.cluster.local")
        return reply.header.rcode == rcode and [str(rr.rdata) for rr in reply.rr] == [
            "web.default.svc.cluster.local.", *ips]

    await eventually(lambda: aliased(RCODE.NOERROR, [web["spec"]["clusterIP"]]))
    await client.delete(SERVICES, "web", "default")
    await eventually(lambda: aliased(RCODE.NXDOMAIN, []))


async def test_no_upstream_is_servfail_at_once_and_dead_upstream_times_out() -> None:
    for upstreams, limit in (([], 0.1), ([("127.0.0.1", free_port())], 1.5)):
        server = DnsServer(ClusterIndex(), upstreams, timeout=0.5)
        await server.start("127.0.0.1", 0)
        try:
            request = DNSRecord.question("example.test")
            start = time.monotonic()
            raw = await asyncio.to_thread(request.send, "127.0.0.1", server.port, timeout=3)
            assert time.monotonic() - start < limit
            assert DNSRecord.parse(raw).header.rcode == RCODE.SERVFAIL
        finally:
            await server.close()


async def test_malformed_packets_do_not_break_it(dns: Dns) -> None:
    header = struct.Struct("!HHHHHH")
    garbage = [b"", b"\x00", b"x" * 11, header.pack(1, 0, 1, 0, 0, 0), header.pack(2, 0, 1, 0, 0, 0) + b"\xc0\x0c",
               header.pack(3, 0, 1, 0, 0, 0) + b"\x40" + b"a" * 64 + b"\x00\x00\x01\x00\x01",
               header.pack(4, 0, 2, 0, 0, 0) + b"\x00\x00\x01\x00\x01" * 2,
               header.pack(5, 0x8000, 1, 0, 0, 0) + b"\x00\x00\x01\x00\x01",
               header.pack(6, 0x2800, 1, 0, 0, 0) + b"\x00\x00\x06\x00\x01",
               header.pack(7, 0, 1, 0, 0, 1) + b"\x00\x00\x01\x00\x01\x00\x00\x29"]
    rng = random.Random(7)
    garbage += [rng.randbytes(rng.randrange(1, 600)) for _ in range(300)]
    replies = await asyncio.to_thread(_blast, dns.port, garbage)
    assert replies.get(2) == RCODE.FORMERR and replies.get(3) == RCODE.FORMERR and replies.get(4) == RCODE.FORMERR
    assert replies.get(6) == RCODE.NOTIMP and replies.get(7) == RCODE.FORMERR
    assert 5 not in replies, "responses are never answered"
    await asyncio.to_thread(_tcp_garbage, dns.port)
    chaos = DNSRecord(q=DNSQuestion("version.bind", QTYPE.TXT, CLASS.CH))
    raw = await asyncio.to_thread(chaos.send, "127.0.0.1", dns.port, timeout=2)
    assert DNSRecord.parse(raw).header.rcode == RCODE.REFUSED
    assert (await dns.query("cluster.local", "SOA")).rr
    assert (await dns.query("cluster.local", "SOA", tcp=True)).rr


async def test_registers_kube_dns_and_unregisters_on_shutdown(client: ApiClient, dns: Dns) -> None:
    service = await client.get(SERVICES, "kube-dns", "kube-system")
    assert service["spec"]["clusterIP"] == "10.43.0.10"
    assert service["metadata"]["labels"]["k8s-app"] == "kube-dns"
    assert {(p["name"], p["port"], p["protocol"]) for p in service["spec"]["ports"]} == {
        ("dns", 53, "UDP"), ("dns-tcp", 53, "TCP")}
    assert await dns.addresses("kube-dns.kube-system.svc.cluster.local") == ["10.43.0.10"]

    async def registered() -> bool:
        try:
            own = await client.get(ENDPOINTSLICES, "kube-dns-node-a", "kube-system")
        except ApiError as exc:
            assert is_not_found(exc)
            return False
        assert own["metadata"]["labels"] == {"kubernetes.io/service-name": "kube-dns",
                                             "endpointslice.kubernetes.io/managed-by": "kubelite-dns"}
        assert own["endpoints"][0]["addresses"] == ["127.0.0.1"]
        assert {(p["name"], p["port"], p["protocol"]) for p in own["ports"]} == {
            ("dns", dns.port, "UDP"), ("dns-tcp", dns.port, "TCP")}
        return True

    await eventually(registered, within=5)
    version = (await client.get(ENDPOINTSLICES, "kube-dns-node-a", "kube-system"))["metadata"]["resourceVersion"]
    await asyncio.sleep(0.5)
    assert (await client.get(ENDPOINTSLICES, "kube-dns-node-a", "kube-system"))["metadata"]["resourceVersion"] == \
        version, "a registered slice is left alone"
    await client.delete(ENDPOINTSLICES, "kube-dns-node-a", "kube-system")
    await eventually(registered, within=5)
    srv = await dns.query("_dns._udp.kube-dns.kube-system.svc.cluster.local", "SRV")
    assert [str(rr.rdata) for rr in srv.rr] == ["0 100 53 kube-dns.kube-system.svc.cluster.local."]
    dns.task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await dns.task
    with pytest.raises(ApiError) as gone:
        await client.get(ENDPOINTSLICES, "kube-dns-node-a", "kube-system")
    assert is_not_found(gone.value)
    assert (await client.get(SERVICES, "kube-dns", "kube-system"))["spec"]["clusterIP"] == "10.43.0.10"


def _blast(port: int, packets: list[bytes]) -> dict[int, int]:
    """Send every packet over UDP; the rcode of the first reply to each id."""
    replies: dict[int, int] = {}
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.settimeout(0.5)
        for packet in packets:
            sock.sendto(packet, ("127.0.0.1", port))
        with contextlib.suppress(TimeoutError):
            while True:
                qid, flags = struct.unpack_from("!HH", sock.recv(4096))
                replies.setdefault(qid, flags & 0xF)
    return replies


def _tcp_garbage(port: int) -> None:
    with socket.create_connection(("127.0.0.1", port)) as conn:
        conn.sendall(b"\x00\x05hello\x00\x03abc")

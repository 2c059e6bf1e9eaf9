"""The DNS server: UDP and TCP on one address; cluster names answered from packed answers cached per
(name, type), everything else forwarded to upstream resolvers through a small cache."""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import logging
import random
import struct
import time
from collections.abc import Coroutine, Iterable, Sequence
from pathlib import Path
from typing import Any, cast

from dnslib import QTYPE, RCODE, RR, DNSError, DNSHeader, DNSLabel, DNSQuestion, DNSRecord

from kubelite.dns.records import Answer, ClusterIndex

log = logging.getLogger(__name__)

HEADER = struct.Struct("!HHHHHH")
TYPE_CLASS = struct.Struct("!HH")
EDNS_SIZE = 1232
"""The UDP payload we accept and offer with EDNS (the DNS flag day 2020 value)."""
OPT = struct.pack("!BHHIH", 0, QTYPE.OPT, EDNS_SIZE, 0, 0)
QR, OPCODE, AA, TC, RD, RA, CD = 0x8000, 0x7800, 0x0400, 0x0200, 0x0100, 0x0080, 0x0010
UDP_SIZE = 512
TCP_SIZE = 65535
TCP_IDLE = 10.0
MAX_CACHE = 50_000
MAX_PENDING = 2_000
"""Queries waiting on upstreams at once; more are dropped (the client retries) rather than queued."""
FORWARD_TTL_CAP = 30
ZONE_TRANSFERS = (QTYPE.AXFR, QTYPE.IXFR)
CACHED_TYPES = frozenset(struct.pack("!H", getattr(QTYPE, name)) for name in (
    "A", "AAAA", "SRV", "PTR", "CNAME", "TXT", "SOA", "NS", "MX", "HTTPS", "SVCB", "ANY"))
"""Query types whose answers are kept packed (others are rare: computed each time)."""
ROTATABLE = {QTYPE.A: 16, QTYPE.AAAA: 28}
"""Size of an A or AAAA record whose owner is a pointer to the question: such answers rotate in place."""
Upstream = tuple[str, int]


class Query:
    """The parts of a query the server needs: header fields, the question as sent and its cache key."""

    __slots__ = ("id", "flags", "question", "key", "labels", "qtype", "limit", "edns")

    def __init__(self, qid: int, flags: int, question: bytes, qtype: int, limit: int, edns: bool):
        self.id = qid
        self.flags = flags
        self.question = question
        self.qtype = qtype
        self.limit = limit
        self.edns = edns
        self.key = question[:-4].lower() + question[-4:-2]
        self.labels: list[bytes] = []

    def name(self) -> str:
        """The query name as text, lower case, no trailing dot."""
        return ".".join(label.decode("latin-1") for label in self._split())

    def _split(self) -> list[bytes]:
        if not self.labels:
            wire, i = self.key[:-2], 0
            while wire[i]:
                self.labels.append(wire[i + 1:i + 1 + wire[i]])
                i += 1 + wire[i]
        return self.labels

    def dnslabel(self) -> DNSLabel:
        """The lower-case query name as dnslib packs it (byte for byte the question's length)."""
        return DNSLabel(self._split())


def parse(data: bytes, tcp: bool) -> Query | bytes | None:
    """A query; or the error reply it deserves (FORMERR, NOTIMP, REFUSED); or None to drop it (not a query)."""
    if len(data) < 12:
        return None
    qid, flags, qdcount, ancount, nscount, arcount = HEADER.unpack_from(data)
    if flags & QR:
        return None
    if flags & OPCODE:
        return error(qid, flags, RCODE.NOTIMP)
    if qdcount != 1:
        return error(qid, flags, RCODE.FORMERR)
    end, i = len(data), 12
    while True:
        if i >= end:
            return error(qid, flags, RCODE.FORMERR)
        length = data[i]
        if length == 0:
            break
        if length > 63:
            return error(qid, flags, RCODE.FORMERR)
        i += length + 1
    qend = i + 5
    if qend > end:
        return error(qid, flags, RCODE.FORMERR)
    qtype, qclass = TYPE_CLASS.unpack_from(data, i + 1)
    question = data[12:qend]
    if qclass != 1 or qtype in ZONE_TRANSFERS:
        return error(qid, flags, RCODE.REFUSED, question)
    if (ancount or nscount or arcount) and qend + 11 > end:
        return error(qid, flags, RCODE.FORMERR)
    limit, edns = (TCP_SIZE if tcp else UDP_SIZE), False
    if arcount and not ancount and not nscount and data[qend] == 0 and data[qend + 1:qend + 3] == b"\x00\x29":
        edns = True
        if not tcp:
            limit = max(UDP_SIZE, min(TYPE_CLASS.unpack_from(data, qend + 3)[0], EDNS_SIZE))
    return Query(qid, flags, question, qtype, limit, edns)


def error(qid: int, flags: int, rcode: int, question: bytes = b"") -> bytes:
    """A bare error reply (with the question when it could be read)."""
    return HEADER.pack(qid, QR | RA | (flags & (OPCODE | RD | CD)) | rcode, 1 if question else 0, 0, 0, 0) + question


class Prepared:
    """An answer packed once, served by patching in each query's id, flags and question (same length);
    several addresses of one name take turns at the front (round robin, like CoreDNS's loadbalance)."""

    __slots__ = ("answer", "qname", "qtype", "qlen", "flags", "counts", "body", "rotate", "_turn", "_fitted")

    def __init__(self, query: Query, answer: Answer):
        self.answer = answer
        self.qname = query.dnslabel()
        self.qtype = query.qtype
        self.qlen = len(query.question)
        self.flags = QR | AA | RA | answer.rcode
        self.counts = (len(answer.answer), len(answer.authority), len(answer.additional))
        self.body = self._pack(answer.answer, answer.authority, answer.additional)
        self._fitted: dict[int, tuple[bytes, int, tuple[int, int, int]]] = {}
        self._turn = 0
        unit, count = ROTATABLE.get(self.qtype, 0), len(answer.answer)
        same_owner = all(rr.rtype == self.qtype for rr in answer.answer) and all(
            self.body[i:i + 2] == b"\xc0\x0c" for i in range(0, unit * count, unit or 1))
        self.rotate = unit if unit and count > 1 and same_owner else 0

    def _pack(self, answer: list[RR], authority: list[RR], additional: list[RR]) -> bytes:
        record = DNSRecord(DNSHeader(id=0), q=DNSQuestion(self.qname, self.qtype), rr=answer, auth=authority,
                           ar=additional)
        return bytes(record.pack()[12 + self.qlen:])

    def render(self, query: Query) -> bytes:
        """The reply to a query, truncated (TC) to what fits its size limit."""
        body, flags, (an, ns, ar) = self.body, self.flags, self.counts
        room = query.limit - 12 - self.qlen - (len(OPT) if query.edns else 0)
        if len(body) > room:
            body, flags, (an, ns, ar) = self._fit(room)
        elif self.rotate:
            self._turn = (self._turn + 1) % an
            cut, end = self._turn * self.rotate, an * self.rotate
            body = body[cut:end] + body[:cut] + body[end:]
        header = HEADER.pack(query.id, flags | (query.flags & (RD | CD)), 1, an, ns, ar + query.edns)
        return header + query.question + body + OPT if query.edns else header + query.question + body

    def _fit(self, room: int) -> tuple[bytes, int, tuple[int, int, int]]:
        """Drop the additional section; if the answers still do not fit, keep as many as fit and set TC."""
        fitted = self._fitted.get(room)
        if fitted is None:
            answer = self.answer
            body = self._pack(answer.answer, answer.authority, [])
            if len(body) <= room:
                fitted = (body, self.flags, (len(answer.answer), len(answer.authority), 0))
            else:
                low, high = 0, len(answer.answer)
                while low < high:
                    middle = (low + high + 1) // 2
                    if len(self._pack(answer.answer[:middle], [], [])) <= room:
                        low = middle
                    else:
                        high = middle - 1
                fitted = (self._pack(answer.answer[:low], [], []), self.flags | TC, (low, 0, 0))
            self._fitted[room] = fitted
        return fitted


class SlowPath:
    """Marker: the query needs the event loop (upstream forwarding or an ExternalName to chase)."""


SLOW = SlowPath()


def read_upstreams(path: str | Path = "/etc/resolv.conf", exclude: Iterable[Upstream] = ()) -> list[Upstream]:
    """The nameservers of a resolv.conf (port 53), without the excluded ones (ourselves: a loop)."""
    excluded = set(exclude)
    upstreams: list[Upstream] = []
    try:
        lines = Path(path).read_text().splitlines()
    except OSError:
        return upstreams
    for line in lines:
        fields = line.split()
        if len(fields) >= 2 and fields[0] == "nameserver":
            try:
                address = str(ipaddress.ip_address(fields[1].split("%")[0]))
            except ValueError:
                continue
            if (address, 53) not in excluded and (address, 53) not in upstreams:
                upstreams.append((address, 53))
    return upstreams


class DnsServer:
    """Serves a ClusterIndex on UDP and TCP; forwards other names to upstreams (SERVFAIL at once without any)."""

    def __init__(self, index: ClusterIndex, upstreams: Sequence[Upstream] = (), *, timeout: float = 2.0,
                 max_cache: int = MAX_CACHE):
        self.index = index
        self.upstreams = list(upstreams)
        self.timeout = timeout
        self.max_cache = max_cache
        self.port = 0
        self._cache: dict[bytes, Prepared] = {}
        self._forwarded: dict[bytes, tuple[float, float, bytes]] = {}
        """Upstream replies by query key: (expiry, time stored, reply)."""
        self._udp: asyncio.DatagramTransport | None = None
        self._tcp: asyncio.Server | None = None
        self._tasks: set[asyncio.Task[Any]] = set()
        self._writers: set[asyncio.StreamWriter] = set()
        index.on_change = self.invalidate

    # lifecycle

    async def start(self, host: str, port: int) -> None:
        """Listen on UDP and TCP (port 0: a free port, the same for both; see `port`)."""
        loop = asyncio.get_running_loop()
        for attempt in range(5):
            transport, _ = await loop.create_datagram_endpoint(lambda: _UdpProtocol(self), local_addr=(host, port))
            bound = transport.get_extra_info("sockname")[1]
            try:
                self._tcp = await asyncio.start_server(self._serve_tcp, host, bound)
            except OSError:
                transport.close()
                if port or attempt == 4:
                    raise
                continue
            self._udp, self.port = transport, bound
            return

    async def close(self) -> None:
        """Stop listening, cancel pending upstream queries and close TCP connections."""
        if self._udp is not None:
            self._udp.close()
        if self._tcp is not None:
            self._tcp.close()
        for writer in list(self._writers):
            writer.close()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        if self._tcp is not None:
            await self._tcp.wait_closed()

    def spawn(self, coroutine: Coroutine[Any, Any, None]) -> None:
        """Run a slow query in the background; dropped (the client will retry) when too many are waiting."""
        if len(self._tasks) >= MAX_PENDING:
            coroutine.close()
            return
        task = asyncio.get_running_loop().create_task(coroutine)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def invalidate(self, names: set[str] | None) -> None:
        """Forget packed answers of names that changed (all of them for None)."""
        if names is None:
            self._cache.clear()
            return
        for name in names:
            wire = b"".join(bytes([len(label)]) + label.encode() for label in name.split(".") if label) + b"\x00"
            for qtype in CACHED_TYPES:
                self._cache.pop(wire + qtype, None)

    # answering

    def answer_now(self, data: bytes, tcp: bool) -> bytes | SlowPath | None:
        """The reply when it needs no waiting (the hot path), SLOW when it does, None to stay silent."""
        try:
            query = parse(data, tcp)
            if not isinstance(query, Query):
                return query
            prepared = self._cache.get(query.key)
            if prepared is None:
                answer = self.index.lookup(query.name(), query.qtype)
                if answer is None or answer.chase:
                    return SLOW
                prepared = Prepared(query, answer)
                if answer.cacheable and query.key[-2:] in CACHED_TYPES:
                    if len(self._cache) >= self.max_cache:
                        self._cache.clear()
                    self._cache[query.key] = prepared
            return prepared.render(query)
        except Exception:
            log.exception("DNS query failed")
            return error(*HEADER.unpack_from(data)[:2], RCODE.SERVFAIL) if len(data) >= 12 else None

    async def answer(self, data: bytes, tcp: bool) -> bytes | None:
        """The reply to any query, waiting for upstreams when needed."""
        reply = self.answer_now(data, tcp)
        if not isinstance(reply, SlowPath):
            return reply
        query = parse(data, tcp)
        assert isinstance(query, Query)
        try:
            answer = self.index.lookup(query.name(), query.qtype)
            if answer is None:
                return await self._forward(query, data, tcp)
            return await self._chase(query, answer)
        except Exception:
            log.exception("DNS query failed")
            return error(query.id, query.flags, RCODE.SERVFAIL, query.question)

    async def _chase(self, query: Query, answer: Answer) -> bytes:
        """An ExternalName answer completed with the upstream records of its target."""
        request = DNSRecord(DNSHeader(id=random.getrandbits(16), rd=1), q=DNSQuestion(answer.chase, query.qtype))
        packed = bytes(request.pack())
        key = packed[12:-4].lower() + packed[-4:-2]
        reply = await self._upstream(key, packed, False)
        if reply is not None and reply[3] & 0x0F in (RCODE.NOERROR, RCODE.NXDOMAIN):
            with contextlib.suppress(DNSError):
                parsed = DNSRecord.parse(reply)
                answer.answer += parsed.rr
                answer.rcode = parsed.header.rcode
                answer.authority = parsed.auth if not parsed.rr else []
        return Prepared(query, answer).render(query)

    async def _forward(self, query: Query, data: bytes, tcp: bool) -> bytes:
        """Relay a query upstream (same transport as the client) and the reply back, with the client's id."""
        reply = await self._upstream(query.key, data, tcp)
        if reply is None:
            return error(query.id, query.flags, RCODE.SERVFAIL, query.question)
        reply = query.id.to_bytes(2, "big") + reply[2:12] + query.question + reply[12 + len(query.question):]
        if len(reply) > query.limit:
            return HEADER.pack(query.id, QR | RA | TC | (query.flags & (RD | CD)), 1, 0, 0, 0) + query.question
        return reply

    async def _upstream(self, key: bytes, data: bytes, tcp: bool) -> bytes | None:
        """An upstream reply to a query (from the cache while fresh); None when no upstream answered."""
        cached = self._forwarded.get(key)
        now = time.monotonic()
        if cached is not None:
            expiry, stored, reply = cached
            if now < expiry:
                return _aged(reply, int(now - stored))
            del self._forwarded[key]
        qid = random.getrandbits(16)
        request = qid.to_bytes(2, "big") + data[2:]
        question = data[12:12 + len(key) + 2].lower()
        for upstream in self.upstreams:
            try:
                async with asyncio.timeout(self.timeout):
                    reply = await (_exchange_tcp(upstream, request) if tcp else _exchange_udp(upstream, request))
                    if len(reply) >= 12 and reply[2] & (TC >> 8) and not tcp:
                        reply = await _exchange_tcp(upstream, request)
            except (OSError, TimeoutError, asyncio.IncompleteReadError) as exc:
                log.debug("upstream %s:%d failed: %r", *upstream, exc)
                continue
            if len(reply) < 12 or reply[:2] != request[:2] or not reply[2] & (QR >> 8) or \
                    reply[12:12 + len(question)].lower() != question:
                continue
            self._remember(key, reply, now)
            return reply
        return None

    def _remember(self, key: bytes, reply: bytes, now: float) -> None:
        """Cache a NOERROR or NXDOMAIN reply for its smallest TTL (at most 30 s)."""
        if reply[3] & 0x0F not in (RCODE.NOERROR, RCODE.NXDOMAIN) or reply[2] & (TC >> 8):
            return
        try:
            parsed = DNSRecord.parse(reply)
        except DNSError:
            return
        ttls = [rr.ttl for rr in parsed.rr + parsed.auth + parsed.ar if rr.rtype != QTYPE.OPT]
        ttl = min([FORWARD_TTL_CAP, *ttls]) if ttls else 5
        if ttl > 0:
            if len(self._forwarded) >= self.max_cache:
                self._forwarded.clear()
            self._forwarded[key] = (now + ttl, now, reply)

    # transports

    async def _serve_tcp(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        """Length-prefixed queries, answered in order, until the client closes or stays idle for 10 s."""
        self._writers.add(writer)
        try:
            while True:
                async with asyncio.timeout(TCP_IDLE):
                    size = int.from_bytes(await reader.readexactly(2), "big")
                    data = await reader.readexactly(size)
                reply = await self.answer(data, True)
                if reply is None:
                    break
                writer.write(len(reply).to_bytes(2, "big") + reply)
                await writer.drain()
        except (TimeoutError, asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            self._writers.discard(writer)
            writer.close()


def _aged(reply: bytes, age: int) -> bytes:
    """A cached reply with its TTLs lowered by its age in seconds."""
    if age <= 0:
        return reply
    try:
        parsed = DNSRecord.parse(reply)
    except DNSError:
        return reply
    for rr in parsed.rr + parsed.auth + parsed.ar:
        if rr.rtype != QTYPE.OPT:
            rr.ttl = max(0, rr.ttl - age)
    return bytes(parsed.pack())


class _UdpProtocol(asyncio.DatagramProtocol):
    """Answers each datagram at once when it can, else in a task."""

    def __init__(self, server: DnsServer):
        self.server = server
        self.transport: asyncio.DatagramTransport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.DatagramTransport, transport)

    def datagram_received(self, data: bytes, addr: Any) -> None:
        reply = self.server.answer_now(data, False)
        if isinstance(reply, SlowPath):
            self.server.spawn(self._reply_later(data, addr))
        elif reply is not None and self.transport is not None:
            self.transport.sendto(reply, addr)

    def error_received(self, exc: Exception) -> None:
        log.debug("DNS UDP error: %r", exc)

    async def _reply_later(self, data: bytes, addr: Any) -> None:
        reply = await self.server.answer(data, False)
        if reply is not None and self.transport is not None and not self.transport.is_closing():
            self.transport.sendto(reply, addr)


class _Exchange(asyncio.DatagramProtocol):
    """One UDP request to an upstream: the first reply with our id completes the future."""

    def __init__(self, future: asyncio.Future[bytes], qid: bytes):
        self.future = future
        self.qid = qid

    def datagram_received(self, data: bytes, addr: Any) -> None:
        if data[:2] == self.qid and not self.future.done():
            self.future.set_result(data)

    def error_received(self, exc: Exception) -> None:
        if not self.future.done():
            self.future.set_exception(exc)


async def _exchange_udp(upstream: Upstream, request: bytes) -> bytes:
    loop = asyncio.get_running_loop()
    future: asyncio.Future[bytes] = loop.create_future()
    transport, _ = await loop.create_datagram_endpoint(lambda: _Exchange(future, request[:2]), remote_addr=upstream)
    try:
        transport.sendto(request)
        return await future
    finally:
        transport.close()


async def _exchange_tcp(upstream: Upstream, request: bytes) -> bytes:
    reader, writer = await asyncio.open_connection(*upstream)
    try:
        writer.write(len(request).to_bytes(2, "big") + request)
        await writer.drain()
        size = int.from_bytes(await reader.readexactly(2), "big")
        return await reader.readexactly(size)
    finally:
        writer.close()

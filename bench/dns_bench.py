#!/usr/bin/env python3
"""Cluster DNS throughput: a DnsServer (uvloop, in a subprocess) with --services Services indexed (no API
server: the index is fed directly), and one UDP client keeping --inflight queries for service names in
flight for --seconds. Prints one JSON line: queries/s, p50/p99 latency, lost and empty answers.

Usage: bench/dns_bench.py [--services 1000] [--inflight 32] [--seconds 5]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import struct
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import uvloop
from dnslib import DNSRecord

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from kubelite.dns.records import ClusterIndex  # noqa: E402
from kubelite.dns.server import DnsServer  # noqa: E402

NAMESPACES = 20


def names(services: int) -> list[str]:
    return [f"svc-{i}.ns-{i % NAMESPACES}.svc.cluster.local" for i in range(services)]


def build_index(services: int) -> ClusterIndex:
    """Services in 20 namespaces, every tenth headless; each with a slice of three ready endpoints."""
    index = ClusterIndex()
    for i in range(services):
        namespace, name = f"ns-{i % NAMESPACES}", f"svc-{i}"
        headless = i % 10 == 0
        index.set_service({"metadata": {"name": name, "namespace": namespace}, "spec": {
            "clusterIP": "None" if headless else f"10.43.{i // 250}.{i % 250 + 1}",
            "ports": [{"name": "http", "port": 80, "protocol": "TCP"}]}})
        index.set_slice({"metadata": {"name": f"{name}-x", "namespace": namespace,
                                      "labels": {"kubernetes.io/service-name": name}},
                         "addressType": "IPv4", "ports": [{"name": "http", "port": 8080, "protocol": "TCP"}],
                         "endpoints": [{"addresses": [f"10.42.{(3 * i + k) // 250}.{(3 * i + k) % 250 + 1}"],
                                        "conditions": {"ready": True}} for k in range(3)]})
    return index


async def serve(services: int) -> None:
    """The server process: print the port, serve until stdin closes."""
    server = DnsServer(build_index(services), [])
    await server.start("127.0.0.1", 0)
    print(server.port, flush=True)
    await asyncio.get_running_loop().run_in_executor(None, sys.stdin.read)
    await server.close()


class Client(asyncio.DatagramProtocol):
    """Keeps `inflight` queries outstanding; records each round trip."""

    def __init__(self, queries: list[bytes], inflight: int):
        self.queries = queries
        self.inflight = inflight
        self.pending: dict[int, float] = {}
        self.latencies: list[float] = []
        self.errors = 0
        self.lost = 0
        self.next_id = 0
        self.running = True
        self.transport: Any = None

    def connection_made(self, transport: Any) -> None:
        self.transport = transport
        for _ in range(self.inflight):
            self.send()

    def send(self) -> None:
        self.next_id = (self.next_id + 1) & 0xFFFF
        while self.next_id in self.pending:
            self.next_id = (self.next_id + 1) & 0xFFFF
        self.pending[self.next_id] = time.perf_counter()
        self.transport.sendto(struct.pack("!H", self.next_id) + random.choice(self.queries))

    def datagram_received(self, data: bytes, addr: Any) -> None:
        qid, flags, _, answers = struct.unpack_from("!HHHH", data)
        sent = self.pending.pop(qid, None)
        if sent is None:
            return
        self.latencies.append(time.perf_counter() - sent)
        if flags & 0x000F or not answers:
            self.errors += 1
        if self.running:
            self.send()

    def expire(self, older_than: float) -> None:
        """Count queries unanswered for a second as lost and replace them."""
        now = time.perf_counter()
        for qid, sent in list(self.pending.items()):
            if now - sent > older_than:
                del self.pending[qid]
                self.lost += 1
                if self.running:
                    self.send()


async def measure(port: int, services: int, inflight: int, seconds: float) -> dict[str, Any]:
    queries = [bytes(DNSRecord.question(name).pack())[2:] for name in names(services)]
    loop = asyncio.get_running_loop()
    client = Client(queries, inflight)
    warmup = Client(queries, inflight)
    transport, _ = await loop.create_datagram_endpoint(lambda: warmup, remote_addr=("127.0.0.1", port))
    await asyncio.sleep(1.0)
    warmup.running = False
    transport.close()
    transport, _ = await loop.create_datagram_endpoint(lambda: client, remote_addr=("127.0.0.1", port))
    start = time.perf_counter()
    while time.perf_counter() - start < seconds:
        await asyncio.sleep(0.1)
        client.expire(1.0)
    client.running = False
    elapsed = time.perf_counter() - start
    await asyncio.sleep(0.2)
    transport.close()
    latencies = sorted(client.latencies)
    return {
        "services": services, "inflight": inflight, "seconds": round(elapsed, 2),
        "queries_per_s": round(len(latencies) / elapsed),
        "p50_ms": round(latencies[len(latencies) // 2] * 1000, 3),
        "p99_ms": round(latencies[int(len(latencies) * 0.99)] * 1000, 3),
        "max_ms": round(latencies[-1] * 1000, 3),
        "lost": client.lost, "errors_or_empty": client.errors,
    }


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--services", type=int, default=1000)
    parser.add_argument("--inflight", type=int, default=32)
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--serve", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve:
        uvloop.run(serve(args.services))
        return
    server = subprocess.Popen([sys.executable, __file__, "--serve", "--services", str(args.services)],
                              stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
                              env={**os.environ, "PYTHONPATH": str(ROOT)})
    try:
        assert server.stdout is not None
        port = int(server.stdout.readline())
        print(json.dumps(uvloop.run(measure(port, args.services, args.inflight, args.seconds))))
    finally:
        assert server.stdin is not None
        server.stdin.close()
        server.wait(timeout=10)


if __name__ == "__main__":
    main()

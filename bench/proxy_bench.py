#!/usr/bin/env python3
"""Service proxy figures: a `kubelite server` (API only, service CIDR 10.91.0.0/16) holding N Services of M
endpoints each, and the Proxier of this process programming them into nft table `ip kpbench-proxy`:

1. the first sync (list, render, `nft -f` of the whole table) and its parts: render, apply on a fresh table,
   replace of an existing table (target: under 2 s for 1,000 x 10);
2. one endpoint changed through the API until the rule is in the kernel (target: under 1 s);
3. request latency (connect, one answer, close) from a pod to another pod, by pod IP and by ClusterIP, on a scratch
   bridge kpbench0 with pod CIDR 10.92.0.0/24 (target: under 10 % overhead).

Needs root. Everything it makes is removed at the end. Prints the figures, then one JSON line.

Usage: bench/proxy_bench.py [--services 1000] [--endpoints 10] [--changes 5] [--requests 2000]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import ctypes
import json
import os
import socket
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import uvloop

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from kubelite.client import ApiClient, SharedInformerFactory, load_kubeconfig  # noqa: E402
from kubelite.client.resources import ENDPOINTSLICES, SERVICES  # noqa: E402
from kubelite.kubelet.network.nat import run_nft  # noqa: E402
from kubelite.kubelet.network.plugin import BridgeNetwork  # noqa: E402
from kubelite.proxy import model  # noqa: E402
from kubelite.proxy.proxier import Proxier  # noqa: E402
from kubelite.proxy.rules import full_script, render  # noqa: E402
from tests import netns  # noqa: E402
from tests.e2e.conftest import API_ONLY, free_port, start_server, stop_server  # noqa: E402
from tests.integration.test_network import pod_config  # noqa: E402

Obj = dict[str, Any]
TABLE = "kpbench-proxy"
BRIDGE = "kpbench0"
NET_TABLE = "kpbench-net"
POD_CIDR = "10.92.0.0/24"
CLUSTER_CIDR = "10.92.0.0/16"
SERVICE_CIDR = "10.91.0.0/16"
CLONE_NEWNET = 0x40000000
_libc = ctypes.CDLL(None, use_errno=True)


def endpoint_ip(index: int) -> str:
    """Addresses of the synthetic endpoints: never contacted, only programmed."""
    return f"10.90.{index // 250}.{index % 250 + 1}"


def slice_body(service: str, ips: list[str], port: int = 8080) -> Obj:
    return {"apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice", "addressType": "IPv4",
            "metadata": {"name": f"{service}-bench", "labels": {"kubernetes.io/service-name": service}},
            "endpoints": [{"addresses": [ip], "conditions": {"ready": True}, "nodeName": "other"} for ip in ips],
            "ports": [{"name": "", "port": port, "protocol": "TCP"}]}


async def populate(client: ApiClient, services: int, endpoints: int) -> float:
    """Create the Services and their slices, 50 requests at a time; returns seconds taken."""
    started = time.perf_counter()

    async def one(i: int) -> None:
        name = f"svc-{i}"
        await client.create(SERVICES, {"metadata": {"name": name}, "spec": {"ports": [{"port": 80}]}}, "default")
        await client.create(ENDPOINTSLICES, slice_body(name, [endpoint_ip(i * endpoints + e)
                                                              for e in range(endpoints)]), "default")

    for first in range(0, services, 50):
        await asyncio.gather(*(one(i) for i in range(first, min(first + 50, services))))
    return time.perf_counter() - started


async def wait_for(check: Any, limit: float = 60.0) -> None:
    deadline = time.monotonic() + limit
    while not check():
        if time.monotonic() > deadline:
            raise TimeoutError("condition not reached")
        await asyncio.sleep(0.002)


def programmed(proxier: Proxier, target: str) -> bool:
    """Whether the proxier's last successful `nft -f` wrote a DNAT to target (ip:port)."""
    return proxier.applied is not None and any(
        rule.endswith(f"dnat to {target}") for rules in proxier.applied.chains.values() for rule in rules)


async def change_latency(client: ApiClient, proxier: Proxier, services: int, endpoints: int,
                         changes: int) -> list[float]:
    """Replace one endpoint of one Service through the API, and time until the sync that wrote it returned."""
    times = []
    index = services // 2
    name = f"svc-{index}"
    for n in range(changes):
        current = await client.get(ENDPOINTSLICES, f"{name}-bench", "default")
        ips = [endpoint_ip(index * endpoints + e) for e in range(endpoints - 1)] + [f"10.89.0.{n + 1}"]
        body = slice_body(name, ips)
        body["metadata"]["resourceVersion"] = current["metadata"]["resourceVersion"]
        syncs = proxier.syncs
        started = time.perf_counter()
        await client.update(ENDPOINTSLICES, body, "default")
        await wait_for(lambda before=syncs, target=f"10.89.0.{n + 1}:8080":
                       proxier.syncs > before and programmed(proxier, target))
        times.append(time.perf_counter() - started)
    return times


def _setns(fd: int) -> None:
    if _libc.setns(fd, CLONE_NEWNET) != 0:
        raise OSError(ctypes.get_errno(), "setns")


def in_netns(path: str, work: Any) -> Any:
    """Run work() on a thread that lives in the namespace at path; returns its result."""
    result: list[Any] = []
    errors: list[BaseException] = []

    def run() -> None:
        fd = os.open(path, os.O_RDONLY)
        try:
            _setns(fd)
            result.append(work())
        except BaseException as exc:
            errors.append(exc)
        finally:
            os.close(fd)

    thread = threading.Thread(target=run)
    thread.start()
    thread.join()
    if errors:
        raise errors[0]
    return result[0]


def serve(path: str) -> socket.socket:
    """A server in the namespace: answers each connection with one byte and closes it."""
    listener = in_netns(path, lambda: socket.create_server(("0.0.0.0", 8080), backlog=256))

    def loop() -> None:
        while True:
            try:
                conn, _ = listener.accept()
            except OSError:
                return
            with conn:
                conn.sendall(b"x")

    threading.Thread(target=loop, daemon=True).start()
    return listener


def request_times(targets: list[tuple[str, int]], requests: int) -> dict[tuple[str, int], list[float]]:
    """Alternate between the targets: connect, read the answer, close; each request's seconds."""
    times: dict[tuple[str, int], list[float]] = {t: [] for t in targets}
    for n in range(requests * len(targets)):
        target = targets[n % len(targets)]
        started = time.perf_counter()
        with socket.create_connection(target, timeout=3) as sock:
            sock.recv(1)
        times[target].append(time.perf_counter() - started)
    return times


async def latency(client: ApiClient, proxier: Proxier, requests: int, tmp: Path) -> dict[str, float]:
    paths = [f"/run/netns/kpbench-{os.getpid()}-{name}" for name in ("client", "server")]
    network = BridgeNetwork(tmp / "net", POD_CIDR, CLUSTER_CIDR, bridge=BRIDGE, table=NET_TABLE)
    listener = None
    try:
        for path in paths:
            netns.create(path)
        await network.setup("kpbench-client", paths[0], pod_config("client"))
        server_ip = await network.setup("kpbench-server", paths[1], pod_config("server"))
        listener = serve(paths[1])
        echo = await client.create(SERVICES, {"metadata": {"name": "echo"}, "spec": {
            "ports": [{"port": 80, "targetPort": 8080}]}}, "default")
        await client.create(ENDPOINTSLICES, slice_body("echo", [server_ip]), "default")
        await wait_for(lambda: programmed(proxier, f"{server_ip}:8080"))
        targets = [(server_ip, 8080), (echo["spec"]["clusterIP"], 80)]
        in_netns(paths[0], lambda: request_times(targets, 200))
        times = await asyncio.to_thread(in_netns, paths[0], lambda: request_times(targets, requests))
        pod = statistics.median(times[targets[0]]) * 1000
        service = statistics.median(times[targets[1]]) * 1000
        return {"pod_p50_ms": round(pod, 3), "clusterip_p50_ms": round(service, 3),
                "overhead_pct": round((service - pod) / pod * 100, 1)}
    finally:
        if listener is not None:
            with contextlib.suppress(OSError):
                listener.shutdown(socket.SHUT_RDWR)
            listener.close()
        await network.destroy()
        for path in paths:
            with contextlib.suppress(OSError):
                netns.remove(path)


async def run(args: argparse.Namespace, kubeconfig: Path, tmp: Path) -> dict[str, Any]:
    results: dict[str, Any] = {"services": args.services, "endpoints": args.endpoints}
    async with ApiClient(load_kubeconfig(kubeconfig), qps=2000, burst=2000) as client:
        results["populate_s"] = round(await populate(client, args.services, args.endpoints), 2)
        print(f"created {args.services} Services x {args.endpoints} endpoints in {results['populate_s']} s")
        await run_nft(f"table ip {TABLE}\ndelete table ip {TABLE}\n")
        informers = SharedInformerFactory(client)
        proxier = Proxier(informers, "bench-node", CLUSTER_CIDR, TABLE)
        stop = asyncio.Event()
        started = time.perf_counter()
        task = asyncio.create_task(proxier.run(stop))
        try:
            await wait_for(lambda: proxier.syncs > 0)
            results["first_sync_s"] = round(time.perf_counter() - started, 3)
            print(f"first sync (list {2 * args.services} objects, render, apply): {results['first_sync_s']} s")

            t0 = time.perf_counter()
            ports = model.build(proxier.services.store.list(), proxier.slices.store.list(), "bench-node")
            ruleset = render(ports, CLUSTER_CIDR)
            script = full_script(TABLE, ruleset)
            t1 = time.perf_counter()
            await run_nft(f"table ip {TABLE}\ndelete table ip {TABLE}\n")
            t2 = time.perf_counter()
            await run_nft(script)
            t3 = time.perf_counter()
            await run_nft(script)
            t4 = time.perf_counter()
            proxier.applied = None
            results.update(render_s=round(t1 - t0, 3), apply_fresh_s=round(t3 - t2, 3),
                           replace_existing_s=round(t4 - t3, 3), render_apply_s=round(t1 - t0 + t3 - t2, 3),
                           chains=len(ruleset.chains), script_mb=round(len(script) / 1e6, 2))
            print(f"render {results['render_s']} s ({results['chains']} chains, {results['script_mb']} MB script), "
                  f"apply on a fresh table {results['apply_fresh_s']} s, replace an existing table "
                  f"{results['replace_existing_s']} s; render + apply {results['render_apply_s']} s (target < 2 s)")

            await proxier.sync()
            changes = await change_latency(client, proxier, args.services, args.endpoints, args.changes)
            results["change_to_kernel_s"] = {"p50": round(statistics.median(changes), 3),
                                             "max": round(max(changes), 3)}
            print(f"one endpoint changed -> rule in kernel: p50 {results['change_to_kernel_s']['p50']} s, "
                  f"max {results['change_to_kernel_s']['max']} s over {args.changes} changes (target < 1 s)")

            results.update(await latency(client, proxier, args.requests, tmp))
            print(f"request latency p50: pod IP {results['pod_p50_ms']} ms, ClusterIP {results['clusterip_p50_ms']} "
                  f"ms, overhead {results['overhead_pct']} % (target < 10 %)")
        finally:
            stop.set()
            await task
            await informers.stop()
            await proxier.cleanup()
    return results


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--services", type=int, default=1000)
    parser.add_argument("--endpoints", type=int, default=10)
    parser.add_argument("--changes", type=int, default=5)
    parser.add_argument("--requests", type=int, default=2000)
    args = parser.parse_args()
    if os.geteuid() != 0:
        raise SystemExit("needs root (network namespaces and nftables)")
    with tempfile.TemporaryDirectory(prefix="kubelite-proxybench-") as tmp:
        server = start_server(Path(tmp), free_port(), "--service-cidr", SERVICE_CIDR, *API_ONLY)
        try:
            results = uvloop.run(run(args, server.kubeconfig, Path(tmp)))
        finally:
            stop_server(server)
    print(json.dumps(results))


if __name__ == "__main__":
    main()

"""Liveness, readiness and startup probes: one task per probe of a running container (exec, httpGet, tcpSocket,
grpc), thresholds and delays as Kubernetes defines them, results the pod worker reads, changes that wake it."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import aiohttp

from kubelite.client.bodies import read_at_most
from kubelite.client.events import EventRecorder
from kubelite.kubelet.runtime.base import RuntimeService

log = logging.getLogger(__name__)
Obj = dict[str, Any]
KINDS = ("startupProbe", "livenessProbe", "readinessProbe")
LABELS = {"startupProbe": "Startup", "livenessProbe": "Liveness", "readinessProbe": "Readiness"}
MAX_OUTPUT = 10 * 1024
USER_AGENT = "kube-probe/1.33"


@dataclass
class Results:
    """One container's probe verdicts: started (startup probe passed), live, ready."""

    container_id: str
    started: bool
    live: bool = True
    ready: bool = False
    tasks: list[asyncio.Task[None]] = field(default_factory=list)


def _port(value: Any, container: Obj) -> int:
    """A probe's port: a number, or the name of one of the container's ports."""
    if isinstance(value, int) or str(value).isdigit():
        return int(value)
    for port in container.get("ports") or []:
        if port.get("name") == value:
            return int(port["containerPort"])
    raise ValueError(f"port {value!r} is not a named port of container {container['name']}")


class Prober:
    """Runs the probes of every running container; `on_change(pod_key)` is called when a verdict changes."""

    def __init__(self, runtime: RuntimeService, recorder: EventRecorder, on_change: Callable[[str], None]):
        self.runtime = runtime
        self.recorder = recorder
        self.on_change = on_change
        self._results: dict[tuple[str, str], Results] = {}
        self._http: aiohttp.ClientSession | None = None

    def results(self, uid: str, name: str, container_id: str) -> Results | None:
        """The verdicts for this container instance (None before ensure() saw it)."""
        found = self._results.get((uid, name))
        return found if found is not None and found.container_id == container_id else None

    def ensure(self, pod: Obj, container: Obj, container_id: str, pod_ip: str) -> Results:
        """Start the probes of a running container (once per container instance) and return its verdicts."""
        uid = pod["metadata"]["uid"]
        key = (uid, container["name"])
        current = self._results.get(key)
        if current is not None and current.container_id == container_id:
            return current
        if current is not None:
            self._cancel(current)
        results = Results(container_id, started="startupProbe" not in container,
                          ready="readinessProbe" not in container)
        self._results[key] = results
        pod_key = f"{pod['metadata']['namespace']}/{pod['metadata']['name']}"
        for kind in KINDS:
            if kind in container:
                results.tasks.append(asyncio.create_task(
                    self._worker(kind, pod, container, results, pod_key, pod_ip),
                    name=f"probe-{kind}-{pod_key}-{container['name']}"))
        return results

    def forget_container(self, uid: str, name: str) -> None:
        """Stop probing a container that stopped."""
        results = self._results.pop((uid, name), None)
        if results is not None:
            self._cancel(results)

    def forget_pod(self, uid: str) -> None:
        """Stop probing every container of a pod."""
        for key in [k for k in self._results if k[0] == uid]:
            self._cancel(self._results.pop(key))

    @staticmethod
    def _cancel(results: Results) -> None:
        for task in results.tasks:
            task.cancel()

    async def close(self) -> None:
        """Cancel every probe and close the HTTP session."""
        for results in self._results.values():
            self._cancel(results)
        self._results.clear()
        if self._http is not None:
            await self._http.close()

    async def _worker(self, kind: str, pod: Obj, container: Obj, results: Results, pod_key: str,
                      pod_ip: str) -> None:
        """Probe every periodSeconds after initialDelaySeconds; flip a verdict after its threshold of results."""
        probe = container[kind]
        period = probe.get("periodSeconds", 10)
        success_threshold = probe.get("successThreshold", 1)
        failure_threshold = probe.get("failureThreshold", 3)
        await asyncio.sleep(probe.get("initialDelaySeconds", 0))
        successes = failures = 0
        event_obj = {"kind": "Pod", "apiVersion": "v1", "metadata": pod["metadata"]}
        while True:
            if kind != "startupProbe" and not results.started:
                await asyncio.sleep(0.5)
                continue
            ok, output = await self._probe(probe, container, results.container_id, pod_ip)
            if ok:
                successes, failures = successes + 1, 0
            else:
                successes, failures = 0, failures + 1
                self.recorder.event(event_obj, "Warning", "Unhealthy", f"{LABELS[kind]} probe failed: {output}")
            if kind == "startupProbe":
                if successes >= success_threshold:
                    results.started = True
                    self.on_change(pod_key)
                    return
                if failures >= failure_threshold:
                    results.live = False
                    self.on_change(pod_key)
                    return
            elif kind == "livenessProbe" and failures >= failure_threshold:
                results.live = False
                self.on_change(pod_key)
                return
            elif kind == "readinessProbe":
                verdict = results.ready
                if successes >= success_threshold:
                    verdict = True
                elif failures >= failure_threshold:
                    verdict = False
                if verdict != results.ready:
                    results.ready = verdict
                    self.on_change(pod_key)
            await asyncio.sleep(period)

    async def _probe(self, probe: Obj, container: Obj, container_id: str, pod_ip: str) -> tuple[bool, str]:
        """One attempt: (success, what failed)."""
        timeout = probe.get("timeoutSeconds", 1)
        try:
            if "exec" in probe:
                code, out, err = await self.runtime.exec_sync(container_id, probe["exec"].get("command") or [],
                                                              timeout)
                text = (out + err)[:MAX_OUTPUT].decode(errors="replace").strip()
                return code == 0, text or f"command exited with {code}"
            if "httpGet" in probe:
                return await self.http_get(probe["httpGet"], container, pod_ip, timeout)
            if "tcpSocket" in probe:
                host = probe["tcpSocket"].get("host") or pod_ip or "127.0.0.1"
                port = _port(probe["tcpSocket"]["port"], container)
                async with asyncio.timeout(timeout):
                    _, writer = await asyncio.open_connection(host, port)
                writer.close()
                with contextlib.suppress(OSError):
                    await writer.wait_closed()
                return True, ""
            if "grpc" in probe:
                from kubelite.kubelet import grpcprobe  # HTTP/2 is loaded only by a node that has gRPC probes
                return await grpcprobe.probe(pod_ip or "127.0.0.1", int(probe["grpc"]["port"]),
                                             probe["grpc"].get("service") or "", timeout, USER_AGENT)
            return False, f"this kubelet cannot run a probe of {sorted(probe)}"
        except TimeoutError:
            return False, f"timeout: probe did not answer within {timeout}s"
        except (OSError, ValueError, aiohttp.ClientError) as exc:
            return False, str(exc) or type(exc).__name__

    async def http_get(self, get: Obj, container: Obj, pod_ip: str, limit: float) -> tuple[bool, str]:
        """An httpGet probe or hook: (2xx/3xx, what failed)."""
        if self._http is None:
            self._http = aiohttp.ClientSession(connector=aiohttp.TCPConnector(ssl=False, force_close=True))
        host = get.get("host") or pod_ip or "127.0.0.1"
        url = f"{get.get('scheme', 'HTTP').lower()}://{host}:{_port(get['port'], container)}{get.get('path', '/')}"
        headers = {h["name"]: h["value"] for h in get.get("httpHeaders") or []}
        headers.setdefault("User-Agent", USER_AGENT)
        async with self._http.get(url, headers=headers, timeout=aiohttp.ClientTimeout(total=limit)) as response:
            body = (await read_at_most(response.content, MAX_OUTPUT))[:MAX_OUTPUT].decode(errors="replace")
            if 200 <= response.status < 400:
                return True, ""
            return False, f"HTTP probe failed with statuscode: {response.status}" + (f" {body}" if body else "")

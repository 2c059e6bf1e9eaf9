"""The kubelet's pod sync: for one pod bound to this node, drive the runtime toward its spec (sandbox, volumes, init
containers in order, containers with their restart policy and back-off, liveness kills, graceful termination) and
post the status Kubernetes reports. One pod is synced by one worker at a time (the work queue guarantees it); a stop
that waits out a grace period runs in a task of the pod's own, so it holds no worker, and requeues the pod when done."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import shutil
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from kubelite.api.quantity import HUGEPAGES_PREFIX
from kubelite.client.errors import ApiError, is_not_found
from kubelite.client.events import EventRecorder
from kubelite.client.resources import PERSISTENTVOLUMECLAIMS, PERSISTENTVOLUMES, PODS
from kubelite.client.rest import ApiClient
from kubelite.kubelet.backoff import Backoff
from kubelite.kubelet.containers import (
    CONTAINER_NAME_LABEL,
    container_config,
    pod_log_dir,
    run_as_non_root_error,
    sandbox_config,
)
from kubelite.kubelet.envvars import ConfigError, container_env
from kubelite.kubelet.imagepull import ImagePuller, PullFailed
from kubelite.kubelet.objectwatch import WATCHED, WatchedObjects
from kubelite.kubelet.podstatus import TERMINAL, ContainerView, Views, pod_status
from kubelite.kubelet.probes import Prober
from kubelite.kubelet.runtime.base import (
    ContainerState,
    ContainerStatus,
    DNSConfig,
    Mount,
    NotFoundError,
    RuntimeService,
    RuntimeServiceError,
    SandboxState,
)
from kubelite.kubelet.server import Located, LocateError
from kubelite.kubelet.volumes import MountError, VolumeManager

log = logging.getLogger(__name__)
Obj = dict[str, Any]
VOLUME_RESYNC = 60.0
"""Seconds between refreshes of the volume contents of a running pod (service account tokens, downwardAPI); a change
of a ConfigMap or Secret it uses refreshes them at once."""
RETRY = 5.0
MOUNT_RETRY = 0.5
MOUNT_RETRY_MAX = 122.0
DEFAULT_GRACE = 30
MAX_TERMINATION_MESSAGE = 4096
FALLBACK_LOG_LINES = 80
FETCHABLE = {r.plural: r for r in (PERSISTENTVOLUMECLAIMS, PERSISTENTVOLUMES)}


@dataclass
class NodeInfo:
    """What pod sync needs to know about its node."""

    name: str
    address: str
    allocatable: dict[str, str]
    memory_bytes: int
    seccomp_dir: Path
    """Where Localhost seccomp profiles live (the kubelet's <root>/seccomp)."""

    @property
    def page_sizes(self) -> list[str]:
        """The huge page resources the node offers (hugepages-2Mi, ...)."""
        return [name for name in self.allocatable if name.startswith(HUGEPAGES_PREFIX)]


@dataclass
class PodRecord:
    """What the kubelet keeps about one pod instance (by uid) between syncs."""

    uid: str
    key: str
    sandbox_id: str = ""
    ip: str = ""
    volumes: dict[str, Path] | None = None
    volumes_at: float = 0.0
    mount_failures: int = 0
    """Failed set-ups of the pod's volumes in a row: the retry waits 0.5 s, doubling up to MOUNT_RETRY_MAX."""
    waiting: dict[str, tuple[str, str]] = field(default_factory=dict)
    image_ids: dict[str, str] = field(default_factory=dict)
    evicted: str = ""
    """Why node-pressure eviction chose this pod; its next sync fails it (syncs of one pod never overlap)."""
    done: bool = False
    stopping: asyncio.Future[Any] | None = None
    """A stop that waits out a grace period (deletion, liveness kill); the pod's syncs wait until it ends."""
    stop_deadline: float = 0.0
    """When that stop's grace period ends (monotonic): a deletion with a shorter one restarts the stop."""


def should_restart(policy: str, exit_code: int) -> bool:
    """Whether an exited container starts again under the pod's restartPolicy."""
    return policy == "Always" or (policy == "OnFailure" and exit_code != 0)


class PodWorkers:
    """Syncs pods against the runtime; `requeue(key, delay)` brings a pod back when a back-off or retry ends."""

    def __init__(self, *, client: ApiClient, runtime: RuntimeService, runtime_name: str, puller: ImagePuller,
                 volumes: VolumeManager, prober: Prober, recorder: EventRecorder, node: NodeInfo,
                 dns: Callable[[Obj], DNSConfig | None], hosts: Callable[[Obj, str], str],
                 services: Callable[[], list[Obj]], requeue: Callable[[str, float], None]):
        self.client = client
        self.runtime = runtime
        self.runtime_name = runtime_name
        self.puller = puller
        self.volumes = volumes
        self.prober = prober
        self.recorder = recorder
        self.node = node
        self.dns = dns
        self.hosts = hosts
        self.services = services
        self.requeue = requeue
        self.backoff = Backoff()
        self.records: dict[str, PodRecord] = {}
        self.objects = WatchedObjects(client, self._objects_changed)

    async def adopt(self) -> list[str]:
        """Rebuild the records of pods whose sandboxes a previous agent left; their keys, to sync them at once."""
        for sandbox in await self.runtime.list_pod_sandboxes():
            cfg = sandbox.config
            key = f"{cfg.namespace}/{cfg.name}"
            current = self.records.get(cfg.uid)
            if current is None or sandbox.state == SandboxState.READY:
                self.records[cfg.uid] = PodRecord(cfg.uid, key, sandbox.id, sandbox.ip)
        return sorted({r.key for r in self.records.values()})

    # ---- what the kubelet server streams from

    async def locate(self, pod: Obj | None, namespace: str, name: str, container: str, previous: bool) -> Located:
        """The sandbox and (current or previous) container of a pod for logs, exec, attach and port-forward."""
        if pod is None:
            raise LocateError(f'pod "{name}" not found in namespace "{namespace}"', 404)
        rec = self.records.get(pod["metadata"]["uid"])
        waiting = (rec.waiting.get(container) if rec else None) or ("ContainerCreating", "")
        if rec is None or not rec.sandbox_id:
            if not container:
                raise LocateError(f'pod "{name}" is not running yet', 400)
            raise LocateError(f'container "{container}" in pod "{name}" is waiting to start: {waiting[0]}')
        if not container:
            return Located(pod, rec.sandbox_id)
        history = sorted((c for c in await self.runtime.list_containers(rec.sandbox_id)
                          if c.labels.get(CONTAINER_NAME_LABEL, c.name) == container), key=lambda c: c.attempt)
        if previous:
            if len(history) < 2:
                raise LocateError(f'previous terminated container "{container}" in pod "{name}" not found')
            return Located(pod, rec.sandbox_id, history[-2])
        if not history:
            raise LocateError(f'container "{container}" in pod "{name}" is waiting to start: {waiting[0]}')
        return Located(pod, rec.sandbox_id, history[-1])

    # ---- the sync

    async def sync(self, key: str, pod: Obj | None) -> None:
        """Bring the pod with this key (or its absence) about on the node."""
        uid = pod["metadata"]["uid"] if pod is not None else ""
        for stale in [r for r in self.records.values() if r.key == key and r.uid != uid]:
            if stale.stopping is not None:
                stale.stopping.cancel()
            await self._kill(stale, None, 0)
            await self._clean(stale, None)
        if pod is None:
            return
        rec = self.records.get(uid)
        if rec is not None and rec.stopping is not None:
            if not rec.stopping.done():
                if pod["metadata"].get("deletionTimestamp") and time.monotonic() + self._grace(pod) < rec.stop_deadline:
                    rec.stopping.cancel()  # the grace period was shortened: stop again (as upstream's pod workers)
                return
            stopping, rec.stopping = rec.stopping, None
            if not stopping.cancelled():
                stopping.result()  # a stop that failed raises here: the worker retries the pod with back-off
        if pod["metadata"].get("deletionTimestamp"):
            await self._delete(pod, rec)
            return
        if (pod.get("status") or {}).get("phase") in TERMINAL:
            if rec is not None and not rec.done:
                await self._kill(rec, pod, 0)
                rec.done = True
            return
        if rec is None:
            rec = self.records[uid] = PodRecord(uid, key)
        if rec.evicted and not rec.done:
            await self._fail(pod, rec, "Evicted", rec.evicted)
        elif not rec.done:
            await self._sync_live(pod, rec)

    async def _sync_live(self, pod: Obj, rec: PodRecord) -> None:
        meta, spec = pod["metadata"], pod.get("spec") or {}
        fetch = self._fetcher(meta["namespace"], rec.uid)
        if await self._past_deadline(pod, rec):
            return
        if rec.volumes is None or time.monotonic() - rec.volumes_at > VOLUME_RESYNC:
            try:
                rec.volumes = await self.volumes.setup(pod, fetch, self.node.allocatable)
                rec.volumes_at = time.monotonic()
                rec.mount_failures = 0
            except (MountError, ConfigError, OSError) as exc:
                self._event(pod, "Warning", "FailedMount", f"MountVolume.SetUp failed: {exc}")
                if rec.volumes is None:
                    await self._post(pod, rec, None, sandbox_ready=False, initializing=True)
                    self.requeue(rec.key, min(MOUNT_RETRY * 2 ** rec.mount_failures, MOUNT_RETRY_MAX))
                    rec.mount_failures += 1
                    return
        if not await self._ensure_sandbox(pod, rec):
            await self._post(pod, rec, None, sandbox_ready=False, initializing=True)
            self.requeue(rec.key, RETRY)
            return
        policy = spec.get("restartPolicy", "Always")
        views = await self._views(pod, rec)
        inits, mains = views.inits, views.mains
        for view in views.ephemerals:
            if view.latest is None:
                await self._start(pod, rec, view, fetch, init=False, target=self._target(view, views))
        initializing = init_failed = False
        for view in inits:
            if view.sidecar:
                if not view.running:
                    await self._start(pod, rec, view, fetch, init=True)
                    initializing = True
                elif not view.started:
                    initializing = True
            elif not view.succeeded:
                initializing = True
                if view.exited and policy == "Never":
                    init_failed = True
                elif not view.running:
                    await self._start(pod, rec, view, fetch, init=True)
            if initializing:
                break
        if not initializing and not init_failed:
            unhealthy = []
            for view in mains:
                if view.latest is None or view.latest.state == ContainerState.CREATED:
                    await self._start(pod, rec, view, fetch, init=False)
                elif view.exited and should_restart(policy, view.latest.exit_code):
                    await self._start(pod, rec, view, fetch, init=False)
                elif view.running and not view.live:
                    unhealthy.append(view)
            if unhealthy:
                self._restart_unhealthy(pod, rec, unhealthy)
        views = await self._views(pod, rec)
        status = await self._post(pod, rec, views, sandbox_ready=True, initializing=initializing,
                                  init_failed=init_failed)
        if status["phase"] in TERMINAL:
            await self._kill(rec, pod, 0)
            rec.done = True
            await self._post(pod, rec, await self._views(pod, rec), sandbox_ready=False, initializing=False,
                             init_failed=init_failed)

    async def _past_deadline(self, pod: Obj, rec: PodRecord) -> bool:
        """activeDeadlineSeconds: past it the pod fails with DeadlineExceeded (and its containers are killed)."""
        deadline = (pod.get("spec") or {}).get("activeDeadlineSeconds")
        started = (pod.get("status") or {}).get("startTime")
        if deadline is None or not started:
            return False
        left = datetime.fromisoformat(started).timestamp() + deadline - time.time()
        if left > 0:
            self.requeue(rec.key, left + 0.1)
            return False
        message = "Pod was active on the node longer than the specified deadline"
        self._event(pod, "Normal", "DeadlineExceeded", message)
        await self._fail(pod, rec, "DeadlineExceeded", message)
        return True

    async def _fail(self, pod: Obj, rec: PodRecord, reason: str, message: str) -> None:
        """End a pod for good on this node: kill it and report it Failed with the reason."""
        await self._kill(rec, pod, 0)
        rec.done = True
        await self._patch_status(pod, {"phase": "Failed", "reason": reason, "message": message})

    def evict(self, pod: Obj, message: str) -> None:
        """Node-pressure eviction: the pod's next sync fails it with reason Evicted (its controller replaces it
        elsewhere)."""
        rec = self.records.get(pod["metadata"]["uid"])
        if rec is None or rec.done or rec.evicted:
            return
        rec.evicted = message
        self._event(pod, "Warning", "Evicted", message)
        self.requeue(rec.key, 0)

    async def memory_usage(self, pods: list[Obj]) -> dict[str, int]:
        """Working-set bytes per pod uid, from its containers' cgroups."""
        usage: dict[str, int] = {}
        for pod in pods:
            rec = self.records.get(pod["metadata"]["uid"])
            if rec is None or not rec.sandbox_id:
                continue
            total = 0
            for c in await self.runtime.list_containers(rec.sandbox_id, ContainerState.RUNNING):
                with contextlib.suppress(RuntimeServiceError):
                    total += (await self.runtime.container_stats(c.id)).memory_working_set_bytes
            usage[rec.uid] = total
        return usage

    async def _ensure_sandbox(self, pod: Obj, rec: PodRecord) -> bool:
        """A ready sandbox for the pod (a new one if the old one died); False, with an event, if none can be made."""
        attempt = 0
        if rec.sandbox_id:
            try:
                status = await self.runtime.pod_sandbox_status(rec.sandbox_id)
                if status.state == SandboxState.READY:
                    rec.ip = status.ip
                    return True
                attempt = status.config.attempt + 1
            except NotFoundError:
                pass
            self._event(pod, "Normal", "SandboxChanged", "Pod sandbox changed, it will be killed and re-created.")
            with contextlib.suppress(RuntimeServiceError):
                await self.runtime.remove_pod_sandbox(rec.sandbox_id)
            rec.sandbox_id = ""
        try:
            rec.sandbox_id = await self.runtime.run_pod_sandbox(sandbox_config(pod, self.dns(pod), attempt))
            rec.ip = (await self.runtime.pod_sandbox_status(rec.sandbox_id)).ip
        except (RuntimeServiceError, OSError) as exc:
            self._event(pod, "Warning", "FailedCreatePodSandBox", f"Failed to create pod sandbox: {exc}")
            return False
        return True

    async def _views(self, pod: Obj, rec: PodRecord) -> Views:
        """The spec's init, regular and ephemeral containers with their runtime containers and probe verdicts."""
        spec = pod.get("spec") or {}
        by_name: dict[str, list[ContainerStatus]] = {}
        for c in await self.runtime.list_containers(rec.sandbox_id):
            by_name.setdefault(c.labels.get(CONTAINER_NAME_LABEL, c.name), []).append(c)

        def view(container: Obj, init: bool, ephemeral: bool = False) -> ContainerView:
            history = sorted(by_name.get(container["name"], []), key=lambda c: c.attempt)
            v = ContainerView(container, history[-1] if history else None, history[-2] if len(history) > 1 else None,
                              rec.waiting.get(container["name"]), image_id=rec.image_ids.get(container["name"], ""),
                              sidecar=init and container.get("restartPolicy") == "Always")
            for c in (v.latest, v.previous):
                if c is not None and c.state == ContainerState.EXITED and not c.message:
                    c.message = self._termination_message(pod, container, c)
            if v.running and v.latest is not None:
                if (init and not v.sidecar) or ephemeral:
                    v.started = True
                else:
                    results = self.prober.ensure(pod, container, v.latest.id, rec.ip or self.node.address)
                    v.ready, v.started, v.live = results.ready, results.started, results.live
            elif v.exited and v.latest is not None and v.waiting is None and not ephemeral:
                self.prober.forget_container(rec.uid, container["name"])
                v.waiting = self._crash_wait(pod, rec, v)
            return v

        return Views([view(c, True) for c in spec.get("initContainers") or []],
                     [view(c, False) for c in spec.get("containers") or []],
                     [view(c, False, ephemeral=True) for c in spec.get("ephemeralContainers") or []])

    def _crash_wait(self, pod: Obj, rec: PodRecord, view: ContainerView) -> tuple[str, str] | None:
        """CrashLoopBackOff while an exited container that will restart waits out its back-off."""
        assert view.latest is not None
        policy = (pod.get("spec") or {}).get("restartPolicy", "Always")
        if view.sidecar:
            policy = "Always"
        elif view.spec in ((pod.get("spec") or {}).get("initContainers") or []):
            policy = "Never" if policy == "Never" else "OnFailure"
        if not should_restart(policy, view.latest.exit_code):
            return None
        key = f"{rec.uid}_{view.name}"
        if self.backoff.remaining(key, view.latest.finished_at / 1e9) <= 0:
            return None
        meta = pod["metadata"]
        return ("CrashLoopBackOff", f"back-off {int(self.backoff.delay(key))}s restarting failed container="
                f"{view.name} pod={meta['name']}_{meta['namespace']}({meta['uid']})")

    # ---- containers

    @staticmethod
    def _target(view: ContainerView, views: Views) -> str | None:
        """For an ephemeral container with a targetContainerName: the target's running container ("" if none runs,
        None without a target)."""
        name = view.spec.get("targetContainerName")
        if not name:
            return None
        return next((v.latest.id for v in [*views.inits, *views.mains]
                     if v.name == name and v.running and v.latest is not None), "")

    async def _start(self, pod: Obj, rec: PodRecord, view: ContainerView, fetch: Callable[[str, str], Awaitable[Any]],
                     init: bool, target: str | None = None) -> None:
        """Start the next attempt of a container, unless its back-off, image or configuration says wait; target, the
        container whose processes an ephemeral container sees."""
        meta, container, name = pod["metadata"], view.spec, view.name
        if view.exited and view.latest is not None:
            key = f"{rec.uid}_{name}"
            wait = self.backoff.remaining(key, view.latest.finished_at / 1e9)
            if wait > 0:
                self._event(pod, "Warning", "BackOff", f"Back-off restarting failed container {name} in pod "
                                                       f"{meta['name']}_{meta['namespace']}({meta['uid']})")
                self.requeue(rec.key, wait + 0.05)
                return
            self.backoff.next(key)
        attempt = view.latest.attempt + 1 if view.latest is not None else 0
        try:
            image = await self.puller.ensure(pod, container, lambda: self._pull_secrets(pod, fetch))
            rec.image_ids[name] = image.digests[0] if image.digests else image.id
            refusal = run_as_non_root_error(pod, container, image)
            if refusal:
                raise ConfigError(refusal)
            env = await container_env(pod, container, fetch, self.services(), self.node.allocatable)
            mounts = self.volumes.mounts(container, rec.volumes or {}, self._readonly_volumes(pod))
            mounts += self._pod_files(pod, rec, container, attempt)
            config = container_config(pod, container, image, attempt, env, mounts, self.node.memory_bytes,
                                      self.node.seccomp_dir, init, self.node.page_sizes)
            if target is not None:
                if not target:
                    raise ConfigError(f'target container "{container["targetContainerName"]}" is not running')
                config.security.pid_target = target
        except PullFailed as exc:
            rec.waiting[name] = (exc.reason, exc.message)
            self.requeue(rec.key, max(exc.retry_after, 1.0))
            return
        except (ConfigError, ValueError) as exc:
            rec.waiting[name] = ("CreateContainerConfigError", str(exc))
            self._event(pod, "Warning", "Failed", f"Error: {exc}")
            self.requeue(rec.key, RETRY)
            return
        try:
            container_id = await self.runtime.create_container(rec.sandbox_id, config,
                                                               sandbox_config(pod, self.dns(pod)))
        except (RuntimeServiceError, OSError) as exc:
            rec.waiting[name] = ("CreateContainerError", str(exc))
            self._event(pod, "Warning", "Failed", f"Error: {exc}")
            self.requeue(rec.key, RETRY)
            return
        self._event(pod, "Normal", "Created", f"Created container: {name}")
        try:
            await self.runtime.start_container(container_id)
        except (RuntimeServiceError, OSError) as exc:
            rec.waiting[name] = ("RunContainerError", str(exc))
            self._event(pod, "Warning", "Failed", f"Error: failed to start container {name!r}: {exc}")
            self.requeue(rec.key, RETRY)
            return
        rec.waiting.pop(name, None)
        self._event(pod, "Normal", "Started", f"Started container {name}")
        await self._remove_old_attempts(rec, name, attempt)
        hook = (container.get("lifecycle") or {}).get("postStart")
        if hook:
            error = await self._run_hook(hook, container, container_id, rec)
            if error:
                self._event(pod, "Warning", "FailedPostStartHook", f"PostStartHook failed: {error}")
                await self._stop_container(container_id, 0)

    async def _remove_old_attempts(self, rec: PodRecord, name: str, attempt: int) -> None:
        """Keep the current and the previous attempt of a container (for logs --previous), remove the rest."""
        for c in await self.runtime.list_containers(rec.sandbox_id):
            if c.labels.get(CONTAINER_NAME_LABEL, c.name) == name and c.attempt < attempt - 1:
                with contextlib.suppress(RuntimeServiceError):
                    await self.runtime.remove_container(c.id)

    def _restart_unhealthy(self, pod: Obj, rec: PodRecord, views: list[ContainerView]) -> None:
        """A failed liveness (or startup) probe kills the container (the pod's failing ones together, in the
        background); the restart policy brings them back."""
        stops, graces = [], []
        for view in views:
            assert view.latest is not None
            self._event(pod, "Normal", "Killing", f"Container {view.name} failed liveness probe, will be restarted")
            self.prober.forget_container(rec.uid, view.name)
            graces.append(self._grace(pod, view.spec))
            stops.append(self._stop_container(view.latest.id, graces[-1]))
        self._stop_in_background(rec, asyncio.gather(*stops), max(graces))

    def _stop_in_background(self, rec: PodRecord, stop: Awaitable[Any], grace: float) -> None:
        """Run a stop that may wait out a grace period as the pod's own task; the pod is synced again when it ends."""
        rec.stopping = asyncio.ensure_future(stop)
        rec.stop_deadline = time.monotonic() + grace
        rec.stopping.add_done_callback(lambda _: self.requeue(rec.key, 0))

    async def _stop_container(self, container_id: str, grace: float) -> None:
        with contextlib.suppress(NotFoundError):
            await self.runtime.stop_container(container_id, grace)

    @staticmethod
    def _grace(pod: Obj, container: Obj | None = None) -> float:
        meta, spec = pod["metadata"], pod.get("spec") or {}
        grace = meta.get("deletionGracePeriodSeconds")
        if grace is None:
            grace = spec.get("terminationGracePeriodSeconds", DEFAULT_GRACE)
        return float(grace)

    async def _run_hook(self, hook: Obj, container: Obj, container_id: str, rec: PodRecord) -> str:
        """Run a lifecycle hook (exec, httpGet or sleep); the error text, or "" if it worked."""
        try:
            if "exec" in hook:
                code, out, err = await self.runtime.exec_sync(container_id, hook["exec"].get("command") or [], 30)
                return "" if code == 0 else f"command exited with {code}: {(out + err).decode(errors='replace')}"
            if "sleep" in hook:
                await asyncio.sleep(hook["sleep"].get("seconds", 0))
                return ""
            if "httpGet" in hook:
                ok, output = await self.prober.http_get(hook["httpGet"], container, rec.ip or self.node.address, 30)
                return "" if ok else output
        except (RuntimeServiceError, OSError, TimeoutError) as exc:
            return str(exc) or type(exc).__name__
        return f"unsupported hook {sorted(hook)}"

    # ---- termination

    async def _kill(self, rec: PodRecord, pod: Obj | None, grace: float | None) -> None:
        """Stop the pod's containers (preStop hooks first, regular containers before sidecars), then its sandbox."""
        self.prober.forget_pod(rec.uid)
        if not rec.sandbox_id:
            return
        try:
            running = [c for c in await self.runtime.list_containers(rec.sandbox_id)
                       if c.state in (ContainerState.RUNNING, ContainerState.CREATED)]
        except RuntimeServiceError:
            running = []
        pod_spec = (pod or {}).get("spec") or {}
        specs = {c["name"]: c for kind in ("containers", "ephemeralContainers") for c in pod_spec.get(kind) or []}
        sidecars = {c["name"]: c for c in pod_spec.get("initContainers") or []}
        budget = self._grace(pod) if grace is None and pod is not None else (grace or 0)
        deadline = time.monotonic() + budget

        async def stop(c: ContainerStatus, spec: Obj | None) -> None:
            hook = ((spec or {}).get("lifecycle") or {}).get("preStop")
            if hook and pod is not None and budget > 0:
                try:
                    async with asyncio.timeout(budget):
                        error = await self._run_hook(hook, spec or {}, c.id, rec)
                except TimeoutError:
                    error = f"did not finish within the grace period of {budget:g}s"
                if error:
                    self._event(pod, "Warning", "FailedPreStopHook", f"PreStopHook failed: {error}")
            if pod is not None:
                self._event(pod, "Normal", "Killing", f"Stopping container {name_of[c.id]}")
            await self._stop_container(c.id, max(deadline - time.monotonic(), 0))

        name_of = {c.id: c.labels.get(CONTAINER_NAME_LABEL, c.name) for c in running}
        await asyncio.gather(*(stop(c, specs[name_of[c.id]]) for c in running if name_of[c.id] in specs))
        for c in reversed([c for c in running if name_of[c.id] not in specs]):
            await stop(c, sidecars.get(name_of[c.id]))
        with contextlib.suppress(RuntimeServiceError):
            await self.runtime.stop_pod_sandbox(rec.sandbox_id)

    async def _delete(self, pod: Obj, rec: PodRecord | None) -> None:
        """A pod being deleted: kill it within its grace period (in the background), post the final status, then
        delete it for good."""
        if rec is not None:
            if not rec.done:
                self._stop_in_background(rec, self._terminate(pod, rec), self._grace(pod))
                return
            await self._clean(rec, pod)
        meta = pod["metadata"]
        try:
            await self.client.delete(PODS, meta["name"], meta["namespace"], grace_period_seconds=0,
                                     preconditions={"uid": meta["uid"]})
        except ApiError as exc:
            if not (is_not_found(exc) or exc.code == 409):
                raise

    async def _terminate(self, pod: Obj, rec: PodRecord) -> None:
        """Kill a deleted pod within its grace period and post its final status."""
        await self._kill(rec, pod, None)
        rec.done = True
        views = await self._views(pod, rec)
        with contextlib.suppress(ApiError):
            await self._post(pod, rec, views, sandbox_ready=False, initializing=False)

    async def _clean(self, rec: PodRecord, pod: Obj | None) -> None:
        """Remove what is left of a pod: its sandbox and containers, volumes, logs and records."""
        if rec.sandbox_id:
            with contextlib.suppress(RuntimeServiceError):
                await self.runtime.remove_pod_sandbox(rec.sandbox_id)
        await self.volumes.teardown(rec.uid)
        namespace, _, name = rec.key.partition("/")
        log_dir = Path(pod_log_dir({"metadata": {"namespace": namespace, "name": name, "uid": rec.uid}}))
        await asyncio.to_thread(shutil.rmtree, log_dir, True)
        self.backoff.forget_prefix(rec.uid)
        await self.objects.release(rec.uid)
        self.records.pop(rec.uid, None)

    # ---- status

    async def _post(self, pod: Obj, rec: PodRecord, views: Views | None, *, sandbox_ready: bool, initializing: bool,
                    init_failed: bool = False) -> Obj:
        """Compute the pod's status (from waiting views when there is no sandbox) and patch it if it changed;
        returns the status."""
        spec = pod.get("spec") or {}
        if views is None:
            views = Views(*([ContainerView(c, waiting=rec.waiting.get(c["name"])) for c in spec.get(kind) or []]
                            for kind in ("initContainers", "containers", "ephemeralContainers")))
        host_network = bool(spec.get("hostNetwork"))
        status = pod_status(pod, views, runtime=self.runtime_name, host_ip=self.node.address,
                            pod_ip=self.node.address if host_network else rec.ip, sandbox_ready=sandbox_ready,
                            initializing=initializing, init_failed=init_failed)
        old = pod.get("status") or {}
        if any(old.get(k) != v for k, v in status.items()):
            await self._patch_status(pod, status)
        return status

    async def _patch_status(self, pod: Obj, status: Obj) -> None:
        meta = pod["metadata"]
        try:
            updated = await self.client.patch(PODS, meta["name"], {"metadata": {"uid": meta["uid"]}, "status": status},
                                              meta["namespace"], type="strategic", subresource="status")
            pod["status"] = updated.get("status") or status
        except ApiError as exc:
            if not is_not_found(exc):
                raise

    # ---- helpers

    def _event(self, pod: Obj, type_: str, reason: str, message: str) -> None:
        self.recorder.event({"kind": "Pod", "apiVersion": "v1", "metadata": pod["metadata"]}, type_, reason, message)

    def _objects_changed(self, uids: set[str]) -> None:
        """A ConfigMap or Secret these pods use changed: refresh their volumes (and retry their start) now."""
        for rec in filter(None, map(self.records.get, uids)):
            rec.volumes_at = float("-inf")
            self.requeue(rec.key, 0)

    def _fetcher(self, namespace: str, uid: str) -> Callable[[str, str], Awaitable[Obj | None]]:
        """The objects a pod refers to, each read at most once per sync: ConfigMaps and Secrets from their watches,
        claims and volumes by GET; None when it does not exist."""
        cache: dict[tuple[str, str], Obj | None] = {}

        async def fetch(plural: str, name: str) -> Obj | None:
            if (plural, name) in cache:
                return cache[(plural, name)]
            if plural in WATCHED:
                cache[(plural, name)] = await self.objects.get(plural, namespace, name, uid)
            else:
                ns = None if plural == "persistentvolumes" else namespace
                try:
                    cache[(plural, name)] = await self.client.get(FETCHABLE[plural], name, ns)
                except ApiError as exc:
                    if not is_not_found(exc):
                        raise
                    cache[(plural, name)] = None
            return cache[(plural, name)]

        return fetch

    @staticmethod
    async def _pull_secrets(pod: Obj, fetch: Callable[[str, str], Awaitable[Any]]) -> list[Obj]:
        found = [await fetch("secrets", ref.get("name", "")) for ref in
                 (pod.get("spec") or {}).get("imagePullSecrets") or []]
        return [s for s in found if s is not None]

    @staticmethod
    def _readonly_volumes(pod: Obj) -> set[str]:
        """Volumes upstream always mounts read-only: secrets, configMaps, downwardAPI and projected."""
        return {v["name"] for v in (pod.get("spec") or {}).get("volumes") or []
                if {"secret", "configMap", "downwardAPI", "projected"} & set(v)}

    def _pod_files(self, pod: Obj, rec: PodRecord, container: Obj, attempt: int) -> list[Mount]:
        """The kubelet-managed files of a container: /etc/hosts and its termination-message file."""
        pod_dir = self.volumes.pod_dir(rec.uid)
        pod_dir.mkdir(parents=True, exist_ok=True)
        mounts = []
        mount_paths = {m.get("mountPath") for m in container.get("volumeMounts") or []}
        if "/etc/hosts" not in mount_paths:
            hosts = pod_dir / "etc-hosts"
            hosts.write_text(self.hosts(pod, rec.ip or self.node.address))
            mounts.append(Mount(str(hosts), "/etc/hosts"))
        message = self._termination_file(rec.uid, container["name"], attempt)
        message.parent.mkdir(parents=True, exist_ok=True)
        message.write_bytes(b"")
        message.chmod(0o666)
        mounts.append(Mount(str(message), container.get("terminationMessagePath", "/dev/termination-log")))
        return mounts

    def _termination_file(self, uid: str, name: str, attempt: int) -> Path:
        return self.volumes.pod_dir(uid) / "containers" / name / f"{attempt}.termination-log"

    def _termination_message(self, pod: Obj, container: Obj, c: ContainerStatus) -> str:
        """The container's termination message: its file, or (FallbackToLogsOnError, on failure) its log's tail."""
        path = self._termination_file(pod["metadata"]["uid"], container["name"], c.attempt)
        with contextlib.suppress(OSError):
            text = path.read_bytes()[:MAX_TERMINATION_MESSAGE].decode(errors="replace")
            if text:
                return text
        if container.get("terminationMessagePolicy") == "FallbackToLogsOnError" and c.exit_code != 0 and c.log_path:
            with contextlib.suppress(OSError):
                lines = Path(c.log_path).read_text(errors="replace").splitlines()[-FALLBACK_LOG_LINES:]
                text = "\n".join(line.split(" ", 3)[-1] for line in lines)
                return text[-MAX_TERMINATION_MESSAGE:]
        return ""

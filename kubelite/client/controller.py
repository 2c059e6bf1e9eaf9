"""The reconcile base: informers feed keys to a work queue, workers reconcile each key until it succeeds."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Iterable
from typing import Any, ClassVar

from kubelite.client.errors import ApiError, is_conflict
from kubelite.client.events import EventRecorder
from kubelite.client.informer import Informer, SharedInformerFactory
from kubelite.client.resources import Resource
from kubelite.client.rest import ApiClient
from kubelite.client.store import key_of
from kubelite.client.workqueue import WorkQueue

log = logging.getLogger(__name__)

Obj = dict[str, Any]
KeyFunc = Callable[[Obj], Iterable[str]]
SHUTDOWN_GRACE = 10.0
"""Seconds running reconciles get to finish when the controller stops, before they are cancelled."""


class Requeue(Exception):
    """Return (or raise) from reconcile to retry the key: after `after` seconds, or with backoff if None."""

    def __init__(self, after: float | None = None):
        super().__init__(f"requeue after {after}s" if after is not None else "requeue with backoff")
        self.after = after


def own_key(obj: Obj) -> list[str]:
    """An object's own queue key: what most controllers reconcile."""
    return [key_of(obj)]


def owner_keys(kind: str) -> KeyFunc:
    """Map an object to the key of its controlling owner of `kind` (a Pod to its ReplicaSet)."""
    def keys(obj: Obj) -> list[str]:
        """Keys of the owners of `kind` that control obj."""
        meta = obj["metadata"]
        namespace = meta.get("namespace")
        return [f"{namespace}/{ref['name']}" if namespace else ref["name"]
                for ref in meta.get("ownerReferences") or [] if ref.get("controller") and ref.get("kind") == kind]
    return keys


class Controller:
    """Subclass: declare informers in setup() with watch()/informer(), implement reconcile(key)."""

    name: ClassVar[str] = "controller"
    component: ClassVar[str] = ""
    """The source of its Events (kube-controller-manager's component names); empty: the controller's name."""
    workers: ClassVar[int] = 2

    def __init__(self, client: ApiClient, informers: SharedInformerFactory | None = None, *,
                 workers: int | None = None):
        self.client = client
        self.informers = informers or SharedInformerFactory(client)
        self._owns_informers = informers is None
        self.worker_count = workers or self.workers
        self.queue = WorkQueue()
        self.recorder = EventRecorder(client, self.component or self.name)
        self._needed: list[Informer] = []
        self.setup()

    def setup(self) -> None:
        """Declare the informers this controller needs (subclasses override)."""

    async def reconcile(self, key: str) -> Requeue | None:
        """Make the world match the desired state of `key`; raise or return Requeue to retry."""
        raise NotImplementedError

    def informer(self, resource: Resource, *, namespace: str | None = None, label_selector: str = "",
                 field_selector: str = "") -> Informer:
        """A shared informer whose cache this controller reads; run() waits for it to sync."""
        informer = self.informers.informer(resource, namespace=namespace, label_selector=label_selector,
                                           field_selector=field_selector)
        self._needed.append(informer)
        return informer

    def watch(self, resource: Resource, keys: KeyFunc = own_key, *, namespace: str | None = None,
              label_selector: str = "", field_selector: str = "") -> Informer:
        """A shared informer whose every add, update and delete queues the keys `keys` maps the object to."""
        informer = self.informer(resource, namespace=namespace, label_selector=label_selector,
                                 field_selector=field_selector)
        informer.add_handlers(on_add=lambda obj: self.enqueue(keys(obj)),
                              on_update=lambda old, new: self.enqueue([*keys(old), *keys(new)]),
                              on_delete=lambda obj: self.enqueue(keys(obj)))
        return informer

    def enqueue(self, keys: Iterable[str]) -> None:
        """Queue keys for reconciling (duplicates collapse in the queue)."""
        for key in keys:
            self.queue.add(key)

    async def run(self, stop: asyncio.Event) -> None:
        """Start informers, wait for their caches, reconcile with N workers until `stop` is set; then flush Events."""
        self.informers.start()
        try:
            if not await _until_stopped(asyncio.gather(*(i.wait_synced() for i in self._needed)), stop):
                return
            log.info("%s: caches synced; starting %d workers", self.name, self.worker_count)
            workers = [asyncio.create_task(self._worker(), name=f"{self.name}-worker-{n}")
                       for n in range(self.worker_count)]
            try:
                await stop.wait()
            finally:
                self.queue.shutdown()
                _, running = await asyncio.wait(workers, timeout=SHUTDOWN_GRACE)
                for task in running:
                    task.cancel()
                await asyncio.gather(*running, return_exceptions=True)
        finally:
            self.queue.shutdown()
            await self.recorder.close()
            if self._owns_informers:
                await self.informers.stop()

    async def _worker(self) -> None:
        while (key := await self.queue.get()) is not None:
            try:
                await self._process(key)
            finally:
                self.queue.done(key)

    async def _process(self, key: str) -> None:
        """Reconcile once: forget the key's backoff on success, requeue it (rate-limited) on failure."""
        try:
            result = await self.reconcile(key)
        except Requeue as requeue:
            result = requeue
        except Exception as exc:
            if is_conflict(exc):
                log.info("%s: %s: conflict, retrying: %s", self.name, key, exc)
            else:
                log.error("%s: reconciling %s failed (retry %d): %s", self.name, key,
                          self.queue.num_requeues(key) + 1, exc, exc_info=not isinstance(exc, ApiError))
            self.queue.add_rate_limited(key)
            return
        if result is None:
            self.queue.forget(key)
        elif result.after is None:
            self.queue.add_rate_limited(key)
        else:
            self.queue.forget(key)
            self.queue.add_after(key, result.after)


async def _until_stopped(work: asyncio.Future[Any], stop: asyncio.Event) -> bool:
    """Await `work` unless `stop` is set first (then cancel it); True if the work finished."""
    stopper = asyncio.ensure_future(stop.wait())
    try:
        await asyncio.wait({work, stopper}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        stopper.cancel()
        if not work.done():
            work.cancel()
    if work.cancelled():
        return False
    work.result()
    return True


async def run_controllers(client: ApiClient, stop: asyncio.Event,
                          controllers: Iterable[Callable[[ApiClient, SharedInformerFactory], Controller]]) -> None:
    """Run several controllers on one client and one set of shared informers until `stop` is set."""
    informers = SharedInformerFactory(client)
    built = [make(client, informers) for make in controllers]
    try:
        await asyncio.gather(*(controller.run(stop) for controller in built))
    finally:
        await informers.stop()

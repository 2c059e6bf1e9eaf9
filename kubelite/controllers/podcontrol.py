"""What the workload controllers share: pod control, expectations, adoption, deletion ranking, revision history."""

from __future__ import annotations

import asyncio
import copy
import time
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, ClassVar

import orjson

from kubelite.api.selectors import LabelSelector, from_label_selector
from kubelite.client.controller import Controller, owner_keys
from kubelite.client.errors import ApiError, is_already_exists, is_not_found
from kubelite.client.informer import Informer
from kubelite.client.resources import CONTROLLERREVISIONS, PODS, Resource, resource_of
from kubelite.client.store import NAMESPACE_INDEX, key_of
from kubelite.client.timestamps import parse_time

Obj = dict[str, Any]
EXPECTATIONS_TTL = 300.0
"""Seconds after which unmet expectations are given up on (client-go's ExpectationsTimeout)."""
BURST_REPLICAS = 500
"""At most this many pods are created or deleted by one sync (kube-controller-manager's burst default)."""
REVISION_HASH_LABEL = "controller-revision-hash"
DELETION_COST = "controller.kubernetes.io/pod-deletion-cost"
_PHASE_ORDER = {"Pending": 0, "Unknown": 1, "Running": 2}
_SAFE_CHARS = "bcdfghjklmnpqrstvwxz2456789"


def utcnow() -> datetime:
    """The current time, timezone-aware UTC."""
    return datetime.now(UTC)


def created_at(obj: Obj) -> float:
    """The creation time of an object in epoch seconds (0 when unknown)."""
    moment = parse_time(obj["metadata"].get("creationTimestamp"))
    return moment.timestamp() if moment else 0.0


def condition(obj: Obj, type_: str) -> Obj | None:
    """The status condition of a type, or None."""
    return next((c for c in (obj.get("status") or {}).get("conditions") or [] if c.get("type") == type_), None)


def is_ready(pod: Obj) -> bool:
    """The pod's Ready condition is True."""
    ready = condition(pod, "Ready")
    return ready is not None and ready.get("status") == "True"


def is_available(pod: Obj, min_ready_seconds: int, now: datetime) -> bool:
    """Ready for at least minReadySeconds (podutil.IsPodAvailable)."""
    if not is_ready(pod):
        return False
    if not min_ready_seconds:
        return True
    since = parse_time((condition(pod, "Ready") or {}).get("lastTransitionTime"))
    return since is not None and since + timedelta(seconds=min_ready_seconds) < now


def phase(pod: Obj) -> str:
    """status.phase of a pod."""
    return (pod.get("status") or {}).get("phase", "")


def is_terminal(pod: Obj) -> bool:
    """The pod has Succeeded or Failed."""
    return phase(pod) in ("Succeeded", "Failed")


def is_active(pod: Obj) -> bool:
    """Neither finished nor being deleted (controller.IsPodActive)."""
    return not is_terminal(pod) and not pod["metadata"].get("deletionTimestamp")


def is_terminating(pod: Obj) -> bool:
    """Being deleted but not finished yet."""
    return not is_terminal(pod) and bool(pod["metadata"].get("deletionTimestamp"))


def labels_of(obj: Obj) -> dict[str, str]:
    """metadata.labels (empty when absent)."""
    return obj["metadata"].get("labels") or {}


def selector_of(owner: Obj) -> LabelSelector:
    """The spec.selector of an owner as a matcher."""
    return from_label_selector((owner.get("spec") or {}).get("selector"))


def _newest_first(stamp: float) -> tuple[bool, float]:
    """Sort key: unknown times first, then newer before older (afterOrZero)."""
    return bool(stamp), -stamp


def deletion_rank(pod: Obj, rank: int = 0) -> tuple[Any, ...]:
    """Sort key putting the pods to delete first (controller.ActivePodsWithRanks)."""
    ready = is_ready(pod)
    ready_since = parse_time((condition(pod, "Ready") or {}).get("lastTransitionTime")) if ready else None
    try:
        cost = int((pod["metadata"].get("annotations") or {}).get(DELETION_COST, 0))
    except ValueError:
        cost = 0
    restarts = max((s.get("restartCount", 0) for s in (pod.get("status") or {}).get("containerStatuses") or []),
                   default=0)
    return (bool((pod.get("spec") or {}).get("nodeName")), _PHASE_ORDER.get(phase(pod), 0), ready, cost, -rank,
            _newest_first(ready_since.timestamp() if ready_since else 0.0), -restarts, _newest_first(created_at(pod)))


def controller_ref(owner: Obj) -> Obj:
    """An owner reference marking `owner` as the managing controller."""
    meta = owner["metadata"]
    return {"apiVersion": owner["apiVersion"], "kind": owner["kind"], "name": meta["name"], "uid": meta["uid"],
            "controller": True, "blockOwnerDeletion": True}


def controller_of(obj: Obj) -> Obj | None:
    """The owner reference with controller=true, or None."""
    return next((r for r in obj["metadata"].get("ownerReferences") or [] if r.get("controller")), None)


def pod_from_template(template: Obj, owner: Obj, **meta: Any) -> Obj:
    """GetPodFromTemplate: the template's labels, annotations, finalizers and spec, controlled by owner."""
    source = template.get("metadata") or {}
    metadata = {k: copy.deepcopy(source[k]) for k in ("labels", "annotations", "finalizers") if source.get(k)}
    metadata["ownerReferences"] = [controller_ref(owner)]
    metadata.update(meta)
    return {"apiVersion": "v1", "kind": "Pod", "metadata": metadata, "spec": copy.deepcopy(template.get("spec") or {})}


def scaled_value(value: int | str | None, total: int, round_up: bool) -> int:
    """GetScaledValueFromIntOrPercent: an int as is, or a percentage of total rounded up or down."""
    if value is None:
        return 0
    if isinstance(value, int):
        return value
    if not value.endswith("%"):
        return int(value)
    percent = int(value[:-1]) * total
    return -(-percent // 100) if round_up else percent // 100


def _pruned(value: Any) -> Any:
    """JSON without empty values, so that omitted and empty fields compare equal."""
    if isinstance(value, dict):
        return {k: p for k, v in value.items() if (p := _pruned(v)) not in (None, "", {}, [])}
    if isinstance(value, list):
        return [_pruned(v) for v in value]
    return value


def semantic_equal(left: Any, right: Any) -> bool:
    """apiequality.Semantic.DeepEqual on JSON: empty and absent are the same."""
    return _pruned(left) == _pruned(right)


def fnv_hash(data: Any, collision_count: int | None = None) -> str:
    """A short stable hash of data (FNV-1a over canonical JSON, plus the collision count), safely encoded."""
    raw = orjson.dumps(data, option=orjson.OPT_SORT_KEYS)
    if collision_count is not None:
        raw += str(collision_count).encode()
    value = 0x811C9DC5
    for byte in raw:
        value = ((value ^ byte) * 0x01000193) & 0xFFFFFFFF
    return "".join(_SAFE_CHARS[ord(c) % len(_SAFE_CHARS)] for c in str(value))


def revision_data(template: Obj) -> Obj:
    """A ControllerRevision's data: the patch that replaces the owner's pod template."""
    return {"spec": {"template": {**copy.deepcopy(template), "$patch": "replace"}}}


def revision_template(revision: Obj) -> Obj:
    """The pod template a ControllerRevision records."""
    template = copy.deepcopy(revision["data"]["spec"]["template"])
    template.pop("$patch", None)
    return template


def revision_order(revision: Obj) -> tuple[int, float, str]:
    """Sort key of ControllerRevisions: by revision number, then age, then name."""
    return revision.get("revision", 0), created_at(revision), revision["metadata"]["name"]


async def slow_start_batch(count: int, call: Callable[[int], Awaitable[Any]],
                           initial: int = 1) -> tuple[int, Exception | None]:
    """Run call(0..count-1) in batches of 1, 2, 4, ...; stop after a batch with a failure: (successes, error)."""

    async def attempt(index: int) -> Exception | None:
        """One call, its exception returned rather than raised."""
        try:
            await call(index)
        except Exception as exc:
            return exc
        return None

    successes, position, size = 0, 0, min(count, initial)
    while size > 0:
        failures = [e for e in await asyncio.gather(*(attempt(position + i) for i in range(size))) if e is not None]
        successes += size - len(failures)
        if failures:
            return successes, failures[0]
        position += size
        size = min(2 * size, count - position)
    return successes, None


def describe(exc: BaseException) -> str:
    """An error as the message upstream puts in events and conditions."""
    return exc.message if isinstance(exc, ApiError) and exc.message else str(exc)


@dataclass
class _Expected:
    creations: int = 0
    deletions: set[str] = field(default_factory=set)
    at: float = field(default_factory=time.monotonic)


class Expectations:
    """UIDTrackingControllerExpectations: creations counted, deletions tracked by pod key, given up after a TTL."""

    def __init__(self, ttl: float = EXPECTATIONS_TTL):
        self.ttl = ttl
        self._records: dict[str, _Expected] = {}

    def expect(self, key: str, creations: int = 0, deletions: Iterable[str] = ()) -> None:
        """Record what the controller is about to create and delete for key (replacing older expectations)."""
        self._records[key] = _Expected(creations, set(deletions))

    def lower(self, key: str, creations: int = 0, deletions: Iterable[str] = ()) -> None:
        """Stop expecting creations or deletions that failed or were never attempted."""
        record = self._records.get(key)
        if record is not None:
            record.creations -= creations
            record.deletions.difference_update(deletions)

    def creation_observed(self, key: str) -> None:
        """The informer saw one of the expected pods appear."""
        self.lower(key, creations=1)

    def deletion_observed(self, key: str, pod_key: str) -> None:
        """The informer saw a pod go (or start terminating)."""
        self.lower(key, deletions=[pod_key])

    def satisfied(self, key: str) -> bool:
        """True when nothing is pending for key, or the expectations expired."""
        record = self._records.get(key)
        return (record is None or (record.creations <= 0 and not record.deletions)
                or time.monotonic() - record.at > self.ttl)

    def forget(self, key: str) -> None:
        """Drop the expectations of a deleted owner."""
        self._records.pop(key, None)


class WorkloadController(Controller):
    """A Controller with pod expectations, pod handlers for its kind, adoption and history."""

    kind: ClassVar[str] = ""

    def setup(self) -> None:
        """Create the expectations (subclasses call this first)."""
        self.expectations = Expectations()
        self._owner_keys = owner_keys(self.kind)

    def watch_pods(self, owners: Informer) -> Informer:
        """The pod informer: events lower expectations and queue the owner (for orphans, the owners selecting them)."""
        informer = self.informer(PODS)
        informer.add_handlers(on_add=lambda pod: self._pod_added(pod, owners),
                              on_update=lambda old, new: self._pod_updated(old, new, owners),
                              on_delete=self._pod_deleted)
        return informer

    def _pod_added(self, pod: Obj, owners: Informer) -> None:
        if pod["metadata"].get("deletionTimestamp"):
            self._pod_deleted(pod)
            return
        keys = self._owner_keys(pod)
        for key in keys:
            self.expectations.creation_observed(key)
        self.enqueue(keys or self.selecting(owners, pod))

    def _pod_updated(self, old: Obj, new: Obj, owners: Informer) -> None:
        old_keys, new_keys = self._owner_keys(old), self._owner_keys(new)
        if new["metadata"].get("deletionTimestamp"):
            for key in new_keys:
                self.expectations.deletion_observed(key, key_of(new))
        keys = {*old_keys, *new_keys}
        if not new_keys and (labels_of(old) != labels_of(new) or old_keys):
            keys.update(self.selecting(owners, new))
        self.enqueue(keys)

    def _pod_deleted(self, pod: Obj) -> None:
        keys = self._owner_keys(pod)
        for key in keys:
            self.expectations.deletion_observed(key, key_of(pod))
        self.enqueue(keys)

    def selector(self, owner: Obj) -> LabelSelector:
        """The owner's selector (spec.selector as a metav1.LabelSelector)."""
        return selector_of(owner)

    def selecting(self, owners: Informer, obj: Obj) -> list[str]:
        """Keys of the owners in obj's namespace whose non-empty selector matches obj's labels."""
        found = []
        for owner in owners.store.by_index(NAMESPACE_INDEX, obj["metadata"].get("namespace", "")):
            selector = self.selector(owner)
            if not selector.empty and selector.matches(labels_of(obj)):
                found.append(key_of(owner))
        return found

    def pod_event(self, owner: Obj, verb: str, pod: Obj, error: Exception | None) -> None:
        """Record the event of creating or deleting a pod (RealPodControl's wording)."""
        name = pod["metadata"].get("name") or pod["metadata"].get("generateName", "")
        if verb == "create":
            if error is None:
                self.recorder.event(owner, "Normal", "SuccessfulCreate", f"Created pod: {name}")
            else:
                self.recorder.event(owner, "Warning", "FailedCreate", f"Error creating: {describe(error)}")
        elif error is None:
            self.recorder.event(owner, "Normal", "SuccessfulDelete", f"Deleted pod: {name}")
        else:
            self.recorder.event(owner, "Warning", "FailedDelete", f"Error deleting: {describe(error)}")

    async def create_pod(self, owner: Obj, pod: Obj) -> Obj:
        """Create a pod in the owner's namespace and record the event."""
        try:
            created = await self.client.create(PODS, pod, owner["metadata"]["namespace"])
        except ApiError as exc:
            self.pod_event(owner, "create", pod, exc)
            raise
        self.pod_event(owner, "create", created, None)
        return created

    async def delete_pod(self, owner: Obj, pod: Obj) -> bool:
        """Delete a pod and record the event; False when it was already gone."""
        try:
            await self.client.delete(PODS, pod["metadata"]["name"], pod["metadata"]["namespace"])
        except ApiError as exc:
            if is_not_found(exc):
                return False
            self.pod_event(owner, "delete", pod, exc)
            raise
        self.pod_event(owner, "delete", pod, None)
        return True

    async def claim(self, resource: Resource, owner: Obj, candidates: Iterable[Obj],
                    matches: Callable[[Obj], bool]) -> list[Obj]:
        """ClaimObjects: ours that match, plus matching orphans adopted; ours that no longer match are released."""
        uid = owner["metadata"]["uid"]
        deleting = bool(owner["metadata"].get("deletionTimestamp"))
        claimed: list[Obj] = []
        can_adopt: bool | None = None
        for obj in candidates:
            ref = controller_of(obj)
            if ref is not None:
                if ref.get("uid") != uid:
                    continue
                if matches(obj):
                    claimed.append(obj)
                elif not deleting:
                    await self._patch_owner(resource, obj, {"$patch": "delete", "uid": uid})
                continue
            if deleting or obj["metadata"].get("deletionTimestamp") or not matches(obj):
                continue
            if can_adopt is None:
                can_adopt = await self._can_adopt(owner)
            if can_adopt and (adopted := await self._patch_owner(resource, obj, controller_ref(owner))):
                claimed.append(adopted)
        return claimed

    async def _can_adopt(self, owner: Obj) -> bool:
        """RecheckDeletionTimestamp: the live owner is the same object and is not being deleted."""
        meta = owner["metadata"]
        try:
            fresh = await self.client.get(resource_of(owner), meta["name"], meta.get("namespace"))
        except ApiError as exc:
            if is_not_found(exc):
                return False
            raise
        return fresh["metadata"]["uid"] == meta["uid"] and not fresh["metadata"].get("deletionTimestamp")

    async def _patch_owner(self, resource: Resource, obj: Obj, ref: Obj) -> Obj | None:
        """Add (or, with $patch delete, remove) one owner reference; None when the object is gone."""
        meta = obj["metadata"]
        patch = {"metadata": {"ownerReferences": [ref], "uid": meta["uid"]}}
        try:
            return await self.client.patch(resource, meta["name"], patch, meta.get("namespace"), type="strategic")
        except ApiError as exc:
            if is_not_found(exc):
                return None
            raise

    async def write_status(self, resource: Resource, obj: Obj, status: Obj) -> Obj | None:
        """PUT the status subresource when it differs from what is stored; the written object, else None."""
        if (obj.get("status") or {}) == status:
            return None
        return await self.client.update_status(resource, {**obj, "status": status})

    async def owned_revisions(self, owner: Obj, revisions: Informer) -> list[Obj]:
        """The owner's ControllerRevisions (adopting matching orphans), oldest revision first."""
        selector = self.selector(owner)
        candidates = revisions.store.by_index(NAMESPACE_INDEX, owner["metadata"]["namespace"])
        claimed = await self.claim(CONTROLLERREVISIONS, owner, candidates,
                                   lambda rev: selector.matches(labels_of(rev)))
        return sorted(claimed, key=revision_order)

    async def create_revision(self, owner: Obj, template: Obj, number: int, collision_count: int) -> Obj | None:
        """Create the ControllerRevision of a template (or find it); None on a name clash with other data."""
        meta = owner["metadata"]
        hash_ = fnv_hash(template, collision_count)
        name = f"{meta['name'][:223]}-{hash_}"
        revision = {
            "apiVersion": "apps/v1", "kind": "ControllerRevision",
            "metadata": {"name": name, "namespace": meta["namespace"],
                         "labels": {**labels_of(template), REVISION_HASH_LABEL: hash_},
                         "annotations": dict(meta.get("annotations") or {}),
                         "ownerReferences": [controller_ref(owner)]},
            "data": revision_data(template), "revision": number,
        }
        try:
            return await self.client.create(CONTROLLERREVISIONS, revision)
        except ApiError as exc:
            if not is_already_exists(exc):
                raise
        existing = await self.client.get(CONTROLLERREVISIONS, name, meta["namespace"])
        return existing if semantic_equal(existing.get("data"), revision["data"]) else None

"""Deployments: roll a pod template out through ReplicaSets, rolling or recreating (upstream deployment controller)."""

from __future__ import annotations

import copy
import math
from collections.abc import Iterable
from datetime import timedelta

from kubelite.client.controller import Requeue
from kubelite.client.errors import ApiError, is_already_exists, is_not_found
from kubelite.client.resources import DEPLOYMENTS, PODS, REPLICASETS
from kubelite.client.store import NAMESPACE_INDEX, OWNER_UID_INDEX
from kubelite.client.timestamps import format_time, parse_time
from kubelite.controllers.podcontrol import (
    Obj,
    WorkloadController,
    condition,
    controller_of,
    controller_ref,
    created_at,
    describe,
    fnv_hash,
    is_terminal,
    labels_of,
    scaled_value,
    semantic_equal,
    utcnow,
)

REVISION = "deployment.kubernetes.io/revision"
REVISION_HISTORY = "deployment.kubernetes.io/revision-history"
DESIRED_REPLICAS = "deployment.kubernetes.io/desired-replicas"
MAX_REPLICAS = "deployment.kubernetes.io/max-replicas"
HASH_LABEL = "pod-template-hash"
NOT_COPIED = {REVISION, REVISION_HISTORY, DESIRED_REPLICAS, MAX_REPLICAS, "deprecated.deployment.rollback.to",
              "kubectl.kubernetes.io/last-applied-configuration"}
"""Deployment annotations that are not copied to its ReplicaSets."""
MAX_HISTORY_CHARS = 2000
NO_DEADLINE = 2**31 - 1
PROGRESSING, AVAILABLE, REPLICA_FAILURE = "Progressing", "Available", "ReplicaFailure"


def spec_replicas(obj: Obj | None) -> int:
    """spec.replicas (1 when unset, 0 for no object)."""
    return obj["spec"].get("replicas", 1) if obj else 0


def available(rs: Obj) -> int:
    """status.availableReplicas of a ReplicaSet."""
    return (rs.get("status") or {}).get("availableReplicas", 0)


def revision_of(rs: Obj) -> int:
    """The revision annotation of a ReplicaSet (0 when absent or invalid)."""
    try:
        return int((rs["metadata"].get("annotations") or {}).get(REVISION, "0"))
    except ValueError:
        return 0


def _int_annotation(rs: Obj, key: str) -> int | None:
    try:
        return int((rs["metadata"].get("annotations") or {})[key])
    except (KeyError, ValueError):
        return None


def is_rolling(d: Obj) -> bool:
    """The deployment uses the RollingUpdate strategy."""
    return (d["spec"].get("strategy") or {}).get("type", "RollingUpdate") == "RollingUpdate"


def fenceposts(d: Obj) -> tuple[int, int]:
    """(maxSurge, maxUnavailable) resolved against spec.replicas: surge rounds up, unavailable down, never both 0."""
    if not is_rolling(d):
        return 0, 0
    rolling = (d["spec"].get("strategy") or {}).get("rollingUpdate") or {}
    desired = spec_replicas(d)
    surge = scaled_value(rolling.get("maxSurge", "25%"), desired, True)
    unavailable = scaled_value(rolling.get("maxUnavailable", "25%"), desired, False)
    if surge == 0 and unavailable == 0:
        unavailable = 1
    return surge, unavailable


def max_surge(d: Obj) -> int:
    """MaxSurge: how many pods above spec.replicas a rolling update may run."""
    return fenceposts(d)[0]


def max_unavailable(d: Obj) -> int:
    """MaxUnavailable: how many pods below spec.replicas a rolling update may run (never above replicas)."""
    if spec_replicas(d) == 0:
        return 0
    return min(fenceposts(d)[1], spec_replicas(d))


def active(sets: Iterable[Obj | None]) -> list[Obj]:
    """FilterActiveReplicaSets: those with replicas wanted."""
    return [rs for rs in sets if rs is not None and spec_replicas(rs) > 0]


def _without_hash(template: Obj) -> Obj:
    template = copy.deepcopy(template)
    (template.get("metadata") or {}).get("labels", {}).pop(HASH_LABEL, None)
    return template


def equal_ignore_hash(left: Obj, right: Obj) -> bool:
    """Two pod templates are the same apart from the pod-template-hash label."""
    return semantic_equal(_without_hash(left), _without_hash(right))


def new_rs_replicas(d: Obj, all_sets: list[Obj], new: Obj) -> int:
    """NewRSNewReplicas: how far the new ReplicaSet may scale up now."""
    if not is_rolling(d):
        return spec_replicas(d)
    current = sum(spec_replicas(rs) for rs in all_sets)
    most = spec_replicas(d) + max_surge(d)
    if current >= most:
        return spec_replicas(new)
    return spec_replicas(new) + min(most - current, spec_replicas(d) - spec_replicas(new))


def healthy(rs: Obj) -> int:
    """Available replicas a ReplicaSet keeps: a status written before its scale-down may still count deleted pods."""
    return min(available(rs), spec_replicas(rs))


def plan_old_scale_down(d: Obj, all_sets: list[Obj], olds: list[Obj], new: Obj) -> list[tuple[Obj, int]]:
    """reconcileOldReplicaSets: (old ReplicaSet, new size) pairs, oldest first; unhealthy replicas go first, then
    healthy ones while spec.replicas - maxUnavailable stay available."""
    if sum(spec_replicas(rs) for rs in olds) == 0:
        return []
    min_available = spec_replicas(d) - max_unavailable(d)
    new_unavailable = spec_replicas(new) - healthy(new)
    most = sum(spec_replicas(rs) for rs in all_sets) - min_available - new_unavailable
    if most <= 0:
        return []
    olds = sorted(olds, key=lambda rs: (created_at(rs), rs["metadata"]["name"]))
    sizes = [spec_replicas(rs) for rs in olds]
    cleaned = 0
    for i, rs in enumerate(olds):
        unhealthy = sizes[i] - healthy(rs)
        if cleaned >= most or unhealthy <= 0:
            continue
        count = min(most - cleaned, unhealthy)
        sizes[i] -= count
        cleaned += count
    budget = sum(healthy(rs) for rs in [*olds, new]) - min_available
    for i in range(len(olds)):
        count = max(min(sizes[i], budget), 0)
        sizes[i] -= count
        budget -= count
    return [(rs, size) for rs, size in zip(olds, sizes, strict=True) if size != spec_replicas(rs)]


def proportion(rs: Obj, d: Obj, to_add: int, added: int) -> int:
    """GetProportion: this ReplicaSet's share of a scaling of the deployment during a rollout."""
    if spec_replicas(rs) == 0 or to_add == 0 or to_add == added:
        return 0
    if spec_replicas(d) == 0:
        fraction = -spec_replicas(rs)
    else:
        annotated = _int_annotation(rs, MAX_REPLICAS) or (d.get("status") or {}).get("replicas", 0)
        if not annotated:
            return 0
        size = spec_replicas(rs) * (spec_replicas(d) + max_surge(d)) / annotated
        fraction = math.floor(size + 0.5) - spec_replicas(rs)
    allowed = to_add - added
    return min(fraction, allowed) if to_add > 0 else max(fraction, allowed)


def has_deadline(d: Obj) -> bool:
    """progressDeadlineSeconds is set (and not the max int, which disables it)."""
    return d["spec"].get("progressDeadlineSeconds") not in (None, NO_DEADLINE)


def new_condition(type_: str, status: str, reason: str, message: str) -> Obj:
    """A deployment condition stamped now."""
    now = format_time(utcnow())
    return {"type": type_, "status": status, "lastUpdateTime": now, "lastTransitionTime": now, "reason": reason,
            "message": message}


def set_condition(status: Obj, cond: Obj) -> None:
    """SetDeploymentCondition: replace the condition of its type unless status and reason are the same."""
    current = condition({"status": status}, cond["type"])
    if current is not None and current.get("status") == cond["status"] and current.get("reason") == cond["reason"]:
        return
    if current is not None and current.get("status") == cond["status"]:
        cond = {**cond, "lastTransitionTime": current.get("lastTransitionTime")}
    remove_condition(status, cond["type"])
    status.setdefault("conditions", []).append(cond)


def remove_condition(status: Obj, type_: str) -> None:
    """Drop the condition of a type."""
    status["conditions"] = [c for c in status.get("conditions") or [] if c.get("type") != type_]


def is_complete(d: Obj, status: Obj) -> bool:
    """DeploymentComplete: every replica updated and available, and the latest generation observed."""
    want = spec_replicas(d)
    return (status.get("updatedReplicas", 0) == want and status.get("replicas", 0) == want
            and status.get("availableReplicas", 0) == want
            and status.get("observedGeneration", 0) >= d["metadata"].get("generation", 0))


def is_progressing(d: Obj, status: Obj) -> bool:
    """DeploymentProgressing: more updated, ready or available replicas, or fewer old ones, than before."""
    old = d.get("status") or {}
    return (status.get("updatedReplicas", 0) > old.get("updatedReplicas", 0)
            or status.get("replicas", 0) - status.get("updatedReplicas", 0)
            < old.get("replicas", 0) - old.get("updatedReplicas", 0)
            or status.get("readyReplicas", 0) > old.get("readyReplicas", 0)
            or status.get("availableReplicas", 0) > old.get("availableReplicas", 0))


def timed_out(d: Obj, status: Obj) -> bool:
    """DeploymentTimedOut: the Progressing condition was last updated longer than the deadline ago."""
    cond = condition({"status": status}, PROGRESSING)
    if not has_deadline(d) or cond is None or cond.get("reason") == "NewReplicaSetAvailable":
        return False
    if cond.get("reason") == "ProgressDeadlineExceeded":
        return True
    since = parse_time(cond.get("lastUpdateTime"))
    return since is not None and since + timedelta(seconds=d["spec"]["progressDeadlineSeconds"]) < utcnow()


def set_new_rs_annotations(d: Obj, rs: Obj, new_revision: int, exists: bool) -> bool:
    """SetNewReplicaSetAnnotations: copied annotations, raised revision (with its history); True if changed."""
    annotations = rs["metadata"].setdefault("annotations", {})
    changed = False
    for key, value in (d["metadata"].get("annotations") or {}).items():
        if key not in NOT_COPIED and annotations.get(key) != value:
            annotations[key] = value
            changed = True
    old = annotations.get(REVISION)
    try:
        old_revision = int(old) if old else 0
    except ValueError:
        return False
    if old_revision < new_revision:
        annotations[REVISION] = str(new_revision)
        changed = True
        if old is not None:
            history = [*filter(None, annotations.get(REVISION_HISTORY, "").split(",")), old]
            while len(",".join(history)) > MAX_HISTORY_CHARS and len(history) > 1:
                history.pop(0)
            annotations[REVISION_HISTORY] = ",".join(history)
    if not exists and set_replicas_annotations(rs, spec_replicas(d), spec_replicas(d) + max_surge(d)):
        changed = True
    return changed


def set_replicas_annotations(rs: Obj, desired: int, most: int) -> bool:
    """Record the deployment's replicas and replicas+maxSurge on a ReplicaSet; True if they changed."""
    annotations = rs["metadata"].setdefault("annotations", {})
    wanted = {DESIRED_REPLICAS: str(desired), MAX_REPLICAS: str(most)}
    if all(annotations.get(k) == v for k, v in wanted.items()):
        return False
    annotations.update(wanted)
    return True


class DeploymentController(WorkloadController):
    """Drives each Deployment's ReplicaSets towards its template, replicas and strategy."""

    name = "deployment"
    component = "deployment-controller"
    kind = "Deployment"

    def setup(self) -> None:
        """Watch deployments, their ReplicaSets, and pods (for Recreate)."""
        super().setup()
        self.deployments = self.watch(DEPLOYMENTS)
        self.sets = self.watch(REPLICASETS, keys=self._set_keys)
        self.pods = self.watch(PODS, keys=self._pod_keys)

    def _set_keys(self, rs: Obj) -> list[str]:
        ref = controller_of(rs)
        if ref is None:
            return self.selecting(self.deployments, rs)
        return [f"{rs['metadata']['namespace']}/{ref['name']}"] if ref.get("kind") == "Deployment" else []

    def _pod_keys(self, pod: Obj) -> list[str]:
        """A pod's deployment, when that deployment recreates (it waits for old pods to go)."""
        ref = controller_of(pod)
        rs = (self.sets.store.get_by_name(pod["metadata"]["namespace"], ref["name"])
              if ref and ref.get("kind") == "ReplicaSet" else None)
        keys = self._set_keys(rs) if rs is not None and controller_of(rs) else []
        return [k for k in keys if (d := self.deployments.store.get(k)) is not None and not is_rolling(d)]

    async def reconcile(self, key: str) -> Requeue | None:
        """syncDeployment: claim ReplicaSets, then scale, roll out, or only report status."""
        cached = self.deployments.store.get(key)
        if cached is None:
            return None
        d = copy.deepcopy(cached)
        selector = self.selector(d)
        if selector.empty:
            self.recorder.event(d, "Warning", "SelectingAll",
                                "This deployment is selecting all pods. A non-empty selector is required.")
            if (d.get("status") or {}).get("observedGeneration", 0) < d["metadata"].get("generation", 0):
                await self.update_status(d, {**(d.get("status") or {}),
                                             "observedGeneration": d["metadata"]["generation"]})
            return None
        candidates = self.sets.store.by_index(NAMESPACE_INDEX, d["metadata"]["namespace"])
        sets = await self.claim(REPLICASETS, d, candidates, lambda rs: selector.matches(labels_of(rs)))
        new, olds = await self.new_and_old(d, sets, create=False)
        if d["metadata"].get("deletionTimestamp"):
            return await self.sync_status(d, olds + ([new] if new else []), new)
        await self.check_paused(d)
        if d["spec"].get("paused") or self.is_scaling_event(d, new, olds):
            await self.scale(d, new, olds)
            if d["spec"].get("paused"):
                await self.cleanup(d, olds)
            return await self.sync_status(d, olds + ([new] if new else []), new)
        if is_rolling(d):
            return await self.rollout_rolling(d, sets, new, olds)
        return await self.rollout_recreate(d, sets, new, olds)

    async def update_status(self, d: Obj, status: Obj) -> None:
        """Write the deployment's status and keep d current (its resourceVersion moves on)."""
        written = await self.client.update_status(DEPLOYMENTS, {**d, "status": status})
        d["metadata"], d["status"] = written["metadata"], written.get("status") or {}

    async def set_revision(self, d: Obj, revision: str) -> None:
        """SetDeploymentRevision: the deployment's revision annotation follows its new ReplicaSet's."""
        if (d["metadata"].get("annotations") or {}).get(REVISION) == revision:
            return
        patch = {"metadata": {"annotations": {REVISION: revision}, "resourceVersion": d["metadata"]["resourceVersion"]}}
        written = await self.client.patch(DEPLOYMENTS, d["metadata"]["name"], patch, d["metadata"]["namespace"])
        d["metadata"] = written["metadata"]

    async def new_and_old(self, d: Obj, sets: list[Obj], create: bool) -> tuple[Obj | None, list[Obj]]:
        """getAllReplicaSetsAndSyncRevision: the ReplicaSet of the current template (made if asked) and the rest."""
        template = d["spec"]["template"]
        new = next((rs for rs in sorted(sets, key=lambda rs: (created_at(rs), rs["metadata"]["name"]))
                    if equal_ignore_hash(rs["spec"]["template"], template)), None)
        olds = [rs for rs in sets if new is None or rs["metadata"]["uid"] != new["metadata"]["uid"]]
        new_revision = max((revision_of(rs) for rs in olds), default=0) + 1
        if new is not None:
            updated = copy.deepcopy(new)
            min_ready = d["spec"].get("minReadySeconds", 0)
            if (set_new_rs_annotations(d, updated, new_revision, exists=True)
                    or updated["spec"].get("minReadySeconds", 0) != min_ready):
                updated["spec"]["minReadySeconds"] = min_ready
                return await self.client.update(REPLICASETS, updated), olds
            await self.set_revision(d, str(revision_of(updated)))
            if has_deadline(d) and condition(d, PROGRESSING) is None:
                status = copy.deepcopy(d.get("status") or {})
                set_condition(status, new_condition(PROGRESSING, "True", "FoundNewReplicaSet",
                                                    f'Found new replica set "{updated["metadata"]["name"]}"'))
                await self.update_status(d, status)
            return updated, olds
        if not create:
            return None, olds
        return await self.create_new(d, olds, new_revision), olds

    async def create_new(self, d: Obj, olds: list[Obj], new_revision: int) -> Obj:
        """Create <deployment>-<pod-template-hash>; a name clash with another template bumps collisionCount."""
        meta, status = d["metadata"], copy.deepcopy(d.get("status") or {})
        hash_ = fnv_hash(d["spec"]["template"], status.get("collisionCount"))
        template = copy.deepcopy(d["spec"]["template"])
        template.setdefault("metadata", {}).setdefault("labels", {})[HASH_LABEL] = hash_
        selector = copy.deepcopy(d["spec"]["selector"])
        selector.setdefault("matchLabels", {})[HASH_LABEL] = hash_
        name = f"{meta['name']}-{hash_}"
        rs = {"apiVersion": "apps/v1", "kind": "ReplicaSet",
              "metadata": {"name": name, "namespace": meta["namespace"], "labels": dict(template["metadata"]["labels"]),
                           "ownerReferences": [controller_ref(d)]},
              "spec": {"replicas": 0, "minReadySeconds": d["spec"].get("minReadySeconds", 0), "selector": selector,
                       "template": template}}
        rs["spec"]["replicas"] = new_rs_replicas(d, [*olds, rs], rs)
        set_new_rs_annotations(d, rs, new_revision, exists=False)
        exists = False
        try:
            created = await self.client.create(REPLICASETS, rs)
        except ApiError as exc:
            if not is_already_exists(exc):
                message = f'Failed to create new replica set "{name}": {describe(exc)}'
                if has_deadline(d):
                    set_condition(status, new_condition(PROGRESSING, "False", "ReplicaSetCreateError", message))
                    await self.update_status(d, status)
                self.recorder.event(d, "Warning", "FailedCreate", message)
                raise
            created = await self.client.get(REPLICASETS, name, meta["namespace"])
            ref = controller_of(created)
            if not (ref and ref.get("uid") == meta["uid"]
                    and equal_ignore_hash(created["spec"]["template"], d["spec"]["template"])):
                status["collisionCount"] = status.get("collisionCount", 0) + 1
                await self.update_status(d, status)
                raise
            exists = True
        if not exists and spec_replicas(created) > 0:
            self.recorder.event(d, "Normal", "ScalingReplicaSet",
                                f"Scaled up replica set {name} from 0 to {spec_replicas(created)}")
        await self.set_revision(d, str(new_revision))
        if not exists and has_deadline(d):
            status = copy.deepcopy(d.get("status") or {})
            set_condition(status, new_condition(PROGRESSING, "True", "NewReplicaSetCreated",
                                                f'Created new replica set "{name}"'))
            await self.update_status(d, status)
        return created

    async def scale_rs(self, rs: Obj, replicas: int, d: Obj, annotate: bool = False) -> tuple[bool, Obj]:
        """Set a ReplicaSet's replicas (and, when asked or scaling, its replica annotations): (scaled, new rs)."""
        old = spec_replicas(rs)
        if old == replicas and not annotate:
            return False, rs
        updated = copy.deepcopy(rs)
        updated["spec"]["replicas"] = replicas
        annotations_changed = set_replicas_annotations(updated, spec_replicas(d), spec_replicas(d) + max_surge(d))
        if old == replicas and not annotations_changed:
            return False, rs
        written = await self.client.update(REPLICASETS, updated)
        if old != replicas:
            direction = "up" if replicas > old else "down"
            self.recorder.event(d, "Normal", "ScalingReplicaSet",
                                f"Scaled {direction} replica set {rs['metadata']['name']} from {old} to {replicas}")
        return old != replicas, written

    def is_scaling_event(self, d: Obj, new: Obj | None, olds: list[Obj]) -> bool:
        """An active ReplicaSet was sized for another spec.replicas: only scale, do not roll."""
        return any((desired := _int_annotation(rs, DESIRED_REPLICAS)) is not None and desired != spec_replicas(d)
                   for rs in active([*olds, new]))

    async def scale(self, d: Obj, new: Obj | None, olds: list[Obj]) -> None:
        """Scale to spec.replicas: the one active ReplicaSet, or every active one in proportion during a rollout."""
        want = spec_replicas(d)
        newest_first = sorted(olds, key=created_at, reverse=True)
        running = active([*newest_first, new])
        if new is not None or olds:
            single = running[0] if len(running) == 1 else None if running else new or newest_first[0]
            if single is not None:
                if spec_replicas(single) != want:
                    await self.scale_rs(single, want, d)
                return
        if (new is not None and _int_annotation(new, DESIRED_REPLICAS) == want and spec_replicas(new) == want
                and available(new) == want):
            for rs in active(olds):
                await self.scale_rs(rs, 0, d)
            return
        if not is_rolling(d):
            return
        to_add = (want + max_surge(d) if want > 0 else 0) - sum(spec_replicas(rs) for rs in running)
        if to_add > 0:
            running.sort(key=lambda rs: (-spec_replicas(rs), -created_at(rs)))
        elif to_add < 0:
            running.sort(key=lambda rs: (-spec_replicas(rs), created_at(rs)))
        sizes, added = [], 0
        for rs in running:
            share = proportion(rs, d, to_add, added)
            sizes.append(spec_replicas(rs) + share)
            added += share
        if to_add and running:
            sizes[0] = max(sizes[0] + to_add - added, 0)
        for rs, size in zip(running, sizes, strict=True):
            await self.scale_rs(rs, size, d, annotate=True)

    async def rollout_rolling(self, d: Obj, sets: list[Obj], new: Obj | None, olds: list[Obj]) -> Requeue | None:
        """rolloutRolling: scale the new ReplicaSet up within maxSurge, old ones down within maxUnavailable."""
        if new is None:
            new, olds = await self.new_and_old(d, sets, create=True)
            assert new is not None
        all_sets = [*olds, new]
        if await self.reconcile_new(all_sets, new, d) or await self.reconcile_old(all_sets, active(olds), new, d):
            return await self.sync_rollout(d, all_sets, new)
        if is_complete(d, d.get("status") or {}):
            await self.cleanup(d, olds)
        return await self.sync_rollout(d, all_sets, new)

    async def reconcile_new(self, all_sets: list[Obj], new: Obj, d: Obj) -> bool:
        """Scale the new ReplicaSet towards spec.replicas as far as maxSurge allows."""
        if spec_replicas(new) == spec_replicas(d):
            return False
        if spec_replicas(new) > spec_replicas(d):
            return (await self.scale_rs(new, spec_replicas(d), d))[0]
        return (await self.scale_rs(new, new_rs_replicas(d, all_sets, new), d))[0]

    async def reconcile_old(self, all_sets: list[Obj], olds: list[Obj], new: Obj, d: Obj) -> bool:
        """Scale old ReplicaSets down as far as plan_old_scale_down allows."""
        scaled = False
        for rs, replicas in plan_old_scale_down(d, all_sets, olds, new):
            scaled = (await self.scale_rs(rs, replicas, d))[0] or scaled
        return scaled

    async def rollout_recreate(self, d: Obj, sets: list[Obj], new: Obj | None, olds: list[Obj]) -> Requeue | None:
        """rolloutRecreate: scale every old ReplicaSet to 0, wait for their pods to go, then scale the new one up."""
        all_sets = [*olds, *([new] if new else [])]
        scaled = False
        for rs in active(olds):
            scaled = (await self.scale_rs(rs, 0, d))[0] or scaled
        if scaled or self.old_pods_running(new, olds):
            return await self.sync_rollout(d, all_sets, new)
        if new is None:
            new, olds = await self.new_and_old(d, sets, create=True)
            assert new is not None
            all_sets = [*olds, new]
        await self.scale_rs(new, spec_replicas(d), d)
        if is_complete(d, d.get("status") or {}):
            await self.cleanup(d, olds)
        return await self.sync_rollout(d, all_sets, new)

    def old_pods_running(self, new: Obj | None, olds: list[Obj]) -> bool:
        """Old ReplicaSets still report replicas, or own pods that have not finished (terminating ones count)."""
        if sum((rs.get("status") or {}).get("replicas", 0) for rs in olds) > 0:
            return True
        return any(not is_terminal(pod) for rs in olds
                   for pod in self.pods.store.by_index(OWNER_UID_INDEX, rs["metadata"]["uid"])
                   if (controller_of(pod) or {}).get("uid") == rs["metadata"]["uid"]
                   and (new is None or rs["metadata"]["uid"] != new["metadata"]["uid"]))

    async def cleanup(self, d: Obj, olds: list[Obj]) -> None:
        """Delete the oldest scaled-down ReplicaSets beyond revisionHistoryLimit."""
        limit = d["spec"].get("revisionHistoryLimit")
        alive = [rs for rs in olds if not rs["metadata"].get("deletionTimestamp")]
        if limit is None or len(alive) <= limit:
            return
        alive.sort(key=lambda rs: (revision_of(rs), created_at(rs), rs["metadata"]["name"]))
        for rs in alive[:len(alive) - limit]:
            status = rs.get("status") or {}
            if (status.get("replicas", 0) or spec_replicas(rs)
                    or rs["metadata"].get("generation", 0) > status.get("observedGeneration", 0)):
                continue
            try:
                await self.client.delete(REPLICASETS, rs["metadata"]["name"], rs["metadata"]["namespace"])
            except ApiError as exc:
                if not is_not_found(exc):
                    raise

    async def check_paused(self, d: Obj) -> None:
        """Set Progressing to DeploymentPaused / DeploymentResumed when spec.paused changes."""
        cond = condition(d, PROGRESSING)
        if not has_deadline(d) or (cond or {}).get("reason") == "ProgressDeadlineExceeded":
            return
        paused_noted = (cond or {}).get("reason") == "DeploymentPaused"
        paused = bool(d["spec"].get("paused"))
        if paused == paused_noted:
            return
        status = copy.deepcopy(d.get("status") or {})
        reason, message = ("DeploymentPaused", "Deployment is paused") if paused else \
            ("DeploymentResumed", "Deployment is resumed")
        set_condition(status, new_condition(PROGRESSING, "Unknown", reason, message))
        await self.update_status(d, status)

    def calculate_status(self, d: Obj, sets: list[Obj], new: Obj | None) -> Obj:
        """Replica counts summed over the ReplicaSets, and the Available condition."""
        old = d.get("status") or {}
        total = sum(spec_replicas(rs) for rs in sets)
        avail = sum(available(rs) for rs in sets)
        status: Obj = {
            "observedGeneration": d["metadata"].get("generation", 0),
            "replicas": sum((rs.get("status") or {}).get("replicas", 0) for rs in sets),
            "updatedReplicas": (new.get("status") or {}).get("replicas", 0) if new else 0,
            "readyReplicas": sum((rs.get("status") or {}).get("readyReplicas", 0) for rs in sets),
            "availableReplicas": avail,
            "unavailableReplicas": max(total - avail, 0),
            "conditions": copy.deepcopy(old.get("conditions") or []),
        }
        if "collisionCount" in old:
            status["collisionCount"] = old["collisionCount"]
        if avail >= spec_replicas(d) - max_unavailable(d):
            set_condition(status, new_condition(AVAILABLE, "True", "MinimumReplicasAvailable",
                                                "Deployment has minimum availability."))
        else:
            set_condition(status, new_condition(AVAILABLE, "False", "MinimumReplicasUnavailable",
                                                "Deployment does not have minimum availability."))
        return status

    async def sync_status(self, d: Obj, sets: list[Obj], new: Obj | None) -> None:
        """syncDeploymentStatus: counts and Available only."""
        status = self.calculate_status(d, sets, new)
        if status != d.get("status"):
            await self.update_status(d, status)

    async def sync_rollout(self, d: Obj, sets: list[Obj], new: Obj | None) -> Requeue | None:
        """syncRolloutStatus: counts plus the Progressing and ReplicaFailure conditions; requeue for the deadline."""
        status = self.calculate_status(d, sets, new)
        current = condition(d, PROGRESSING)
        what = f'ReplicaSet "{new["metadata"]["name"]}"' if new else f'Deployment "{d["metadata"]["name"]}"'
        if not has_deadline(d):
            remove_condition(status, PROGRESSING)
        elif not (status["replicas"] == status["updatedReplicas"] and current is not None
                  and current.get("reason") == "NewReplicaSetAvailable"):
            if is_complete(d, status):
                set_condition(status, new_condition(PROGRESSING, "True", "NewReplicaSetAvailable",
                                                    f"{what} has successfully progressed."))
            elif is_progressing(d, status):
                cond = new_condition(PROGRESSING, "True", "ReplicaSetUpdated", f"{what} is progressing.")
                if current is not None:
                    if current.get("status") == "True":
                        cond["lastTransitionTime"] = current.get("lastTransitionTime")
                    remove_condition(status, PROGRESSING)
                status["conditions"].append(cond)
            elif timed_out(d, status):
                set_condition(status, new_condition(PROGRESSING, "False", "ProgressDeadlineExceeded",
                                                    f"{what} has timed out progressing."))
        failures = [c for rs in ([new] if new else []) + [rs for rs in sets if rs is not new]
                    for c in (rs.get("status") or {}).get("conditions") or [] if c.get("type") == REPLICA_FAILURE]
        if failures:
            set_condition(status, {**failures[0], "lastUpdateTime": failures[0].get("lastTransitionTime")})
        else:
            remove_condition(status, REPLICA_FAILURE)
        if status == d.get("status"):
            return self.requeue_stuck(d, status)
        await self.update_status(d, status)
        return None

    def requeue_stuck(self, d: Obj, status: Obj) -> Requeue | None:
        """Come back when the progress deadline of an unfinished rollout passes."""
        current = condition(d, PROGRESSING)
        if (not has_deadline(d) or current is None or is_complete(d, status)
                or current.get("reason") == "ProgressDeadlineExceeded"):
            return None
        since = parse_time(current.get("lastUpdateTime")) or utcnow()
        after = (since + timedelta(seconds=d["spec"]["progressDeadlineSeconds"]) - utcnow()).total_seconds()
        return Requeue() if after < 1 else Requeue(after=after)

"""DaemonSets: one pod of the template on every node that should run it (upstream daemon controller)."""

from __future__ import annotations

import asyncio
import copy
import time

from kubelite.client.controller import Requeue
from kubelite.client.resources import CONTROLLERREVISIONS, DAEMONSETS, NODES, PODS
from kubelite.client.store import NAMESPACE_INDEX, key_of
from kubelite.controllers.podcontrol import (
    BURST_REPLICAS,
    REVISION_HASH_LABEL,
    Obj,
    WorkloadController,
    created_at,
    is_available,
    is_ready,
    labels_of,
    phase,
    pod_from_template,
    revision_data,
    scaled_value,
    semantic_equal,
    slow_start_batch,
    utcnow,
)
from kubelite.scheduler.helpers import NO_EXECUTE, NO_SCHEDULE, RequiredNodeAffinity, first_untolerated, taint_tuple

DAEMON_TOLERATIONS = (
    ("node.kubernetes.io/not-ready", NO_EXECUTE), ("node.kubernetes.io/unreachable", NO_EXECUTE),
    ("node.kubernetes.io/disk-pressure", NO_SCHEDULE), ("node.kubernetes.io/memory-pressure", NO_SCHEDULE),
    ("node.kubernetes.io/pid-pressure", NO_SCHEDULE), ("node.kubernetes.io/unschedulable", NO_SCHEDULE))
"""Tolerations every daemon pod gets, so node problems neither evict nor keep out daemons."""
HOST_NETWORK_TOLERATION = ("node.kubernetes.io/network-unavailable", NO_SCHEDULE)
FAILED_POD_BACKOFF = (1.0, 900.0)
"""Initial and maximum delay before a failed daemon pod on a node is replaced again."""


def _identity(toleration: Obj) -> tuple[str, str, str, str]:
    """What MatchToleration compares: key, operator, value and effect."""
    get = toleration.get
    return get("key") or "", get("operator") or "", get("value") or "", get("effect") or ""


def daemon_tolerations(spec: Obj) -> list[Obj]:
    """AddOrUpdateDaemonPodTolerations: the pod's tolerations plus the daemon ones (which replace equal ones)."""
    tolerations = [dict(t) for t in spec.get("tolerations") or []]
    added = [*DAEMON_TOLERATIONS, *([HOST_NETWORK_TOLERATION] if spec.get("hostNetwork") else [])]
    for key, effect in added:
        wanted = {"key": key, "operator": "Exists", "effect": effect}
        same = [i for i, t in enumerate(tolerations) if _identity(t) == (key, "Exists", "", effect)]
        for i in same:
            tolerations[i] = wanted
        if not same:
            tolerations.append(wanted)
    return tolerations


def should_run(node: Obj, ds: Obj) -> tuple[bool, bool]:
    """NodeShouldRunDaemonPod: (should run a daemon pod, may keep a running one)."""
    spec, name = ds["spec"]["template"].get("spec") or {}, node["metadata"]["name"]
    if spec.get("nodeName") not in (None, "", name):
        return False, False
    if not RequiredNodeAffinity(spec).matches(labels_of(node), name):
        return False, False
    tolerations = daemon_tolerations(spec)
    taints = [taint_tuple(t) for t in (node.get("spec") or {}).get("taints") or []]
    if first_untolerated([t for t in taints if t[2] in (NO_SCHEDULE, NO_EXECUTE)], tolerations) is None:
        return True, True
    return False, first_untolerated([t for t in taints if t[2] == NO_EXECUTE], tolerations) is None


def target_node(pod: Obj) -> str | None:
    """The node a daemon pod is for: spec.nodeName, or its required metadata.name node affinity."""
    spec = pod.get("spec") or {}
    if spec.get("nodeName"):
        return spec["nodeName"]
    required = ((spec.get("affinity") or {}).get("nodeAffinity") or {}).get(
        "requiredDuringSchedulingIgnoredDuringExecution") or {}
    for term in required.get("nodeSelectorTerms") or []:
        for field in term.get("matchFields") or []:
            if field.get("key") == "metadata.name" and field.get("operator") == "In" and len(field["values"]) == 1:
                return field["values"][0]
    return None


def pin_to_node(affinity: Obj | None, node: str) -> Obj:
    """ReplaceDaemonSetPodNodeNameNodeAffinity: required node affinity for exactly this node (by name)."""
    affinity = copy.deepcopy(affinity or {})
    terms = [{"matchFields": [{"key": "metadata.name", "operator": "In", "values": [node]}]}]
    node_affinity = affinity.setdefault("nodeAffinity", {})
    required = node_affinity.setdefault("requiredDuringSchedulingIgnoredDuringExecution", {})
    required["nodeSelectorTerms"] = terms
    return affinity


def oldest_first(pods: list[Obj]) -> list[Obj]:
    """podByCreationTimestampAndPhase: scheduled pods first, then oldest, then by name."""
    return sorted(pods, key=lambda p: (not (p.get("spec") or {}).get("nodeName"), created_at(p), p["metadata"]["name"]))


def rolling_counts(ds: Obj, desired: int) -> tuple[int, int]:
    """(maxSurge, maxUnavailable) of a RollingUpdate against the desired node count, both rounded up."""
    strategy = ds["spec"].get("updateStrategy") or {}
    if strategy.get("type", "RollingUpdate") != "RollingUpdate":
        return 0, 0
    rolling = strategy.get("rollingUpdate") or {}
    surge = scaled_value(rolling.get("maxSurge"), desired, True)
    unavailable = scaled_value(rolling.get("maxUnavailable", 1), desired, True)
    return surge, (1 if desired > 0 and surge == 0 and unavailable == 0 else unavailable)


def find_updated(pods: list[Obj], hash_: str) -> tuple[Obj | None, Obj | None, bool]:
    """findUpdatedPodsOnNode: the node's (new, old) pod, not ok when there are several of either."""
    live = [p for p in pods if not p["metadata"].get("deletionTimestamp")]
    new = [p for p in live if labels_of(p).get(REVISION_HASH_LABEL) == hash_]
    old = [p for p in live if labels_of(p).get(REVISION_HASH_LABEL) != hash_]
    if len(new) > 1 or len(old) > 1:
        return None, None, False
    return (new or [None])[0], (old or [None])[0], True


def _node_view(node: Obj) -> tuple[object, ...]:
    conditions = sorted((c.get("type"), c.get("status")) for c in (node.get("status") or {}).get("conditions") or [])
    return labels_of(node), node.get("spec"), conditions


class DaemonSetController(WorkloadController):
    """Creates a daemon pod for each eligible node, removes misplaced and surplus ones, and rolls updates."""

    name = "daemonset"
    component = "daemonset-controller"
    kind = "DaemonSet"

    def setup(self) -> None:
        """Watch daemon sets, their pods and nodes; cache revisions."""
        super().setup()
        self.sets = self.watch(DAEMONSETS)
        self.pods = self.watch_pods(self.sets)
        self.revisions = self.informer(CONTROLLERREVISIONS)
        self.nodes = self.informer(NODES)
        self.nodes.add_handlers(on_add=self._all, on_delete=self._all,
                                on_update=lambda old, new: _node_view(old) != _node_view(new) and self._all(new))
        self.failed_backoff: dict[str, tuple[float, float]] = {}

    def _all(self, _: Obj) -> None:
        self.enqueue(self.sets.store.keys())

    async def reconcile(self, key: str) -> Requeue | None:
        """syncDaemonSet: history, pods per node, rolling update, history cleanup and status."""
        ds = self.sets.store.get(key)
        if ds is None:
            self.expectations.forget(key)
            return None
        if ds["metadata"].get("deletionTimestamp"):
            return None
        nodes = self.nodes.store.list()
        current, old = await self.history(ds)
        hash_ = labels_of(current)[REVISION_HASH_LABEL]
        by_node = await self.pods_by_node(ds)
        if not self.expectations.satisfied(key):
            return await self.update_status(ds, nodes, by_node, hash_, observed=False)
        requeue = await self.manage(key, ds, nodes, by_node, hash_)
        if self.expectations.satisfied(key):
            await self.rolling_update(key, ds, nodes, by_node, hash_)
        await self.cleanup_history(ds, old, by_node)
        return await self.update_status(ds, nodes, by_node, hash_, observed=True) or requeue

    async def history(self, ds: Obj) -> tuple[Obj, list[Obj]]:
        """constructHistory: the revision of the current template (made if missing) and the older ones."""
        revisions = await self.owned_revisions(ds, self.revisions)
        data = revision_data(ds["spec"]["template"])
        current = [r for r in revisions if semantic_equal(r.get("data"), data)]
        old = [r for r in revisions if r not in current]
        number = max((r.get("revision", 0) for r in old), default=0) + 1
        if not current:
            collisions = (ds.get("status") or {}).get("collisionCount", 0)
            made = await self.create_revision(ds, ds["spec"]["template"], number, collisions)
            if made is None:
                await self.client.update_status(DAEMONSETS, {**ds, "status": {**(ds.get("status") or {}),
                                                                              "collisionCount": collisions + 1}})
                raise RuntimeError(f"hash collision creating the revision of {key_of(ds)}; retrying")
            return made, old
        keep, *duplicates = sorted(current, key=lambda r: r.get("revision", 0), reverse=True)
        for duplicate in duplicates:
            await self.relabel_pods(ds, labels_of(duplicate).get(REVISION_HASH_LABEL),
                                    labels_of(keep)[REVISION_HASH_LABEL])
            await self.client.delete(CONTROLLERREVISIONS, duplicate["metadata"]["name"], ds["metadata"]["namespace"])
        if keep.get("revision", 0) < number:
            keep = await self.client.update(CONTROLLERREVISIONS, {**keep, "revision": number})
        return keep, old

    async def relabel_pods(self, ds: Obj, old_hash: str | None, new_hash: str) -> None:
        """Point pods of a duplicate revision at the kept one."""
        for pod in self.pods.store.by_index(NAMESPACE_INDEX, ds["metadata"]["namespace"]):
            if old_hash and labels_of(pod).get(REVISION_HASH_LABEL) == old_hash:
                await self.client.patch(PODS, pod["metadata"]["name"],
                                        {"metadata": {"labels": {REVISION_HASH_LABEL: new_hash}}},
                                        ds["metadata"]["namespace"])

    async def pods_by_node(self, ds: Obj) -> dict[str, list[Obj]]:
        """The claimed pods grouped by target node (finished pods being deleted are left out)."""
        selector = self.selector(ds)
        pods = await self.claim(PODS, ds, self.pods.store.by_index(NAMESPACE_INDEX, ds["metadata"]["namespace"]),
                                lambda p: selector.matches(labels_of(p)))
        by_node: dict[str, list[Obj]] = {}
        for pod in pods:
            if phase(pod) in ("Succeeded", "Failed") and pod["metadata"].get("deletionTimestamp"):
                continue
            if (node := target_node(pod)) is not None:
                by_node.setdefault(node, []).append(pod)
        return by_node

    async def manage(self, key: str, ds: Obj, nodes: list[Obj], by_node: dict[str, list[Obj]],
                     hash_: str) -> Requeue | None:
        """Create pods on nodes that need one; delete failed, surplus and misplaced pods."""
        create: list[str] = []
        delete: list[Obj] = []
        requeue = None
        surge = rolling_counts(ds, 1)[0] > 0
        for node in nodes:
            name = node["metadata"]["name"]
            run, keep = should_run(node, ds)
            pods = by_node.get(name)
            if run and not pods:
                create.append(name)
            elif keep and pods:
                running = []
                for pod in pods:
                    if pod["metadata"].get("deletionTimestamp"):
                        continue
                    if phase(pod) in ("Failed", "Succeeded"):
                        if phase(pod) == "Failed" and (wait := self.backoff(f"{key}/{name}")):
                            requeue = Requeue(after=wait)
                            continue
                        word = "failed" if phase(pod) == "Failed" else "succeeded"
                        self.recorder.event(ds, "Warning", "FailedDaemonPod",
                                            f"Found {word} daemon pod {key_of(pod)} on node {name}, will try to "
                                            f"{'kill' if word == 'failed' else 'delete'} it")
                        delete.append(pod)
                    else:
                        running.append(pod)
                delete += self.surplus(ds, oldest_first(running), hash_, surge)
            elif not keep and pods:
                delete += [p for p in pods if not p["metadata"].get("deletionTimestamp")]
        names = {n["metadata"]["name"] for n in nodes}
        delete += [p for node, pods in by_node.items() if node not in names for p in pods
                   if not (p.get("spec") or {}).get("nodeName")]
        await self.sync_nodes(key, ds, delete, create, hash_)
        return requeue

    def surplus(self, ds: Obj, running: list[Obj], hash_: str, surge: bool) -> list[Obj]:
        """Extra pods on a node: all but the oldest; with surge an updated pod may wait beside a ready old one."""
        if len(running) <= 1:
            return []
        if not surge:
            return running[1:]
        new = [p for p in running if labels_of(p).get(REVISION_HASH_LABEL) == hash_]
        old = [p for p in running if labels_of(p).get(REVISION_HASH_LABEL) != hash_]
        doomed = new[1:] + old[1:]
        if new and old and (not is_ready(old[0]) or
                            is_available(new[0], ds["spec"].get("minReadySeconds") or 0, utcnow())):
            doomed.append(old[0])
        return doomed

    def backoff(self, key: str) -> float:
        """Seconds to wait before replacing a failed pod again on this node (0: go ahead, and back off more)."""
        delay, since = self.failed_backoff.get(key, (0.0, 0.0))
        now = time.monotonic()
        if delay and now - since < delay:
            return delay - (now - since)
        initial, most = FAILED_POD_BACKOFF
        self.failed_backoff[key] = (min(delay * 2, most) if delay and now - since < 2 * most else initial, now)
        return 0.0

    async def sync_nodes(self, key: str, ds: Obj, delete: list[Obj], create: list[str], hash_: str) -> None:
        """Create pods pinned to nodes (slow start) and delete pods, with expectations; raise the first error."""
        create, delete = create[:BURST_REPLICAS], delete[:BURST_REPLICAS]
        self.expectations.expect(key, creations=len(create), deletions=[key_of(p) for p in delete])
        template = copy.deepcopy(ds["spec"]["template"])
        template.setdefault("metadata", {}).setdefault("labels", {})[REVISION_HASH_LABEL] = hash_
        template["spec"]["tolerations"] = daemon_tolerations(template["spec"])

        async def make(i: int) -> None:
            """Create the pod for one node."""
            pod = pod_from_template(template, ds, generateName=f"{ds['metadata']['name']}-")
            pod["spec"]["affinity"] = pin_to_node(pod["spec"].get("affinity"), create[i])
            await self.create_pod(ds, pod)

        async def remove(pod: Obj) -> Exception | None:
            """Delete one pod; a failure is returned and no longer expected."""
            try:
                if not await self.delete_pod(ds, pod):
                    self.expectations.deletion_observed(key, key_of(pod))
            except Exception as exc:
                self.expectations.deletion_observed(key, key_of(pod))
                return exc
            return None

        successes, error = await slow_start_batch(len(create), make)
        self.expectations.lower(key, creations=len(create) - successes)
        errors = [e for e in await asyncio.gather(*(remove(p) for p in delete)) if e is not None]
        if error or errors:
            raise error or errors[0]

    async def rolling_update(self, key: str, ds: Obj, nodes: list[Obj], by_node: dict[str, list[Obj]],
                             hash_: str) -> None:
        """Replace outdated pods: delete them within maxUnavailable, or with maxSurge start new ones beside them."""
        if (ds["spec"].get("updateStrategy") or {}).get("type", "RollingUpdate") != "RollingUpdate":
            return
        runs = {n["metadata"]["name"]: should_run(n, ds)[0] for n in nodes}
        desired = [name for name, run in runs.items() if run]
        per_node = {**dict.fromkeys(desired, []), **by_node}
        surge, unavailable = rolling_counts(ds, len(desired))
        min_ready, now = ds["spec"].get("minReadySeconds") or 0, utcnow()
        delete: list[Obj] = []
        create: list[str] = []
        if not surge:
            counted, candidates = 0, []
            for pods in per_node.values():
                new, old, ok = find_updated(pods, hash_)
                if not ok or (new is None) == (old is None):
                    counted += 1
                elif new is not None:
                    counted += not is_available(new, min_ready, now)
                elif not is_available(old, min_ready, now):
                    delete.append(old)
                    counted += 1
                elif counted < unavailable:
                    candidates.append(old)
            delete += candidates[:max(unavailable - counted, 0)]
        else:
            counted, healthy, candidates, unwanted = 0, 0, [], []
            for name, pods in per_node.items():
                new, old, ok = find_updated(pods, hash_)
                if not ok:
                    counted += 1
                    continue
                healthy += is_available(old or new, min_ready, now) if old or new else 0
                if old is None:
                    continue
                if new is None:
                    if not is_available(old, min_ready, now) and runs.get(name):
                        create.append(name)
                    elif not is_available(old, min_ready, now):
                        delete.append(old)
                    elif not runs.get(name):
                        unwanted.append(old)
                    elif counted < surge:
                        candidates.append(name)
                elif not is_available(new, min_ready, now):
                    counted += 1
                else:
                    delete.append(old)
            create += candidates[:max(surge - counted, 0)]
            delete += unwanted[:max(healthy - len(desired), 0)]
        if delete or create:
            await self.sync_nodes(key, ds, delete, create, hash_)

    async def cleanup_history(self, ds: Obj, old: list[Obj], by_node: dict[str, list[Obj]]) -> None:
        """Delete the oldest revisions beyond revisionHistoryLimit that no pod runs."""
        excess = len(old) - ds["spec"].get("revisionHistoryLimit", 10)
        live = {labels_of(p).get(REVISION_HASH_LABEL) for pods in by_node.values() for p in pods}
        for revision in sorted(old, key=lambda r: r.get("revision", 0)):
            if excess <= 0:
                break
            if labels_of(revision).get(REVISION_HASH_LABEL) in live:
                continue
            await self.client.delete(CONTROLLERREVISIONS, revision["metadata"]["name"], ds["metadata"]["namespace"])
            excess -= 1

    async def update_status(self, ds: Obj, nodes: list[Obj], by_node: dict[str, list[Obj]], hash_: str,
                            observed: bool) -> Requeue | None:
        """desired/current/misscheduled/ready/available/updated counts over the nodes."""
        min_ready, now = ds["spec"].get("minReadySeconds") or 0, utcnow()
        counts = dict.fromkeys(("desiredNumberScheduled", "currentNumberScheduled", "numberMisscheduled",
                                "numberReady", "numberAvailable", "updatedNumberScheduled"), 0)
        for node in nodes:
            pods = oldest_first(by_node.get(node["metadata"]["name"], []))
            if not should_run(node, ds)[0]:
                counts["numberMisscheduled"] += bool(pods)
                continue
            counts["desiredNumberScheduled"] += 1
            if pods:
                counts["currentNumberScheduled"] += 1
                counts["numberReady"] += is_ready(pods[0])
                counts["numberAvailable"] += is_available(pods[0], min_ready, now)
                counts["updatedNumberScheduled"] += labels_of(pods[0]).get(REVISION_HASH_LABEL) == hash_
        status = {**(ds.get("status") or {}), **counts,
                  "numberUnavailable": counts["desiredNumberScheduled"] - counts["numberAvailable"]}
        if observed:
            status["observedGeneration"] = ds["metadata"].get("generation", 0)
        await self.write_status(DAEMONSETS, ds, status)
        if min_ready and counts["numberReady"] != counts["numberAvailable"]:
            return Requeue(after=min_ready)
        return None

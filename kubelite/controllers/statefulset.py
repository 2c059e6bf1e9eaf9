"""StatefulSets: pods with stable names, hostnames and claims, handled in ordinal order (upstream statefulset)."""

from __future__ import annotations

import copy
import re
from collections.abc import Awaitable, Callable

from kubelite.client.controller import Requeue
from kubelite.client.errors import ApiError, is_already_exists
from kubelite.client.resources import CONTROLLERREVISIONS, PERSISTENTVOLUMECLAIMS, PODS, STATEFULSETS
from kubelite.client.store import NAMESPACE_INDEX
from kubelite.controllers.podcontrol import (
    REVISION_HASH_LABEL,
    Obj,
    WorkloadController,
    describe,
    is_available,
    is_ready,
    is_terminal,
    labels_of,
    phase,
    pod_from_template,
    revision_data,
    revision_template,
    semantic_equal,
    slow_start_batch,
    utcnow,
)

POD_NAME_LABEL = "statefulset.kubernetes.io/pod-name"
POD_INDEX_LABEL = "apps.kubernetes.io/pod-index"
_ORDINAL = re.compile(r"^(.*)-([0-9]+)$")


def parent_and_ordinal(pod: Obj) -> tuple[str, int]:
    """The set name and ordinal a pod name encodes ("", -1 when it does not)."""
    match = _ORDINAL.match(pod["metadata"]["name"])
    return (match[1], int(match[2])) if match else ("", -1)


def running_and_ready(pod: Obj) -> bool:
    """Running with a Ready condition."""
    return phase(pod) == "Running" and is_ready(pod)


def running_and_available(pod: Obj, min_ready_seconds: int) -> bool:
    """Running and ready for minReadySeconds."""
    return phase(pod) == "Running" and is_available(pod, min_ready_seconds, utcnow())


def terminating(pod: Obj) -> bool:
    """Marked for deletion."""
    return bool(pod["metadata"].get("deletionTimestamp"))


def healthy(pod: Obj) -> bool:
    """Running, ready and not being deleted."""
    return running_and_ready(pod) and not terminating(pod)


def created(pod: Obj) -> bool:
    """The pod exists on the server (not one this sync means to create)."""
    return bool(pod["metadata"].get("uid"))


def claim_name(claim: Obj, sts: Obj, ordinal: int) -> str:
    """<claim template>-<set>-<ordinal>."""
    return f"{claim['metadata']['name']}-{sts['metadata']['name']}-{ordinal}"


class StatefulSetController(WorkloadController):
    """Keeps pods <set>-<ordinal> (and their claims) at the update revision, in order unless Parallel."""

    name = "statefulset"
    component = "statefulset-controller"
    kind = "StatefulSet"

    def setup(self) -> None:
        """Watch sets and pods; cache revisions and claims."""
        super().setup()
        self.sets = self.watch(STATEFULSETS)
        self.pods = self.watch_pods(self.sets)
        self.revisions = self.informer(CONTROLLERREVISIONS)
        self.claims = self.informer(PERSISTENTVOLUMECLAIMS)

    def pod_event(self, owner: Obj, verb: str, pod: Obj, error: Exception | None) -> None:
        """StatefulPodControl's wording: "create Pod web-0 in StatefulSet web successful"."""
        what = f"{verb} Pod {pod['metadata']['name']} in StatefulSet {owner['metadata']['name']}"
        if error is None:
            self.recorder.event(owner, "Normal", f"Successful{verb.title()}", f"{what} successful")
        else:
            self.recorder.event(owner, "Warning", f"Failed{verb.title()}", f"{what} failed error: {describe(error)}")

    async def reconcile(self, key: str) -> Requeue | None:
        """Claim pods and revisions, bring pods to the update revision, write status, trim history."""
        cached = self.sets.store.get(key)
        if cached is None:
            return None
        sts = copy.deepcopy(cached)
        name, namespace = sts["metadata"]["name"], sts["metadata"]["namespace"]
        selector = self.selector(sts)
        pods = await self.claim(PODS, sts, self.pods.store.by_index(NAMESPACE_INDEX, namespace),
                                lambda p: selector.matches(labels_of(p)) and parent_and_ordinal(p)[0] == name)
        revisions = await self.owned_revisions(sts, self.revisions)
        current, update, collisions = await self.revisions_of(sts, revisions)
        status = self.status_of(sts, pods, current, update, collisions)
        try:
            await self.update_pods(sts, pods, current, update, status)
        finally:
            rolling = (sts["spec"].get("updateStrategy") or {}).get("type", "RollingUpdate") == "RollingUpdate"
            if rolling and status["updatedReplicas"] == status["replicas"] == status["readyReplicas"]:
                status.update(currentReplicas=status["updatedReplicas"], currentRevision=status["updateRevision"])
            await self.write_status(STATEFULSETS, cached, status)
        await self.truncate_history(sts, pods, revisions, current, update)
        min_ready = sts["spec"].get("minReadySeconds") or 0
        if min_ready and status["availableReplicas"] != sts["spec"].get("replicas", 1):
            return Requeue(after=min_ready)
        return None

    async def revisions_of(self, sts: Obj, revisions: list[Obj]) -> tuple[Obj, Obj, int]:
        """The current and update ControllerRevisions (the update one made, or an equal old one renumbered)."""
        collisions = (sts.get("status") or {}).get("collisionCount", 0)
        template = sts["spec"]["template"]
        next_number = revisions[-1].get("revision", 0) + 1 if revisions else 1
        equal = [r for r in revisions if semantic_equal(r.get("data"), revision_data(template))]
        if equal and equal[-1] is revisions[-1]:
            update = revisions[-1]
        elif equal:
            update = await self.client.update(CONTROLLERREVISIONS, {**equal[-1], "revision": next_number})
        else:
            while (made := await self.create_revision(sts, template, next_number, collisions)) is None:
                collisions += 1
            update = made
        current_name = (sts.get("status") or {}).get("currentRevision")
        current = next((r for r in revisions if r["metadata"]["name"] == current_name), update)
        return current, update, collisions

    def status_of(self, sts: Obj, pods: list[Obj], current: Obj, update: Obj, collisions: int) -> Obj:
        """Replica counts of the claimed pods by readiness and revision."""
        min_ready = sts["spec"].get("minReadySeconds") or 0
        live = [p for p in pods if not terminating(p)]
        status = copy.deepcopy(sts.get("status") or {})
        status.update(
            observedGeneration=sts["metadata"].get("generation", 0), replicas=len(pods),
            readyReplicas=sum(running_and_ready(p) for p in pods),
            availableReplicas=sum(running_and_available(p, min_ready) for p in pods),
            currentReplicas=sum(labels_of(p).get(REVISION_HASH_LABEL) == current["metadata"]["name"] for p in live),
            updatedReplicas=sum(labels_of(p).get(REVISION_HASH_LABEL) == update["metadata"]["name"] for p in live),
            currentRevision=current["metadata"]["name"], updateRevision=update["metadata"]["name"],
            collisionCount=collisions)
        return status

    async def update_pods(self, sts: Obj, pods: list[Obj], current: Obj, update: Obj, status: Obj) -> None:
        """updateStatefulSet: create missing ordinals, delete condemned ones, then roll the highest outdated one."""
        spec = sts["spec"]
        start = (spec.get("ordinals") or {}).get("start", 0)
        slots: list[Obj | None] = [None] * spec.get("replicas", 1)
        condemned = []
        for pod in pods:
            ordinal = parent_and_ordinal(pod)[1]
            if start <= ordinal < start + len(slots):
                slots[ordinal - start] = pod
            elif ordinal >= 0:
                condemned.append(pod)
        replicas = [pod or self.new_pod(sts, current, update, start + i) for i, pod in enumerate(slots)]
        condemned.sort(key=lambda p: parent_and_ordinal(p)[1], reverse=True)
        first_unhealthy = next((p for p in [*replicas, *reversed(condemned)] if not healthy(p)), None)
        if sts["metadata"].get("deletionTimestamp"):
            return
        ordered = spec.get("podManagementPolicy", "OrderedReady") != "Parallel"
        min_ready = spec.get("minReadySeconds") or 0

        async def replica(i: int) -> bool:
            """processReplica: True to stop here (ordered mode waits for this pod)."""
            pod = replicas[i]
            if is_terminal(pod):
                if not terminating(pod):
                    await self.delete_pod(sts, pod)
                return True
            if not created(pod):
                await self.create_claims(sts, pod, start)
                await self.create_pod(sts, pod)
                return ordered
            if phase(pod) == "Pending":
                await self.create_claims(sts, pod, start)
            if ordered and (terminating(pod) or not running_and_available(pod, min_ready)):
                return True
            await self.fix_identity(sts, pod)
            await self.fix_claims(sts, pod, start)
            return False

        async def condemn(i: int) -> bool:
            """processCondemned: delete from the highest ordinal, waiting for predecessors in ordered mode."""
            pod = condemned[i]
            await self.fix_claims(sts, pod, start)
            if terminating(pod):
                return ordered
            if ordered and pod is not first_unhealthy and not running_and_available(pod, min_ready):
                return True
            await self.delete_pod(sts, pod)
            return True

        if await self.run_for_all(len(replicas), replica, ordered) or \
                await self.run_for_all(len(condemned), condemn, ordered):
            return
        update_strategy = spec.get("updateStrategy") or {}
        if update_strategy.get("type", "RollingUpdate") == "OnDelete":
            return
        partition = (update_strategy.get("rollingUpdate") or {}).get("partition", 0)
        for pod in reversed(replicas[partition:]):
            if labels_of(pod).get(REVISION_HASH_LABEL) != update["metadata"]["name"] and not terminating(pod):
                await self.delete_pod(sts, pod)
                status["currentReplicas"] -= 1
                return
            if not healthy(pod):
                return

    @staticmethod
    async def run_for_all(count: int, call: Callable[[int], Awaitable[bool]], ordered: bool) -> bool:
        """One by one, stopping where a call says so (ordered); else all in slow-start batches, raising errors."""
        if ordered:
            for i in range(count):
                if await call(i):
                    return True
            return False
        _, error = await slow_start_batch(count, call)
        if error is not None:
            raise error
        return False

    def new_pod(self, sts: Obj, current: Obj, update: Obj, ordinal: int) -> Obj:
        """The pod of an ordinal at its revision: below the partition the current one, else the update one."""
        spec, name = sts["spec"], f"{sts['metadata']['name']}-{ordinal}"
        strategy = spec.get("updateStrategy") or {}
        partition = (strategy.get("rollingUpdate") or {}).get("partition", 0)
        start = (spec.get("ordinals") or {}).get("start", 0)
        revision = current if strategy.get("type", "RollingUpdate") == "RollingUpdate" and \
            ordinal < start + partition else update
        pod = pod_from_template(revision_template(revision), sts, name=name)
        pod["metadata"]["labels"] = {**pod["metadata"].get("labels", {}), POD_NAME_LABEL: name,
                                     POD_INDEX_LABEL: str(ordinal), REVISION_HASH_LABEL: revision["metadata"]["name"]}
        pod["spec"]["hostname"] = name
        if spec.get("serviceName"):
            pod["spec"]["subdomain"] = spec["serviceName"]
        claims = {c["metadata"]["name"]: claim_name(c, sts, ordinal) for c in spec.get("volumeClaimTemplates") or []}
        volumes = [{"name": volume, "persistentVolumeClaim": {"claimName": claim}} for volume, claim in claims.items()]
        volumes += [v for v in pod["spec"].get("volumes") or [] if v.get("name") not in claims]
        if volumes:
            pod["spec"]["volumes"] = volumes
        return pod

    async def fix_identity(self, sts: Obj, pod: Obj) -> None:
        """Put back the pod-name and pod-index labels if someone removed them."""
        ordinal = parent_and_ordinal(pod)[1]
        wanted = {POD_NAME_LABEL: pod["metadata"]["name"], POD_INDEX_LABEL: str(ordinal)}
        if any(labels_of(pod).get(k) != v for k, v in wanted.items()):
            await self.client.patch(PODS, pod["metadata"]["name"], {"metadata": {"labels": wanted}},
                                    sts["metadata"]["namespace"])

    def claim_refs(self, sts: Obj, pod: Obj, claim: Obj, start: int) -> list[Obj]:
        """The claim's owner references under persistentVolumeClaimRetentionPolicy (the set's or the pod's)."""
        policy = sts["spec"].get("persistentVolumeClaimRetentionPolicy") or {}
        scaled_down = not start <= parent_and_ordinal(pod)[1] < start + sts["spec"].get("replicas", 1)
        by_pod = policy.get("whenScaled") == "Delete" and scaled_down
        by_set = policy.get("whenDeleted") == "Delete" and not by_pod
        ours = {sts["metadata"]["uid"], pod["metadata"].get("uid")}
        refs = [r for r in claim["metadata"].get("ownerReferences") or [] if r.get("uid") not in ours]
        if by_set:
            refs.append({"apiVersion": "apps/v1", "kind": "StatefulSet", "name": sts["metadata"]["name"],
                         "uid": sts["metadata"]["uid"]})
        if by_pod and created(pod):
            refs.append({"apiVersion": "v1", "kind": "Pod", "name": pod["metadata"]["name"],
                         "uid": pod["metadata"]["uid"]})
        return refs

    async def create_claims(self, sts: Obj, pod: Obj, start: int) -> None:
        """Create the pod's missing PersistentVolumeClaims from volumeClaimTemplates."""
        namespace, ordinal = sts["metadata"]["namespace"], parent_and_ordinal(pod)[1]
        match_labels = (sts["spec"].get("selector") or {}).get("matchLabels") or {}
        for template in sts["spec"].get("volumeClaimTemplates") or []:
            name = claim_name(template, sts, ordinal)
            if self.claims.store.get_by_name(namespace, name) is not None:
                continue
            meta = template.get("metadata") or {}
            claim = {"apiVersion": "v1", "kind": "PersistentVolumeClaim",
                     "metadata": {"name": name, "namespace": namespace, "labels": {**meta.get("labels", {}),
                                                                                   **match_labels}},
                     "spec": copy.deepcopy(template.get("spec") or {})}
            if meta.get("annotations"):
                claim["metadata"]["annotations"] = dict(meta["annotations"])
            if refs := self.claim_refs(sts, pod, claim, start):
                claim["metadata"]["ownerReferences"] = refs
            what = f"Claim {name} Pod {pod['metadata']['name']} in StatefulSet {sts['metadata']['name']}"
            try:
                await self.client.create(PERSISTENTVOLUMECLAIMS, claim)
            except ApiError as exc:
                if is_already_exists(exc):
                    continue
                self.recorder.event(sts, "Warning", "FailedCreate", f"create {what} failed error: {describe(exc)}")
                raise
            self.recorder.event(sts, "Normal", "SuccessfulCreate", f"create {what} success")

    async def fix_claims(self, sts: Obj, pod: Obj, start: int) -> None:
        """Make existing claims' owner references follow the retention policy."""
        for template in sts["spec"].get("volumeClaimTemplates") or []:
            claim = self.claims.store.get_by_name(sts["metadata"]["namespace"],
                                                  claim_name(template, sts, parent_and_ordinal(pod)[1]))
            if claim is None:
                continue
            refs = self.claim_refs(sts, pod, claim, start)
            if refs != (claim["metadata"].get("ownerReferences") or []):
                await self.client.update(PERSISTENTVOLUMECLAIMS,
                                         {**claim, "metadata": {**claim["metadata"], "ownerReferences": refs}})

    async def truncate_history(self, sts: Obj, pods: list[Obj], revisions: list[Obj], current: Obj,
                               update: Obj) -> None:
        """Delete the oldest revisions no pod uses beyond revisionHistoryLimit."""
        live = {current["metadata"]["name"], update["metadata"]["name"]}
        live.update(labels_of(p).get(REVISION_HASH_LABEL, "") for p in pods)
        history = [r for r in revisions if r["metadata"]["name"] not in live]
        for revision in history[:max(len(history) - sts["spec"].get("revisionHistoryLimit", 10), 0)]:
            await self.client.delete(CONTROLLERREVISIONS, revision["metadata"]["name"], sts["metadata"]["namespace"])

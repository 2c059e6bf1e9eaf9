"""VolumeBinding: a pod's PersistentVolumeClaims must be bound to volumes its node reaches, or (WaitForFirstConsumer)
bindable there; PreBind tells the PV controller the chosen node and waits until the claims are bound."""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from kubelite.client.errors import CONNECTION_ERRORS, ApiError
from kubelite.client.resources import PERSISTENTVOLUMECLAIMS, PERSISTENTVOLUMES, STORAGECLASSES
from kubelite.scheduler.framework import (
    NODE,
    SKIP,
    ActionType,
    ClusterEvent,
    CycleState,
    EventRegistration,
    FilterPlugin,
    Handle,
    PreBindPlugin,
    PreFilterPlugin,
    Status,
    error,
    unresolvable,
)
from kubelite.scheduler.nodeinfo import NodeInfo
from kubelite.scheduler.podinfo import PodInfo
from kubelite.scheduler.volumes import (
    NO_PROVISIONER,
    SELECTED_NODE,
    available,
    best_volume,
    claim_class,
    fits,
    node_matches,
    pod_claims,
    requested_bytes,
    waits_for_consumer,
)

Obj = dict[str, Any]
CLAIMS, VOLUMES, CLASSES = "persistentvolumeclaims", "persistentvolumes", "storageclasses"
"""The listers (informer stores) the plugin reads."""
ERR_REASON_UNBOUND_IMMEDIATE = "pod has unbound immediate PersistentVolumeClaims"
ERR_REASON_NODE_CONFLICT = "node(s) had volume node affinity conflict"
ERR_REASON_BIND_CONFLICT = "node(s) didn't find available persistent volumes to bind"
ERR_REASON_PV_NOT_EXIST = "node(s) unavailable due to one or more pvc(s) bound to non-existent pv(s)"
STATE_KEY = "PreFilterVolumeBinding"
DEFAULT_BIND_TIMEOUT = 600.0
POLL_INTERVAL = 0.1
"""How often PreBind looks at the claims' informer copies while waiting for them to be bound."""




def is_bound(claim: Obj) -> bool:
    """Whether the PV controller has finished binding the claim (it names its volume and is phase Bound)."""
    return bool((claim.get("spec") or {}).get("volumeName")) and (claim.get("status") or {}).get("phase") == "Bound"


def controlled_by(claim: Obj, pod: PodInfo) -> bool:
    """metav1.IsControlledBy: the claim's controller owner reference is the pod."""
    return any(ref.get("controller") and ref.get("uid") == pod.uid
               for ref in claim["metadata"].get("ownerReferences") or [])


def topology_allows(storage_class: Obj, labels: Mapping[str, str]) -> bool:
    """MatchTopologySelectorTerms over the class's allowedTopologies: none allow any node; terms are ORed, a term's
    expressions ANDed, and an empty term matches nothing."""
    terms = storage_class.get("allowedTopologies") or []
    return not terms or any(
        term.get("matchLabelExpressions")
        and all(labels.get(e.get("key") or "") in (e.get("values") or []) for e in term["matchLabelExpressions"])
        for term in terms)


def provisions(storage_class: Obj) -> bool:
    """Whether the class has a provisioner that creates volumes (rather than only ever static ones)."""
    return (storage_class.get("provisioner") or NO_PROVISIONER) != NO_PROVISIONER


def can_provision(storage_class: Obj, labels: Mapping[str, str]) -> bool:
    """Whether the class's provisioner can create a volume for a node with these labels (checkVolumeProvisions)."""
    return provisions(storage_class) and topology_allows(storage_class, labels)


@dataclass
class ClaimToBind:
    """A WaitForFirstConsumer claim still unbound, its class, and the volumes that could serve it on some node."""

    claim: Obj
    storage_class: Obj
    candidates: list[Obj]


@dataclass
class VolumeState:
    """PreFilter's findings: the volumes of bound claims (None for one that does not exist) and claims to bind,
    smallest request first."""

    bound: list[Obj | None]
    to_bind: list[ClaimToBind]


class BindingFailed(Exception):
    """A claim PreBind waits for will not be bound usably on the chosen node."""


class VolumeBinding(PreFilterPlugin, FilterPlugin, PreBindPlugin):
    """Filter nodes by the pod's claims (bound volumes' node affinity; a fitting free volume or a provisioner for
    WaitForFirstConsumer claims); PreBind annotates those claims with the node and waits for the PV controller."""

    name = "VolumeBinding"

    def __init__(self, args: Obj, handle: Handle):
        super().__init__(args, handle)
        self.bind_timeout = float(args.get("bindTimeoutSeconds", DEFAULT_BIND_TIMEOUT))

    def pre_filter(self, state: CycleState, pod: PodInfo,
                   nodes: list[NodeInfo]) -> tuple[set[str] | None, Status | None]:
        claims = pod_claims(pod.pod)
        if not claims:
            return None, SKIP
        listers = self.handle.listers
        bound: list[Obj | None] = []
        waiting: list[tuple[Obj, Obj]] = []
        immediate = False
        for name, ephemeral in claims:
            claim = listers.get(CLAIMS, pod.namespace, name)
            if claim is None:
                if ephemeral:
                    return None, unresolvable(
                        f'waiting for ephemeral volume controller to create the persistentvolumeclaim "{name}"')
                return None, unresolvable(f'persistentvolumeclaim "{name}" not found')
            spec, status = claim.get("spec") or {}, claim.get("status") or {}
            if status.get("phase") == "Lost":
                return None, unresolvable(f'persistentvolumeclaim "{name}" bound to non-existent persistentvolume '
                                          f'"{spec.get("volumeName") or ""}"')
            if claim["metadata"].get("deletionTimestamp"):
                return None, unresolvable(f'persistentvolumeclaim "{name}" is being deleted')
            if ephemeral and not controlled_by(claim, pod):
                return None, unresolvable(f"PVC {pod.namespace}/{name} was not created for pod "
                                          f"{pod.namespace}/{pod.name} (pod is not owner)")
            if is_bound(claim):
                bound.append(listers.get(VOLUMES, None, spec["volumeName"]))
                continue
            class_name = claim_class(claim)
            storage_class = listers.get(CLASSES, None, class_name) if class_name else None
            if storage_class is not None and waits_for_consumer(storage_class) and not spec.get("volumeName"):
                waiting.append((claim, storage_class))
            else:
                immediate = True  # the PV controller binds it on its own (or is finishing a pre-bound one)
        if immediate:
            return None, unresolvable(ERR_REASON_UNBOUND_IMMEDIATE)
        volumes = listers.list(VOLUMES) if waiting else []
        to_bind = [ClaimToBind(claim, storage_class, [v for v in volumes if available(v, claim) and fits(v, claim)])
                   for claim, storage_class in sorted(waiting, key=lambda w: requested_bytes(w[0]))]
        state.data[STATE_KEY] = VolumeState(bound, to_bind)
        return None, None

    def filter(self, state: CycleState, pod: PodInfo, node: NodeInfo) -> Status | None:
        data: VolumeState = state.data[STATE_KEY]
        reasons = []
        if None in data.bound:
            reasons.append(ERR_REASON_PV_NOT_EXIST)
        elif not all(node_matches(v, node.labels, node.name) for v in data.bound if v is not None):
            reasons.append(ERR_REASON_NODE_CONFLICT)
        if data.to_bind and not self._bindable(data.to_bind, node):
            reasons.append(ERR_REASON_BIND_CONFLICT)
        return unresolvable(*reasons) if reasons else None

    @staticmethod
    def _bindable(to_bind: list[ClaimToBind], node: NodeInfo) -> bool:
        """Whether every claim gets its own free fitting volume the node reaches, or can be provisioned there.
        A claim already given another node by a class that provisions stays there: a volume may be in the making."""
        chosen: set[str] = set()
        for item in to_bind:
            selected = (item.claim["metadata"].get("annotations") or {}).get(SELECTED_NODE)
            if selected and selected != node.name and provisions(item.storage_class):
                return False
            volume = best_volume(item.claim, [v for v in item.candidates if v["metadata"]["name"] not in chosen],
                                 (node.labels, node.name))
            if volume is not None:
                chosen.add(volume["metadata"]["name"])
            elif not can_provision(item.storage_class, node.labels):
                return False
        return True

    async def pre_bind(self, state: CycleState, pod: PodInfo, node_name: str) -> Status | None:
        data: VolumeState | None = state.data.get(STATE_KEY)
        if data is None or not data.to_bind:
            return None
        client = self.handle.client
        if client is None:
            return error("no API client to bind volumes with")
        claims = [item.claim for item in data.to_bind]
        try:
            for claim in claims:
                meta = claim["metadata"]
                current = self.handle.listers.get(CLAIMS, meta.get("namespace"), meta["name"]) or claim
                if (current["metadata"].get("annotations") or {}).get(SELECTED_NODE) != node_name:
                    await client.patch(PERSISTENTVOLUMECLAIMS, meta["name"],
                                       {"metadata": {"annotations": {SELECTED_NODE: node_name}}}, meta.get("namespace"))
        except (ApiError, *CONNECTION_ERRORS) as exc:
            return error(f"binding volumes: {exc}")
        annotated: set[str] = set()
        try:
            async with asyncio.timeout(self.bind_timeout):
                # Every claim is checked each round (a list, not a short-circuit) so any failure shows at once.
                while not all([self._bound(claim, node_name, annotated) for claim in claims]):  # noqa: ASYNC110
                    await asyncio.sleep(POLL_INTERVAL)  # informer stores signal no event to wait on
        except BindingFailed as exc:
            return error(f"binding volumes: {exc}")
        except TimeoutError:
            names = ", ".join(f'"{c["metadata"]["name"]}"' for c in claims)
            return error(f"binding volumes: timed out after {self.bind_timeout:g}s waiting for "
                         f"persistentvolumeclaim(s) {names} to be bound")
        return None

    def _bound(self, claim: Obj, node_name: str, annotated: set[str]) -> bool:
        """Whether the informer's copy of the claim is bound to a volume the node reaches (checkBindings); raises
        BindingFailed when the claim is gone, its volume is elsewhere, or the controller reset its node."""
        name = claim["metadata"]["name"]
        current = self.handle.listers.get(CLAIMS, claim["metadata"].get("namespace"), name)
        if current is None or current["metadata"].get("deletionTimestamp"):
            raise BindingFailed(f'persistentvolumeclaim "{name}" was deleted')
        if not is_bound(current):
            if (current["metadata"].get("annotations") or {}).get(SELECTED_NODE) == node_name:
                annotated.add(name)
            elif name in annotated:
                raise BindingFailed(f'selectedNode annotation reset for PVC "{name}"')
            return False
        volume = self.handle.listers.get(VOLUMES, None, current["spec"]["volumeName"])
        if volume is None:
            return False  # the volume's informer has not caught up yet
        node = self.handle.snapshot.get(node_name)
        if node is not None and not node_matches(volume, node.labels, node_name):
            raise BindingFailed(f'pv "{volume["metadata"]["name"]}" node affinity doesn\'t match node "{node_name}"')
        return True

    def events_to_register(self) -> list[EventRegistration]:
        def uses_claim(pod: PodInfo, old: Obj | None, new: Obj | None) -> bool:
            meta = (new or old or {}).get("metadata") or {}
            return meta.get("namespace") == pod.namespace and any(
                name == meta.get("name") for name, _ in pod_claims(pod.pod))
        return [(ClusterEvent(STORAGECLASSES.kind, ActionType.ADD | ActionType.UPDATE), None),
                (ClusterEvent(PERSISTENTVOLUMECLAIMS.kind, ActionType.ADD | ActionType.UPDATE), uses_claim),
                (ClusterEvent(PERSISTENTVOLUMES.kind, ActionType.ADD | ActionType.UPDATE), None),
                (ClusterEvent(NODE, ActionType.ADD | ActionType.UPDATE_NODE_LABEL | ActionType.UPDATE_NODE_TAINT),
                 None)]

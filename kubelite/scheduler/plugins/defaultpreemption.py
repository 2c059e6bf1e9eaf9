"""DefaultPreemption: find nodes where evicting lower-priority pods makes room, nominate the best, evict victims."""

from __future__ import annotations

import logging
import random
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from kubelite.client.errors import CONNECTION_ERRORS, ApiError, is_not_found
from kubelite.client.resources import PODS
from kubelite.client.timestamps import now_time
from kubelite.scheduler.framework import (
    Code,
    CycleState,
    Diagnosis,
    Handle,
    NodeToStatus,
    PostFilterPlugin,
    Status,
    error,
    fit_error_message,
    unresolvable,
    unschedulable,
)
from kubelite.scheduler.helpers import label_selector
from kubelite.scheduler.nodeinfo import NodeInfo
from kubelite.scheduler.podinfo import PodInfo

log = logging.getLogger(__name__)

Obj = dict[str, Any]
NOT_HELPFUL = "Preemption is not helpful for scheduling"
NO_VICTIMS = "No preemption victims found for incoming pod"
NOT_STARTED = "9999-12-31T23:59:59Z"
"""Start time of a pod that has none yet: it counts as starting now, i.e. after every started pod."""
_INT32_SHIFT = 2**31


@dataclass
class Candidate:
    """A node where preemption helps: the victims (most important first) and how many violate a PDB."""

    name: str
    victims: list[PodInfo]
    pdb_violations: int


def _start(pod: PodInfo) -> str:
    return pod.start_time or NOT_STARTED


def _importance(pod: PodInfo) -> tuple[int, str]:
    """MoreImportantPod as a sort key: higher priority first, then the earlier started."""
    return -pod.priority, _start(pod)


def terminating_by_preemption(pod: PodInfo) -> bool:
    """Deleting, with a DisruptionTarget condition set by a scheduler's preemption."""
    if not pod.deleting:
        return False
    return any(c.get("type") == "DisruptionTarget" and c.get("reason") == "PreemptionByScheduler"
               for c in (pod.pod.get("status") or {}).get("conditions") or [])


def pick_one_node(candidates: list[Candidate]) -> Candidate | None:
    """pickOneNodeForPreemption: the candidate that wins the first rule that separates them."""
    # Fewest PDB violations, lowest top victim priority, lowest priority sum, fewest victims, latest start of
    # the top-priority victims, then the first.
    if not candidates:
        return None

    def earliest_top_start(c: Candidate) -> str:
        top = max(v.priority for v in c.victims)
        return min(_start(v) for v in c.victims if v.priority == top)

    rules: list[Callable[[Candidate], Any]] = [
        lambda c: -c.pdb_violations,
        lambda c: -c.victims[0].priority,
        lambda c: -sum(v.priority + _INT32_SHIFT for v in c.victims),
        lambda c: -len(c.victims),
        earliest_top_start,
    ]
    remaining = candidates
    for rule in rules:
        scores = [rule(c) for c in remaining]
        best = max(scores)
        remaining = [c for c, s in zip(remaining, scores, strict=True) if s == best]
        if len(remaining) == 1:
            break
    return remaining[0]


def split_by_pdb(pods: list[PodInfo], pdbs: list[Obj]) -> tuple[list[PodInfo], list[PodInfo]]:
    """filterPodsWithPDBViolation: (pods whose eviction would exceed a PDB's disruptionsAllowed, the others)."""
    allowed = [int((pdb.get("status") or {}).get("disruptionsAllowed") or 0) for pdb in pdbs]
    selectors = [label_selector((pdb.get("spec") or {}).get("selector")) for pdb in pdbs]
    violating, fine = [], []
    for pod in pods:
        violated = False
        if pod.labels:
            for i, pdb in enumerate(pdbs):
                if pdb["metadata"].get("namespace") != pod.namespace:
                    continue
                if selectors[i].empty or not selectors[i].matches(pod.labels):
                    continue
                if pod.name in ((pdb.get("status") or {}).get("disruptedPods") or {}):
                    continue
                allowed[i] -= 1
                if allowed[i] < 0:
                    violated = True
        (violating if violated else fine).append(pod)
    return violating, fine


class DefaultPreemption(PostFilterPlugin):
    """PostFilter: dry-run evicting lower-priority pods node by node, pick the best candidate, evict its victims."""

    name = "DefaultPreemption"

    def __init__(self, args: Obj, handle: Handle):
        super().__init__(args, handle)
        self.min_candidate_nodes_percentage = int(args.get("minCandidateNodesPercentage", 10))
        self.min_candidate_nodes_absolute = int(args.get("minCandidateNodesAbsolute", 100))
        if not 0 <= self.min_candidate_nodes_percentage <= 100 or self.min_candidate_nodes_absolute < 0:
            raise ValueError("DefaultPreemption: candidate node limits out of range")

    def post_filter(self, state: CycleState, pod: PodInfo,
                    statuses: NodeToStatus) -> tuple[str | None, Status | None]:
        nominated, status = self.preempt(state, pod, statuses)
        if status is not None and status.message:
            status = Status(status.code, f"preemption: {status.message}")
        return nominated, status

    def preempt(self, state: CycleState, pod: PodInfo, statuses: NodeToStatus) -> tuple[str | None, Status | None]:
        """Evaluator.Preempt: eligibility, candidates, the best one, then evict (in the background)."""
        eligible, message = self.eligible(pod, statuses)
        if not eligible:
            return None, unschedulable(message)
        all_nodes = self.handle.snapshot.node_list()
        candidates, node_statuses = self.find_candidates(state, pod, all_nodes, statuses)
        if not candidates:
            node_statuses.absent = unresolvable(NOT_HELPFUL)
            return "", unschedulable(fit_error_message(len(all_nodes), Diagnosis(node_to_status=node_statuses)))
        best = pick_one_node(candidates)
        if best is None:
            return None, unschedulable("no candidate node for preemption")
        self.prepare_candidate(best, pod)
        return best.name, None

    def eligible(self, pod: PodInfo, statuses: NodeToStatus) -> tuple[bool, str]:
        """PodEligibleToPreemptOthers."""
        if (pod.pod.get("spec") or {}).get("preemptionPolicy") == "Never":
            return False, "not eligible due to preemptionPolicy=Never."
        nominated = self.handle.nominator.node_of.get(pod.uid) or pod.nominated_node_name
        if nominated:
            if statuses.get(nominated).code == Code.UNSCHEDULABLE_AND_UNRESOLVABLE:
                return True, ""
            node = self.handle.snapshot.get(nominated)
            if node is not None and any(p.priority < pod.priority and terminating_by_preemption(p)
                                        for p in node.pods.values()):
                return False, "not eligible due to a terminating pod on the nominated node."
        return True, ""

    def num_candidates(self, num_nodes: int) -> int:
        wanted = max(num_nodes * self.min_candidate_nodes_percentage // 100, self.min_candidate_nodes_absolute)
        return min(wanted, num_nodes)

    def find_candidates(self, state: CycleState, pod: PodInfo, all_nodes: list[NodeInfo],
                        statuses: NodeToStatus) -> tuple[list[Candidate], NodeToStatus]:
        """DryRunPreemption over the nodes that failed with a resolvable status, from a random offset."""
        node_statuses = NodeToStatus()
        potential = statuses.nodes_with_code(all_nodes, Code.UNSCHEDULABLE)
        if not potential:
            if pod.nominated_node_name:
                self.handle.background(self._clear_nominations([pod]))
            return [], node_statuses
        pdbs = self.handle.listers.list("poddisruptionbudgets")
        offset = random.randrange(len(potential))
        wanted = self.num_candidates(len(potential))
        non_violating: list[Candidate] = []
        violating: list[Candidate] = []
        for i in range(len(potential)):
            node = potential[(offset + i) % len(potential)]
            victims, violations, status = self.select_victims(state.clone(), pod, node.clone(), pdbs)
            if status is None and victims:
                (violating if violations else non_violating).append(Candidate(node.name, victims, violations))
                if non_violating and len(non_violating) + len(violating) >= wanted:
                    break
                continue
            node_statuses.set(node.name, status or error(f"expected at least one victim pod on node {node.name}"))
        return non_violating + violating, node_statuses

    def select_victims(self, state: CycleState, pod: PodInfo, node: NodeInfo,
                       pdbs: list[Obj]) -> tuple[list[PodInfo], int, Status | None]:
        """SelectVictimsOnNode: remove every lower-priority pod, then reprieve as many as still let the pod fit."""
        framework = self.handle.framework
        assert framework is not None
        potential = [p for p in node.pods.values() if p.priority < pod.priority]
        if not potential:
            return [], 0, unresolvable(NO_VICTIMS)
        for victim in potential:
            node.remove_pod(victim)
            framework.run_pre_filter_remove_pod(state, pod, victim, node)
        status = framework.run_filters_with_nominated(state, pod, node)
        if status is not None:
            return [], 0, status
        potential.sort(key=_importance)
        violating, non_violating = split_by_pdb(potential, pdbs)
        victims: list[PodInfo] = []

        def reprieve(candidate: PodInfo) -> bool:
            node.add_pod(candidate)
            framework.run_pre_filter_add_pod(state, pod, candidate, node)
            if framework.run_filters_with_nominated(state, pod, node) is None:
                return True
            node.remove_pod(candidate)
            framework.run_pre_filter_remove_pod(state, pod, candidate, node)
            victims.append(candidate)
            return False

        violations = sum(1 for victim in violating if not reprieve(victim))
        for victim in non_violating:
            reprieve(victim)
        victims.sort(key=_importance)
        return victims, violations, None

    def prepare_candidate(self, candidate: Candidate, pod: PodInfo) -> None:
        """Reject waiting victims now; delete the others and clear lower nominations in the background."""
        nominator = self.handle.nominator
        lower = [p for p in nominator.pods_on(candidate.name) if p.priority < pod.priority and p.uid != pod.uid]
        for other in lower:
            nominator.delete(other.uid)
        to_delete = []
        for victim in candidate.victims:
            waiting = self.handle.waiting_pods.get(victim.uid)
            if waiting is not None:
                waiting.reject(self.name, "preempted")
            else:
                to_delete.append(victim)
            if self.handle.recorder is not None:
                self.handle.recorder.event(victim.pod, "Normal", "Preempted",
                                           f"Preempted by pod {pod.uid} on node {candidate.name}")
        self.handle.background(self._evict(pod, to_delete))
        if lower:
            self.handle.background(self._clear_nominations(lower))

    async def _evict(self, pod: PodInfo, victims: list[PodInfo]) -> None:
        """Mark each victim with DisruptionTarget (PreemptionByScheduler), then delete it."""
        client = self.handle.client
        if client is None:
            return
        condition = {"type": "DisruptionTarget", "status": "True", "reason": "PreemptionByScheduler",
                     "message": f"{self.handle.scheduler_name}: preempting to accommodate a higher priority pod",
                     "lastTransitionTime": now_time()}
        for victim in victims:
            try:
                await client.patch(PODS, victim.name, {"status": {"conditions": [condition]}}, victim.namespace,
                                   type="strategic", subresource="status")
                await client.delete(PODS, victim.name, victim.namespace)
            except (ApiError, *CONNECTION_ERRORS) as exc:
                if not is_not_found(exc):
                    log.warning("preempting %s for %s failed: %s", victim.key, pod.key, exc)

    async def _clear_nominations(self, pods: list[PodInfo]) -> None:
        """ClearNominatedNodeName: status.nominatedNodeName back to empty."""
        client = self.handle.client
        if client is None:
            return
        for other in pods:
            try:
                await client.patch(PODS, other.name, {"status": {"nominatedNodeName": None}}, other.namespace,
                                   type="merge", subresource="status")
            except (ApiError, *CONNECTION_ERRORS) as exc:
                if not is_not_found(exc):
                    log.warning("clearing the nominated node of %s failed: %s", other.key, exc)

"""Disruption controller: PodDisruptionBudget status, which the eviction API consults (disruptionsAllowed)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from math import ceil
from typing import Any

from kubelite.api.selectors import from_label_selector
from kubelite.client.controller import Controller, Requeue
from kubelite.client.errors import ApiError, is_not_found
from kubelite.client.resources import PODDISRUPTIONBUDGETS, PODS, resource
from kubelite.client.store import NAMESPACE_INDEX, key_of
from kubelite.client.timestamps import now_time
from kubelite.controllers.endpoints import pod_ready

Obj = dict[str, Any]
DELETION_TIMEOUT = timedelta(minutes=2)
"""How long an eviction's entry in status.disruptedPods waits for the pod to be deleted (upstream's)."""
SCALED_KINDS = ("ReplicaSet", "ReplicationController", "StatefulSet", "Deployment")


def scaled(value: int | str, total: int) -> int:
    """An int-or-percent against total, percentages rounded up."""
    if isinstance(value, str) and value.endswith("%"):
        return ceil(int(value[:-1]) * total / 100)
    return int(value)


def _controller_ref(obj: Obj) -> Obj | None:
    """The ownerReference marked controller, if any."""
    return next((r for r in obj["metadata"].get("ownerReferences") or [] if r.get("controller")), None)


class DisruptionController(Controller):
    """Keys are PodDisruptionBudget keys; a pod change queues the budgets selecting it."""

    name = "disruption"

    def setup(self) -> None:
        """Budgets, and pods mapped to the budgets whose selector matches them."""
        self.budgets = self.watch(PODDISRUPTIONBUDGETS)
        self.pods = self.watch(PODS, keys=self._budgets_of)

    def _budgets_of(self, pod: Obj) -> list[str]:
        """Keys of the budgets in the pod's namespace whose selector matches it."""
        labels = pod["metadata"].get("labels") or {}
        return [key_of(b) for b in self.budgets.store.by_index(NAMESPACE_INDEX, pod["metadata"]["namespace"])
                if from_label_selector((b.get("spec") or {}).get("selector")).matches(labels)]

    async def reconcile(self, key: str) -> Requeue | None:
        """Count expected and healthy pods, derive the disruptions allowed, write status if it changed."""
        budget = self.budgets.store.get(key)
        if budget is None:
            return None
        spec, old = budget.get("spec") or {}, budget.get("status") or {}
        selector = from_label_selector(spec.get("selector"))
        pods = [p for p in self.pods.store.by_index(NAMESPACE_INDEX, budget["metadata"]["namespace"])
                if selector.matches(p["metadata"].get("labels") or {})]
        expected, desired = await self._expectation(spec, pods)
        now = datetime.now(UTC)
        disrupted = {p["metadata"]["name"]: since for p in pods if not p["metadata"].get("deletionTimestamp")
                     and (since := (old.get("disruptedPods") or {}).get(p["metadata"]["name"]))
                     and datetime.fromisoformat(since) + DELETION_TIMEOUT > now}
        healthy = sum(1 for p in pods if pod_ready(p) and not p["metadata"].get("deletionTimestamp")
                      and p["metadata"]["name"] not in disrupted)
        allowed = max(healthy - desired, 0)
        generation = budget["metadata"].get("generation")
        previous = next((c for c in old.get("conditions") or [] if c.get("type") == "DisruptionAllowed"), {})
        state = "True" if allowed > 0 else "False"
        condition = {"type": "DisruptionAllowed", "status": state,
                     "reason": "SufficientPods" if allowed > 0 else "InsufficientPods", "message": "",
                     "observedGeneration": generation,
                     "lastTransitionTime": previous.get("lastTransitionTime") if previous.get("status") == state
                     else now_time()}
        status = {"observedGeneration": generation, "disruptionsAllowed": allowed, "currentHealthy": healthy,
                  "desiredHealthy": desired, "expectedPods": expected, "conditions": [condition]}
        if disrupted:
            status["disruptedPods"] = disrupted
        if old != status:
            await self.client.update_status(PODDISRUPTIONBUDGETS, {**budget, "status": status})
        if disrupted:
            first = min(datetime.fromisoformat(t) for t in disrupted.values()) + DELETION_TIMEOUT
            return Requeue(after=max((first - now).total_seconds(), 0.0))
        return None

    async def _expectation(self, spec: Obj, pods: list[Obj]) -> tuple[int, int]:
        """(expectedPods, desiredHealthy) as upstream's getExpectedPodCount derives them."""
        max_unavailable, min_available = spec.get("maxUnavailable"), spec.get("minAvailable")
        if max_unavailable is not None:
            expected = await self._expected_scale(pods)
            return expected, max(expected - scaled(max_unavailable, expected), 0)
        if isinstance(min_available, int):
            return len(pods), min_available
        if min_available is not None:
            expected = await self._expected_scale(pods)
            return expected, scaled(min_available, expected)
        return 0, 0

    async def _expected_scale(self, pods: list[Obj]) -> int:
        """The replicas of the pods' controllers, each once; a pod without a scaled controller counts itself."""
        replicas: dict[str, int] = {}
        alone = 0
        for pod in pods:
            ref = _controller_ref(pod)
            found = await self._scale(pod["metadata"]["namespace"], ref) if ref else None
            if found is None:
                alone += 1
            else:
                replicas[found[0]] = found[1]
        return alone + sum(replicas.values())

    async def _scale(self, namespace: str, ref: Obj) -> tuple[str, int] | None:
        """(uid, spec.replicas) of a controller, or of the Deployment controlling a ReplicaSet; None if unknown."""
        if ref.get("kind") not in SCALED_KINDS:
            return None
        try:
            owner = await self.client.get(resource(ref.get("apiVersion", ""), ref["kind"]), ref["name"], namespace)
        except KeyError:
            return None
        except ApiError as exc:
            if is_not_found(exc):
                return None
            raise
        if owner["metadata"].get("uid") != ref.get("uid"):
            return None
        parent = _controller_ref(owner)
        if ref["kind"] == "ReplicaSet" and parent and parent.get("kind") == "Deployment":
            return await self._scale(namespace, parent)
        return owner["metadata"]["uid"], int((owner.get("spec") or {}).get("replicas", 1))

"""Namespace controller: empties a namespace being deleted, then removes its `kubernetes` finalizer."""

from __future__ import annotations

from collections import Counter
from datetime import UTC, datetime
from typing import Any, ClassVar

from kubelite.client.controller import Controller, Requeue
from kubelite.client.errors import CONNECTION_ERRORS, ApiError, is_not_found
from kubelite.client.resources import NAMESPACES, Resource
from kubelite.client.timestamps import now_time
from kubelite.controllers.garbagecollector import served_resources

Obj = dict[str, Any]
FINALIZER = "kubernetes"
DELETE_OPTIONS = {"kind": "DeleteOptions", "apiVersion": "v1", "propagationPolicy": "Background"}
# Condition type -> (reason, message) when all is well, as upstream's namespace deleter writes them.
OK_CONDITIONS = {
    "NamespaceDeletionDiscoveryFailure": ("ResourcesDiscovered", "All resources successfully discovered"),
    "NamespaceDeletionGroupVersionParsingFailure": ("ParsedGroupVersions", "All legacy kube types successfully parsed"),
    "NamespaceDeletionContentFailure": ("ContentDeleted",
                                        "All content successfully deleted, may be waiting on finalization"),
    "NamespaceContentRemaining": ("ContentRemoved", "All content successfully removed"),
    "NamespaceFinalizersRemaining": ("ContentRemoved", "All content successfully removed"),
}


def _seconds_until(timestamp: str) -> float:
    """Seconds from now to a metav1.Time (negative when past)."""
    return (datetime.fromisoformat(timestamp) - datetime.now(UTC)).total_seconds()


class NamespaceController(Controller):
    """Keys are namespace names; content left behind requeues the namespace until it is gone."""

    name = "namespace"
    finalizer_estimate: ClassVar[float] = 15.0
    """Seconds assumed for an object's finalizers to finish (upstream's finalizerEstimateSeconds)."""

    def setup(self) -> None:
        """Namespaces only: the content is listed live, for every namespaced resource."""
        self.namespaces = self.watch(NAMESPACES)

    async def reconcile(self, key: str) -> Requeue | None:
        """Delete all content, record progress in status.conditions, finalize when nothing is left."""
        cached = self.namespaces.store.get(key)
        if cached is None or not cached["metadata"].get("deletionTimestamp"):
            return None
        try:
            namespace = await self.client.get(NAMESPACES, key)
        except ApiError as exc:
            if is_not_found(exc):
                return None
            raise
        if FINALIZER not in (namespace.get("spec") or {}).get("finalizers") or []:
            return await self._delete_if_finalized(namespace)
        problems: dict[str, tuple[str, str]] = {}
        try:
            resources = [r for r in await served_resources(self.client, ("list", "delete")) if r.namespaced]
        except (ApiError, *CONNECTION_ERRORS) as exc:
            problems["NamespaceDeletionDiscoveryFailure"] = ("DiscoveryFailed", str(exc))
            resources = []
        estimate = await self._delete_content(key, resources, problems)
        await self._set_conditions(namespace, problems)
        if "NamespaceDeletionDiscoveryFailure" in problems or "NamespaceDeletionContentFailure" in problems:
            return Requeue()
        if "NamespaceContentRemaining" in problems:
            return Requeue(after=estimate / 2 + 1)
        finalizers = [f for f in namespace["spec"]["finalizers"] if f != FINALIZER]
        try:
            namespace = await self.client.request("PUT", NAMESPACES.path(None, key, "finalize"), body={
                **namespace, "spec": {**namespace["spec"], "finalizers": finalizers}})
        except ApiError as exc:
            if is_not_found(exc):
                return None
            raise
        return await self._delete_if_finalized(namespace)

    async def _delete_content(self, namespace: str, resources: list[Resource],
                              problems: dict[str, tuple[str, str]]) -> float:
        """Delete every object in the namespace; note what remains; the seconds it may take to go."""
        estimate = 0.0
        failures: list[str] = []
        remaining: dict[str, int] = {}
        finalizers: Counter[str] = Counter()
        for res in resources:
            try:
                await self._delete_all(res, namespace)
                left = (await self.client.list_all(res, namespace))["items"]
            except ApiError as exc:
                if exc.code not in (404, 405):
                    failures.append(f"{res.plural}.{res.group}: {exc}")
                continue
            if left:
                remaining[f"{res.plural}.{res.group}"] = len(left)
            for obj in left:
                meta = obj["metadata"]
                finalizers.update(meta.get("finalizers") or [])
                if meta.get("finalizers"):
                    estimate = max(estimate, self.finalizer_estimate)
                if meta.get("deletionTimestamp"):
                    estimate = max(estimate, _seconds_until(meta["deletionTimestamp"]))
        if failures:
            problems["NamespaceDeletionContentFailure"] = (
                "ContentDeletionFailed", f"Failed to delete all resource types, {len(failures)} remaining: "
                                         f"{', '.join(sorted(failures))}")
        if remaining:
            problems["NamespaceContentRemaining"] = ("SomeResourcesRemain", "Some resources are remaining: "
                                                     + ", ".join(sorted(f"{name} has {count} resource instances"
                                                                        for name, count in remaining.items())))
        if finalizers:
            problems["NamespaceFinalizersRemaining"] = ("SomeFinalizerRemain", "Some finalizers are remaining: "
                                                        + ", ".join(sorted(f"{name} in {count} resource instances"
                                                                           for name, count in finalizers.items())))
        return estimate

    async def _delete_all(self, res: Resource, namespace: str) -> None:
        """DELETE the collection; where deletecollection is not allowed (405), each object one by one."""
        try:
            await self.client.request("DELETE", res.path(namespace), body=DELETE_OPTIONS)
            return
        except ApiError as exc:
            if exc.code != 405:
                raise
        for obj in (await self.client.list_all(res, namespace))["items"]:
            try:
                await self.client.delete(res, obj["metadata"]["name"], namespace, propagation_policy="Background")
            except ApiError as exc:
                if not is_not_found(exc):
                    raise

    async def _set_conditions(self, namespace: Obj, problems: dict[str, tuple[str, str]]) -> None:
        """Write the five deletion conditions (True with a reason when failing), keeping unchanged ones' times."""
        old = {c.get("type"): c for c in (namespace.get("status") or {}).get("conditions") or []}
        conditions = [c for t, c in old.items() if t not in OK_CONDITIONS]
        for type_, ok in OK_CONDITIONS.items():
            status = "True" if type_ in problems else "False"
            reason, message = problems.get(type_, ok)
            previous = old.get(type_) or {}
            since = previous.get("lastTransitionTime") if previous.get("status") == status else now_time()
            conditions.append({"type": type_, "status": status, "lastTransitionTime": since, "reason": reason,
                               "message": message})
        if conditions != (namespace.get("status") or {}).get("conditions"):
            updated = await self.client.update_status(NAMESPACES, {
                **namespace, "status": {**namespace.get("status", {}), "conditions": conditions}})
            namespace.update(updated)

    async def _delete_if_finalized(self, namespace: Obj) -> None:
        """With no finalizers left the server removes the namespace; DELETE it again if it is still there."""
        if (namespace.get("spec") or {}).get("finalizers") or namespace["metadata"].get("finalizers"):
            return
        try:
            await self.client.delete(NAMESPACES, namespace["metadata"]["name"],
                                     preconditions={"uid": namespace["metadata"]["uid"]})
        except ApiError as exc:
            if not is_not_found(exc):
                raise

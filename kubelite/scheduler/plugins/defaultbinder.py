"""DefaultBinder: POST pods/NAME/binding."""

from __future__ import annotations

from kubelite.client.errors import CONNECTION_ERRORS, ApiError
from kubelite.client.resources import PODS
from kubelite.scheduler.framework import BindPlugin, Code, CycleState, Status
from kubelite.scheduler.podinfo import PodInfo


class DefaultBinder(BindPlugin):
    """Bind through the pods/binding subresource (the API server sets spec.nodeName)."""

    name = "DefaultBinder"

    async def bind(self, state: CycleState, pod: PodInfo, node_name: str) -> Status | None:
        client = self.handle.client
        if client is None:
            return Status(Code.ERROR, "no API client to bind with")
        binding = {"apiVersion": "v1", "kind": "Binding",
                   "metadata": {"name": pod.name, "namespace": pod.namespace, "uid": pod.uid},
                   "target": {"apiVersion": "v1", "kind": "Node", "name": node_name}}
        try:
            await client.create(PODS, binding, pod.namespace, subresource="binding")
        except (ApiError, *CONNECTION_ERRORS) as exc:
            return Status(Code.ERROR, f"binding rejected: {exc}")
        return None

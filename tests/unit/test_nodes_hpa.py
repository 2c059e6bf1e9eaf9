"""The HPA's replica computation (upstream replica calculator cases) and its behavior normalization."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest

from kubelite.client.controller import Requeue
from kubelite.client.errors import ApiError
from kubelite.controllers.horizontalpodautoscaler import (
    HorizontalPodAutoscalerController,
    MetricError,
    Normalizer,
    PodMetric,
    format_milli,
    pod_metrics,
    pod_requests,
    resource_replicas,
    scale_limit,
    scaling_rules,
)

Obj = dict[str, Any]
NOW = 1_000_000.0
LONG_AGO = "1970-01-01T00:00:00Z"


def pod(name: str, request: str | None = "1", *, ready: str = "True", phase: str = "Running",
        ready_since: str = "1970-01-01T00:01:00Z") -> Obj:
    resources = {"requests": {"cpu": request}} if request else {}
    return {"metadata": {"name": name}, "spec": {"containers": [{"name": "c", "resources": resources}]},
            "status": {"phase": phase, "startTime": LONG_AGO,
                       "conditions": [{"type": "Ready", "status": ready, "lastTransitionTime": ready_since}]}}


def pods_and_metrics(levels: list[int | None], requests: list[str] | None = None,
                     ready: list[str] | None = None) -> tuple[list[Obj], dict[str, PodMetric]]:
    pods, metrics = [], {}
    for i, level in enumerate(levels):
        name = f"p{i}"
        pods.append(pod(name, (requests or ["1"] * len(levels))[i], ready=(ready or ["True"] * len(levels))[i],
                        ready_since="1970-01-01T00:00:10Z" if ready and ready[i] == "False" else LONG_AGO))
        if level is not None:
            metrics[name] = PodMetric(level, NOW, 30.0)
    return pods, metrics


def utilization(current: int, levels: list[int | None], target: int, **kwargs: Any) -> tuple[int, int | None, int]:
    pods, metrics = pods_and_metrics(levels, **kwargs)
    return resource_replicas(current, pods, metrics, "cpu", NOW, target_utilization=target)


def test_scale_up() -> None:
    assert utilization(3, [300, 500, 700], 30) == (5, 50, 500)


def test_scale_down() -> None:
    assert utilization(5, [100, 300, 500, 250, 250], 50) == (3, 28, 280)


def test_within_tolerance_keeps_replicas() -> None:
    assert utilization(3, [1010, 1030, 1020], 100, requests=["900m", "1", "1100m"]) == (3, 102, 1020)


def test_unready_pods_count_as_idle_when_scaling_up() -> None:
    assert utilization(3, [300, 500, 700], 30, ready=["False", "True", "True"]) == (4, 60, 600)


def test_missing_metrics() -> None:
    assert utilization(4, [400, 95, None, None], 50)[0] == 4  # scale down, missing count as 100%: no change
    assert utilization(3, [1900, 1900, None], 100)[0] == 4  # scale up, missing count as 0: 3800/3000 -> 4
    assert utilization(2, [1900, None], 100)[0] == 2  # 0 for the missing one brings it back within tolerance


def test_ignored_pods_and_errors() -> None:
    pods, metrics = pods_and_metrics([500, 500])
    pods.append(pod("failed", phase="Failed"))
    pods.append({**pod("gone"), "metadata": {"name": "gone", "deletionTimestamp": LONG_AGO}})
    assert resource_replicas(2, pods, metrics, "cpu", NOW, target_utilization=50) == (2, 50, 500)
    with pytest.raises(MetricError, match="did not receive metrics"):
        resource_replicas(2, pods, {}, "cpu", NOW, target_utilization=50)
    with pytest.raises(MetricError, match="no pods"):
        resource_replicas(2, [], metrics, "cpu", NOW, target_utilization=50)
    with pytest.raises(MetricError, match="missing request for cpu in container c of Pod p1"):
        pod_requests([pod("p0"), pod("p1", None)], "cpu")


def test_average_value_target() -> None:
    pods, metrics = pods_and_metrics([400, 600])
    assert resource_replicas(2, pods, metrics, "memory", NOW, target_average=250) == (4, None, 500)
    assert resource_replicas(2, pods, metrics, "memory", NOW, target_average=480) == (2, None, 500)


def test_pod_metrics_from_the_metrics_api() -> None:
    items = [
        {"metadata": {"name": "a"}, "timestamp": "1970-01-12T13:46:40Z", "window": "30s",
         "containers": [{"name": "x", "usage": {"cpu": "250m", "memory": "1Mi"}},
                        {"name": "y", "usage": {"cpu": "1"}}]},
        {"metadata": {"name": "b"}, "window": "1m0s", "containers": [{"name": "x", "usage": {"memory": "2Mi"}}]},
    ]
    assert pod_metrics(items, "cpu") == {"a": PodMetric(1250, NOW, 30.0)}
    assert pod_metrics(items, "cpu", container="x") == {"a": PodMetric(250, NOW, 30.0)}
    assert set(pod_metrics(items, "memory")) == {"b"}  # a's container y has no memory usage
    assert format_milli(1250) == "1250m" and format_milli(2000) == "2"


def test_default_rules_and_limits() -> None:
    up, down = scaling_rules(None, "scaleUp"), scaling_rules({"scaleDown": {"selectPolicy": "Min"}}, "scaleDown")
    assert up["stabilizationWindowSeconds"] == 0 and down["stabilizationWindowSeconds"] == 300
    assert down["selectPolicy"] == "Min" and down["policies"] == [{"type": "Percent", "value": 100,
                                                                    "periodSeconds": 15}]
    assert scale_limit(2, [], [], up, NOW, True) == 6  # max(2 + 4 pods, 2 * 200%)
    assert scale_limit(10, [], [], up, NOW, True) == 20
    assert scale_limit(10, [(NOW - 5, 5)], [], up, NOW, True) == 10  # started the period at 5
    assert scale_limit(10, [(NOW - 20, 5)], [], up, NOW, True) == 20  # that event is older than the period
    assert scale_limit(10, [], [], down, NOW, False) == 0
    assert scale_limit(10, [], [], {**up, "selectPolicy": "Disabled"}, NOW, True) == 10


class Clock:
    def __init__(self) -> None:
        self.now = NOW

    def __call__(self) -> float:
        return self.now


def test_scale_down_is_stabilized_for_five_minutes() -> None:
    clock = Clock()
    normalizer = Normalizer(clock)
    replicas, conditions = normalizer.normalize("ns/h", None, 1, 10, 5, 2)
    assert replicas == 5
    assert conditions[0][2] == "ScaleDownStabilized" and conditions[1][1] == "False"
    clock.now += 200
    assert normalizer.normalize("ns/h", None, 1, 10, 5, 3)[0] == 5
    clock.now += 101
    assert normalizer.normalize("ns/h", None, 1, 10, 5, 2)[0] == 3  # the 3 from 101 s ago is still in the window
    clock.now += 300
    replicas, conditions = normalizer.normalize("ns/h", None, 1, 10, 3, 2)
    assert replicas == 2 and conditions[0][2] == "ReadyForNewScale"


def test_scale_up_rate_and_bounds() -> None:
    clock = Clock()
    normalizer = Normalizer(clock)
    replicas, conditions = normalizer.normalize("k", None, 1, 20, 1, 10)
    assert replicas == 5 and conditions[1][1:3] == ("True", "ScaleUpLimit")
    normalizer.record_scale("k", None, 1, 5)
    clock.now += 1
    replicas, conditions = normalizer.normalize("k", None, 1, 20, 5, 10)
    assert replicas == 5 and conditions[1][2] == "ScaleUpLimit"
    clock.now += 15
    assert normalizer.normalize("k", None, 1, 20, 5, 10)[0] == 10
    replicas, conditions = normalizer.normalize("k", None, 1, 6, 5, 10)
    assert replicas == 6 and conditions[1][1:3] == ("True", "TooManyReplicas")
    fast = {"scaleDown": {"stabilizationWindowSeconds": 0}}
    replicas, conditions = normalizer.normalize("d", fast, 3, 10, 5, 1)
    assert replicas == 3 and conditions[1][2] == "TooFewReplicas"
    normalizer.forget("k")
    assert "k" not in normalizer.recommendations and "k" not in normalizer.up_events


class StubClient:
    """The calls the HPA controller makes: the target's scale, the metrics API, and its writes."""

    def __init__(self, metrics: list[Obj] | None, replicas: int = 3) -> None:
        self.metrics = metrics
        self.scale = {"kind": "Scale", "apiVersion": "autoscaling/v1", "metadata": {"name": "web", "namespace": "d"},
                      "spec": {"replicas": replicas}, "status": {"replicas": replicas, "selector": "app=web"}}
        self.scaled: list[int] = []
        self.statuses: list[Obj] = []

    async def get(self, resource: Any, name: str, namespace: str | None = None, **_: Any) -> Obj:
        return self.scale

    async def request(self, method: str, path: str, **_: Any) -> Obj:
        assert path == "/apis/metrics.k8s.io/v1beta1/namespaces/d/pods"
        if self.metrics is None:
            raise ApiError({"code": 404, "reason": "NotFound", "message": "the server could not find the requested "
                                                                            "resource"})
        return {"items": self.metrics}

    async def update(self, resource: Any, obj: Obj, namespace: str | None = None, **_: Any) -> Obj:
        self.scaled.append(obj["spec"]["replicas"])
        return obj

    async def update_status(self, resource: Any, obj: Obj, namespace: str | None = None) -> Obj:
        self.statuses.append(obj["status"])
        return obj

    async def create(self, resource: Any, obj: Obj, namespace: str | None = None, **_: Any) -> Obj:
        return obj


def controller_with(client: StubClient, pods: int) -> HorizontalPodAutoscalerController:
    controller = HorizontalPodAutoscalerController(client)  # type: ignore[arg-type]
    metric = {"type": "Resource", "resource": {"name": "cpu", "target": {"type": "Utilization",
                                                                       "averageUtilization": 50}}}
    controller.hpas.store.put({
        "apiVersion": "autoscaling/v2", "kind": "HorizontalPodAutoscaler",
        "metadata": {"name": "web", "namespace": "d", "generation": 1},
        "spec": {"scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": "web"},
                 "minReplicas": 1, "maxReplicas": 10, "metrics": [metric]}})
    for i in range(pods):
        p = pod(f"web-{i}", "100m")
        p["metadata"].update(namespace="d", labels={"app": "web"})
        controller.pods.store.put(p)
    return controller


async def test_controller_scales_through_the_scale_subresource() -> None:
    now = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    usage = [{"metadata": {"name": f"web-{i}"}, "timestamp": now, "window": "30s",
              "containers": [{"name": "c", "usage": {"cpu": "200m"}}]} for i in range(3)]
    client = StubClient(usage)
    controller = controller_with(client, 3)
    result = await controller.reconcile("d/web")
    assert isinstance(result, Requeue) and result.after == controller.sync_period
    assert client.scaled == [7]  # 12 wanted; the default scale-up policy allows max(3 + 4, 3 * 2)
    status = client.statuses[-1]
    assert status["currentReplicas"] == 3 and status["desiredReplicas"] == 7 and status["lastScaleTime"]
    assert status["currentMetrics"] == [{"type": "Resource", "resource": {
        "name": "cpu", "current": {"averageUtilization": 200, "averageValue": "200m"}}}]
    reasons = {c["type"]: (c["status"], c["reason"]) for c in status["conditions"]}
    assert reasons == {"AbleToScale": ("True", "SucceededRescale"), "ScalingActive": ("True", "ValidMetricFound"),
                       "ScalingLimited": ("True", "ScaleUpLimit")}
    await controller.recorder.close()


async def test_controller_without_metrics_api_does_not_scale() -> None:
    client = StubClient(None)
    controller = controller_with(client, 3)
    await controller.reconcile("d/web")
    assert client.scaled == []
    status = client.statuses[-1]
    active = [c for c in status["conditions"] if c["type"] == "ScalingActive"][0]
    assert (active["status"], active["reason"]) == ("False", "FailedGetResourceMetric")
    assert active["message"].endswith("the server could not find the requested resource (get pods.metrics.k8s.io)")
    assert status["currentMetrics"] == [{"type": ""}] and status["currentReplicas"] == 3
    await controller.recorder.close()

"""Horizontal pod autoscaling (autoscaling/v2) on resource metrics from metrics.k8s.io, as upstream computes it."""

from __future__ import annotations

import copy
import logging
import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, ClassVar

from kubelite.api.protobuf import parse_go_duration
from kubelite.api.quantity import parse_quantity
from kubelite.api.selectors import SelectorError, parse_labels
from kubelite.client.controller import Controller, Requeue
from kubelite.client.errors import ApiError
from kubelite.client.informer import SharedInformerFactory
from kubelite.client.resources import HORIZONTALPODAUTOSCALERS, PODS, Resource, resource
from kubelite.client.rest import ApiClient
from kubelite.client.store import NAMESPACE_INDEX
from kubelite.client.timestamps import now_time, parse_time

log = logging.getLogger(__name__)

Obj = dict[str, Any]
Condition = tuple[str, str, str, str]
"""(type, status, reason, message) of an HPA condition."""
TOLERANCE = 0.1
CPU_INITIALIZATION_PERIOD = 300.0
INITIAL_READINESS_DELAY = 30.0
METRICS_API = "/apis/metrics.k8s.io/v1beta1/namespaces/{namespace}/pods"
DEFAULT_RULES = {
    "scaleUp": {"stabilizationWindowSeconds": 0, "selectPolicy": "Max",
                "policies": [{"type": "Pods", "value": 4, "periodSeconds": 15},
                             {"type": "Percent", "value": 100, "periodSeconds": 15}]},
    "scaleDown": {"stabilizationWindowSeconds": 300, "selectPolicy": "Max",
                  "policies": [{"type": "Percent", "value": 100, "periodSeconds": 15}]},
}
"""SetDefaults_HorizontalPodAutoscalerBehavior."""


class MetricError(Exception):
    """A metric could not be had or used: reason names the event and condition, detail is the root cause."""

    def __init__(self, message: str, reason: str = "FailedGetResourceMetric", detail: str = ""):
        super().__init__(message)
        self.reason = reason
        self.detail = detail or message


@dataclass(frozen=True)
class PodMetric:
    """One pod's usage of a resource in milli-units, when it was measured, and over what window (seconds)."""

    value: int
    timestamp: float
    window: float


def milli(quantity: Any) -> int:
    """A quantity in milli-units, rounded up (Quantity.MilliValue)."""
    value = parse_quantity(quantity)
    if value is None:
        raise MetricError(f"invalid quantity {quantity!r}")
    return math.ceil(value * 1000)


def format_milli(value: int) -> str:
    """A milli-unit amount as a canonical quantity string ("250m", "2")."""
    return str(value // 1000) if value % 1000 == 0 else f"{value}m"


def pod_metrics(items: list[Obj], resource_name: str, container: str = "") -> dict[str, PodMetric]:
    """Usage per pod from a metrics.k8s.io PodMetricsList; a pod missing the resource in a container is left out."""
    result = {}
    for item in items:
        containers = [c for c in item.get("containers") or [] if not container or c.get("name") == container]
        usages = [(c.get("usage") or {}).get(resource_name) for c in containers]
        if not usages or any(u is None for u in usages):
            continue
        measured = parse_time(item.get("timestamp"))
        window = parse_go_duration(item.get("window") or "0s") / 1e9
        result[item["metadata"]["name"]] = PodMetric(sum(milli(u) for u in usages),
                                                     measured.timestamp() if measured else 0.0, window)
    return result


def pod_requests(pods: list[Obj], resource_name: str, container: str = "") -> dict[str, int]:
    """The summed container requests of each pod (milli-units); MetricError when a container has none."""
    requests = {}
    for pod in pods:
        total = 0
        for c in (pod.get("spec") or {}).get("containers") or []:
            if container and c.get("name") != container:
                continue
            request = ((c.get("resources") or {}).get("requests") or {}).get(resource_name)
            if request is None:
                raise MetricError(f"missing request for {resource_name} in container {c.get('name')} "
                                  f"of Pod {pod['metadata']['name']}")
            total += milli(request)
        requests[pod["metadata"]["name"]] = total
    return requests


def _cpu_unready(pod: Obj, metric: PodMetric, now: float) -> bool:
    """Whether a CPU sample is not to be trusted: the pod is not Ready yet, or was measured while starting."""
    status = pod.get("status") or {}
    ready = next((c for c in status.get("conditions") or [] if c.get("type") == "Ready"), None)
    started = parse_time(status.get("startTime"))
    if ready is None or started is None:
        return True
    transition = parse_time(ready.get("lastTransitionTime"))
    since = transition.timestamp() if transition else 0.0
    if started.timestamp() + CPU_INITIALIZATION_PERIOD > now:
        return ready.get("status") == "False" or metric.timestamp < since + metric.window
    return ready.get("status") == "False" and started.timestamp() + INITIAL_READINESS_DELAY > since


def group_pods(pods: list[Obj], metrics: dict[str, PodMetric], resource_name: str,
               now: float) -> tuple[int, set[str], set[str], set[str]]:
    """(ready pods with metrics, unready pods, pods missing metrics, ignored pods) as upstream's groupPods."""
    ready, unready, missing, ignored = 0, set(), set(), set()
    for pod in pods:
        name, phase = pod["metadata"]["name"], (pod.get("status") or {}).get("phase")
        if pod["metadata"].get("deletionTimestamp") or phase == "Failed":
            ignored.add(name)
        elif phase == "Pending":
            unready.add(name)
        elif name not in metrics:
            missing.add(name)
        elif resource_name == "cpu" and _cpu_unready(pod, metrics[name], now):
            unready.add(name)
        else:
            ready += 1
    return ready, unready, missing, ignored


def resource_replicas(current: int, pods: list[Obj], metrics: dict[str, PodMetric], resource_name: str,
                      now: float, *, target_utilization: int | None = None, target_average: int | None = None,
                      container: str = "", tolerance: float = TOLERANCE) -> tuple[int, int | None, int]:
    """(replicas, utilization %, average milli-usage) for a utilization (%) or average (milli) target, as upstream."""
    if not pods:
        raise MetricError("no pods returned by selector while calculating replica count")
    ready, unready, missing, ignored = group_pods(pods, metrics, resource_name, now)
    samples = {p["metadata"]["name"]: metrics[p["metadata"]["name"]].value for p in pods
               if p["metadata"]["name"] in metrics and p["metadata"]["name"] not in unready | ignored}
    if not samples:
        raise MetricError("did not receive metrics for targeted pods (pods might be unready)")
    requests = pod_requests(pods, resource_name, container) if target_utilization is not None else {}

    def usage(values: dict[str, int]) -> tuple[float, int | None, int]:
        average = sum(values.values()) // len(values)
        if target_utilization is None:
            return average / (target_average or 1), None, average
        requested = sum(requests[name] for name in values)
        if requested == 0:
            raise MetricError(f"no {resource_name} requests on the targeted pods")
        utilization = sum(values.values()) * 100 // requested
        return utilization / target_utilization, utilization, average

    ratio, utilization, average = usage(samples)
    scale_up_with_unready = bool(unready) and ratio > 1.0
    if not scale_up_with_unready and not missing:
        if abs(1.0 - ratio) <= tolerance:
            return current, utilization, average
        return math.ceil(ratio * ready), utilization, average
    for name in missing:
        if ratio < 1.0:
            fallback = requests[name] * max(100, target_utilization) // 100 if target_utilization else target_average
            samples[name] = fallback or 0
        elif ratio > 1.0:
            samples[name] = 0
    if scale_up_with_unready:
        samples.update(dict.fromkeys(unready, 0))
    new_ratio = usage(samples)[0]
    if abs(1.0 - new_ratio) <= tolerance or (ratio < 1.0 < new_ratio) or (new_ratio < 1.0 < ratio):
        return current, utilization, average
    replicas = math.ceil(new_ratio * len(samples))
    if (new_ratio < 1.0 and replicas > current) or (new_ratio > 1.0 and replicas < current):
        return current, utilization, average
    return replicas, utilization, average


def scaling_rules(behavior: Obj | None, direction: str) -> Obj:
    """The scaleUp or scaleDown rules of a behavior with upstream's defaults filled in."""
    given = (behavior or {}).get(direction) or {}
    rules = {**DEFAULT_RULES[direction], **{k: v for k, v in given.items() if v is not None}}
    rules["policies"] = given.get("policies") or DEFAULT_RULES[direction]["policies"]
    return rules


def _changed(events: list[tuple[float, int]], period: float, now: float) -> int:
    return sum(change for at, change in events if at > now - period)


def scale_limit(current: int, up: list[tuple[float, int]], down: list[tuple[float, int]], rules: Obj,
                now: float, scaling_up: bool) -> int:
    """How far the scaling policies let replicas go from current, given the recent scale events."""
    select = rules.get("selectPolicy") or "Max"
    if select == "Disabled":
        return current
    proposals = []
    for policy in rules["policies"]:
        period = policy.get("periodSeconds", 15)
        start = current - _changed(up, period, now) + _changed(down, period, now)
        value = policy["value"]
        if policy["type"] == "Pods":
            proposals.append(start + value if scaling_up else start - value)
        elif scaling_up:
            proposals.append(math.ceil(start * (1 + value / 100)))
        else:
            proposals.append(int(start * (1 - value / 100)))
    widest = max if scaling_up else min
    narrowest = min if scaling_up else max
    return (narrowest if select == "Min" else widest)(proposals)


class Normalizer:
    """Per-HPA memory of recommendations and scale events: stabilization and rate limits (with behavior)."""

    def __init__(self, clock: Callable[[], float] = time.monotonic):
        self.clock = clock
        self.recommendations: dict[str, list[tuple[float, int]]] = {}
        self.up_events: dict[str, list[tuple[float, int]]] = {}
        self.down_events: dict[str, list[tuple[float, int]]] = {}

    def forget(self, key: str) -> None:
        """Drop what is remembered of a deleted HPA."""
        for memory in (self.recommendations, self.up_events, self.down_events):
            memory.pop(key, None)

    def normalize(self, key: str, behavior: Obj | None, low: int, high: int, current: int,
                  desired: int) -> tuple[int, list[Condition]]:
        """The replicas to scale to and the AbleToScale and ScalingLimited conditions that explain them."""
        up, down = scaling_rules(behavior, "scaleUp"), scaling_rules(behavior, "scaleDown")
        now = self.clock()
        if key not in self.recommendations and down["stabilizationWindowSeconds"] > 0:
            self.recommendations[key] = [(now, current)]
        stabilized = self._stabilize(key, up, down, current, desired, now)
        if stabilized != desired:
            able = ("AbleToScale", "True", "ScaleUpStabilized",
                    "recent recommendations were lower than current one, applying the lowest recent recommendation"
                    ) if desired >= current else (
                    "AbleToScale", "True", "ScaleDownStabilized",
                    "recent recommendations were higher than current one, applying the highest recent recommendation")
        else:
            able = ("AbleToScale", "True", "ReadyForNewScale", "recommended size matches current size")
        replicas, reason, message = self._limit(key, up, down, low, high, current, stabilized, now)
        limited = ("ScalingLimited", "False" if replicas == stabilized else "True", reason, message)
        return replicas, [able, limited]

    def _stabilize(self, key: str, up: Obj, down: Obj, current: int, desired: int, now: float) -> int:
        up_cutoff = now - up["stabilizationWindowSeconds"]
        down_cutoff = now - down["stabilizationWindowSeconds"]
        up_bound = down_bound = desired
        records = self.recommendations.setdefault(key, [])
        old = None
        for index, (at, replicas) in enumerate(records):
            if at > up_cutoff:
                up_bound = min(up_bound, replicas)
            if at > down_cutoff:
                down_bound = max(down_bound, replicas)
            if at < up_cutoff and at < down_cutoff:
                old = index
        if old is None:
            records.append((now, desired))
        else:
            records[old] = (now, desired)
        return min(max(current, up_bound), down_bound)

    def _limit(self, key: str, up: Obj, down: Obj, low: int, high: int, current: int, desired: int,
               now: float) -> tuple[int, str, str]:
        ups, downs = self.up_events.get(key, []), self.down_events.get(key, [])
        if desired > current:
            limit = max(scale_limit(current, ups, downs, up, now, True), current)
            if high > limit:
                allowed, reason, message = limit, "ScaleUpLimit", \
                    "the desired replica count is increasing faster than the maximum scale rate"
            else:
                allowed, reason, message = high, "TooManyReplicas", \
                    "the desired replica count is more than the maximum replica count"
            if desired > allowed:
                return allowed, reason, message
        elif desired < current:
            limit = min(scale_limit(current, ups, downs, down, now, False), current)
            if low < limit:
                allowed, reason, message = limit, "ScaleDownLimit", \
                    "the desired replica count is decreasing faster than the maximum scale rate"
            else:
                allowed, reason, message = low, "TooFewReplicas", \
                    "the desired replica count is less than the minimum replica count"
            if desired < allowed:
                return allowed, reason, message
        return desired, "DesiredWithinRange", "the desired count is within the acceptable range"

    def record_scale(self, key: str, behavior: Obj | None, old: int, new: int) -> None:
        """Remember a rescale for the rate limits, dropping events older than the longest policy period."""
        direction = "scaleUp" if new > old else "scaleDown"
        longest = max(p.get("periodSeconds", 15) for p in scaling_rules(behavior, direction)["policies"])
        memory = self.up_events if new > old else self.down_events
        now = self.clock()
        memory[key] = [(at, change) for at, change in memory.get(key, []) if at > now - longest]
        memory[key].append((now, abs(new - old)))


def set_condition(conditions: list[Obj], type_: str, status: str, reason: str, message: str) -> None:
    """Add or update a condition; lastTransitionTime moves only when the status changes."""
    current = next((c for c in conditions if c.get("type") == type_), None)
    if current is None:
        current = {"type": type_}
        conditions.append(current)
    if current.get("status") != status or not current.get("lastTransitionTime"):
        current["lastTransitionTime"] = now_time()
    current.update(status=status, reason=reason, message=message)


def _set_status(status: Obj, current: int, desired: int, metrics: list[Obj] | None, generation: int | None) -> None:
    """Fill in replicas, metric statuses (left out when none) and the observed generation."""
    status.update(currentReplicas=current, desiredReplicas=desired)
    if metrics:
        status["currentMetrics"] = metrics
    else:
        status.pop("currentMetrics", None)
    if generation is not None:
        status["observedGeneration"] = generation


class HorizontalPodAutoscalerController(Controller):
    """Every sync_period, scale each HPA's target to what its metrics ask for, within its bounds and behavior."""

    name: ClassVar[str] = "horizontal-pod-autoscaler-controller"
    component: ClassVar[str] = "horizontal-pod-autoscaler"
    sync_period: ClassVar[float] = 15.0
    """--horizontal-pod-autoscaler-sync-period."""

    def __init__(self, client: ApiClient, informers: SharedInformerFactory | None = None, *,
                 workers: int | None = None, sync_period: float | None = None,
                 clock: Callable[[], float] = time.monotonic):
        self.sync_period = sync_period or type(self).sync_period
        self.normalizer = Normalizer(clock)
        self._targets: dict[tuple[str, str], Resource] = {}
        super().__init__(client, informers, workers=workers)

    def setup(self) -> None:
        """HPAs (queued on change) and pods, for requests and readiness."""
        self.hpas = self.watch(HORIZONTALPODAUTOSCALERS)
        self.pods = self.informer(PODS)

    async def reconcile(self, key: str) -> Requeue | None:
        """Autoscale one HPA, write its status if it changed, and come back after sync_period."""
        cached = self.hpas.store.get(key)
        if cached is None:
            self.normalizer.forget(key)
            return None
        hpa = copy.deepcopy(cached)
        status = hpa.setdefault("status", {})
        status.setdefault("conditions", [])
        status.setdefault("desiredReplicas", 0)
        await self._autoscale(key, hpa)
        if hpa["status"] != cached.get("status"):
            await self.client.update_status(HORIZONTALPODAUTOSCALERS, hpa)
        return Requeue(after=self.sync_period)

    async def _target(self, ref: Obj) -> Resource:
        """The resource of a scaleTargetRef: built in, or found through discovery (custom resources)."""
        api_version, kind = ref.get("apiVersion") or "v1", ref.get("kind", "")
        try:
            return resource(api_version, kind)
        except KeyError:
            pass
        if (api_version, kind) not in self._targets:
            discovered = await self.client.request("GET", f"/apis/{api_version}" if "/" in api_version
                                                   else f"/api/{api_version}")
            for found in discovered.get("resources") or []:
                if found.get("kind") == kind and "/" not in found.get("name", ""):
                    group, _, version = api_version.rpartition("/")
                    self._targets[api_version, kind] = Resource(group, version, found["name"],
                                                                bool(found.get("namespaced")), kind)
                    break
            else:
                raise LookupError(f"no resource of kind {kind} in {api_version}")
        return self._targets[api_version, kind]

    async def _autoscale(self, key: str, hpa: Obj) -> None:
        """Upstream's reconcileAutoscaler: read the scale, decide, rescale, fill in the status."""
        spec, status, meta = hpa["spec"], hpa["status"], hpa["metadata"]
        conditions = status["conditions"]
        ref = spec.get("scaleTargetRef") or {}
        try:
            target = await self._target(ref)
            scale = await self.client.get(target, ref.get("name", ""), meta["namespace"], subresource="scale")
        except (ApiError, LookupError) as exc:
            set_condition(conditions, "AbleToScale", "False", "FailedGetScale",
                          f"the HPA controller was unable to get the target's current scale: {exc}")
            self.recorder.event(hpa, "Warning", "FailedGetScale", str(exc))
            return
        set_condition(conditions, "AbleToScale", "True", "SucceededGetScale",
                      "the HPA controller was able to get the target's current scale")
        current = (scale.get("spec") or {}).get("replicas") or 0
        low, high = spec.get("minReplicas", 1), spec.get("maxReplicas", 1)
        statuses: list[Obj] = []
        reason = ""
        if current == 0 and low != 0:
            desired = 0
            set_condition(conditions, "ScalingActive", "False", "ScalingDisabled",
                          "scaling is disabled since the replica count of the target is zero")
        elif current > high:
            desired, reason = high, "Current number of replicas above Spec.MaxReplicas"
        elif current < low:
            desired, reason = low, "Current number of replicas below Spec.MinReplicas"
        else:
            proposal, metric, statuses = await self._compute(hpa, scale, current)
            if proposal is None:
                _set_status(status, current, status.get("desiredReplicas") or 0, statuses, None)
                return
            desired, explained = self.normalizer.normalize(key, spec.get("behavior"), low, high, current, proposal)
            for condition in explained:
                set_condition(conditions, *condition)
            reason = f"{metric} above target" if desired > current else "All metrics below target"
        if desired != current:
            try:
                await self.client.update(target, {**scale, "spec": {**scale.get("spec", {}), "replicas": desired}},
                                         meta["namespace"], subresource="scale")
            except ApiError as exc:
                set_condition(conditions, "AbleToScale", "False", "FailedUpdateScale",
                              f"the HPA controller was unable to update the target scale: {exc}")
                self.recorder.event(hpa, "Warning", "FailedRescale",
                                    f"New size: {desired}; reason: {reason}; error: {exc}")
                _set_status(status, current, status.get("desiredReplicas") or 0, statuses, None)
                return
            set_condition(conditions, "AbleToScale", "True", "SucceededRescale",
                          f"the HPA controller was able to update the target scale to {desired}")
            self.recorder.event(hpa, "Normal", "SuccessfulRescale", f"New size: {desired}; reason: {reason}")
            log.info("%s: %s: scaled %s/%s from %d to %d (%s)", self.name, key, ref.get("kind"), ref.get("name"),
                     current, desired, reason)
            self.normalizer.record_scale(key, spec.get("behavior"), current, desired)
            status["lastScaleTime"] = now_time()
        _set_status(status, current, desired, statuses, meta.get("generation"))

    async def _compute(self, hpa: Obj, scale: Obj, current: int) -> tuple[int | None, str, list[Obj]]:
        """(proposed replicas or None, the metric that decided, metric statuses) over every metric spec."""
        conditions, namespace = hpa["status"]["conditions"], hpa["metadata"]["namespace"]
        selector_text = (scale.get("status") or {}).get("selector") or ""
        try:
            if not selector_text:
                raise SelectorError("the HPA target's scale is missing a selector")
            selector = parse_labels(selector_text)
        except SelectorError as exc:
            set_condition(conditions, "ScalingActive", "False", "InvalidSelector", str(exc))
            self.recorder.event(hpa, "Warning", "SelectorRequired" if not selector_text else "InvalidSelector",
                                str(exc))
            return None, "", []
        pods = [p for p in self.pods.store.by_index(NAMESPACE_INDEX, namespace)
                if selector.matches(p["metadata"].get("labels"))]
        fetched: list[Obj] | MetricError | None = None
        best: int | None = None
        metric, statuses, errors = "", [], []
        specs = hpa["spec"].get("metrics") or []
        for metric_spec in specs:
            try:
                if fetched is None and metric_spec.get("type") in ("Resource", "ContainerResource"):
                    fetched = await self._fetch_metrics(namespace, selector_text)
                replicas, name, metric_status = self._replicas_for(metric_spec, pods, fetched, current)
            except MetricError as exc:
                self.recorder.event(hpa, "Warning", exc.reason, exc.detail)
                statuses.append({"type": ""})
                errors.append(exc)
                continue
            statuses.append(metric_status)
            if best is None or replicas > best:
                best, metric = replicas, name
        if errors and (len(errors) >= len(specs) or (best is not None and best < current)):
            first = errors[0]
            set_condition(conditions, "ScalingActive", "False", first.reason,
                          f"the HPA was unable to compute the replica count: {first.detail}")
            self.recorder.event(hpa, "Warning", "FailedComputeMetricsReplicas",
                                f"invalid metrics ({len(errors)} invalid out of {len(specs)}), first error is: {first}")
            return None, "", statuses
        set_condition(conditions, "ScalingActive", "True", "ValidMetricFound",
                      f"the HPA was able to successfully calculate a replica count from {metric}")
        return best, metric, statuses

    async def _fetch_metrics(self, namespace: str, selector: str) -> list[Obj] | MetricError:
        """The PodMetrics of the selected pods, or the error saying why there are none."""
        try:
            listed = await self.client.request("GET", METRICS_API.format(namespace=namespace),
                                               params={"labelSelector": selector})
        except ApiError as exc:
            detail = f"{exc.message} (get pods.metrics.k8s.io)" if exc.code == 404 else exc.message
            return MetricError(f"unable to fetch metrics from resource metrics API: {detail}")
        return listed.get("items") or []

    def _replicas_for(self, metric_spec: Obj, pods: list[Obj], fetched: list[Obj] | MetricError | None,
                      current: int) -> tuple[int, str, Obj]:
        """(replicas, metric description, MetricStatus) for one metric spec; MetricError when it cannot be had."""
        type_ = metric_spec.get("type", "")
        if type_ not in ("Resource", "ContainerResource"):
            api = "external metrics" if type_ == "External" else "custom metrics"
            raise MetricError(f"unable to get {type_} metric: unable to fetch metrics from {api} API: "
                              f"the server could not find the requested resource", f"FailedGet{type_}Metric")
        field = "resource" if type_ == "Resource" else "containerResource"
        source = metric_spec.get(field) or {}
        name, container, target = source.get("name", ""), source.get("container", ""), source.get("target") or {}
        reason = f"FailedGet{type_}Metric"
        what = "usage" if target.get("averageValue") is not None else "utilization"
        try:
            if isinstance(fetched, MetricError):
                raise MetricError(f"unable to get metrics for resource {name}: {fetched}", reason)
            metrics = pod_metrics(fetched or [], name, container)
            if target.get("averageValue") is not None:
                replicas, _, average = resource_replicas(current, pods, metrics, name, time.time(),
                                                         target_average=milli(target["averageValue"]),
                                                         container=container)
                current_value: Obj = {"averageValue": format_milli(average)}
                described = f"{name} resource"
            elif target.get("averageUtilization") is not None:
                replicas, utilization, average = resource_replicas(
                    current, pods, metrics, name, time.time(), target_utilization=target["averageUtilization"],
                    container=container)
                current_value = {"averageUtilization": utilization, "averageValue": format_milli(average)}
                described = f"{name} resource utilization (percentage of request)"
            else:
                raise MetricError("invalid resource metric source: neither an average utilization target nor an "
                                  "average value (usage) target was set", reason)
        except MetricError as exc:
            raise MetricError(f"failed to get {name} {what}: {exc}", reason, str(exc)) from exc
        source_status = {"name": name, **({"container": container} if container else {}), "current": current_value}
        return replicas, described, {"type": type_, field: source_status}

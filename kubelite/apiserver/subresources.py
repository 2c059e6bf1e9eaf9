"""Subresources: status, scale, pods/ephemeralcontainers, pods/binding, pods/eviction and namespaces/finalize;
pod streams and the proxy subresources are handed on."""

from __future__ import annotations

from typing import Any

from aiohttp import web

from kubelite.api.kinds.common import format_labels, format_selector
from kubelite.api.resource import ResourceType
from kubelite.api.selectors import from_label_selector
from kubelite.api.strategy import Obj
from kubelite.apiserver import errors, negotiation, podproxy, proxy, resources, tokenrequest
from kubelite.apiserver.context import ApiContext
from kubelite.apiserver.objects import ListOptions
from kubelite.apiserver.requestinfo import RequestInfo
from kubelite.client.timestamps import now_time


def _get_path(obj: Obj, path: str) -> Any:
    value: Any = obj
    for part in path.strip(".").split("."):
        if not isinstance(value, dict):
            return None
        value = value.get(part)
    return value


def _set_path(obj: Obj, path: str, value: Any) -> None:
    parts = path.strip(".").split(".")
    target = obj
    for part in parts[:-1]:
        target = target.setdefault(part, {})
    target[parts[-1]] = value


def to_scale(rt: ResourceType, obj: Obj) -> Obj:
    """The autoscaling/v1 Scale view of a scalable object."""
    paths = rt.scale
    assert paths is not None
    meta = obj["metadata"]
    status: dict[str, Any] = {"replicas": _get_path(obj, paths.status_replicas) or 0}
    selector = _get_path(obj, paths.label_selector) if paths.label_selector else None
    if isinstance(selector, dict):
        structured = "matchLabels" in selector or "matchExpressions" in selector
        selector = format_selector(selector) if structured else format_labels(selector)
    if selector:
        status["selector"] = selector
    return {
        "kind": "Scale", "apiVersion": "autoscaling/v1",
        "metadata": {k: meta[k] for k in ("name", "namespace", "uid", "resourceVersion", "creationTimestamp")
                     if k in meta},
        "spec": {"replicas": _get_path(obj, paths.spec_replicas) or 0},
        "status": status,
    }


async def handle(ctx: ApiContext, request: web.Request, info: RequestInfo, rt: ResourceType) -> web.StreamResponse:
    sub = info.subresource
    if sub not in rt.subresources and not (sub == "finalize" and rt.plural == "namespaces" and not rt.group):
        raise errors.StatusError(404, "NotFound", "the server could not find the requested resource")
    store, ns, name = ctx.store, info.namespace, info.name
    if sub == "scale":
        return await _scale(ctx, request, info, rt)
    if sub == "binding":
        return await _binding(ctx, request, info, rt)
    if sub == "eviction":
        return await _eviction(ctx, request, info, rt)
    if sub == "token":
        return await tokenrequest.handle(ctx, request, info, rt)
    if sub in ("log", "exec", "attach", "portforward"):
        return await podproxy.handle(ctx, request, info, rt)
    if sub == "proxy":
        return await proxy.handle(ctx, request, info, rt)
    subresource = "status" if sub in ("status", "finalize") else sub
    if info.verb == "get":
        return resources.render(rt, await store.get(rt, ns, name), request)
    opts = resources.write_options(request)
    if info.verb == "update":
        body = await negotiation.read_body(request)
        if sub == "finalize":
            finalizers = (body.get("spec") or {}).get("finalizers") if isinstance(body, dict) else None

            def finalize(current: Obj) -> Obj:
                current.setdefault("spec", {})["finalizers"] = finalizers or []
                return current
            obj = await store.mutate(rt, ns, name, finalize, opts, "finalize")
        else:
            obj = await store.update(rt, ns, name, body, opts, subresource)
        return resources.render(rt, obj, request, 200, opts.warnings)
    if info.verb == "patch":
        change = await resources.patch_function(ctx, request, rt)
        obj = await store.mutate(rt, ns, name, change, opts, subresource)
        return resources.render(rt, obj, request, 200, opts.warnings)
    raise errors.method_not_allowed(f"{info.verb} is not supported on {rt.plural}/{sub}")


async def _scale(ctx: ApiContext, request: web.Request, info: RequestInfo, rt: ResourceType) -> web.StreamResponse:
    store, ns, name = ctx.store, info.namespace, info.name
    paths = rt.scale
    assert paths is not None
    if info.verb == "get":
        return negotiation.respond(to_scale(rt, await store.get(rt, ns, name)), negotiation.output(request))
    opts = resources.write_options(request)
    if info.verb == "update":
        body = await negotiation.read_body(request)
        change_scale = lambda scale: body  # noqa: E731 - the new Scale replaces the old one
    elif info.verb == "patch":
        change_scale = await resources.patch_function(ctx, request, rt)
    else:
        raise errors.method_not_allowed(f"{info.verb} is not supported on {rt.plural}/scale")

    def apply(current: Obj) -> Obj:
        scale = change_scale(to_scale(rt, current))
        if not isinstance(scale, dict):
            raise errors.bad_request("Scale must be an object")
        rv = (scale.get("metadata") or {}).get("resourceVersion")
        if rv and rv != current["metadata"]["resourceVersion"]:
            raise errors.conflict(rt.plural, rt.group, name, errors.MODIFIED)
        replicas = (scale.get("spec") or {}).get("replicas", 0)
        if not isinstance(replicas, int) or isinstance(replicas, bool) or replicas < 0:
            raise errors.invalid("Scale", "autoscaling", name, [
                errors.Cause("spec.replicas", "FieldValueInvalid",
                             f"spec.replicas: Invalid value: {replicas}: must be greater than or equal to 0")])
        _set_path(current, paths.spec_replicas, replicas)
        return current

    obj = await store.mutate(rt, ns, name, apply, opts)
    return negotiation.respond(to_scale(rt, obj), negotiation.output(request))


async def _binding(ctx: ApiContext, request: web.Request, info: RequestInfo, rt: ResourceType) -> web.StreamResponse:
    """POST pods/NAME/binding: assign the pod to a node, once."""
    if info.verb != "create":
        raise errors.method_not_allowed("only create is supported on pods/binding")
    body = await negotiation.read_body(request)
    target = (body.get("target") or {}) if isinstance(body, dict) else {}
    node = target.get("name")
    if not node:
        raise errors.invalid("Binding", "", info.name, [errors.Cause("target.name", "FieldValueRequired",
                                                                     "target.name: Required value")])
    opts = resources.write_options(request)

    def bind(pod: Obj) -> Obj:
        spec = pod.setdefault("spec", {})
        if pod["metadata"].get("deletionTimestamp"):
            raise errors.conflict("pods/binding", "", info.name, "pod is being deleted, cannot be assigned to a host")
        if spec.get("nodeName"):
            raise errors.conflict("pods/binding", "", info.name,
                                  f"pod {info.name} is already assigned to node \"{spec['nodeName']}\"")
        spec["nodeName"] = node
        status = pod.setdefault("status", {})
        conditions = [c for c in status.get("conditions") or [] if c.get("type") != "PodScheduled"]
        status["conditions"] = [{"type": "PodScheduled", "status": "True", "lastProbeTime": None,
                                 "lastTransitionTime": now_time()}, *conditions]
        annotations = (body.get("metadata") or {}).get("annotations")
        if annotations:
            pod["metadata"].setdefault("annotations", {}).update(annotations)
        return pod

    await ctx.store.mutate(rt, info.namespace, info.name, bind, opts, "binding")
    status = {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Success", "code": 201}
    return negotiation.respond(status, negotiation.output(request), 201)


async def _eviction(ctx: ApiContext, request: web.Request, info: RequestInfo, rt: ResourceType) -> web.StreamResponse:
    """POST pods/NAME/eviction: delete the pod unless a PodDisruptionBudget forbids it."""
    if info.verb != "create":
        raise errors.method_not_allowed("only create is supported on pods/eviction")
    body = await negotiation.read_body(request)
    options = (body.get("deleteOptions") or {}) if isinstance(body, dict) else {}
    pod = await ctx.store.get(rt, info.namespace, info.name)
    pdb_rt = ctx.registry.get("policy", "v1", "poddisruptionbudgets")
    opts = resources.write_options(request)
    if pdb_rt is not None and (pod.get("status") or {}).get("phase") not in ("Succeeded", "Failed"):
        labels = pod["metadata"].get("labels") or {}
        budgets = await ctx.store.list(pdb_rt, info.namespace, ListOptions())
        for pdb in budgets["items"]:
            selector = (pdb.get("spec") or {}).get("selector")
            if selector is None or not from_label_selector(selector).matches(labels):
                continue
            allowed = (pdb.get("status") or {}).get("disruptionsAllowed", 0)
            if allowed <= 0:
                raise errors.StatusError(429, "TooManyRequests", "Cannot evict pod as it would violate the pod's "
                                         "disruption budget.", {"causes": [{
                                             "reason": "DisruptionBudget", "message": f"The disruption budget "
                                             f"{pdb['metadata']['name']} needs {_needed(pdb)} healthy pods and "
                                             f"has {(pdb.get('status') or {}).get('currentHealthy', 0)} currently"}]})

            def spend(current: Obj) -> Obj:
                status = current.setdefault("status", {})
                status["disruptionsAllowed"] = max(status.get("disruptionsAllowed", 0) - 1, 0)
                return current
            await ctx.store.mutate(pdb_rt, info.namespace, pdb["metadata"]["name"], spend, opts, "status")
    await ctx.store.delete(rt, info.namespace, info.name, options, opts)
    status = {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Success", "code": 201}
    return negotiation.respond(status, negotiation.output(request), 201)


def _needed(pdb: Obj) -> int:
    return (pdb.get("status") or {}).get("desiredHealthy", 0)

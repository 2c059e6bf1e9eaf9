"""The verbs of a resource path: get, list, create, update, patch, delete, deletecollection."""

from __future__ import annotations

from typing import Any

from aiohttp import web

from kubelite.api import patch as patches
from kubelite.api.resource import ResourceType
from kubelite.api.selectors import SelectorError, parse_fields, parse_labels
from kubelite.api.strategy import Obj
from kubelite.apiserver import errors, negotiation, subresources, views, watch
from kubelite.apiserver.context import ApiContext
from kubelite.apiserver.objects import ListOptions, WriteOptions
from kubelite.apiserver.requestinfo import RequestInfo
from kubelite.client.bodies import read_at_most

PATCH_TYPES = ("application/json-patch+json", "application/merge-patch+json",
               "application/strategic-merge-patch+json")
FIELD_VALIDATION = ("Strict", "Warn", "Ignore", "")


def write_options(request: web.Request) -> WriteOptions:
    query = request.query
    dry_run = query.getall("dryRun", [])
    for value in dry_run:
        if value != "All":
            raise errors.bad_request(f'dryRun: Unsupported value: "{value}": supported values: "All"')
    validation = query.get("fieldValidation", "")
    if validation not in FIELD_VALIDATION:
        raise errors.bad_request(f'fieldValidation: Unsupported value: "{validation}": supported values: '
                                 f'"Ignore", "Strict", "Warn"')
    return WriteOptions(dry_run=bool(dry_run), field_validation=validation or "Warn")


def list_options(rt: ResourceType, request: web.Request) -> ListOptions:
    query = request.query
    opts = ListOptions(resource_version=query.get("resourceVersion", ""),
                       resource_version_match=query.get("resourceVersionMatch", ""),
                       continue_token=query.get("continue", ""))
    try:
        if query.get("labelSelector"):
            opts.labels = parse_labels(query["labelSelector"])
        if query.get("fieldSelector"):
            opts.fields = parse_fields(query["fieldSelector"], rt.strategy.fields({"metadata": {}}).keys())
    except SelectorError as exc:
        raise errors.bad_request(str(exc)) from None
    if query.get("limit"):
        try:
            opts.limit = max(int(query["limit"]), 0)
        except ValueError:
            raise errors.bad_request(f'limit: Invalid value: "{query["limit"]}"') from None
    if opts.resource_version_match not in ("", "Exact", "NotOlderThan"):
        raise errors.bad_request(f'resourceVersionMatch: Unsupported value: "{opts.resource_version_match}"')
    if opts.resource_version_match and not opts.resource_version and not query.get("sendInitialEvents"):
        raise errors.bad_request("resourceVersionMatch is forbidden unless resourceVersion is provided")
    return opts


def _check_verb(rt: ResourceType, info: RequestInfo) -> None:
    verb = info.verb
    if verb not in rt.verbs:
        raise errors.method_not_allowed(f'{verb} is not supported on resources of kind "{rt.plural}"')


def render(rt: ResourceType, obj: Obj, request: web.Request, status: int = 200,
           warnings: list[str] | None = None) -> web.Response:
    out = negotiation.output(request)
    if out.view:
        obj = views.view(rt, obj, out.view, request.query.get("includeObject", "Metadata"))
    return negotiation.respond(obj, out, status, warnings)


async def handle(ctx: ApiContext, request: web.Request, info: RequestInfo) -> web.StreamResponse:
    """Dispatch a resource request; the application has already authenticated it."""
    rt = ctx.registry.get(info.group, info.version, info.resource)
    if rt is None:
        raise errors.StatusError(404, "NotFound", "the server could not find the requested resource")
    if rt.namespaced and info.namespace is None and info.verb not in ("list", "watch", "deletecollection"):
        raise errors.StatusError(404, "NotFound", "the server could not find the requested resource")
    if not rt.namespaced and info.namespace is not None:
        raise errors.StatusError(404, "NotFound", "the server could not find the requested resource")
    if info.subresource:
        return await subresources.handle(ctx, request, info, rt)
    if info.verb == "create" and info.name:
        raise errors.method_not_allowed(f"POST to a named {rt.singular} is not allowed: create on the collection")
    _check_verb(rt, info)
    ns = info.namespace
    store = ctx.store
    if info.verb == "get":
        return render(rt, await store.get(rt, ns, info.name), request)
    if info.verb == "list":
        return render(rt, await store.list(rt, ns, list_options(rt, request)), request)
    if info.verb == "watch":
        opts = list_options(rt, request)
        if info.name:
            opts.fields = parse_fields(f"metadata.name={info.name}")
        return await watch.serve(ctx, request, rt, ns, opts)
    if info.verb == "create":
        opts = write_options(request)
        body = await negotiation.read_body(request)
        obj = await store.create(rt, ns, body, opts)
        return render(rt, obj, request, 200 if opts.dry_run else 201, opts.warnings)
    if info.verb == "update":
        opts = write_options(request)
        body = await negotiation.read_body(request)
        obj = await store.update(rt, ns, info.name, body, opts)
        return render(rt, obj, request, 200, opts.warnings)
    if info.verb == "patch":
        opts = write_options(request)
        change = await patch_function(ctx, request, rt)
        obj = await store.mutate(rt, ns, info.name, change, opts)
        return render(rt, obj, request, 200, opts.warnings)
    if info.verb == "delete":
        opts = write_options(request)
        options = await delete_options(request)
        obj = await store.delete(rt, ns, info.name, options, opts)
        return render(rt, obj, request)
    if info.verb == "deletecollection":
        opts = write_options(request)
        options = await delete_options(request)
        listed = await store.list(rt, ns, list_options(rt, request))
        for item in listed["items"]:
            meta = item["metadata"]
            try:
                await store.delete(rt, meta.get("namespace"), meta["name"], options, opts)
            except errors.StatusError as exc:
                if exc.code != 404:
                    raise
        return render(rt, listed, request)
    raise errors.method_not_allowed(f"{info.verb} is not supported")


async def delete_options(request: web.Request) -> dict[str, Any]:
    """DeleteOptions from the body (kubectl sends one) merged with the query parameters."""
    options: dict[str, Any] = {}
    if request.can_read_body:
        raw = await read_at_most(request.content, negotiation.MAX_BODY)
        if raw.strip():
            body = negotiation.decode_body(raw, negotiation.body_type(request), ("v1", "DeleteOptions"))
            if not isinstance(body, dict):
                raise errors.bad_request("DeleteOptions must be an object")
            options.update(body)
    query = request.query
    if "gracePeriodSeconds" in query:
        try:
            options["gracePeriodSeconds"] = int(query["gracePeriodSeconds"])
        except ValueError:
            raise errors.bad_request("gracePeriodSeconds must be an integer") from None
    if "propagationPolicy" in query:
        options["propagationPolicy"] = query["propagationPolicy"]
    if "orphanDependents" in query:
        options["orphanDependents"] = query["orphanDependents"] in ("true", "1")
    policy = options.get("propagationPolicy")
    if policy not in (None, "Orphan", "Background", "Foreground"):
        raise errors.bad_request(f'propagationPolicy: Unsupported value: "{policy}": supported values: '
                                 f'"Foreground", "Background", "Orphan"')
    return options


async def patch_function(ctx: ApiContext, request: web.Request, rt: ResourceType) -> Any:
    """Read a patch body and return the function that applies it to the current object."""
    content_type = request.content_type
    if content_type == "application/apply-patch+yaml":
        raise errors.StatusError(415, "UnsupportedMediaType", "server-side apply is not supported by kubelite "
                                 "yet: use client-side apply (kubectl apply without --server-side)")
    if content_type not in PATCH_TYPES:
        raise errors.unsupported_media_type(content_type)
    if content_type == "application/strategic-merge-patch+json" and not rt.schema:
        raise errors.StatusError(415, "UnsupportedMediaType", "the body of the request was in an unknown "
                                 "format - accepted media types include: application/json-patch+json, "
                                 "application/merge-patch+json, application/apply-patch+yaml")
    raw = await read_at_most(request.content, negotiation.MAX_BODY)
    if len(raw) > negotiation.MAX_BODY:
        raise errors.too_large()
    body = negotiation.decode_body(raw, "application/json")
    if content_type == "application/json-patch+json":
        if not isinstance(body, list):
            raise errors.bad_request("json patch must be a list of operations")
    elif not isinstance(body, dict):
        raise errors.bad_request("patch must be a JSON object")

    def apply(current: Obj) -> Obj:
        try:
            if content_type == "application/json-patch+json":
                result = patches.json_patch(current, body)
            elif content_type == "application/merge-patch+json":
                result = patches.merge_patch(current, body)
            else:
                result = patches.strategic_merge_patch(ctx.schemas, rt.schema, current, body)
        except patches.PatchError as exc:
            raise errors.StatusError(422, "Invalid", str(exc)) from None
        if not isinstance(result, dict):
            raise errors.bad_request("the patched object is not a JSON object")
        return result

    return apply

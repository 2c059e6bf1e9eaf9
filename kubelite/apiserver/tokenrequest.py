"""POST serviceaccounts/NAME/token: a TokenRequest answered with a signed, expiring service account token.

What `kubectl create token` and the kubelet's serviceAccountToken projection ask for: audiences (default: the API
server), expirationSeconds (at least 10 minutes, default 1 hour) and optionally the Pod, Secret or Node the token
is bound to, which must exist (with that uid, if given) in the ServiceAccount's namespace.
"""

from __future__ import annotations

import time

import orjson
from aiohttp import web

from kubelite.api.resource import ResourceType
from kubelite.api.strategy import Obj
from kubelite.apiserver import errors, negotiation
from kubelite.apiserver.context import ApiContext
from kubelite.apiserver.requestinfo import RequestInfo
from kubelite.apiserver.satokens import DEFAULT_EXPIRATION, ISSUER, MIN_EXPIRATION
from kubelite.client.timestamps import now_time, time_at

MAX_EXPIRATION = 2**32
BOUND_KINDS = {"Pod": "pods", "Secret": "secrets", "Node": "nodes"}


def _invalid(name: str, field: str, value: object, detail: str) -> errors.StatusError:
    return errors.invalid("TokenRequest", "authentication.k8s.io", name, [
        errors.Cause(field, "FieldValueInvalid", f"{field}: Invalid value: {orjson.dumps(value).decode()}: {detail}")])


async def _bound(ctx: ApiContext, namespace: str, name: str, ref: Obj) -> dict[str, str]:
    """The object the token is bound to, checked to exist with the uid the reference names."""
    plural = BOUND_KINDS.get(str(ref.get("kind")))
    if plural is None:
        raise _invalid(name, "spec.boundObjectRef.kind", ref.get("kind"), f"supported values: {sorted(BOUND_KINDS)}")
    rt = ctx.registry.get("", "v1", plural)
    assert rt is not None
    obj = await ctx.store.get(rt, namespace if rt.namespaced else None, str(ref.get("name", "")))
    uid = obj["metadata"]["uid"]
    if ref.get("uid") and ref["uid"] != uid:
        raise errors.conflict(plural, "", str(ref.get("name")),
                              f"the UID in the bound object reference ({ref['uid']}) does not match the UID in "
                              f"record ({uid}); the object might have been deleted and then recreated")
    return {"kind": str(ref["kind"]), "name": obj["metadata"]["name"], "uid": uid}


async def handle(ctx: ApiContext, request: web.Request, info: RequestInfo, rt: ResourceType) -> web.StreamResponse:
    if info.verb != "create":
        raise errors.method_not_allowed(f"{info.verb} is not supported on serviceaccounts/token")
    if ctx.tokens is None:
        raise errors.StatusError(503, "ServiceUnavailable", "this API server has no service account signing key")
    body = await negotiation.read_body(request)
    if not isinstance(body, dict):
        raise errors.bad_request("the body of the request must be a TokenRequest object")
    namespace, name = info.namespace or "", info.name
    account = await ctx.store.get(rt, namespace, name)
    spec = body.get("spec") or {}
    seconds = spec.get("expirationSeconds", DEFAULT_EXPIRATION)
    if not isinstance(seconds, int) or isinstance(seconds, bool):
        raise errors.bad_request("spec.expirationSeconds must be an integer")
    if seconds < MIN_EXPIRATION:
        raise _invalid(name, "spec.expirationSeconds", seconds, "may not specify a duration less than 10 minutes")
    if seconds > MAX_EXPIRATION:
        raise _invalid(name, "spec.expirationSeconds", seconds, "may not specify a duration larger than 2^32 seconds")
    audiences = spec.get("audiences") or [ISSUER]
    if not isinstance(audiences, list) or not all(isinstance(a, str) and a for a in audiences):
        raise _invalid(name, "spec.audiences", audiences, "must be a list of non-empty strings")
    ref = spec.get("boundObjectRef")
    bound = await _bound(ctx, namespace, name, ref) if isinstance(ref, dict) else None
    expires = int(time.time()) + seconds
    token = ctx.tokens.issue(namespace, name, account["metadata"]["uid"], audiences, expires, bound)
    result = {
        "kind": "TokenRequest", "apiVersion": "authentication.k8s.io/v1",
        "metadata": {"name": name, "namespace": namespace, "creationTimestamp": now_time()},
        "spec": {**spec, "audiences": audiences, "expirationSeconds": seconds},
        "status": {"token": token, "expirationTimestamp": time_at(expires)},
    }
    return negotiation.respond(result, negotiation.output(request), 201)

"""Create-only review kinds: SelfSubjectReview, TokenReview, SelfSubjectAccessReview."""

from __future__ import annotations

from typing import Any

from aiohttp import web

from kubelite.api.resource import ResourceType
from kubelite.apiserver import errors, negotiation
from kubelite.apiserver.authn import USER_KEY, Authenticator, UserInfo
from kubelite.client.timestamps import now_time


def user_info(user: UserInfo) -> dict[str, Any]:
    info: dict[str, Any] = {"username": user.username, "groups": list(user.groups)}
    if user.uid:
        info["uid"] = user.uid
    if user.extra:
        info["extra"] = user.extra
    return info


async def handle(authenticator: Authenticator, request: web.Request, rt: ResourceType) -> web.Response:
    """Answer a review from the caller's identity; nothing is stored."""
    body = await negotiation.read_body(request)
    if not isinstance(body, dict):
        raise errors.bad_request("the body of the request must be a JSON object")
    user = request[USER_KEY]
    result: dict[str, Any] = {"kind": rt.kind, "apiVersion": rt.group_version,
                              "metadata": {"creationTimestamp": now_time()}}
    spec = body.get("spec") or {}
    if rt.kind == "SelfSubjectReview":
        result["status"] = {"userInfo": user_info(user)}
    elif rt.kind == "TokenReview":
        reviewed = authenticator.user_from_authorization(f"Bearer {spec.get('token', '')}")
        result["spec"] = spec
        result["status"] = ({"authenticated": True, "user": user_info(reviewed)} if reviewed
                            else {"authenticated": False, "error": "invalid bearer token"})
    else:
        # Authorization is AlwaysAllow for authenticated users until RBAC enforcement lands.
        result["spec"] = spec
        result["status"] = {"allowed": True, "reason": "kubelite allows every authenticated user"}
    return negotiation.respond(result, negotiation.output(request), 201)

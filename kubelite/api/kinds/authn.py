"""authentication.k8s.io/v1 and authorization.k8s.io/v1 review kinds: create-only, never stored."""

from __future__ import annotations

from kubelite.api.resource import ResourceType
from kubelite.api.strategy import Strategy


def _review(group: str, kind: str, plural: str) -> ResourceType:
    api = group.split(".")[0]
    return ResourceType(
        group,
        "v1",
        kind,
        plural,
        False,
        Strategy(has_status=False),
        verbs=("create",),
        schema=f"io.k8s.api.{api}.v1.{kind}",
    )


RESOURCES = [
    _review("authentication.k8s.io", "SelfSubjectReview", "selfsubjectreviews"),
    _review("authentication.k8s.io", "TokenReview", "tokenreviews"),
    _review("authorization.k8s.io", "SelfSubjectAccessReview", "selfsubjectaccessreviews"),
]

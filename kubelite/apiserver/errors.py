"""Kubernetes `Status` errors: every failure a client sees has a code, a reason and details."""

from __future__ import annotations

from typing import Any

from kubelite.api.strategy import Cause


class StatusError(Exception):
    """An API error answered as a meta/v1 Status object."""

    def __init__(self, code: int, reason: str, message: str, details: dict[str, Any] | None = None):
        super().__init__(message)
        self.code = code
        self.reason = reason
        self.message = message
        self.details = details

    def status(self) -> dict[str, Any]:
        body: dict[str, Any] = {
            "kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
            "message": self.message, "reason": self.reason, "code": self.code,
        }
        if self.details:
            body["details"] = self.details
        return body


def _details(name: str, group: str, kind: str) -> dict[str, Any]:
    details: dict[str, Any] = {"name": name, "kind": kind}
    if group:
        details["group"] = group
    return details


def _qualified(resource: str, group: str) -> str:
    return f"{resource}.{group}" if group else resource


def not_found(resource: str, group: str, name: str) -> StatusError:
    return StatusError(404, "NotFound", f'{_qualified(resource, group)} "{name}" not found',
                       _details(name, group, resource))


def already_exists(resource: str, group: str, name: str) -> StatusError:
    return StatusError(409, "AlreadyExists", f'{_qualified(resource, group)} "{name}" already exists',
                       _details(name, group, resource))


def conflict(resource: str, group: str, name: str, detail: str) -> StatusError:
    return StatusError(409, "Conflict",
                       f'Operation cannot be fulfilled on {_qualified(resource, group)} "{name}": {detail}',
                       _details(name, group, resource))


MODIFIED = "the object has been modified; please apply your changes to the latest version and try again"


def invalid(kind: str, group: str, name: str, causes: list[Cause]) -> StatusError:
    qualified = f"{kind}.{group}" if group else kind
    joined = ", ".join(c.message for c in causes)
    message = f'{qualified} "{name}" is invalid: '
    message += f"[{joined}]" if len(causes) > 1 else joined
    details = _details(name, group, kind)
    details["causes"] = [c.as_dict() for c in causes]
    return StatusError(422, "Invalid", message, details)


def bad_request(message: str) -> StatusError:
    return StatusError(400, "BadRequest", message)


def forbidden(resource: str, group: str, name: str, detail: str) -> StatusError:
    return StatusError(403, "Forbidden", f'{_qualified(resource, group)} "{name}" is forbidden: {detail}',
                       _details(name, group, resource))


def unauthorized() -> StatusError:
    return StatusError(401, "Unauthorized", "Unauthorized")


def method_not_allowed(message: str) -> StatusError:
    return StatusError(405, "MethodNotAllowed", message)


def unsupported_media_type(content_type: str) -> StatusError:
    return StatusError(415, "UnsupportedMediaType", f'the body of the request was in an unknown format - '
                       f'accepted media types include: application/json-patch+json, '
                       f'application/merge-patch+json, application/strategic-merge-patch+json '
                       f'(got "{content_type}")')


def not_acceptable(accept: str) -> StatusError:
    return StatusError(406, "NotAcceptable", f'only the following media types are accepted: '
                       f'application/json, application/yaml (got "{accept}")')


def too_large() -> StatusError:
    return StatusError(413, "RequestEntityTooLarge", "Request entity too large: limit is 3145728")


def expired(message: str) -> StatusError:
    return StatusError(410, "Expired", message)


def gone(message: str) -> StatusError:
    return StatusError(410, "Gone", message)


def internal(message: str) -> StatusError:
    return StatusError(500, "InternalError", f"Internal error occurred: {message}")


def timeout(message: str) -> StatusError:
    return StatusError(504, "Timeout", message)

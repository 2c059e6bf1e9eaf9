"""API errors as the client sees them: a meta/v1 Status with a code and a reason, and predicates on it."""

from __future__ import annotations

from http import HTTPStatus
from typing import Any

import aiohttp

CONNECTION_ERRORS = (aiohttp.ClientError, OSError, TimeoutError)
"""What a request raises when the server cannot be reached or the connection breaks: worth a retry."""

# The reason kube-apiserver gives a bare HTTP status when the body is not a Status (client-go's table).
_REASONS = {
    400: "BadRequest", 401: "Unauthorized", 403: "Forbidden", 404: "NotFound", 405: "MethodNotAllowed",
    406: "NotAcceptable", 409: "Conflict", 410: "Gone", 413: "RequestEntityTooLarge", 415: "UnsupportedMediaType",
    422: "Invalid", 429: "TooManyRequests", 500: "InternalError", 503: "ServiceUnavailable", 504: "Timeout",
}


class ApiError(Exception):
    """A non-2xx answer (or a watch ERROR event) carrying the server's Status object."""

    def __init__(self, status: dict[str, Any]):
        self.status = status
        self.code = int(status.get("code") or 0)
        self.reason = str(status.get("reason") or "")
        self.message = str(status.get("message") or "")
        super().__init__(f"{self.code} {self.reason}: {self.message}")


class GoneError(ApiError):
    """410: the resourceVersion asked for is no longer available; the caller must list again."""


def error_from_status(status: dict[str, Any]) -> ApiError:
    """The exception for a Status: GoneError for 410, ApiError otherwise."""
    return GoneError(status) if int(status.get("code") or 0) == 410 else ApiError(status)


def status_for(code: int, body: str) -> dict[str, Any]:
    """A Status for an error answer whose body is not one (a proxy's page, plain text)."""
    try:
        phrase = HTTPStatus(code).phrase
    except ValueError:
        phrase = "Unknown"
    return {"kind": "Status", "apiVersion": "v1", "status": "Failure", "code": code,
            "reason": _REASONS.get(code, "Unknown"), "message": body.strip() or phrase}


def is_not_found(err: BaseException) -> bool:
    """404: the object (or the resource) does not exist."""
    return isinstance(err, ApiError) and err.code == 404


def is_conflict(err: BaseException) -> bool:
    """409 Conflict: a resourceVersion precondition failed; re-read and retry."""
    return isinstance(err, ApiError) and err.code == 409 and err.reason == "Conflict"


def is_already_exists(err: BaseException) -> bool:
    """409 AlreadyExists: a create found an object of that name."""
    return isinstance(err, ApiError) and err.code == 409 and err.reason == "AlreadyExists"


def is_gone(err: BaseException) -> bool:
    """410 Gone or Expired: history before a resourceVersion was compacted away."""
    return isinstance(err, ApiError) and err.code == 410

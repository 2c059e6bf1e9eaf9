"""Authentication: who is calling, from a verified TLS client certificate or a bearer token."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

AUTHENTICATED = "system:authenticated"
UNAUTHENTICATED = "system:unauthenticated"

# Paths open to everyone, credentials or not: Kubernetes' public-info-viewer ones, and k3s's /cacerts.
PUBLIC_PATHS = frozenset({"/healthz", "/livez", "/readyz", "/version", "/version/", "/cacerts"})

_CERT_CACHE_MAX = 4096


@dataclass(frozen=True)
class UserInfo:
    """An authenticated identity, shaped like Kubernetes' user.Info (name, uid, groups, extra)."""

    username: str
    uid: str = ""
    groups: tuple[str, ...] = ()
    extra: dict[str, list[str]] = field(default_factory=dict, hash=False)


USER_KEY = web.RequestKey("user", UserInfo)
"""Where the middleware keeps the authenticated caller of a request."""

ANONYMOUS = UserInfo("system:anonymous", groups=(UNAUTHENTICATED,))


def is_public(path: str) -> bool:
    """Whether a request path may be served without credentials (health and version)."""
    return path in PUBLIC_PATHS


def _digest(token: str) -> bytes:
    """The SHA-256 of a token: lookups by digest leak no timing about the token itself."""
    return hashlib.sha256(token.encode()).digest()


def _with_authenticated(user: UserInfo) -> UserInfo:
    """The user with the group system:authenticated added, as Kubernetes adds it to every known user."""
    if AUTHENTICATED in user.groups:
        return user
    return UserInfo(user.username, user.uid, (*user.groups, AUTHENTICATED), user.extra)


class Authenticator:
    """Maps a request to a UserInfo: the verified client certificate first, then the bearer token."""

    def __init__(self, tokens: dict[str, UserInfo] | None = None) -> None:
        self._tokens: dict[bytes, UserInfo] = {}
        self._cert_users: dict[Any, UserInfo | None] = {}
        for token, user in (tokens or {}).items():
            self.add_token(token, user)

    def add_token(self, token: str, user: UserInfo) -> None:
        """Accept a bearer token as the given user (the server token, service account tokens)."""
        self._tokens[_digest(token)] = _with_authenticated(user)

    def remove_token(self, token: str) -> None:
        """Stop accepting a bearer token (a deleted service account token)."""
        self._tokens.pop(_digest(token), None)

    def authenticate(self, request: web.Request) -> UserInfo | None:
        """The caller's identity, or None without valid credentials (a wrong token is None too)."""
        transport = request.transport
        if transport is not None:
            peercert = transport.get_extra_info("peercert")
            if peercert:
                user = self.user_from_cert(peercert)
                if user is not None:
                    return user
        header = request.headers.get("Authorization")
        if header:
            return self.user_from_authorization(header)
        return None

    def user_from_cert(self, peercert: dict[str, Any]) -> UserInfo | None:
        """The user a verified certificate names: CN is the username, each O a group; None without a CN."""
        subject = peercert.get("subject", ())
        try:
            return self._cert_users[subject]
        except KeyError:
            pass
        username = ""
        groups: list[str] = []
        for rdn in subject:
            for attr, value in rdn:
                if attr == "commonName":
                    username = value
                elif attr == "organizationName":
                    groups.append(value)
        user = _with_authenticated(UserInfo(username, groups=tuple(groups))) if username else None
        if len(self._cert_users) >= _CERT_CACHE_MAX:
            self._cert_users.clear()
        self._cert_users[subject] = user
        return user

    def user_from_authorization(self, header: str) -> UserInfo | None:
        """The user of an `Authorization: Bearer <token>` header value, parsed as Kubernetes does."""
        parts = header.strip().split(" ", 2)
        if len(parts) < 2 or parts[0].lower() != "bearer" or not parts[1]:
            return None
        return self._tokens.get(_digest(parts[1]))

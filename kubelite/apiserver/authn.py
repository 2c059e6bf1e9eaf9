"""Authentication: who is calling, from a verified TLS client certificate or a bearer token."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

from kubelite.apiserver.satokens import TokenSigner, subject

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
        self.signer: TokenSigner | None = None
        """Verifies service account tokens, once the server has its signing key."""
        for token, user in (tokens or {}).items():
            self.add_token(token, user)

    def add_token(self, token: str, user: UserInfo) -> None:
        """Accept a static bearer token as the given user (the server token)."""
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
        """The user of an `Authorization: Bearer <token>` header value, parsed as Kubernetes does: a static token,
        else a service account token the signer issued."""
        parts = header.strip().split(" ", 2)
        if len(parts) < 2 or parts[0].lower() != "bearer" or not parts[1]:
            return None
        user = self._tokens.get(_digest(parts[1]))
        if user is None and self.signer is not None:
            user = self._service_account(parts[1], self.signer)
        return user

    @staticmethod
    def _service_account(token: str, signer: TokenSigner) -> UserInfo | None:
        """system:serviceaccount:NS:NAME in groups system:serviceaccounts(:NS); a token bound to a pod also names
        the pod in extra, as Kubernetes does."""
        claims = signer.verify(token)
        scope = (claims or {}).get("kubernetes.io")
        if not isinstance(scope, dict) or not isinstance(scope.get("serviceaccount"), dict):
            return None
        namespace, account = str(scope.get("namespace", "")), scope["serviceaccount"]
        extra: dict[str, list[str]] = {}
        pod = scope.get("pod")
        if isinstance(pod, dict):
            extra = {"authentication.kubernetes.io/pod-name": [str(pod.get("name", ""))],
                     "authentication.kubernetes.io/pod-uid": [str(pod.get("uid", ""))]}
        return _with_authenticated(UserInfo(subject(namespace, str(account.get("name", ""))),
                                            uid=str(account.get("uid", "")),
                                            groups=("system:serviceaccounts", f"system:serviceaccounts:{namespace}"),
                                            extra=extra))

"""An async OCI distribution API client: manifests and verified blob downloads, with anonymous, basic and token auth."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json
import os
import re
import secrets
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

import aiohttp

from kubelite import __version__
from kubelite.client.bodies import read_at_most
from kubelite.kubelet.images.config import AuthConfig, Endpoint, RegistryConfig
from kubelite.kubelet.images.errors import DigestMismatch, ManifestError, RegistryError
from kubelite.kubelet.images.manifest import ACCEPT, MANIFEST_MAX, parse_document, sha256_digest
from kubelite.kubelet.images.reference import Reference

USER_AGENT = f"kubelite/{__version__}"
CHUNK = 1 << 20
TOKEN_LIFETIME = 60
"""Seconds a token is reused when the token server does not say (the distribution spec's default)."""
_STATUS_TEXT = {400: "bad request", 401: "unauthorized", 403: "denied", 404: "not found", 429: "too many requests"}
_CHALLENGE_PARAM = re.compile(r'\s*([A-Za-z0-9_-]+)\s*=\s*(?:"((?:[^"\\]|\\.)*)"|([^,\s]*))\s*,?')
CONNECTION_ERRORS = (aiohttp.ClientError, asyncio.TimeoutError, OSError)


@dataclass(frozen=True, slots=True)
class Manifest:
    """A manifest or index as fetched: raw bytes (what the digest covers), parsed document, type and digest."""

    raw: bytes
    doc: dict[str, Any]
    media_type: str
    digest: str


def parse_challenge(header: str) -> tuple[str, dict[str, str]]:
    """Split `WWW-Authenticate: Bearer realm="...",service="...",scope="..."` into scheme and parameters."""
    scheme, _, rest = header.strip().partition(" ")
    params: dict[str, str] = {}
    for match in _CHALLENGE_PARAM.finditer(rest):
        quoted, bare = match.group(2), match.group(3)
        params[match.group(1).lower()] = re.sub(r"\\(.)", r"\1", quoted) if quoted is not None else bare
    return scheme.lower(), params


def error_text(status: int, body: bytes) -> tuple[str, tuple[str, ...]]:
    """A registry error response as text (`not found: MANIFEST_UNKNOWN: manifest unknown`) and its error codes."""
    text = _STATUS_TEXT.get(status, f"HTTP {status}")
    codes: list[str] = []
    details: list[str] = []
    try:
        errors = json.loads(body).get("errors") or []
    except (ValueError, AttributeError):
        errors = []
    for error in errors if isinstance(errors, list) else []:
        if isinstance(error, dict):
            code, message = str(error.get("code") or ""), str(error.get("message") or "")
            codes.append(code)
            details.append(": ".join(filter(None, (code, message))))
    if details:
        text += ": " + "; ".join(details)
    return text, tuple(codes)


def _basic(auth: AuthConfig) -> str:
    """An HTTP basic Authorization header value."""
    return "Basic " + base64.b64encode(f"{auth.username}:{auth.password}".encode()).decode()


class _Remote:
    """One endpoint for one repository: HTTP requests with the 401 challenge answered and the token kept."""

    def __init__(self, session: aiohttp.ClientSession, endpoint: Endpoint, repository: str,
                 auth: AuthConfig | None, ssl: Any) -> None:
        self.session = session
        self.endpoint = endpoint
        self.repository = repository
        self.auth = auth
        self.ssl = ssl
        self.authorization: str | None = None
        self.expires = 0.0

    def url(self, kind: str, obj: str) -> str:
        return f"{self.endpoint.url}/v2/{self.repository}/{kind}/{obj}"

    async def get(self, url: str, headers: dict[str, str]) -> aiohttp.ClientResponse:
        """GET with auth: answer one 401 challenge (basic or bearer), then return whatever the registry says."""
        response = await self._send(url, headers)
        if response.status != 401:
            return response
        challenge = response.headers.get("WWW-Authenticate", "")
        body = await response.read()
        response.release()
        if not challenge:
            text, codes = error_text(401, body)
            raise RegistryError(f"{self.endpoint.url}: {text}", 401, codes)
        await self.authenticate(challenge)
        return await self._send(url, headers)

    async def _send(self, url: str, headers: dict[str, str]) -> aiohttp.ClientResponse:
        request_headers = {"User-Agent": USER_AGENT, **headers}
        if self.authorization and time.monotonic() < self.expires:
            request_headers["Authorization"] = self.authorization
        return await self.session.get(url, headers=request_headers, ssl=self.ssl)

    async def authenticate(self, challenge: str) -> None:
        """Answer a challenge: Basic with the credentials, or Bearer with a token from the realm (Docker Hub's flow)."""
        scheme, params = parse_challenge(challenge)
        if scheme == "basic":
            if not self.auth or not self.auth.username:
                raise RegistryError(f"{self.endpoint.url}: unauthorized: the registry requires a username and "
                                    f"password (none configured for {self.endpoint.host})", 401, ("UNAUTHORIZED",))
            self.authorization, self.expires = _basic(self.auth), float("inf")
            return
        if scheme != "bearer" or not params.get("realm"):
            raise RegistryError(f"{self.endpoint.url}: unsupported authentication challenge {challenge!r}", 401)
        token, lifetime = await self.fetch_token(params)
        self.authorization, self.expires = f"Bearer {token}", time.monotonic() + max(lifetime - 5, 1)

    async def fetch_token(self, params: Mapping[str, str]) -> tuple[str, int]:
        """Get a bearer token from the challenge's realm: anonymously, with basic credentials, or an identity token."""
        query = {"service": params.get("service", "")} if params.get("service") else {}
        query["scope"] = params.get("scope") or f"repository:{self.repository}:pull"
        realm = params["realm"]
        headers = {"User-Agent": USER_AGENT}
        try:
            if self.auth and self.auth.identity_token:
                form = {**query, "grant_type": "refresh_token", "refresh_token": self.auth.identity_token,
                        "client_id": "kubelite"}
                response = await self.session.post(realm, data=form, headers=headers, ssl=self.ssl)
            else:
                if self.auth and self.auth.username:
                    headers["Authorization"] = _basic(self.auth)
                response = await self.session.get(realm, params=query, headers=headers, ssl=self.ssl)
            async with response:
                body = await response.read()
                status = response.status
        except CONNECTION_ERRORS as err:
            raise RegistryError(f"token server {realm}: {err or type(err).__name__}") from err
        if status != 200:
            text, codes = error_text(status, body)
            raise RegistryError(f"token server {realm}: {text}", status, codes or ("UNAUTHORIZED",))
        try:
            data = json.loads(body)
        except ValueError:
            data = None
        if not isinstance(data, dict) or not (data.get("token") or data.get("access_token")):
            raise RegistryError(f"token server {realm} answered without a token", 401, ("UNAUTHORIZED",))
        token, expires_in = data.get("token") or data["access_token"], data.get("expires_in")
        return str(token), expires_in if isinstance(expires_in, int) and expires_in > 0 else TOKEN_LIFETIME


class RegistryClient:
    """One repository's content: resolves a reference over the mirrors, then reads from the endpoint that had it."""

    def __init__(self, session: aiohttp.ClientSession, config: RegistryConfig, reference: Reference,
                 credentials: Mapping[str, AuthConfig] | None = None) -> None:
        self.reference = reference
        self.remotes = [
            _Remote(session, endpoint, reference.repository,
                    config.auth_for(endpoint, reference.registry, credentials), config.ssl_for(endpoint.host))
            for endpoint in config.endpoints(reference.registry)
        ]
        self.remote: _Remote | None = None

    async def resolve(self) -> Manifest:
        """Fetch the reference's manifest or index, trying each endpoint in order; remember the one that answered."""
        failures: list[RegistryError] = []
        for remote in self.remotes:
            try:
                manifest = await self._manifest(remote, self.reference.object)
            except RegistryError as err:
                failures.append(err)
                continue
            self.remote = remote
            return manifest
        best = next((err for err in failures if err.status in (401, 403, 404)), failures[-1])
        detail = "; ".join(str(err) for err in failures)
        raise RegistryError(f'failed to resolve reference "{self.reference}": {detail}', best.status, best.codes)

    async def manifest(self, digest: str) -> Manifest:
        """Fetch a manifest by digest from the endpoint that resolved the reference."""
        try:
            return await self._manifest(self._bound(), digest)
        except RegistryError as err:
            raise RegistryError(f"failed to fetch manifest {self.reference.name}@{digest}: {err}", err.status,
                                err.codes) from err

    async def _manifest(self, remote: _Remote, obj: str) -> Manifest:
        where = f"(at {remote.endpoint.url})"
        try:
            response = await remote.get(remote.url("manifests", obj), {"Accept": ACCEPT})
            async with response:
                if response.status != 200:
                    text, codes = error_text(response.status, await response.read())
                    raise RegistryError(f"{text} {where}", response.status, codes)
                if (response.content_length or 0) > MANIFEST_MAX:
                    raise RegistryError(f"manifest larger than {MANIFEST_MAX} bytes {where}")
                raw = await read_at_most(response.content, MANIFEST_MAX)
                content_type = response.headers.get("Content-Type", "")
        except CONNECTION_ERRORS as err:
            raise RegistryError(f"{err or type(err).__name__} {where}") from err
        digest = sha256_digest(raw)
        if obj.startswith("sha256:") and digest != obj:
            raise RegistryError(f"the manifest served has digest {digest}, not the requested one {where}")
        try:
            kind, doc = parse_document(raw, content_type)
        except ManifestError as err:
            raise RegistryError(f"{err} {where}") from err
        return Manifest(raw, doc, kind, digest)

    async def fetch_blob(self, digest: str, size: int, dest: Path, tmp_dir: Path,
                         progress: Callable[[int], None] | None = None) -> None:
        """Stream a blob to `dest`, verifying size and sha256 on the way; on any mismatch nothing is stored."""
        remote = self._bound()
        tmp = tmp_dir / f"{os.getpid()}-{secrets.token_hex(8)}"
        writer = await asyncio.to_thread(_BlobWriter, tmp)
        try:
            try:
                response = await remote.get(remote.url("blobs", digest), {})
                async with response:
                    if response.status != 200:
                        text, codes = error_text(response.status, await response.read())
                        raise RegistryError(f"{self.reference.name}@{digest}: {text} (at {remote.endpoint.url})",
                                            response.status, codes)
                    buffer = bytearray()
                    async for chunk in response.content.iter_chunked(CHUNK):
                        buffer += chunk
                        if writer.size + len(buffer) > size:
                            raise DigestMismatch(f"{self.reference.name}@{digest}: more than the {size} bytes "
                                                 "the manifest promised")
                        if len(buffer) >= CHUNK:
                            await asyncio.to_thread(writer.write, bytes(buffer))
                            buffer.clear()
                            if progress:
                                progress(writer.size)
                    await asyncio.to_thread(writer.write, bytes(buffer))
            except CONNECTION_ERRORS as err:
                reason = err or type(err).__name__
                raise RegistryError(f"{remote.endpoint.url}: downloading {digest}: {reason}") from err
            await asyncio.to_thread(writer.close)
            if writer.size != size or writer.digest() != digest:
                raise DigestMismatch(f"{self.reference.name}@{digest}: downloaded {writer.size} bytes with digest "
                                     f"{writer.digest()}, expected {size} bytes with digest {digest}")
            await asyncio.to_thread(os.replace, tmp, dest)
            if progress:
                progress(writer.size)
        finally:
            await asyncio.to_thread(writer.discard)

    def _bound(self) -> _Remote:
        if self.remote is None:
            raise RuntimeError("resolve() the reference first")
        return self.remote


class _BlobWriter:
    """A file being written with its sha256 computed on the way (used from a worker thread)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.file: BinaryIO | None = open(path, "wb")
        self.hash = hashlib.sha256()
        self.size = 0

    def write(self, data: bytes) -> None:
        assert self.file is not None
        self.file.write(data)
        self.hash.update(data)
        self.size += len(data)

    def close(self) -> None:
        if self.file:
            self.file.close()
            self.file = None

    def digest(self) -> str:
        return f"sha256:{self.hash.hexdigest()}"

    def discard(self) -> None:
        """Close and remove the temporary file unless it was moved into place."""
        self.close()
        self.path.unlink(missing_ok=True)

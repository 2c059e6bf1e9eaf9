"""A real `docker-registry` (Debian's distribution 2.8) on loopback for tests, with the auth setups a pull must handle.

- `registry`: anonymous, plain HTTP.
- `token_registry`: the registry verifies bearer tokens (JWTs signed by a test certificate, as Docker Hub's are) that a
  small token server here issues for basic credentials: Docker Hub's flow end to end.
- `basic_registry`: a small proxy that demands HTTP basic auth in front of the real registry. Debian's registry only
  checks bcrypt htpasswd files, and neither `bcrypt` nor `htpasswd` is installed here, so the proxy stands in for it.

The fixtures are registered for every test by the root conftest.py; or call the start/stop functions directly.
"""

from __future__ import annotations

import asyncio
import base64
import datetime
import json
import re
import secrets
import subprocess
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from cryptography.x509.oid import NameOID

from tests.e2e.conftest import free_port

REGISTRY_BIN = "/usr/bin/docker-registry"
SERVICE = "kubelite-test-registry"
ISSUER = "kubelite-test-token-issuer"
USERNAME = "puller"
PASSWORD = "s3cret-pass"
IDENTITY_TOKEN = "refresh-" + secrets.token_hex(8)
_ACCESS_LINE = re.compile(r'"(GET|HEAD|PUT|POST|PATCH|DELETE) (\S+) HTTP/[\d.]+" (\d+)')


@dataclass
class Registry:
    """A running docker-registry (possibly behind an auth front) and how to reach it."""

    url: str
    """What clients use: the registry itself, or the auth front."""
    storage: Path
    log: Path
    proc: subprocess.Popen[bytes]
    direct_url: str
    """The registry itself (bypassing any auth front), for pushes in tests that do not test auth."""
    fronts: list[_ThreadedApp] = field(default_factory=list)
    authority: TokenAuthority | None = None
    users: dict[str, str] = field(default_factory=dict)
    """Who may pull, when the registry wants credentials."""
    identity_tokens: dict[str, str] = field(default_factory=dict)
    """Identity (refresh) tokens the token server accepts, and whose they are."""

    @property
    def host(self) -> str:
        """host:port, as written in image references."""
        return self.url.split("://", 1)[1]

    def blob_file(self, digest: str) -> Path:
        """Where the registry's filesystem driver keeps a blob's bytes."""
        hex_digest = digest.split(":", 1)[1]
        return self.storage / "docker/registry/v2/blobs/sha256" / hex_digest[:2] / hex_digest / "data"

    def requests(self, method: str = "GET", contains: str = "") -> list[tuple[str, int]]:
        """(path, status) of requests the registry served, from its access log."""
        found = []
        for match in _ACCESS_LINE.finditer(self.log.read_text(errors="replace")):
            if match.group(1) == method and contains in match.group(2):
                found.append((match.group(2), int(match.group(3))))
        return found

    def push_authorization(self, repository: str) -> str | None:
        """An Authorization header that lets tests push to `repository` (token registries only need one)."""
        if self.authority is None:
            return None
        return "Bearer " + self.authority.mint("pusher", [("repository", repository, ["pull", "push"])])


def _wait_ready(url: str, proc: subprocess.Popen[bytes], log: Path, timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"docker-registry exited with {proc.returncode}:\n{log.read_text()}")
        try:
            with urllib.request.urlopen(f"{url}/v2/", timeout=1):
                return
        except urllib.error.HTTPError:
            return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"docker-registry did not answer at {url} in {timeout}s:\n{log.read_text()}")


def start_registry(workdir: Path, auth: dict[str, Any] | None = None) -> Registry:
    """Start docker-registry with filesystem storage under workdir on a free loopback port."""
    workdir.mkdir(parents=True, exist_ok=True)
    port = free_port()
    config: dict[str, Any] = {
        "version": 0.1,
        "log": {"level": "info", "accesslog": {"disabled": False}},
        "storage": {"filesystem": {"rootdirectory": str(workdir / "storage")}, "delete": {"enabled": True}},
        "http": {"addr": f"127.0.0.1:{port}", "secret": secrets.token_hex(16)},
    }
    if auth:
        config["auth"] = auth
    config_path = workdir / "config.yml"
    config_path.write_text(json.dumps(config))
    log = workdir / "registry.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen([REGISTRY_BIN, "serve", str(config_path)], stdout=out, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    try:
        _wait_ready(url, proc, log)
    except BaseException:
        proc.kill()
        proc.wait()
        raise
    return Registry(url, workdir / "storage", log, proc, url)


def stop_registry(registry: Registry) -> None:
    """Stop the registry process and any auth front."""
    for front in registry.fronts:
        front.stop()
    registry.proc.terminate()
    try:
        registry.proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
        registry.proc.kill()
        registry.proc.wait()


class _ThreadedApp:
    """An aiohttp application served from its own thread and event loop, so sync fixtures can run it."""

    def __init__(self, app: web.Application, port: int) -> None:
        self.port = port
        self.loop = asyncio.new_event_loop()
        self.runner = web.AppRunner(app)
        started = threading.Event()

        def serve() -> None:
            asyncio.set_event_loop(self.loop)
            self.loop.run_until_complete(self.runner.setup())
            self.loop.run_until_complete(web.TCPSite(self.runner, "127.0.0.1", port).start())
            started.set()
            self.loop.run_forever()
            self.loop.run_until_complete(self.runner.cleanup())
            self.loop.close()

        self.thread = threading.Thread(target=serve, daemon=True)
        self.thread.start()
        if not started.wait(10):
            raise RuntimeError("test HTTP server did not start")

    def stop(self) -> None:
        """Stop serving and wait for the thread."""
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


class TokenAuthority:
    """Signs registry tokens (RS256 JWTs with the certificate in `x5c`) that docker-registry's token auth verifies."""

    def __init__(self, workdir: Path) -> None:
        self.key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "kubelite test token signer")])
        now = datetime.datetime.now(datetime.UTC)
        self.cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name)
                     .public_key(self.key.public_key()).serial_number(x509.random_serial_number())
                     .not_valid_before(now - datetime.timedelta(days=1))
                     .not_valid_after(now + datetime.timedelta(days=1))
                     .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
                     .sign(self.key, hashes.SHA256()))
        self.bundle = workdir / "token-signer.pem"
        self.bundle.write_bytes(self.cert.public_bytes(serialization.Encoding.PEM))
        self.issued: list[dict[str, Any]] = []

    def registry_auth(self, realm: str) -> dict[str, Any]:
        """The registry's `auth: token:` configuration trusting this authority."""
        return {"token": {"realm": realm, "service": SERVICE, "issuer": ISSUER, "rootcertbundle": str(self.bundle)}}

    def mint(self, subject: str, access: list[tuple[str, str, list[str]]]) -> str:
        """A signed token granting `access` as (type, name, actions)."""
        now = int(time.time())
        header = {"typ": "JWT", "alg": "RS256",
                  "x5c": [base64.b64encode(self.cert.public_bytes(serialization.Encoding.DER)).decode()]}
        claims = {"iss": ISSUER, "sub": subject, "aud": SERVICE, "exp": now + 300, "nbf": now - 10, "iat": now,
                  "jti": secrets.token_hex(8),
                  "access": [{"type": kind, "name": name, "actions": actions} for kind, name, actions in access]}
        signing_input = f"{_b64url(json.dumps(header).encode())}.{_b64url(json.dumps(claims).encode())}"
        signature = self.key.sign(signing_input.encode(), padding.PKCS1v15(), hashes.SHA256())
        return f"{signing_input}.{_b64url(signature)}"

    def token_app(self, users: dict[str, str], refresh_tokens: dict[str, str]) -> web.Application:
        """The token endpoint, as Docker Hub's: GET with basic credentials of `users` (or anonymously: pull of
        `public/` repositories only), or POST an OAuth2 refresh token (an identity token) from `refresh_tokens`."""
        async def token(request: web.Request) -> web.Response:
            params = request.query if request.method == "GET" else await request.post()
            subject = ""
            if request.method == "POST":
                subject = refresh_tokens.get(str(params.get("refresh_token")), "")
                if params.get("grant_type") != "refresh_token" or not subject:
                    return web.json_response({"error": "invalid_grant"}, status=401)
            elif request.headers.get("Authorization"):
                try:
                    basic = aiohttp.BasicAuth.decode(request.headers["Authorization"])
                except ValueError:
                    return web.json_response({"details": "bad authorization header"}, status=400)
                if users.get(basic.login) != basic.password:
                    return web.json_response({"details": "incorrect username or password"}, status=401)
                subject = basic.login
            if params.get("service") != SERVICE:
                return web.json_response({"details": "unknown service"}, status=400)
            scopes = [str(scope) for scope in params.getall("scope", [])]
            access = []
            for scope in scopes:
                kind, _, rest = scope.partition(":")
                name, _, actions = rest.rpartition(":")
                if subject or name.startswith("public/"):
                    access.append((kind, name, [a for a in actions.split(",") if a == "pull"]))
            self.issued.append({"subject": subject, "scopes": scopes, "access": access})
            minted = self.mint(subject, access)
            if request.method == "POST":
                return web.json_response({"access_token": minted, "expires_in": 300})
            return web.json_response({"token": minted, "expires_in": 300})

        app = web.Application()
        app.router.add_get("/token", token)
        app.router.add_post("/token", token)
        return app


def start_token_registry(workdir: Path, users: dict[str, str], refresh_tokens: dict[str, str] | None = None,
                         ) -> Registry:
    """A registry that wants bearer tokens, and the token server issuing them for basic credentials of `users` or
    the identity tokens in `refresh_tokens` (token → user)."""
    workdir.mkdir(parents=True, exist_ok=True)
    authority = TokenAuthority(workdir)
    port = free_port()
    front = _ThreadedApp(authority.token_app(users, refresh_tokens or {}), port)
    try:
        registry = start_registry(workdir, authority.registry_auth(f"http://127.0.0.1:{port}/token"))
    except BaseException:
        front.stop()
        raise
    registry.fronts.append(front)
    registry.authority, registry.users = authority, dict(users)
    registry.identity_tokens = dict(refresh_tokens or {})
    return registry


def basic_auth_front(upstream: str, users: dict[str, str]) -> web.Application:
    """A read-only front that answers 401 with a Basic challenge unless the request has a user's credentials."""
    async def proxy(request: web.Request) -> web.StreamResponse:
        header = request.headers.get("Authorization", "")
        try:
            basic = aiohttp.BasicAuth.decode(header) if header else None
        except ValueError:
            basic = None
        if basic is None or users.get(basic.login) != basic.password:
            body = {"errors": [{"code": "UNAUTHORIZED", "message": "authentication required", "detail": None}]}
            return web.json_response(body, status=401,
                                     headers={"WWW-Authenticate": 'Basic realm="kubelite-test-registry"'})
        headers = {k: v for k, v in request.headers.items() if k.lower() in ("accept", "range")}
        async with aiohttp.ClientSession() as session, \
                session.request(request.method, upstream + request.rel_url.path_qs, headers=headers) as answer:
            body = await answer.read()
            keep = {k: v for k, v in answer.headers.items()
                    if k.lower() in ("content-type", "docker-content-digest", "docker-distribution-api-version")}
            return web.Response(body=body, status=answer.status, headers=keep)

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", proxy)
    return app


def start_basic_registry(workdir: Path, users: dict[str, str]) -> Registry:
    """A registry reachable only through a basic-auth front (pushes go to `direct_url`)."""
    registry = start_registry(workdir)
    port = free_port()
    registry.fronts.append(_ThreadedApp(basic_auth_front(registry.direct_url, users), port))
    registry.url, registry.users = f"http://127.0.0.1:{port}", dict(users)
    return registry


@pytest.fixture(scope="module")
def registry(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Registry]:
    """An anonymous registry for the module."""
    running = start_registry(tmp_path_factory.mktemp("registry"))
    yield running
    stop_registry(running)


@pytest.fixture(scope="module")
def token_registry(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Registry]:
    """A registry with Docker Hub-style token auth: USERNAME/PASSWORD or IDENTITY_TOKEN may pull; anyone may pull
    `public/` repositories."""
    running = start_token_registry(tmp_path_factory.mktemp("token-registry"), {USERNAME: PASSWORD},
                                   {IDENTITY_TOKEN: USERNAME})
    yield running
    stop_registry(running)


@pytest.fixture(scope="module")
def basic_registry(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Registry]:
    """A registry behind HTTP basic auth; USERNAME/PASSWORD may pull."""
    running = start_basic_registry(tmp_path_factory.mktemp("basic-registry"), {USERNAME: PASSWORD})
    yield running
    stop_registry(running)

"""The API server: a thin aiohttp application wiring storage, resources, discovery and security."""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path

import orjson
from aiohttp import web

from kubelite.api import names
from kubelite.api.kinds.builtin import BUILTIN
from kubelite.api.registry import Registry
from kubelite.api.schema import Schemas
from kubelite.apiserver import bootstrap, errors, negotiation, pki, podproxy, proxy, requestinfo, resources, reviews
from kubelite.apiserver.allocators import ServiceAllocator
from kubelite.apiserver.authn import ANONYMOUS, USER_KEY, Authenticator, UserInfo, is_public
from kubelite.apiserver.context import ApiContext
from kubelite.apiserver.crds import CrdServer
from kubelite.apiserver.discovery import Discovery, version_info
from kubelite.apiserver.flowcontrol import WritePriority
from kubelite.apiserver.metered import MeteredBackend
from kubelite.apiserver.metrics import Metrics
from kubelite.apiserver.objects import ListOptions, ObjectStore
from kubelite.apiserver.openapi import OpenAPI
from kubelite.apiserver.priority import PriorityAdmission
from kubelite.apiserver.saadmission import ServiceAccountAdmission
from kubelite.apiserver.satokens import TokenSigner
from kubelite.apiserver.storageadmission import (
    ClaimResizeAdmission,
    DefaultStorageClassAdmission,
    protect_storage_objects,
)
from kubelite.client.join import CLIENT_CA_PATH, NODE_CREDENTIALS_PATH
from kubelite.storage import Backend, open_backend

log = logging.getLogger(__name__)
INFO_KEY = web.RequestKey("info", requestinfo.RequestInfo | None)


ADMISSION_PLUGINS = ("Priority", "ServiceAccount", "DefaultStorageClass", "PersistentVolumeClaimResize",
                     "StorageObjectInUseProtection")
"""The admission plugins that can be turned off (--disable-admission-plugins)."""


@dataclass
class ApiServerConfig:
    data_dir: Path = Path("/var/lib/kubelite")
    bind_address: str = "0.0.0.0"
    https_port: int = 6443
    datastore_endpoint: str = ""
    service_cidr: str = "10.43.0.0/16"
    tls_san: list[str] = field(default_factory=list)
    advertise_address: str = "127.0.0.1"
    disable_admission_plugins: list[str] = field(default_factory=list)
    """Admission plugins to leave out, by upstream's names (ADMISSION_PLUGINS)."""
    local_storage_path: Path | None = None
    """Where the default StorageClass puts local-path volumes (None: DATA/storage); used when the class is made."""

    def __post_init__(self) -> None:
        unknown = set(self.disable_admission_plugins) - set(ADMISSION_PLUGINS)
        if unknown:
            raise ValueError(f"unknown admission plugins {sorted(unknown)}; known: {', '.join(ADMISSION_PLUGINS)}")

    @property
    def server_dir(self) -> Path:
        return self.data_dir / "server"


def _json_status(err: errors.StatusError) -> web.Response:
    return web.Response(body=orjson.dumps(err.status()), status=err.code, content_type="application/json")


class ApiServer:
    """Owns the storage backend, the registry and the HTTPS listener."""

    def __init__(self, config: ApiServerConfig, backend: Backend | None = None):
        self.config = config
        self.metrics = Metrics()
        self.backend = MeteredBackend(backend or open_backend(config.datastore_endpoint, str(config.data_dir)),
                                      self.metrics)
        self.registry = Registry(BUILTIN)
        self.schemas = Schemas()
        self.store = ObjectStore(self.backend, self.schemas)
        self.ctx = ApiContext(self.registry, self.schemas, self.backend, self.store, self.metrics)
        self.discovery = Discovery(self.registry)
        self.openapi = OpenAPI(self.registry, self.schemas)
        self.allocator = ServiceAllocator(config.service_cidr)
        self.crds = CrdServer(self.ctx)
        plugins = {"Priority": PriorityAdmission(self.store, self.registry).admit,
                   "ServiceAccount": ServiceAccountAdmission(self.store, self.registry).admit,
                   "DefaultStorageClass": DefaultStorageClassAdmission(self.store, self.registry).admit,
                   "PersistentVolumeClaimResize": ClaimResizeAdmission(self.store, self.registry).admit,
                   "StorageObjectInUseProtection": protect_storage_objects}
        self.store.admission += [self.allocator.admit, self.crds.admit,
                                 *(admit for name, admit in plugins.items()
                                   if name not in config.disable_admission_plugins)]
        self.store.on_deleted.append(self.allocator.release)
        self.authenticator = Authenticator()
        self.writes = WritePriority()
        self.runner: web.AppRunner | None = None
        self.pki: pki.Pki | None = None

    def application(self) -> web.Application:
        app = web.Application(middlewares=[self._middleware], client_max_size=4 * 1024 * 1024)
        app.router.add_route("*", "/{tail:.*}", self._dispatch)
        proxy.install(app)
        if self.pki is not None:
            podproxy.install(app, self.pki)
        return app

    async def open(self) -> None:
        """Open storage and load state: allocations, default objects, served CRDs."""
        cfg = self.config
        await self.backend.start()
        services = self.registry.get("", "v1", "services")
        assert services is not None
        self.allocator.load((await self.store.list(services, None, ListOptions()))["items"])
        await bootstrap.ensure_defaults(self.store, self.registry, cfg.advertise_address, cfg.https_port,
                                          str(cfg.local_storage_path or cfg.data_dir / "storage"))
        await self.crds.start()

    async def start(self) -> None:
        """Open, make certificates and tokens, then listen on HTTPS."""
        cfg = self.config
        await self.open()
        hosts = [h for h in {cfg.bind_address, cfg.advertise_address, *cfg.tls_san} if h and h != "0.0.0.0"]
        self.pki = pki.ensure_pki(cfg.server_dir / "tls", hosts)
        self.ctx.tokens = self.authenticator.signer = TokenSigner(
            pki.ensure_signing_key(cfg.server_dir / "tls" / "service-account.key"))
        token = pki.ensure_token(cfg.server_dir / "token")
        self.authenticator.add_token(token, UserInfo("system:admin", groups=("system:masters",)))
        node_token = pki.node_token(self.pki.server_ca.cert_pem, token)
        (cfg.server_dir / "node-token").write_text(node_token + "\n")
        (cfg.server_dir / "node-token").chmod(0o600)
        self.runner = web.AppRunner(self.application(), access_log=None, handle_signals=False,
                                    shutdown_timeout=1.0)
        await self.runner.setup()
        site = web.TCPSite(self.runner, cfg.bind_address, cfg.https_port,
                           ssl_context=pki.server_ssl_context(self.pki), backlog=1024)
        await site.start()
        log.info("apiserver listening on https://%s:%d", cfg.bind_address, cfg.https_port)

    async def stop(self) -> None:
        await self.crds.stop()
        if self.runner is not None:
            await self.runner.cleanup()
        await self.backend.close()

    @web.middleware
    async def _middleware(self, request: web.Request, handler: web.RequestHandler) -> web.StreamResponse:
        started = time.perf_counter()
        info = None
        code = 500
        try:
            user = self.authenticator.authenticate(request)
            if user is None and not is_public(request.path):
                raise errors.unauthorized()
            request[USER_KEY] = user or ANONYMOUS
            info = requestinfo.parse(request.method, request.path, request.query)
            request[INFO_KEY] = info
            async with self.writes.turn(info):
                response = await handler(request)
            code = response.status
            return response
        except errors.StatusError as exc:
            code = exc.code
            return _json_status(exc)
        except (ConnectionResetError, asyncio.CancelledError):
            code = 499
            raise
        except Exception as exc:  # noqa: BLE001 - a bug must answer 500, never kill the server
            log.exception("internal error serving %s %s", request.method, request.path)
            return _json_status(errors.internal(f"{type(exc).__name__}: {exc}"))
        finally:
            if info is not None and info.verb != "watch":
                self.metrics.observe_request(info.verb.upper() if info.verb else request.method, info.group,
                                             info.version, info.resource, info.subresource,
                                             "namespace" if info.namespace else ("resource" if info.name
                                                                                 else "cluster"),
                                             code, time.perf_counter() - started)

    async def _node_credentials(self, request: web.Request) -> web.StreamResponse:
        """A joining agent's own client certificate (CN system:node:NAME, O system:nodes), issued to holders of the
        node token (k3s's bootstrap: the token proves the right to join)."""
        if request.method != "POST":
            raise errors.method_not_allowed(f"{request.method} is not supported on {NODE_CREDENTIALS_PATH}")
        if "system:masters" not in request[USER_KEY].groups:
            raise errors.StatusError(403, "Forbidden", "only holders of the node token may obtain node credentials")
        body = await negotiation.read_body(request)
        name = body.get("nodeName") if isinstance(body, dict) else None
        if not isinstance(name, str) or names.is_dns1123_subdomain(name):
            raise errors.StatusError(400, "BadRequest", "nodeName must be a DNS-1123 subdomain")
        assert self.pki is not None
        cert, key = pki.issue_client_cert(self.pki, f"system:node:{name}", ["system:nodes"])
        return web.json_response({"cert": cert.decode(), "key": key.decode()})

    async def _dispatch(self, request: web.Request) -> web.StreamResponse:
        info = request[INFO_KEY]
        if info is not None:
            rt = self.registry.get(info.group, info.version, info.resource)
            if rt is not None and not rt.persisted and info.verb == "create" and not info.name:
                return await reviews.handle(self.authenticator, request, rt)
            return await resources.handle(self.ctx, request, info)
        path = request.path
        parts = [p for p in path.split("/") if p]
        if path in ("/healthz", "/livez", "/readyz") or parts[:1] in (["healthz"], ["livez"], ["readyz"]):
            return web.Response(text="ok")
        if path in ("/version", "/version/"):
            return web.json_response(version_info())
        if path == "/cacerts" and self.pki is not None:
            return web.Response(body=self.pki.server_ca.cert_pem, content_type="text/plain")
        if path == CLIENT_CA_PATH and self.pki is not None:
            return web.json_response({"clientCA": self.pki.client_ca.cert_pem.decode()})
        if path == NODE_CREDENTIALS_PATH and self.pki is not None:
            return await self._node_credentials(request)
        if path == "/metrics":
            body, content_type = self.metrics.render()
            return web.Response(body=body, headers={"Content-Type": content_type})
        if parts[:1] in (["api"], ["apis"]):
            return await self.discovery.handle(request, parts)
        if parts[:1] == ["openapi"]:
            return await self.openapi.handle(request, parts)
        raise errors.StatusError(404, "NotFound", "the server could not find the requested resource")


async def run_apiserver(config: ApiServerConfig, started: asyncio.Event | None = None) -> None:
    """Run until cancelled (the CLI cancels on SIGTERM/SIGINT)."""
    server = ApiServer(config)
    await server.start()
    if started is not None:
        started.set()
    try:
        await asyncio.Event().wait()
    finally:
        await server.stop()

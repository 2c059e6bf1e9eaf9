"""The kubelet's HTTPS server (port 10250): container logs, exec, attach, port-forward, stats, pods, health.

Only the API server may call it: clients present a certificate from the cluster's client CA whose user is
`kube-apiserver-kubelet-client` or whose groups include `system:masters` (401 without one, 403 otherwise).
Errors are plain text with an HTTP code, as upstream's kubelet answers; the API server turns them into Status.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import logging
import socket
import ssl
import subprocess
import tempfile
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import orjson
from aiohttp import web

from kubelite.kubelet import resourcemetrics
from kubelite.kubelet.runtime.base import ContainerState, ContainerStatus, NotFoundError, RuntimeService
from kubelite.kubelet.streaming import channels, remotecommand, upgrade
from kubelite.kubelet.streaming.channels import ChannelCodec
from kubelite.kubelet.streaming.logs import LogOptions, LogReader, parse_timestamp
from kubelite.kubelet.streaming.portforward import PortError, SpdyPortForward, parse_ports, serve_channels
from kubelite.kubelet.streaming.remotecommand import SPDY_PROTOCOLS, StreamOptions
from kubelite.kubelet.summary import SummaryProvider

log = logging.getLogger(__name__)

DEFAULT_PORT = 10250
APISERVER_USER = "kube-apiserver-kubelet-client"
MASTERS = "system:masters"
PORTFORWARD_SPDY = "portforward.k8s.io"


@dataclass(slots=True)
class Located:
    """Where a request lands: the pod as the API returned it, its sandbox, and the container asked for.

    `container` is the current container (or, for `previous`, the last terminated one); None for port-forward,
    which asks with an empty container name.
    """

    pod: dict[str, Any]
    sandbox_id: str
    container: ContainerStatus | None = None


class LocateError(Exception):
    """The pod or container cannot be reached; message as Kubernetes words it, code the HTTP status (400, 404)."""

    def __init__(self, message: str, code: int = 400):
        super().__init__(message)
        self.message = message
        self.code = code


Locator = Callable[[str, str, str, bool], Awaitable[Located]]
"""locate(namespace, pod, container, previous): the kubelet's view of a pod; raises LocateError."""
PodLister = Callable[[], Awaitable[list[dict[str, Any]]]]
"""The pods this kubelet runs, as the API returned them."""


class HttpError(Exception):
    """A plain-text error answer."""

    def __init__(self, code: int, message: str):
        super().__init__(message)
        self.code = code
        self.message = message


def self_signed_certificate(hosts: list[str], cert: Path, key: Path) -> None:
    """Write a self-signed serving certificate and its key for hosts (the API server does not verify it); made by
    the openssl command so the agent need not load a crypto library for it."""
    sans = ",".join(f"IP:{h}" if _is_ip(h) else f"DNS:{h}" for h in hosts) or "DNS:kubelet"
    subject = f"/CN={hosts[0] if hosts else 'kubelet'}@{int(time.time())}"
    result = subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
                             "-nodes", "-days", "365", "-subj", subject, "-addext", f"subjectAltName={sans}",
                             "-keyout", str(key), "-out", str(cert)], capture_output=True, text=True)
    if result.returncode != 0:
        raise RuntimeError(f"openssl could not make the kubelet's serving certificate: {result.stderr.strip()}")


def _is_ip(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True


def _flag(query: Mapping[str, str], name: str) -> bool:
    """A boolean query parameter as Go's strconv.ParseBool reads it."""
    value = query.get(name)
    if value is None or value == "":
        return False
    if value in ("1", "t", "T", "true", "TRUE", "True"):
        return True
    if value in ("0", "f", "F", "false", "FALSE", "False"):
        return False
    raise HttpError(400, '{"message": "Unable to decode query."}')


def _integer(query: Mapping[str, str], name: str) -> int | None:
    value = query.get(name)
    if value is None or value == "":
        return None
    try:
        return int(value)
    except ValueError:
        raise HttpError(400, '{"message": "Unable to decode query."}') from None


def log_options(query: Mapping[str, str], now_ns: int) -> tuple[LogOptions, bool]:
    """PodLogOptions from the query (with the legacy `tail`), validated; and whether `previous` was asked."""
    tail = query.get("tail")
    tail_lines = _integer(query, "tailLines")
    if tail and tail != "all":
        try:
            tail_lines = int(tail)
        except ValueError:
            raise HttpError(400, '{"message": "Unable to decode query."}') from None
    elif tail == "all":
        tail_lines = None
    since_seconds = _integer(query, "sinceSeconds")
    limit_bytes = _integer(query, "limitBytes")
    since_ns = None
    if query.get("sinceTime"):
        try:
            since_ns = parse_timestamp(query["sinceTime"].encode())
        except ValueError:
            raise HttpError(400, '{"message": "Unable to decode query."}') from None
    invalid = ((tail_lines is not None and tail_lines < 0) or (limit_bytes is not None and limit_bytes < 1)
               or (since_seconds is not None and (since_seconds < 1 or since_ns is not None)))
    if invalid:
        raise HttpError(422, '{"message": "Invalid request."}')
    if since_seconds is not None:
        since_ns = now_ns - since_seconds * 1_000_000_000
    options = LogOptions(follow=_flag(query, "follow"), tail_lines=tail_lines, since_ns=since_ns,
                         timestamps=_flag(query, "timestamps"), limit_bytes=limit_bytes)
    return options, _flag(query, "previous")


def _user(peercert: dict[str, Any]) -> tuple[str, list[str]]:
    """The user (CN) and groups (O) of a verified client certificate."""
    user, groups = "", []
    for rdn in peercert.get("subject", ()):
        for attr, value in rdn:
            if attr == "commonName":
                user = value
            elif attr == "organizationName":
                groups.append(value)
    return user, groups


async def _binary_messages(ws: web.WebSocketResponse) -> AsyncIterator[bytes]:
    """The payloads of a WebSocket's binary messages until it closes."""
    async for message in ws:
        if message.type == aiohttp.WSMsgType.BINARY:
            yield message.data


class KubeletServer:
    """The kubelet's HTTPS endpoints over a RuntimeService and the kubelet's own knowledge of its pods."""

    def __init__(self, runtime: RuntimeService, locate: Locator, client_ca_file: str | Path, *,
                 list_pods: PodLister | None = None, cert_file: str | Path | None = None,
                 key_file: str | Path | None = None, address: str = "0.0.0.0", port: int = DEFAULT_PORT,
                 node_name: str = ""):
        self.runtime = runtime
        self.locate = locate
        self.list_pods = list_pods
        self.client_ca_file = Path(client_ca_file)
        self.cert_file = Path(cert_file) if cert_file else None
        self.key_file = Path(key_file) if key_file else None
        self.address = address
        self.port = port
        self.node_name = node_name or socket.gethostname()
        self.summary = SummaryProvider(runtime, self.node_name)
        self._runner: web.AppRunner | None = None

    def ssl_context(self) -> ssl.SSLContext:
        """TLS 1.2+, the serving certificate (self-signed when none was given), client certificates optional but
        verified against the cluster CA when presented."""
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.minimum_version = ssl.TLSVersion.TLSv1_2
        if self.cert_file and self.key_file:
            context.load_cert_chain(self.cert_file, self.key_file)
        else:
            hosts = [h for h in {self.address, "127.0.0.1", "localhost", self.node_name} if h and h != "0.0.0.0"]
            with tempfile.TemporaryDirectory() as scratch:
                cert, key = Path(scratch) / "kubelet.crt", Path(scratch) / "kubelet.key"
                self_signed_certificate(sorted(hosts), cert, key)
                context.load_cert_chain(cert, key)
        context.load_verify_locations(cafile=str(self.client_ca_file))
        context.verify_mode = ssl.CERT_OPTIONAL
        context.set_alpn_protocols(["http/1.1"])
        return context

    def application(self) -> web.Application:
        """The routes, behind the client-certificate check."""
        app = web.Application(middlewares=[self._guard])
        app.router.add_get("/healthz", self._healthz)
        app.router.add_get("/pods", self._pods)
        app.router.add_get("/stats/summary", self._summary)
        app.router.add_get("/metrics/resource", self._resource_metrics)
        app.router.add_get("/containerLogs/{namespace}/{pod}/{container}", self._logs)
        for verb in ("exec", "attach"):
            app.router.add_route("GET", f"/{verb}/{{namespace}}/{{pod}}/{{container}}", self._remotecommand)
            app.router.add_route("POST", f"/{verb}/{{namespace}}/{{pod}}/{{container}}", self._remotecommand)
        app.router.add_route("GET", "/portForward/{namespace}/{pod}", self._port_forward)
        app.router.add_route("POST", "/portForward/{namespace}/{pod}", self._port_forward)
        return app

    async def start(self) -> None:
        """Listen on HTTPS; port 0 picks a free port, stored in self.port."""
        self._runner = web.AppRunner(self.application(), access_log=None, handle_signals=False,
                                     shutdown_timeout=1.0)
        await self._runner.setup()
        site = web.TCPSite(self._runner, self.address, self.port, ssl_context=self.ssl_context())
        await site.start()
        if self.port == 0:
            self.port = self._runner.addresses[0][1]
        log.info("kubelet server listening on https://%s:%d", self.address, self.port)

    async def stop(self) -> None:
        """Stop listening and end open sessions."""
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    @web.middleware
    async def _guard(self, request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
                     ) -> web.StreamResponse:
        transport = request.transport
        peercert = transport.get_extra_info("peercert") if transport is not None else None
        if not peercert:
            return web.Response(status=401, text="Unauthorized")
        user, groups = _user(peercert)
        if user != APISERVER_USER and MASTERS not in groups:
            resource = request.path.strip("/").split("/")[0] or "proxy"
            return web.Response(status=403, text=f"Forbidden (user={user}, verb={request.method.lower()}, "
                                                 f"resource=nodes, subresource={resource})")
        try:
            return await handler(request)
        except HttpError as exc:
            return web.Response(status=exc.code, text=exc.message)
        except LocateError as exc:
            return web.Response(status=exc.code, text=exc.message)

    async def _healthz(self, request: web.Request) -> web.Response:
        return web.Response(text="ok")

    async def _pods(self, request: web.Request) -> web.Response:
        items = await self.list_pods() if self.list_pods is not None else []
        body = {"kind": "PodList", "apiVersion": "v1", "metadata": {}, "items": items}
        return web.Response(body=orjson.dumps(body), content_type="application/json")

    async def _summary(self, request: web.Request) -> web.Response:
        return web.Response(body=orjson.dumps(await self.summary.summary()), content_type="application/json")

    async def _resource_metrics(self, request: web.Request) -> web.Response:
        return web.Response(text=resourcemetrics.render(await self.summary.summary()),
                            headers={"Content-Type": resourcemetrics.CONTENT_TYPE})

    async def _running(self, container_id: str) -> bool:
        try:
            return (await self.runtime.container_status(container_id)).state == ContainerState.RUNNING
        except NotFoundError:
            return False

    async def _logs(self, request: web.Request) -> web.StreamResponse:
        match = request.match_info
        options, previous = log_options(request.query, time.time_ns())
        located = await self.locate(match["namespace"], match["pod"], match["container"], previous)
        container = located.container
        if container is None:
            raise HttpError(404, f'container "{match["container"]}" not found in pod "{match["pod"]}"')
        response = web.StreamResponse(headers={"Content-Type": "text/plain"})
        response.enable_chunked_encoding()
        await response.prepare(request)
        if not container.log_path:
            return response

        async def running() -> bool:
            return not previous and await self._running(container.id)

        async def copy() -> None:
            chunks = LogReader(Path(container.log_path), options, running).chunks()
            try:
                async for chunk in chunks:
                    await response.write(chunk)
            finally:
                await chunks.aclose()

        try:
            await upgrade.while_connected(request, copy())
        except ConnectionResetError:
            log.debug("log client went away")
        return response

    async def _remotecommand(self, request: web.Request) -> web.StreamResponse:
        match = request.match_info
        exec_ = request.path.startswith("/exec/")
        options = StreamOptions.from_query(request.query)
        if not options.any:
            raise HttpError(400, "you must specify at least 1 of stdin, stdout, stderr")
        command = request.query.getall("command", [])
        if exec_ and not command:
            raise HttpError(400, "you must specify at least one command for the container")
        located = await self.locate(match["namespace"], match["pod"], match["container"], False)
        container = located.container
        if container is None or container.state != ContainerState.RUNNING:
            raise HttpError(404, f'container not found ("{match["container"]}")')

        async def start() -> Any:
            if exec_:
                return await self.runtime.exec(container.id, command, tty=options.tty, stdin=options.stdin)
            return await self.runtime.attach(container.id, stdin=options.stdin)

        if upgrade.is_websocket(request):
            offered = channels.offered_protocols(request.headers.get("Sec-WebSocket-Protocol", ""))
            protocol = channels.choose(offered, channels.REMOTECOMMAND_PROTOCOLS)
            if protocol is None:
                raise HttpError(400, f"requested protocol(s) are not supported: {offered}; "
                                     f"supports {list(channels.REMOTECOMMAND_PROTOCOLS)}")
            ws = await _prepare_websocket(request, protocol)
            await remotecommand.serve(ws, ChannelCodec(protocol), options, start, exec_)
            return ws
        if upgrade.is_spdy_upgrade(request):
            protocol = _spdy_protocol(request, SPDY_PROTOCOLS)
            conn = await upgrade.accept(request, {"Upgrade": upgrade.SPDY_UPGRADE,
                                                  upgrade.PROTOCOL_HEADER: protocol})
            try:
                await remotecommand.serve_spdy(conn.write, conn.chunks(), protocol, options, start, exec_)
            finally:
                conn.close()
            return conn.response
        raise HttpError(400, "Upgrade request required")

    async def _port_forward(self, request: web.Request) -> web.StreamResponse:
        match = request.match_info
        located = await self.locate(match["namespace"], match["pod"], "", False)
        uid = str((located.pod.get("metadata") or {}).get("uid", ""))

        async def connect(port: int) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
            return await self.runtime.port_forward(located.sandbox_id, port)

        if upgrade.is_websocket(request):
            offered = channels.offered_protocols(request.headers.get("Sec-WebSocket-Protocol", ""))
            if channels.SPDY_TUNNEL in offered:
                ws = await _prepare_websocket(request, channels.SPDY_TUNNEL)
                await SpdyPortForward(connect, match["pod"], uid).serve(ws.send_bytes, _binary_messages(ws))
                with contextlib.suppress(ConnectionResetError):
                    await ws.close()
                return ws
            protocol = channels.choose(offered, channels.PORTFORWARD_PROTOCOLS)
            if protocol is None:
                raise HttpError(400, f"requested protocol(s) are not supported: {offered}; "
                                     f"supports {[channels.SPDY_TUNNEL, *channels.PORTFORWARD_PROTOCOLS[:-1]]}")
            try:
                ports = parse_ports(request.query.getall("ports", []))
            except PortError as exc:
                raise HttpError(400, str(exc)) from None
            ws = await _prepare_websocket(request, protocol)
            await serve_channels(ws, ChannelCodec(protocol or channels.V1), ports, connect, match["pod"], uid)
            return ws
        if upgrade.is_spdy_upgrade(request):
            protocol = _spdy_protocol(request, (PORTFORWARD_SPDY,))
            conn = await upgrade.accept(request, {"Upgrade": upgrade.SPDY_UPGRADE,
                                                  upgrade.PROTOCOL_HEADER: protocol})
            try:
                await SpdyPortForward(connect, match["pod"], uid).serve(conn.write, conn.chunks())
            finally:
                conn.close()
            return conn.response
        raise HttpError(400, "Upgrade request required")


def _spdy_protocol(request: web.Request, supported: tuple[str, ...]) -> str:
    """The stream protocol of a legacy SPDY upgrade, as upstream's handshake negotiates it."""
    offered = upgrade.stream_protocols(request)
    if not offered:
        return ""
    chosen = channels.choose(offered, supported)
    if chosen is None:
        raise HttpError(403, f"unable to upgrade: unable to negotiate protocol: client supports {offered}, "
                             f"server accepts {list(supported)}")
    return chosen


async def _prepare_websocket(request: web.Request, protocol: str) -> web.WebSocketResponse:
    """Accept the WebSocket with the chosen subprotocol (none when the client offered none)."""
    ws = web.WebSocketResponse(protocols=(protocol,) if protocol else (), max_msg_size=0, compress=False,
                               autoping=True)
    await ws.prepare(request)
    return ws

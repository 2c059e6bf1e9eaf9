"""nodes/NAME/proxy, pods/NAME/proxy and services/NAME/proxy: the API server as an HTTP reverse proxy to a node's
kubelet, a pod or a service's endpoint (what `kubectl get --raw /api/v1/nodes/N/proxy/stats/summary` and `kubectl
proxy` users reach).

The name may carry a scheme and a port, `[http:|https:]NAME[:PORT]`, as upstream's. A node without a port (or with
the kubelet's) is reached over HTTPS with the API server's kubelet-client certificate; anything else over plain
HTTP unless https is asked for, without credentials. The client's Authorization header is never passed on (upstream
drops it once the request is authenticated). WebSockets are relayed message by message; the legacy SPDY upgrade is
refused.
"""

from __future__ import annotations

import random
import ssl

import aiohttp
from aiohttp import web

from kubelite.api.resource import ResourceType
from kubelite.apiserver import errors
from kubelite.apiserver.context import ApiContext
from kubelite.apiserver.kubeletclient import KubeletRefused, NoAddress, host_port, node_endpoint
from kubelite.apiserver.podproxy import KUBELET_CLIENT, refused, relay, relay_websocket
from kubelite.apiserver.requestinfo import RequestInfo
from kubelite.kubelet.streaming import upgrade

HOP_BY_HOP = frozenset({"connection", "keep-alive", "proxy-authenticate", "proxy-authorization", "te", "trailer",
                        "transfer-encoding", "upgrade"})
NOT_FORWARDED = HOP_BY_HOP | {"host", "authorization"}
NOT_RETURNED = HOP_BY_HOP | {"content-length"}
WEBSOCKET_OWN = frozenset({"sec-websocket-key", "sec-websocket-version", "sec-websocket-protocol",
                           "sec-websocket-extensions"})
"""Set by the relay's own handshake with the target."""
"""The answer's length is set apart: aiohttp must know it to send the body unchunked."""
PLAIN_SESSION = web.AppKey("proxy_session", aiohttp.ClientSession)


def install(app: web.Application) -> None:
    """Give the application the session for targets other than kubelets (closed with the application)."""

    async def open_session(app: web.Application) -> None:
        context = ssl.create_default_context()
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
        app[PLAIN_SESSION] = aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(ssl=context, limit=0), auto_decompress=False,
            timeout=aiohttp.ClientTimeout(total=None, sock_connect=10))

    async def close_session(app: web.Application) -> None:
        await app[PLAIN_SESSION].close()

    app.on_startup.append(open_session)
    app.on_cleanup.append(close_session)


def split_scheme_name_port(id_: str) -> tuple[str, str, str] | None:
    """`name`, `name:port` or `scheme:name:port` (scheme http or https) as (scheme, name, port); None if malformed."""
    parts = id_.split(":")
    if len(parts) == 1:
        scheme, name, port = "", parts[0], ""
    elif len(parts) == 2:
        scheme, name, port = "", parts[0], parts[1]
    elif len(parts) == 3:
        scheme, name, port = parts
        if scheme not in ("http", "https"):
            return None
    else:
        return None
    return (scheme, name, port) if name else None


def proxied_path(raw_path: str, subresource_index: int) -> str:
    """What follows `.../NAME/proxy` in the raw (still percent-encoded) path, trailing slash kept; "/" if nothing.
    subresource_index counts the non-empty path segments before the `proxy` one."""
    path = raw_path.split("?", 1)[0]
    segments = path.split("/")
    seen = -1
    for index, segment in enumerate(segments):
        if segment:
            seen += 1
            if seen == subresource_index:
                return "/" + "/".join(segments[index + 1:])
    return "/"


async def _node_target(ctx: ApiContext, rt: ResourceType, scheme: str, name: str, port: str) -> tuple[str, bool]:
    """(base URL, whether it is the node's kubelet): the kubelet, or another port of the node."""
    node = await ctx.store.get(rt, None, name)
    try:
        host, kubelet_port = node_endpoint(node)
    except NoAddress as exc:
        raise errors.StatusError(503, "ServiceUnavailable", str(exc)) from None
    if not port or port == str(kubelet_port):
        return f"https://{host_port(host, kubelet_port)}", True
    return f"{scheme or 'http'}://{host_port(host, _port_number(port))}", False


def _port_number(port: str) -> int:
    if not port.isdigit() or not 0 < int(port) < 65536:
        raise errors.bad_request(f"invalid port {port!r}: a number from 1 to 65535 is expected")
    return int(port)


async def _pod_target(ctx: ApiContext, rt: ResourceType, namespace: str, scheme: str, name: str, port: str) -> str:
    """The pod's IP with the port asked for, else its first declared container port, else none (80)."""
    pod = await ctx.store.get(rt, namespace, name)
    if not port:
        declared = [p.get("containerPort") for c in (pod.get("spec") or {}).get("containers") or []
                    for p in c.get("ports") or []]
        port = str(declared[0]) if declared else ""
    ip = (pod.get("status") or {}).get("podIP")
    if not ip:
        raise errors.StatusError(503, "ServiceUnavailable", f'pod "{name}" has no IP address yet')
    host = host_port(ip, _port_number(port)) if port else (f"[{ip}]" if ":" in ip else ip)
    return f"{scheme or 'http'}://{host}"


async def _service_target(ctx: ApiContext, rt: ResourceType, namespace: str, scheme: str, name: str,
                          port: str) -> str:
    """A ready endpoint of the service's port (named, or given by number), picked at random."""
    service = await ctx.store.get(rt, namespace, name)
    if port.isdigit():
        named = [p.get("name", "") for p in (service.get("spec") or {}).get("ports") or []
                 if str(p.get("port")) == port]
        if not named:
            raise errors.StatusError(503, "ServiceUnavailable", f'no service port {port} found for service "{name}"')
        port = named[0]
    endpoints_rt = ctx.registry.get("", "v1", "endpoints")
    assert endpoints_rt is not None
    try:
        endpoints = await ctx.store.get(endpoints_rt, namespace, name)
    except errors.StatusError as exc:
        if exc.code != 404:
            raise
        endpoints = {}
    candidates = [(address["ip"], p["port"]) for subset in endpoints.get("subsets") or []
                  for p in subset.get("ports") or [] if p.get("name", "") == port
                  for address in subset.get("addresses") or [] if address.get("ip")]
    if not candidates:
        raise errors.StatusError(503, "ServiceUnavailable", f'no endpoints available for service "{name}"')
    ip, target_port = random.choice(candidates)
    return f"{scheme or 'http'}://{host_port(ip, int(target_port))}"


async def handle(ctx: ApiContext, request: web.Request, info: RequestInfo, rt: ResourceType) -> web.StreamResponse:
    """Serve KIND/NAME/proxy[/PATH] for nodes, pods and services."""
    if upgrade.is_spdy_upgrade(request):
        raise errors.bad_request("SPDY upgrades through the proxy subresource are not supported")
    split = split_scheme_name_port(info.name)
    if split is None:
        raise errors.bad_request(f'invalid {rt.singular} request "{info.name}"')
    scheme, name, port = split
    session = request.app[PLAIN_SESSION]
    if rt.plural == "nodes":
        base, kubelet = await _node_target(ctx, rt, scheme, name, port)
        if kubelet:
            client = request.app.get(KUBELET_CLIENT)
            if client is None:
                raise errors.StatusError(503, "ServiceUnavailable",
                                         "this API server has no kubelet client credentials")
            session = client.session
    elif rt.plural == "pods":
        base = await _pod_target(ctx, rt, info.namespace or "", scheme, name, port)
    else:
        base = await _service_target(ctx, rt, info.namespace or "", scheme, name, port)
    url = base + proxied_path(request.raw_path, 4 if info.namespace is None else 6)
    if request.query_string:
        url += "?" + request.query_string
    headers = [(k, v) for k, v in request.headers.items() if k.lower() not in NOT_FORWARDED]
    if request.remote:
        forwarded = request.headers.get("X-Forwarded-For")
        headers.append(("X-Forwarded-For", f"{forwarded}, {request.remote}" if forwarded else request.remote))
    if upgrade.is_websocket(request):
        try:
            return await relay_websocket(session, request, "ws" + url.removeprefix("http"),
                                         [(k, v) for k, v in headers if k.lower() not in WEBSOCKET_OWN])
        except KubeletRefused as exc:
            raise refused(exc) from None
        except aiohttp.ClientError as exc:
            raise _unreachable(url, exc) from None
    return await _forward(request, session, url, headers)


def _unreachable(url: str, exc: Exception) -> errors.StatusError:
    return errors.StatusError(503, "ServiceUnavailable", f'error trying to reach service: "{url}": {exc}')


async def _forward(request: web.Request, session: aiohttp.ClientSession, url: str,
                   headers: list[tuple[str, str]]) -> web.StreamResponse:
    """Send the request on and stream the answer back, status and end-to-end headers included."""
    response = web.StreamResponse()
    try:
        async with session.request(request.method, url, headers=headers,
                                   data=request.content if request.body_exists else None, allow_redirects=False,
                                   timeout=aiohttp.ClientTimeout(total=None, sock_connect=10)) as answer:
            response.set_status(answer.status, answer.reason)
            for key, value in answer.headers.items():
                if key.lower() not in NOT_RETURNED:
                    response.headers.add(key, value)
            length = answer.headers.get("Content-Length")
            if length is not None and length.isdigit() and request.method != "HEAD":
                response.content_length = int(length)
            await relay(request, response, answer)
    except aiohttp.ClientError as exc:
        if not response.prepared:
            raise _unreachable(url, exc) from None
    except ConnectionResetError:
        pass
    return response

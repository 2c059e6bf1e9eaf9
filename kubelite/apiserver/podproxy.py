"""pods/log, pods/exec, pods/attach and pods/portforward: the API server's half of kubectl's streaming paths.

The pod and its container are checked here, as upstream does (messages included); the request then goes to the
node's kubelet. Logs stream back as text/plain chunk by chunk. Exec, attach and port-forward relay a WebSocket
(the kubelet's is opened first, with the client's subprotocols, so its refusals become a Status) or, for older
kubectl, the bytes of a legacy SPDY upgrade.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
from urllib.parse import urlencode

import aiohttp
from aiohttp import web
from multidict import MultiMapping

from kubelite.api.resource import ResourceType
from kubelite.api.strategy import Cause, Obj
from kubelite.apiserver import errors, pki
from kubelite.apiserver.context import ApiContext
from kubelite.apiserver.kubeletclient import KubeletClient, KubeletRefused, NoAddress, host_port, node_endpoint
from kubelite.apiserver.requestinfo import RequestInfo
from kubelite.kubelet.streaming import upgrade

log = logging.getLogger(__name__)

KUBELET_CLIENT = web.AppKey("kubelet_client", KubeletClient)
STREAM_PATHS = {"exec": "exec", "attach": "attach", "portforward": "portForward"}
_RFC3339 = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?(Z|[+-]\d\d:\d\d)")
_REASONS = {400: "BadRequest", 401: "Unauthorized", 403: "Forbidden", 404: "NotFound", 409: "Conflict",
            422: "Invalid", 429: "TooManyRequests", 500: "InternalError", 503: "ServiceUnavailable",
            504: "Timeout"}


def install(app: web.Application, tls: pki.Pki) -> None:
    """Give the application its kubelet client (closed with the application)."""
    client = KubeletClient(tls)
    app[KUBELET_CLIENT] = client

    async def close(_: web.Application) -> None:
        await client.close()

    app.on_cleanup.append(close)


async def handle(ctx: ApiContext, request: web.Request, info: RequestInfo, rt: ResourceType) -> web.StreamResponse:
    """Serve pods/NAME/{log,exec,attach,portforward}."""
    client = request.app.get(KUBELET_CLIENT)
    if client is None:
        raise errors.StatusError(503, "ServiceUnavailable", "this API server has no kubelet client credentials")
    pod = await ctx.store.get(rt, info.namespace, info.name)
    if info.subresource == "log":
        if info.verb != "get":
            raise errors.method_not_allowed(f"{info.verb} is not supported on pods/log")
        return await _log(ctx, client, request, pod)
    if info.verb not in ("get", "create"):
        raise errors.method_not_allowed(f"{info.verb} is not supported on pods/{info.subresource}")
    return await _stream(ctx, client, request, pod, info.subresource)


def _container(pod: Obj, requested: str) -> str:
    """The container a request is for: the one named (which must exist), or the pod's only container."""
    spec = pod.get("spec") or {}
    name = pod["metadata"]["name"]
    containers = [c.get("name", "") for c in spec.get("containers") or []]
    init = [c.get("name", "") for c in spec.get("initContainers") or []]
    ephemeral = [c.get("name", "") for c in spec.get("ephemeralContainers") or []]
    if requested:
        if requested not in (*containers, *init, *ephemeral):
            raise errors.bad_request(f"container {requested} is not valid for pod {name}")
        return requested
    if len(containers) == 1:
        return containers[0]
    if not containers:
        raise errors.bad_request(f"a container name must be specified for pod {name}")
    message = f"a container name must be specified for pod {name}, choose one of: [{' '.join(containers)}]"
    if init:
        message += f" or one of the init containers: [{' '.join(init)}]"
    raise errors.bad_request(message)


async def _node(ctx: ApiContext, pod: Obj) -> tuple[str, int] | None:
    """Where the pod's kubelet listens, or None when the pod is not bound to a node yet."""
    node_name = (pod.get("spec") or {}).get("nodeName")
    if not node_name:
        return None
    nodes = ctx.registry.get("", "v1", "nodes")
    assert nodes is not None
    node = await ctx.store.get(nodes, None, node_name)
    try:
        return node_endpoint(node)
    except NoAddress as exc:
        raise errors.StatusError(500, "InternalError", str(exc)) from None


def _bool(query: MultiMapping[str], name: str) -> bool:
    value = query.get(name, "")
    if value in ("", "0", "f", "F", "false", "FALSE", "False"):
        return False
    if value in ("1", "t", "T", "true", "TRUE", "True"):
        return True
    raise errors.bad_request(f'strconv.ParseBool: parsing "{value}": invalid syntax')


def _int(query: MultiMapping[str], name: str) -> int | None:
    value = query.get(name)
    if value is None:
        return None
    try:
        return int(value)
    except ValueError:
        raise errors.bad_request(f'strconv.ParseInt: parsing "{value}": invalid syntax') from None


def log_query(pod: Obj, query: MultiMapping[str]) -> dict[str, str]:
    """The kubelet's query for PodLogOptions, validated as upstream validates them (400 to parse, 422 invalid)."""
    tail, since, limit = _int(query, "tailLines"), _int(query, "sinceSeconds"), _int(query, "limitBytes")
    since_time = query.get("sinceTime")
    if since_time is not None and not _RFC3339.fullmatch(since_time):
        raise errors.bad_request(f'parsing time "{since_time}" as "2006-01-02T15:04:05Z07:00": cannot parse '
                                 f'"{since_time}" as "2006"')
    causes = []
    if tail is not None and tail < 0:
        causes.append(Cause("tailLines", "FieldValueInvalid",
                            f"tailLines: Invalid value: {tail}: must be greater than or equal to 0"))
    if limit is not None and limit < 1:
        causes.append(Cause("limitBytes", "FieldValueInvalid",
                            f"limitBytes: Invalid value: {limit}: must be greater than 0"))
    if since is not None and since_time is not None:
        causes.append(Cause("", "FieldValueForbidden",
                            "Forbidden: at most one of `sinceTime` or `sinceSeconds` may be specified"))
    elif since is not None and since < 1:
        causes.append(Cause("sinceSeconds", "FieldValueInvalid",
                            f"sinceSeconds: Invalid value: {since}: must be greater than 0"))
    if causes:
        raise errors.invalid("PodLogOptions", "", pod["metadata"]["name"], causes)
    params = {name: "true" for name in ("follow", "previous", "timestamps") if _bool(query, name)}
    for name, value in (("sinceSeconds", since), ("tailLines", tail), ("limitBytes", limit)):
        if value is not None:
            params[name] = str(value)
    if since_time is not None:
        params["sinceTime"] = since_time
    return params


def refused(exc: KubeletRefused) -> errors.StatusError:
    """A kubelet error as a Status: its code, the matching reason, its message."""
    code = exc.code if 400 <= exc.code < 600 else 500
    return errors.StatusError(code, _REASONS.get(code, "InternalError"), exc.message or f"the kubelet answered {code}")


def _unreachable(url: str, exc: Exception) -> errors.StatusError:
    return errors.StatusError(500, "InternalError", f'error trying to reach the kubelet: "{url}": {exc}')


async def relay(request: web.Request, response: web.StreamResponse, answer: aiohttp.ClientResponse) -> None:
    """Send the response's head, then the upstream answer's body chunk by chunk, until it ends or the client
    leaves."""
    await response.prepare(request)

    async def copy() -> None:
        async for chunk in answer.content.iter_any():
            await response.write(chunk)

    await upgrade.while_connected(request, copy())


async def _log(ctx: ApiContext, client: KubeletClient, request: web.Request, pod: Obj) -> web.StreamResponse:
    container = _container(pod, request.query.get("container", ""))
    params = log_query(pod, request.query)
    endpoint = await _node(ctx, pod)
    response = web.StreamResponse(headers={"Content-Type": "text/plain"})
    if endpoint is None:
        await response.prepare(request)
        return response
    meta = pod["metadata"]
    url = (f"https://{host_port(*endpoint)}/containerLogs/{meta['namespace']}/{meta['name']}/{container}"
           f"?{urlencode(params)}")
    try:
        async with client.session.get(url, timeout=aiohttp.ClientTimeout(total=None, sock_connect=10)) as answer:
            if answer.status != 200:
                raise refused(KubeletRefused(answer.status, (await answer.text(errors="replace")).strip()))
            response.enable_chunked_encoding()
            await relay(request, response, answer)
    except aiohttp.ClientError as exc:
        if response.prepared:
            log.info("log stream from %s ended: %s", url, exc)
            return response
        raise _unreachable(url, exc) from None
    except ConnectionResetError:
        log.debug("log client went away")
    return response


def _stream_query(query: MultiMapping[str], subresource: str) -> list[tuple[str, str]]:
    """The kubelet's query: the stream flags and commands of exec/attach, the ports of port-forward."""
    if subresource == "portforward":
        ports = ",".join(query.getall("ports", []))
        return [("ports", ports)] if ports else []
    params = [(flag, "1") for flag in ("stdin", "stdout", "stderr", "tty") if _bool(query, flag)]
    if subresource == "exec":
        params += [("command", c) for c in query.getall("command", [])]
    return params


async def _stream(ctx: ApiContext, client: KubeletClient, request: web.Request, pod: Obj,
                  subresource: str) -> web.StreamResponse:
    meta = pod["metadata"]
    path = f"/{STREAM_PATHS[subresource]}/{meta['namespace']}/{meta['name']}"
    if subresource != "portforward":
        path += f"/{_container(pod, request.query.get('container', ''))}"
    params = _stream_query(request.query, subresource)
    endpoint = await _node(ctx, pod)
    if endpoint is None:
        raise errors.bad_request(f"pod {meta['name']} does not have a host assigned")
    path_qs = f"{path}?{urlencode(params)}" if params else path
    if upgrade.is_websocket(request):
        return await _relay_websocket(client, request, endpoint, path_qs)
    if upgrade.is_spdy_upgrade(request):
        return await _relay_spdy(client, request, endpoint, path_qs)
    raise errors.bad_request("Upgrade request required")


async def _relay_websocket(client: KubeletClient, request: web.Request, endpoint: tuple[str, int],
                           path_qs: str) -> web.StreamResponse:
    """The kubelet's WebSocket relayed to the client; its refusals as a Status."""
    url = f"wss://{host_port(*endpoint)}{path_qs}"
    try:
        return await relay_websocket(client.session, request, url)
    except KubeletRefused as exc:
        raise refused(exc) from None
    except aiohttp.ClientError as exc:
        raise _unreachable(url, exc) from None


async def relay_websocket(session: aiohttp.ClientSession, request: web.Request, url: str,
                          headers: list[tuple[str, str]] | None = None) -> web.StreamResponse:
    """Open the target's WebSocket with the client's subprotocols (and headers), then accept the client's with the
    one chosen and relay; the target's refusal raises before the client gets an answer."""
    offered = [p.strip() for p in request.headers.get("Sec-WebSocket-Protocol", "").split(",") if p.strip()]
    target = await session.ws_connect(url, protocols=offered, max_msg_size=0, autoping=True, autoclose=False,
                                      compress=0, headers=headers)
    try:
        chosen = target.protocol
        ws = web.WebSocketResponse(protocols=(chosen,) if chosen else (), max_msg_size=0, compress=False,
                                   autoping=True, autoclose=False)
        await ws.prepare(request)
        await _relay_messages(ws, target)
    finally:
        await target.close()
    return ws


async def _copy_messages(source: web.WebSocketResponse | aiohttp.ClientWebSocketResponse,
                         target: web.WebSocketResponse | aiohttp.ClientWebSocketResponse) -> None:
    """Forward data messages until source closes; then close target with the same code."""
    async for message in source:
        if message.type == aiohttp.WSMsgType.BINARY:
            await target.send_bytes(message.data)
        elif message.type == aiohttp.WSMsgType.TEXT:
            await target.send_str(message.data)
        elif message.type in (aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.CLOSING):
            break
    code = source.close_code
    if code is None or code in (aiohttp.WSCloseCode.ABNORMAL_CLOSURE, 1005):
        code = aiohttp.WSCloseCode.INTERNAL_ERROR
    with contextlib.suppress(ConnectionResetError):
        await target.close(code=code)


async def _relay_messages(client_ws: web.WebSocketResponse, kubelet: aiohttp.ClientWebSocketResponse) -> None:
    """Relay both ways until either side closes."""
    upstream = asyncio.create_task(_copy_messages(client_ws, kubelet))
    downstream = asyncio.create_task(_copy_messages(kubelet, client_ws))
    try:
        await asyncio.wait({upstream, downstream}, return_when=asyncio.FIRST_COMPLETED)
        await asyncio.wait({downstream}, timeout=5)
    finally:
        for task in (upstream, downstream):
            task.cancel()
        await asyncio.gather(upstream, downstream, return_exceptions=True)
        with contextlib.suppress(ConnectionResetError):
            await client_ws.close()


async def _relay_spdy(client: KubeletClient, request: web.Request, endpoint: tuple[str, int],
                      path_qs: str) -> web.StreamResponse:
    """The legacy SPDY upgrade: the kubelet's 101 first (or its error as a Status), then the bytes both ways."""
    headers = [("Connection", "Upgrade"), ("Upgrade", upgrade.SPDY_UPGRADE)]
    headers += [(upgrade.PROTOCOL_HEADER, p) for p in upgrade.stream_protocols(request)]
    try:
        kubelet = await client.upgrade(*endpoint, request.method, path_qs, headers)
    except KubeletRefused as exc:
        raise refused(exc) from None
    except (OSError, asyncio.IncompleteReadError) as exc:
        raise _unreachable(f"https://{host_port(*endpoint)}{path_qs}", exc) from None
    answer = {"Upgrade": upgrade.SPDY_UPGRADE}
    if protocol := kubelet.headers.get(upgrade.PROTOCOL_HEADER.lower()):
        answer[upgrade.PROTOCOL_HEADER] = protocol
    conn = await upgrade.accept(request, answer)

    async def upstream() -> None:
        while data := await conn.read():
            kubelet.writer.write(data)
            await kubelet.writer.drain()

    async def downstream() -> None:
        while data := await kubelet.reader.read(65536):
            await conn.write(data)

    tasks = {asyncio.create_task(upstream()), asyncio.create_task(downstream())}
    try:
        await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        kubelet.writer.close()
        conn.close()
    return conn.response

"""Media types in and out: JSON or YAML bodies, and the Table / PartialObjectMetadata views."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import orjson
import yaml
from aiohttp import web

from kubelite.api import protobuf
from kubelite.apiserver import errors
from kubelite.client.bodies import read_at_most

MAX_BODY = 3 * 1024 * 1024

try:
    _Loader: Any = yaml.CSafeLoader
    _Dumper: Any = yaml.CSafeDumper
except AttributeError:  # pragma: no cover - PyYAML built without libyaml
    _Loader = yaml.SafeLoader
    _Dumper = yaml.SafeDumper


@dataclass(frozen=True, slots=True)
class Output:
    """What the client asked to receive."""

    view: str = ""  # "", "Table", "PartialObjectMetadata", "PartialObjectMetadataList"
    yaml: bool = False
    protobuf: bool = False
    """Only for clients that accept nothing but protobuf; JSON is preferred whenever it is acceptable."""


def output(request: web.Request) -> Output:
    """Pick the first acceptable media type of the Accept header, as the apiserver does."""
    accept = request.headers.get("Accept", "")
    if not accept:
        return Output()
    for clause in accept.split(","):
        media, _, params = clause.strip().partition(";")
        media = media.strip()
        options = dict(p.strip().partition("=")[::2] for p in params.split(";") if p.strip())
        as_ = options.get("as", "")
        if media in ("application/json", "*/*", "application/*", "application/yaml"):
            if as_ in ("Table", "PartialObjectMetadata", "PartialObjectMetadataList"):
                if options.get("g", "meta.k8s.io") == "meta.k8s.io":
                    return Output(view=as_, yaml=media == "application/yaml")
                continue
            if not as_:
                return Output(yaml=media == "application/yaml")
    if any(c.strip().split(";")[0].strip() == protobuf.MEDIA_TYPE for c in accept.split(",")):
        return Output(protobuf=True)
    raise errors.not_acceptable(accept)


async def read_body(request: web.Request) -> Any:
    """Decode a JSON or YAML body; bodies over 3 MiB are refused with 413."""
    if request.content_length is not None and request.content_length > MAX_BODY:
        raise errors.too_large()
    raw = await read_at_most(request.content, MAX_BODY)
    if len(raw) > MAX_BODY:
        raise errors.too_large()
    return decode_body(raw, body_type(request))


def body_type(request: web.Request) -> str:
    """The request body's media type; a missing Content-Type means JSON, as kube-apiserver assumes."""
    return request.headers.get("Content-Type", "application/json").split(";")[0].strip().lower()


def decode_body(raw: bytes, content_type: str, expected: tuple[str, str] | None = None) -> Any:
    """JSON, YAML or Kubernetes protobuf (kubectl 1.32+ and operators send built-in kinds so); others get 415."""
    if content_type == protobuf.MEDIA_TYPE:
        try:
            return protobuf.decode(raw, expected)
        except protobuf.UnknownKindError as exc:
            raise errors.StatusError(415, "UnsupportedMediaType", f"{exc}: send it as application/json") from None
        except protobuf.ProtobufError as exc:
            raise errors.bad_request(f"unable to decode the protobuf body: {exc}") from None
    if content_type not in ("", "application/json", "application/yaml", "text/yaml", "*/*") and \
            not content_type.endswith(("+json", "+yaml")):
        raise errors.StatusError(415, "UnsupportedMediaType", f'the body of the request was in an unknown format - '
                                 f'accepted media types include: application/json, application/yaml '
                                 f'(got "{content_type}")')
    if not raw.strip():
        raise errors.bad_request("the request body is empty")
    if "yaml" in content_type:
        try:
            return yaml.load(raw, Loader=_Loader)
        except yaml.YAMLError as exc:
            raise errors.bad_request(f"error converting YAML to JSON: {exc}") from None
    try:
        return orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise errors.bad_request(f"couldn't get version/kind; json parse error: {exc}") from None


def respond(obj: Any, out: Output, status: int = 200, warnings: list[str] | None = None) -> web.Response:
    headers = {"Warning": ", ".join(f'299 - "{w}"' for w in warnings)} if warnings else None
    if out.protobuf:
        try:
            return web.Response(body=protobuf.encode(obj), status=status, headers={
                "Content-Type": protobuf.MEDIA_TYPE, **(headers or {})})
        except protobuf.ProtobufError:
            pass  # custom resources have no protobuf form: JSON, as kube-apiserver answers them
    if out.yaml:
        body = yaml.dump(obj, Dumper=_Dumper, default_flow_style=False, sort_keys=False).encode()
        return web.Response(body=body, status=status, content_type="application/yaml", headers=headers)
    return web.Response(body=orjson.dumps(obj), status=status, content_type="application/json",
                        headers=headers)

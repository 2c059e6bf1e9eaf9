"""Protobuf wire format and the gnostic openapi.v2.Document encoding of /openapi/v2 (checked with kubectl 1.27)."""

import asyncio
import os
from typing import Any

import orjson
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from kubelite.api.kinds.builtin import BUILTIN
from kubelite.api.protowire import (
    I32,
    I64,
    LEN,
    VARINT,
    Writer,
    as_double,
    as_int64,
    encode_varint,
    read_fields,
    read_message,
    read_varint,
    tag,
)
from kubelite.api.registry import Registry
from kubelite.api.schema import Schemas
from kubelite.apiserver.discovery import resource_list
from kubelite.apiserver.openapi import OpenAPI
from kubelite.apiserver.openapi_pb import CONTENT_TYPE, MEDIA_TYPE, encode_document, wants_protobuf

KUBECTL = "/usr/lib/google-cloud-sdk/bin/kubectl.1.27"


# --- wire format -------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("value, encoded", [
    (0, b"\x00"), (1, b"\x01"), (127, b"\x7f"), (128, b"\x80\x01"), (300, b"\xac\x02"),
    (2**63 - 1, b"\xff" * 8 + b"\x7f"), (-1, b"\xff" * 9 + b"\x01"),
])
def test_varint(value, encoded):
    assert encode_varint(value) == encoded
    decoded, pos = read_varint(encoded, 0)
    assert pos == len(encoded)
    assert as_int64(decoded) == value


def test_tag_packs_field_and_wire_type():
    assert tag(1, VARINT) == b"\x08"
    assert tag(2, LEN) == b"\x12"
    assert tag(16, LEN) == b"\x82\x01"
    with pytest.raises(ValueError):
        tag(0, VARINT)


def test_writer_round_trips_every_field_type():
    w = Writer()
    w.varint(1, 150)
    w.int64(2, -2)
    w.boolean(3, True)
    w.double(4, 2.5)
    w.string(5, "héllo")
    w.length_delimited(6, b"\x00\xff")
    outer = w.begin(7)
    w.string(1, "inner")
    inner = w.begin(2)
    w.boolean(1, False)
    w.end(inner)
    empty = w.begin(3)
    w.end(empty)
    w.end(outer)
    data = w.getvalue()
    assert len(w) == len(data)
    assert data[:3] == b"\x08\x96\x01"  # the protobuf documentation's example: field 1 = 150
    fields = list(read_fields(data))
    assert [(f, t) for f, t, _ in fields] == [(1, VARINT), (2, VARINT), (3, VARINT), (4, I64), (5, LEN), (6, LEN),
                                              (7, LEN)]
    values = [v for _, _, v in fields]
    assert values[0] == 150 and as_int64(values[1]) == -2 and values[2] == 1
    assert as_double(values[3]) == 2.5
    assert values[4] == "héllo".encode() and values[5] == b"\x00\xff"
    nested = read_message(values[6])
    assert nested[1] == [b"inner"] and read_message(nested[2][0]) == {1: [0]} and nested[3] == [b""]


def test_reader_fixed32_and_errors():
    assert list(read_fields(tag(3, I32) + b"\x01\x00\x00\x00")) == [(3, I32, 1)]
    for bad in (b"\x08", b"\x12\x05ab", b"\x09\x00", b"\x0b", b"\x00\x00", b"\xff" * 11):
        with pytest.raises(ValueError):
            list(read_fields(bad))


# --- content negotiation -----------------------------------------------------------------------------------------

@pytest.mark.parametrize("accept, expected", [
    (MEDIA_TYPE, True),
    (CONTENT_TYPE, True),
    (f"{MEDIA_TYPE}, application/json", True),
    (f"application/json, {MEDIA_TYPE}", False),
    (f"application/json;q=0.5, {MEDIA_TYPE}", True),
    (f"*/*, {MEDIA_TYPE}", True),
    (f"{MEDIA_TYPE};q=0, application/json", False),
    ("application/json", False),
    ("*/*", False),
    ("", False),
])
def test_wants_protobuf(accept, expected):
    assert wants_protobuf(accept) is expected


# --- the document ------------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def registry() -> Registry:
    return Registry(BUILTIN)


@pytest.fixture(scope="module")
def document(registry) -> dict[str, Any]:
    return orjson.loads(OpenAPI(registry, Schemas()).v2())


@pytest.fixture(scope="module")
def encoded(document) -> bytes:
    return encode_document(document)


def _message(data: int | bytes) -> dict[int, list[Any]]:
    assert isinstance(data, bytes)
    return read_message(data)


def _text(data: int | bytes) -> str:
    assert isinstance(data, bytes)
    return data.decode()


def _named(entries: list[Any]) -> dict[str, bytes]:
    """gnostic's Named* pairs (name = 1, value = 2) as a dict of encoded values."""
    result = {}
    for entry in entries:
        fields = _message(entry)
        result[_text(fields[1][0])] = fields.get(2, [b""])[0]
    return result


def _extensions(entries: list[Any]) -> dict[str, str]:
    """Vendor extensions (NamedAny) as name -> the Any's YAML text."""
    return {name: _text(_message(value)[2][0]) for name, value in _named(entries).items()}


def test_document_top_level(encoded):
    doc = _message(encoded)
    assert _text(doc[1][0]) == "2.0"
    info = _message(doc[2][0])
    assert _text(info[1][0]) == "Kubernetes" and _text(info[2][0]).startswith("v1.")
    security_definitions = _named(_message(doc[13][0])[1])
    api_key = _message(_message(security_definitions["BearerToken"])[2][0])  # ApiKeySecurity
    assert [_text(api_key[n][0]) for n in (1, 2, 3)] == ["apiKey", "authorization", "header"]
    requirement = _named(_message(doc[12][0])[1])
    assert requirement == {"BearerToken": b""}  # an empty StringArray


def test_paths_operations_and_parameters(encoded):
    paths = _named(_message(_message(encoded)[8][0])[2])
    item = _message(paths["/api/v1/namespaces/{namespace}/configmaps/{name}"])
    path_params = [_message(_message(p)[1][0]) for p in item[9]]  # ParametersItem -> Parameter
    path_sub = [_message(_message(p[2][0])[4][0]) for p in path_params]  # NonBodyParameter -> path sub-schema
    assert [(_text(p[4][0]), _text(p[2][0]), p[1][0]) for p in path_sub] == [
        ("namespace", "path", 1), ("name", "path", 1)]
    assert _text(path_sub[0][5][0]) == "string"

    put = _message(item[3][0])
    assert _text(put[5][0]) == "replaceConfigMap"
    extensions = _extensions(put[13])
    assert extensions["x-kubernetes-action"] == "put\n"
    assert extensions["x-kubernetes-group-version-kind"] == "group: ''\nversion: v1\nkind: ConfigMap\n"
    params = [_message(_message(p)[1][0]) for p in put[8]]
    queries = [_message(_message(p[2][0])[3][0]) for p in params if 2 in p]
    assert "fieldManager" in [_text(q[4][0]) for q in queries]
    body = _message([p for p in params if 1 in p][0][1][0])
    assert _text(body[2][0]) == "body" and body[4] == [1]
    assert _text(_message(body[5][0])[1][0]) == "#/definitions/io.k8s.api.core.v1.ConfigMap"

    responses = _named(_message(put[9][0])[1])
    response = _message(_message(responses["200"])[1][0])
    assert _text(response[1][0]) == "OK"
    schema = _message(_message(response[2][0])[1][0])
    assert _text(schema[1][0]) == "#/definitions/io.k8s.api.core.v1.ConfigMap"

    list_op = _message(_message(paths["/api/v1/namespaces/{namespace}/configmaps"])[2][0])
    non_body = [_message(_message(_message(p)[1][0])[2][0]) for p in list_op[8]]
    queries = [_message(q[3][0]) for q in non_body if 3 in q]  # QueryParameterSubSchema: name 4, type 6
    types = {_text(q[4][0]): _text(q[6][0]) for q in queries}
    assert types["watch"] == "boolean" and types["limit"] == "integer"


def test_definitions(encoded, document):
    definitions = _named(_message(_message(encoded)[9][0])[1])
    assert len(definitions) == len(document["definitions"]) > 700

    spec = _message(definitions["io.k8s.api.apps.v1.DeploymentSpec"])
    assert [_text(v) for v in _message(spec[22][0])[1]] == ["object"]
    assert "selector" in [_text(r) for r in spec[19]]
    properties = _named(_message(spec[25][0])[1])
    strategy = _message(properties["strategy"])
    assert _text(strategy[1][0]) == "#/definitions/io.k8s.api.apps.v1.DeploymentStrategy"
    assert _text(strategy[4][0]).startswith("The deployment strategy")
    assert _extensions(strategy[31]) == {"x-kubernetes-patch-strategy": "retainKeys\n"}
    replicas = _message(properties["replicas"])
    assert _text(replicas[2][0]) == "int32"

    config_map = _message(definitions["io.k8s.api.core.v1.ConfigMap"])
    assert _extensions(config_map[31])["x-kubernetes-group-version-kind"] == (
        "- group: ''\n  kind: ConfigMap\n  version: v1\n")
    data = _message(_named(_message(config_map[25][0])[1])["data"])
    additional = _message(data[21][0])  # AdditionalPropertiesItem -> schema
    assert [_text(v) for v in _message(_message(additional[1][0])[22][0])[1]] == ["string"]
    kind = _message(_named(_message(config_map[25][0])[1])["kind"])
    assert [_text(_message(e)[2][0]) for e in kind.get(20, [])] in ([], ["ConfigMap\n"])

    containers = _message(_named(_message(_message(definitions["io.k8s.api.core.v1.PodSpec"])[25][0])[1])[
        "containers"])
    items = _message(containers[23][0])[1]
    assert len(items) == 1 and _text(_message(items[0])[1][0]) == "#/definitions/io.k8s.api.core.v1.Container"
    assert _extensions(containers[31]) == {
        "x-kubernetes-list-map-keys": "- name\n", "x-kubernetes-list-type": "map\n",
        "x-kubernetes-patch-merge-key": "name\n", "x-kubernetes-patch-strategy": "merge\n"}


def test_schema_keywords_and_any_values():
    schema = {
        "type": ["string", "integer"], "default": "y", "enum": ["a", 1, None], "example": {"k": [True]},
        "maximum": 10, "minimum": -1.5, "exclusiveMaximum": True, "maxLength": 5, "minItems": -3,
        "additionalProperties": False, "items": [{"type": "string"}, {"type": "integer"}], "readOnly": True,
        "allOf": [{"$ref": "#/definitions/A"}], "x-kubernetes-int-or-string": True, "nullable": True,
        "xml": {"name": "n", "wrapped": True}, "externalDocs": {"url": "https://example.com"},
    }
    definitions = _named(_message(_message(encode_document({"definitions": {"S": schema}}))[9][0])[1])
    s = _message(definitions["S"])
    assert [_text(v) for v in _message(s[22][0])[1]] == ["string", "integer"]
    assert _text(_message(s[5][0])[2][0]) == "'y'\n"
    assert [_text(_message(e)[2][0]) for e in s[20]] == ["a\n", "1\n", "null\n"]
    assert _text(_message(s[30][0])[2][0]) == "k:\n- true\n"
    assert as_double(s[7][0]) == 10.0 and as_double(s[9][0]) == -1.5 and s[8] == [1]
    assert s[11] == [5] and as_int64(s[15][0]) == -3
    assert _message(s[21][0]) == {2: [0]}
    assert len(_message(s[23][0])[1]) == 2
    assert s[27] == [1] and _text(_message(s[24][0])[1][0]) == "#/definitions/A"
    assert _message(s[28][0]) == {1: [b"n"], 5: [1]}
    assert _message(s[29][0]) == {2: [b"https://example.com"]}
    assert _extensions(s[31]) == {"x-kubernetes-int-or-string": "true\n"}
    assert set(s) == {5, 7, 8, 9, 11, 15, 20, 21, 22, 23, 24, 27, 28, 29, 30, 31}  # nullable has no field


# --- kubectl 1.27 against a server that answers /openapi/v2 in protobuf -------------------------------------------

@pytest.mark.skipif(not os.access(KUBECTL, os.X_OK), reason="kubectl 1.27 is not installed")
async def test_kubectl_explain_reads_the_protobuf_document(tmp_path, registry, document, encoded):
    accepts: list[str] = []

    async def handle(request: web.Request) -> web.Response:
        path = request.path
        if path == "/openapi/v2":
            accepts.append(request.headers.get("Accept", ""))
            if wants_protobuf(request.headers.get("Accept", "")):
                return web.Response(body=encoded, content_type=CONTENT_TYPE)
            return web.json_response(document)
        bodies = {
            "/version": {"major": "1", "minor": "33", "gitVersion": "v1.33.0"},
            "/api": {"kind": "APIVersions", "versions": ["v1"], "serverAddressByClientCIDRs": [
                {"clientCIDR": "0.0.0.0/0", "serverAddress": request.host}]},
            "/apis": {"kind": "APIGroupList", "apiVersion": "v1", "groups": []},
            "/api/v1": resource_list(registry, "", "v1"),
        }
        if path in bodies:
            return web.json_response(bodies[path])
        return web.json_response({"kind": "Status", "apiVersion": "v1", "status": "Failure", "reason": "NotFound",
                                  "code": 404}, status=404)

    app = web.Application()
    app.router.add_route("GET", "/{tail:.*}", handle)
    server = TestServer(app, host="127.0.0.1")
    await server.start_server()
    try:
        kubeconfig = tmp_path / "kubeconfig"
        kubeconfig.write_text(orjson.dumps({
            "apiVersion": "v1", "kind": "Config", "current-context": "c",
            "clusters": [{"name": "c", "cluster": {"server": f"http://127.0.0.1:{server.port}"}}],
            "users": [{"name": "u", "user": {}}],
            "contexts": [{"name": "c", "context": {"cluster": "c", "user": "u"}}],
        }).decode())
        env = {k: v for k, v in os.environ.items() if not k.startswith("KUBECTL_")}
        env["HOME"] = str(tmp_path)
        process = await asyncio.create_subprocess_exec(
            KUBECTL, "explain", "configmap.data", "--kubeconfig", str(kubeconfig),
            "--cache-dir", str(tmp_path / "cache"), env=env,
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
        stdout, stderr = await asyncio.wait_for(process.communicate(), 60)
    finally:
        await server.close()
    output = stdout.decode()
    assert process.returncode == 0, stderr.decode()
    assert accepts and wants_protobuf(accepts[0])
    assert "KIND:" in output and "ConfigMap" in output and "map[string]string" in output
    description = document["definitions"]["io.k8s.api.core.v1.ConfigMap"]["properties"]["data"]["description"]
    assert " ".join(description.split()) in " ".join(output.split())

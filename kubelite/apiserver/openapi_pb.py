"""/openapi/v2 as protobuf: a swagger 2.0 dict encoded as gnostic's `openapi.v2.Document`.

kubectl fetches this form for `apply` validation and `explain`. Field numbers follow
google/gnostic openapiv2/OpenAPIv2.proto. Values the proto holds as `Any` (defaults, enums,
examples, vendor extensions) carry their YAML text in `Any.yaml`, as gnostic's compiler writes
them. Keys the proto has no field for are left out, as are values of the wrong JSON type.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from functools import lru_cache
from typing import Any

import orjson
import yaml

from kubelite.api.protowire import Writer

MEDIA_TYPE = "application/com.github.proto-openapi.spec.v2@v1.0+protobuf"
"""What kubectl puts in Accept for the protobuf document."""
CONTENT_TYPE = "application/com.github.proto-openapi.spec.v2.v1.0+protobuf"
"""What to answer with: kube-apiserver's spelling, since Go's mime parser (kubectl) rejects the "@" of MEDIA_TYPE."""
_MEDIA_TYPES = (MEDIA_TYPE, CONTENT_TYPE)

FieldWriter = Callable[[Writer, int, Any], None]
"""Writes one JSON value as the field with the given number (nothing when the value's type does not fit)."""
Encoder = Callable[[Writer, dict[str, Any]], None]
"""Writes the fields of one message from a JSON object."""
Fields = dict[str, tuple[int, FieldWriter]]
"""JSON key -> (field number, writer) of one message."""


def wants_protobuf(accept_header: str) -> bool:
    """True when the client prefers the protobuf document: listed first, or listed without application/json."""
    ranked: list[tuple[float, int, str]] = []
    for index, clause in enumerate(accept_header.split(",")):
        media_type, *params = (part.strip() for part in clause.split(";"))
        quality = 1.0
        for param in params:
            name, _, value = param.partition("=")
            if name.strip().lower() == "q":
                try:
                    quality = float(value)
                except ValueError:
                    quality = 0.0
        if media_type and quality > 0:
            ranked.append((-quality, index, media_type.lower()))
    types = [media_type for _, _, media_type in sorted(ranked)]
    if not any(media_type in _MEDIA_TYPES for media_type in types):
        return False
    return types[0] in _MEDIA_TYPES or "application/json" not in types


class _YamlDumper(getattr(yaml, "CSafeDumper", yaml.SafeDumper)):  # type: ignore[misc]
    """Safe YAML that also quotes y/Y/n/N, which Go's yaml.v2 (kubectl) reads as booleans."""


_YamlDumper.add_implicit_resolver("tag:yaml.org,2002:bool", re.compile(r"^(?:y|Y|n|N)$"), list("yYnN"))


@lru_cache(maxsize=8192)
def _yaml_text(key: bytes) -> str:
    """The YAML of a JSON value (given as its JSON text), in block style like gnostic's compiler.Marshal."""
    text = yaml.dump(orjson.loads(key), Dumper=_YamlDumper, default_flow_style=False, sort_keys=False,
                     allow_unicode=True, width=1 << 30)
    return text[:-4] if text.endswith("\n...\n") else text


def _any(w: Writer, field: int, value: Any) -> None:
    """An openapi.v2.Any holding the value's YAML."""
    mark = w.begin(field)
    w.string(2, _yaml_text(orjson.dumps(value)))
    w.end(mark)


def _anys(w: Writer, field: int, value: Any) -> None:
    """A repeated Any (enum) from a JSON array."""
    if isinstance(value, list):
        for item in value:
            _any(w, field, item)


def _extension(w: Writer, field: int, name: str, value: Any) -> None:
    """One vendor extension: a NamedAny."""
    mark = w.begin(field)
    w.string(1, name)
    _any(w, 2, value)
    w.end(mark)


def _string(w: Writer, field: int, value: Any) -> None:
    """A string field, when the value is one."""
    if isinstance(value, str):
        w.string(field, value)


def _strings(w: Writer, field: int, value: Any) -> None:
    """A repeated string from a JSON array (or a lone string)."""
    for item in [value] if isinstance(value, str) else value if isinstance(value, list) else ():
        if isinstance(item, str):
            w.string(field, item)


def _bool(w: Writer, field: int, value: Any) -> None:
    """A bool field, when the value is one."""
    if isinstance(value, bool):
        w.boolean(field, value)


def _int64(w: Writer, field: int, value: Any) -> None:
    """An int64 field from a JSON number."""
    if isinstance(value, int | float) and not isinstance(value, bool):
        w.int64(field, int(value))


def _double(w: Writer, field: int, value: Any) -> None:
    """A double field from a JSON number."""
    if isinstance(value, int | float) and not isinstance(value, bool):
        w.double(field, float(value))


def _nested(w: Writer, field: int, encode: Encoder, value: dict[str, Any]) -> None:
    """A nested message at `field` written by `encode`."""
    mark = w.begin(field)
    encode(w, value)
    w.end(mark)


def _message(encode: Encoder) -> FieldWriter:
    """A nested message field from a JSON object."""
    def write(w: Writer, field: int, value: Any) -> None:
        if isinstance(value, dict):
            _nested(w, field, encode, value)
    return write


def _repeated(encode: Encoder) -> FieldWriter:
    """A repeated message field from a JSON array of objects."""
    def write(w: Writer, field: int, value: Any) -> None:
        if isinstance(value, list):
            for item in value:
                if isinstance(item, dict):
                    _nested(w, field, encode, item)
    return write


def _entries(w: Writer, field: int, value: dict[str, Any], write_value: FieldWriter) -> None:
    """A JSON object as gnostic's repeated Named* pairs (name = 1, value = 2) at `field`."""
    for name, item in value.items():
        mark = w.begin(field)
        w.string(1, name)
        write_value(w, 2, item)
        w.end(mark)


def _map(write_value: FieldWriter) -> FieldWriter:
    """A message whose only field (1) holds a JSON object's entries as Named* pairs."""
    def write(w: Writer, field: int, value: Any) -> None:
        if isinstance(value, dict):
            mark = w.begin(field)
            _entries(w, 1, value, write_value)
            w.end(mark)
    return write


def _object(fields: Fields, extensions: int) -> Encoder:
    """The encoder of a message whose fields map onto JSON keys; `x-` keys become vendor extensions."""
    def encode(w: Writer, value: dict[str, Any]) -> None:
        for key, item in value.items():
            spec = fields.get(key)
            if spec is not None:
                spec[1](w, spec[0], item)
            elif extensions and key.startswith("x-"):
                _extension(w, extensions, key, item)
    return encode


def _validations(start: int, items: FieldWriter) -> Fields:
    """The value-validation keys that PrimitivesItems, Header and non-body parameters number in one run."""
    keys: list[tuple[str, FieldWriter]] = [
        ("type", _string), ("format", _string), ("items", items), ("collectionFormat", _string),
        ("default", _any), ("maximum", _double), ("exclusiveMaximum", _bool), ("minimum", _double),
        ("exclusiveMinimum", _bool), ("maxLength", _int64), ("minLength", _int64), ("pattern", _string),
        ("maxItems", _int64), ("minItems", _int64), ("uniqueItems", _bool), ("enum", _anys),
        ("multipleOf", _double)]
    return {key: (start + offset, writer) for offset, (key, writer) in enumerate(keys)}


_EXTERNAL_DOCS = _message(_object({"description": (1, _string), "url": (2, _string)}, 3))
_encode_json_reference = _object({"$ref": (1, _string), "description": (2, _string)}, 0)

# PrimitivesItems (items of non-body parameters and headers) nests itself.
_PRIMITIVES: Fields = {}
_PRIMITIVES_ITEMS = _message(_object(_PRIMITIVES, 18))
_PRIMITIVES.update(_validations(1, _PRIMITIVES_ITEMS))

# Schema nests itself through additionalProperties, items, allOf and properties.
_SCHEMA: Fields = {
    "$ref": (1, _string), "format": (2, _string), "title": (3, _string), "description": (4, _string),
    "default": (5, _any), "multipleOf": (6, _double), "maximum": (7, _double), "exclusiveMaximum": (8, _bool),
    "minimum": (9, _double), "exclusiveMinimum": (10, _bool), "maxLength": (11, _int64),
    "minLength": (12, _int64), "pattern": (13, _string), "maxItems": (14, _int64), "minItems": (15, _int64),
    "uniqueItems": (16, _bool), "maxProperties": (17, _int64), "minProperties": (18, _int64),
    "required": (19, _strings), "enum": (20, _anys),
    "discriminator": (26, _string), "readOnly": (27, _bool),
    "xml": (28, _message(_object({"name": (1, _string), "namespace": (2, _string), "prefix": (3, _string),
                                  "attribute": (4, _bool), "wrapped": (5, _bool)}, 6))),
    "externalDocs": (29, _EXTERNAL_DOCS), "example": (30, _any),
}
_encode_schema = _object(_SCHEMA, 31)
_SCHEMA_FIELD = _message(_encode_schema)
_SCHEMAS = _repeated(_encode_schema)


def _additional_properties(w: Writer, field: int, value: Any) -> None:
    """AdditionalPropertiesItem: a schema (1) or a boolean (2)."""
    if isinstance(value, bool):
        mark = w.begin(field)
        w.boolean(2, value)
        w.end(mark)
    elif isinstance(value, dict):
        mark = w.begin(field)
        _nested(w, 1, _encode_schema, value)
        w.end(mark)


def _type_item(w: Writer, field: int, value: Any) -> None:
    """TypeItem: the type name(s) as repeated strings."""
    if isinstance(value, str | list):
        mark = w.begin(field)
        _strings(w, 1, value)
        w.end(mark)


def _items_item(w: Writer, field: int, value: Any) -> None:
    """ItemsItem: one schema, or several (tuple validation)."""
    if isinstance(value, dict | list):
        mark = w.begin(field)
        _SCHEMAS(w, 1, [value] if isinstance(value, dict) else value)
        w.end(mark)


_SCHEMA.update({"additionalProperties": (21, _additional_properties), "type": (22, _type_item),
                "items": (23, _items_item), "allOf": (24, _SCHEMAS),
                "properties": (25, _map(_SCHEMA_FIELD))})

_FILE_SCHEMA = _object({
    "format": (1, _string), "title": (2, _string), "description": (3, _string), "default": (4, _any),
    "required": (5, _strings), "type": (6, _string), "readOnly": (7, _bool), "externalDocs": (8, _EXTERNAL_DOCS),
    "example": (9, _any)}, 10)

_encode_body_parameter = _object({
    "description": (1, _string), "name": (2, _string), "in": (3, _string), "required": (4, _bool),
    "schema": (5, _SCHEMA_FIELD)}, 6)
_PARAMETER_HEAD: Fields = {"required": (1, _bool), "in": (2, _string), "description": (3, _string),
                           "name": (4, _string)}
# Header and path parameters number their validations from 5; query and formData add allowEmptyValue first.
_encode_header_or_path = _object({**_PARAMETER_HEAD, **_validations(5, _PRIMITIVES_ITEMS)}, 22)
_encode_query_or_form = _object({**_PARAMETER_HEAD, "allowEmptyValue": (5, _bool),
                                 **_validations(6, _PRIMITIVES_ITEMS)}, 23)
# NonBodyParameter's oneof by the parameter's location.
_NON_BODY: dict[str, tuple[int, Encoder]] = {
    "header": (1, _encode_header_or_path), "formData": (2, _encode_query_or_form),
    "query": (3, _encode_query_or_form), "path": (4, _encode_header_or_path)}


def _encode_parameter(w: Writer, value: dict[str, Any]) -> None:
    """Parameter: a BodyParameter (1) or a NonBodyParameter (2) holding the sub-schema of its location."""
    location = value.get("in")
    if location == "body":
        _nested(w, 1, _encode_body_parameter, value)
        return
    found = _NON_BODY.get(location) if isinstance(location, str) else None
    if found is not None:
        mark = w.begin(2)
        _nested(w, found[0], found[1], value)
        w.end(mark)


def _encode_parameters_item(w: Writer, value: dict[str, Any]) -> None:
    """ParametersItem: a Parameter (1) or a JsonReference (2)."""
    if "$ref" in value:
        _nested(w, 2, _encode_json_reference, value)
    else:
        _nested(w, 1, _encode_parameter, value)


def _schema_item(w: Writer, field: int, value: Any) -> None:
    """SchemaItem: a Schema (1), or a FileSchema (2) for `type: file`."""
    if isinstance(value, dict):
        mark = w.begin(field)
        if value.get("type") == "file":
            _nested(w, 2, _FILE_SCHEMA, value)
        else:
            _nested(w, 1, _encode_schema, value)
        w.end(mark)


_HEADER = _object({**_validations(1, _PRIMITIVES_ITEMS), "description": (18, _string)}, 19)
_encode_response = _object({
    "description": (1, _string), "schema": (2, _schema_item), "headers": (3, _map(_message(_HEADER))),
    "examples": (4, _map(_any))}, 5)


def _encode_response_value(w: Writer, value: dict[str, Any]) -> None:
    """ResponseValue: a Response (1) or a JsonReference (2)."""
    if "$ref" in value:
        _nested(w, 2, _encode_json_reference, value)
    else:
        _nested(w, 1, _encode_response, value)


def _split_extensions(named: int, extensions: int, write_value: FieldWriter) -> Encoder:
    """A map message whose entries (at `named`) and vendor extensions (at `extensions`) share one JSON object."""
    def encode(w: Writer, value: dict[str, Any]) -> None:
        for name, item in value.items():
            if name.startswith("x-"):
                _extension(w, extensions, name, item)
            else:
                mark = w.begin(named)
                w.string(1, name)
                write_value(w, 2, item)
                w.end(mark)
    return encode


_RESPONSES = _message(_split_extensions(1, 2, _message(_encode_response_value)))
_PARAMETERS = _repeated(_encode_parameters_item)


def _string_array(w: Writer, field: int, value: Any) -> None:
    """StringArray: repeated string value = 1."""
    if isinstance(value, list):
        mark = w.begin(field)
        _strings(w, 1, value)
        w.end(mark)


_SECURITY = _repeated(lambda w, value: _entries(w, 1, value, _string_array))

_OPERATION = _message(_object({
    "tags": (1, _strings), "summary": (2, _string), "description": (3, _string), "externalDocs": (4, _EXTERNAL_DOCS),
    "operationId": (5, _string), "produces": (6, _strings), "consumes": (7, _strings), "parameters": (8, _PARAMETERS),
    "responses": (9, _RESPONSES), "schemes": (10, _strings), "deprecated": (11, _bool), "security": (12, _SECURITY)},
    13))
_PATH_ITEM = _message(_object({
    "$ref": (1, _string), "get": (2, _OPERATION), "put": (3, _OPERATION), "post": (4, _OPERATION),
    "delete": (5, _OPERATION), "options": (6, _OPERATION), "head": (7, _OPERATION), "patch": (8, _OPERATION),
    "parameters": (9, _PARAMETERS)}, 10))

_SCOPES = _map(_string)
_OAUTH2_FLOWS: dict[str, tuple[int, Encoder]] = {
    "implicit": (3, _object({"type": (1, _string), "flow": (2, _string), "scopes": (3, _SCOPES),
                             "authorizationUrl": (4, _string), "description": (5, _string)}, 6)),
    "password": (4, _object({"type": (1, _string), "flow": (2, _string), "scopes": (3, _SCOPES),
                             "tokenUrl": (4, _string), "description": (5, _string)}, 6)),
    "application": (5, _object({"type": (1, _string), "flow": (2, _string), "scopes": (3, _SCOPES),
                                "tokenUrl": (4, _string), "description": (5, _string)}, 6)),
    "accessCode": (6, _object({"type": (1, _string), "flow": (2, _string), "scopes": (3, _SCOPES),
                               "authorizationUrl": (4, _string), "tokenUrl": (5, _string),
                               "description": (6, _string)}, 7)),
}
_BASIC = _object({"type": (1, _string), "description": (2, _string)}, 3)
_API_KEY = _object({"type": (1, _string), "name": (2, _string), "in": (3, _string), "description": (4, _string)}, 5)


def _security_scheme(w: Writer, field: int, value: Any) -> None:
    """SecurityDefinitionsItem: the scheme message its type (and OAuth2 flow) selects."""
    if not isinstance(value, dict):
        return
    kind = value.get("type")
    found = (1, _BASIC) if kind == "basic" else (2, _API_KEY) if kind == "apiKey" else (
        _OAUTH2_FLOWS.get(value.get("flow")) if kind == "oauth2" and isinstance(value.get("flow"), str) else None)
    if found is not None:
        mark = w.begin(field)
        _nested(w, found[0], found[1], value)
        w.end(mark)


_encode_document = _object({
    "swagger": (1, _string),
    "info": (2, _message(_object({
        "title": (1, _string), "version": (2, _string), "description": (3, _string),
        "termsOfService": (4, _string),
        "contact": (5, _message(_object({"name": (1, _string), "url": (2, _string), "email": (3, _string)}, 4))),
        "license": (6, _message(_object({"name": (1, _string), "url": (2, _string)}, 3)))}, 7))),
    "host": (3, _string), "basePath": (4, _string), "schemes": (5, _strings), "consumes": (6, _strings),
    "produces": (7, _strings),
    "paths": (8, _message(_split_extensions(2, 1, _PATH_ITEM))),
    "definitions": (9, _map(_SCHEMA_FIELD)),
    "parameters": (10, _map(_message(_encode_parameter))),
    "responses": (11, _map(_message(_encode_response))),
    "security": (12, _SECURITY),
    "securityDefinitions": (13, _map(_security_scheme)),
    "tags": (14, _repeated(_object({"name": (1, _string), "description": (2, _string),
                                    "externalDocs": (3, _EXTERNAL_DOCS)}, 4))),
    "externalDocs": (15, _EXTERNAL_DOCS),
}, 16)


def encode_document(doc: dict[str, Any]) -> bytes:
    """The swagger 2.0 document as a serialized gnostic openapi.v2.Document."""
    w = Writer()
    _encode_document(w, doc)
    return w.getvalue()

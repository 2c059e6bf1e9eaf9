"""Bad input gets the right Kubernetes Status, and the server keeps serving."""

from __future__ import annotations

import json

import pytest

from tests.e2e.conftest import Cluster

PODS = "/api/v1/namespaces/default/pods"
CMS = "/api/v1/namespaces/default/configmaps"


def _cm(name: str, **extra: object) -> str:
    return json.dumps({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": name}, "data": {"a": "1"},
                       **extra})


def assert_status(result: tuple[int, dict], code: int, reason: str) -> dict:
    status, body = result
    assert status == code, body
    assert body["kind"] == "Status" and body["code"] == code and body["reason"] == reason, body
    return body


def test_malformed_json_and_yaml(cluster: Cluster) -> None:
    assert_status(cluster.http("POST", CMS, b'{"kind": "ConfigMap", '), 400, "BadRequest")
    assert_status(cluster.http("POST", CMS, b"kind: [unclosed", "application/yaml"), 400, "BadRequest")
    assert_status(cluster.http("POST", CMS, b"[1, 2]"), 400, "BadRequest")


def test_wrong_kind_or_namespace_for_path(cluster: Cluster) -> None:
    body = _cm("wrongkind").replace('"ConfigMap"', '"Secret"')
    assert_status(cluster.http("POST", CMS, body), 400, "BadRequest")
    body = json.dumps({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "x", "namespace": "other"}})
    assert_status(cluster.http("POST", CMS, body), 400, "BadRequest")
    assert_status(cluster.http("POST", "/api/v1/namespaces/nope/configmaps", _cm("x")), 404, "NotFound")
    assert_status(cluster.http("GET", "/api/v1/namespaces/default/nothings"), 404, "NotFound")


def test_invalid_names_and_labels(cluster: Cluster) -> None:
    body = assert_status(cluster.http("POST", CMS, _cm("Bad_Name")), 422, "Invalid")
    assert body["details"]["causes"][0]["field"] == "metadata.name"
    bad_label = json.dumps({"apiVersion": "v1", "kind": "ConfigMap",
                            "metadata": {"name": "ok", "labels": {"bad key!": "v"}}})
    body = assert_status(cluster.http("POST", CMS, bad_label), 422, "Invalid")
    assert body["details"]["causes"][0]["field"].startswith("metadata.labels")


def test_unknown_fields_strict_and_warn(cluster: Cluster) -> None:
    body = _cm("strict", spec={"nope": 1})
    result = assert_status(cluster.http("POST", CMS + "?fieldValidation=Strict", body), 400, "BadRequest")
    assert 'unknown field "spec"' in result["message"]
    status, created = cluster.http("POST", CMS + "?fieldValidation=Ignore", body)
    assert status == 201 and "spec" not in created


def test_stale_resource_version_conflicts(cluster: Cluster) -> None:
    status, created = cluster.http("POST", CMS, _cm("stale"))
    assert status == 201
    first = dict(created)
    status, _ = cluster.http("PUT", CMS + "/stale", json.dumps({**created, "data": {"a": "2"}}))
    assert status == 200
    assert_status(cluster.http("PUT", CMS + "/stale", json.dumps({**first, "data": {"a": "3"}})), 409, "Conflict")


def test_already_exists_and_not_found(cluster: Cluster) -> None:
    assert cluster.http("POST", CMS, _cm("twice"))[0] == 201
    assert_status(cluster.http("POST", CMS, _cm("twice")), 409, "AlreadyExists")
    assert_status(cluster.http("GET", CMS + "/never"), 404, "NotFound")
    assert_status(cluster.http("DELETE", CMS + "/never"), 404, "NotFound")


def test_body_over_size_limit(cluster: Cluster) -> None:
    big = _cm("big").replace('"a": "1"', '"a": "' + "x" * (3 * 1024 * 1024 + 10) + '"')
    assert_status(cluster.http("POST", CMS, big), 413, "RequestEntityTooLarge")


def test_unsupported_patch_and_method(cluster: Cluster) -> None:
    assert cluster.http("POST", CMS, _cm("patchy"))[0] == 201
    assert_status(cluster.http("PATCH", CMS + "/patchy", "{}", "text/plain"), 415, "UnsupportedMediaType")
    assert_status(cluster.http("PATCH", CMS + "/patchy", "a: b", "application/apply-patch+yaml"), 415,
                  "UnsupportedMediaType")
    assert_status(cluster.http("POST", "/apis/authentication.k8s.io/v1/selfsubjectreviews/x"), 405,
                  "MethodNotAllowed")


def test_unauthenticated_gets_401(cluster: Cluster) -> None:
    assert_status(cluster.http("GET", PODS, client_cert=False), 401, "Unauthorized")
    status, _ = cluster.http("GET", "/healthz", client_cert=False)
    assert status == 200


def test_join_with_node_token_pins_the_ca(cluster: Cluster) -> None:
    import http.client as client_http

    from kubelite.client.config import ConfigError
    from kubelite.client.join import join_config

    token = (cluster.data_dir / "server" / "node-token").read_text().strip()
    config = join_config(f"https://127.0.0.1:{cluster.port}", token)
    conn = client_http.HTTPSConnection("127.0.0.1", cluster.port, context=config.ssl_context, timeout=10)
    conn.request("GET", "/api/v1/namespaces/default", headers=config.headers)
    assert conn.getresponse().status == 200
    forged = "K10" + "0" * 64 + "::server:" + token.rsplit(":", 1)[1]
    with pytest.raises(ConfigError, match="does not match"):
        join_config(f"https://127.0.0.1:{cluster.port}", forged)

"""Authenticator (certificate, bearer token, public paths) and the apiserver's Prometheus metrics."""

from __future__ import annotations

from typing import Any
from unittest import mock

import pytest
from aiohttp.test_utils import make_mocked_request
from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families

from kubelite.apiserver.authn import ANONYMOUS, Authenticator, UserInfo, is_public
from kubelite.apiserver.metrics import Metrics

ADMIN_CERT = {
    "subject": ((("organizationName", "system:masters"),), (("commonName", "system:admin"),)),
    "issuer": ((("commonName", "kubelite-client-ca@1"),),),
}


def _request(headers: dict[str, str] | None = None, peercert: dict[str, Any] | None = None) -> Any:
    transport = mock.Mock()
    transport.get_extra_info.side_effect = lambda name, default=None: (
        peercert if name == "peercert" else default
    )
    return make_mocked_request("GET", "/api/v1/pods", headers=headers or {}, transport=transport)


def test_certificate_user() -> None:
    user = Authenticator().authenticate(_request(peercert=ADMIN_CERT))
    assert user == UserInfo("system:admin", groups=("system:masters", "system:authenticated"))


def test_certificate_with_several_organizations_and_cache() -> None:
    authn = Authenticator()
    cert = {"subject": (
        (("organizationName", "system:nodes"),), (("organizationName", "team-a"),),
        (("commonName", "node-1"),),
    )}
    first = authn.authenticate(_request(peercert=cert))
    assert first is not None and first.groups == ("system:nodes", "team-a", "system:authenticated")
    assert authn.authenticate(_request(peercert=cert)) is first


def test_certificate_without_common_name_falls_back_to_token() -> None:
    authn = Authenticator({"tok": UserInfo("alice")})
    cert = {"subject": ((("organizationName", "x"),),)}
    assert authn.authenticate(_request(peercert=cert)) is None
    user = authn.authenticate(_request({"Authorization": "Bearer tok"}, peercert=cert))
    assert user is not None and user.username == "alice"


def test_certificate_wins_over_token() -> None:
    authn = Authenticator({"tok": UserInfo("alice")})
    user = authn.authenticate(_request({"Authorization": "Bearer tok"}, peercert=ADMIN_CERT))
    assert user is not None and user.username == "system:admin"


@pytest.mark.parametrize(
    ("header", "expected"),
    [
        ("Bearer tok", "alice"),
        ("bearer tok", "alice"),
        ("  Bearer tok  ", "alice"),
        ("Bearer tok extra", "alice"),
        ("Bearer wrong", None),
        ("Bearer ", None),
        ("Bearer", None),
        ("Basic dG9rOg==", None),
        ("tok", None),
    ],
)
def test_bearer_header_parsing(header: str, expected: str | None) -> None:
    user = Authenticator({"tok": UserInfo("alice")}).authenticate(_request({"Authorization": header}))
    assert (user.username if user else None) == expected


def test_token_users_are_authenticated_and_tokens_can_change() -> None:
    authn = Authenticator({"server-token": UserInfo("system:admin", groups=("system:masters",))})
    admin = authn.authenticate(_request({"Authorization": "Bearer server-token"}))
    assert admin == UserInfo("system:admin", groups=("system:masters", "system:authenticated"))
    sa = UserInfo("system:serviceaccount:default:app", uid="u-1",
                  groups=("system:serviceaccounts", "system:authenticated"), extra={"k": ["v"]})
    authn.add_token("sa-token", sa)
    assert authn.authenticate(_request({"Authorization": "Bearer sa-token"})) == sa
    authn.remove_token("sa-token")
    authn.remove_token("never-added")
    assert authn.authenticate(_request({"Authorization": "Bearer sa-token"})) is None


def test_no_credentials_and_closed_transport() -> None:
    authn = Authenticator({"tok": UserInfo("alice")})
    assert authn.authenticate(_request()) is None
    assert authn.authenticate(_request(peercert={})) is None
    request = _request({"Authorization": "Bearer tok"})
    request.protocol.transport = None  # the connection closed while the request was queued
    assert request.transport is None
    user = authn.authenticate(request)
    assert user is not None and user.username == "alice"


def test_public_paths() -> None:
    for path in ("/healthz", "/livez", "/readyz", "/version", "/version/"):
        assert is_public(path), path
    for path in ("/", "/api", "/apis", "/metrics", "/healthz/etcd", "/api/v1/pods", "/openapi/v2"):
        assert not is_public(path), path
    assert ANONYMOUS.username == "system:anonymous" and ANONYMOUS.groups == ("system:unauthenticated",)
    hash(ANONYMOUS)


# --- metrics (belongs in tests/unit/test_metrics.py) -------------------------------------------


def _families(body: bytes) -> dict[str, Any]:
    return {f.name: f for f in text_string_to_metric_families(body.decode())}


def _samples(body: bytes) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    samples = {}
    for family in text_string_to_metric_families(body.decode()):
        for s in family.samples:
            if s.name.endswith("_created") or s.name.startswith("process_"):
                continue
            labels = {k: (str(float(v)) if k == "le" and v != "+Inf" else v) for k, v in s.labels.items()}
            samples[(s.name, frozenset(labels.items()))] = s.value
    return samples


def test_metrics_values() -> None:
    m = Metrics()
    m.observe_request("GET", "apps", "v1", "deployments", "", "namespace", 200, 0.01)
    m.observe_request("GET", "apps", "v1", "deployments", "", "namespace", 200, 0.3)
    m.observe_request("GET", "apps", "v1", "deployments", "", "namespace", 404, 100.0)
    m.watch_started("apps", "v1", "Deployment")
    m.watch_started("apps", "v1", "Deployment")
    m.watch_ended("apps", "v1", "Deployment")
    m.longrunning_started("WATCH", "", "v1", "pods", "", "cluster")
    m.observe_storage("get", "pods", 0.002)
    with m.storage_timer("list", "pods"):
        pass
    m.set_storage_objects("pods", 7)

    body, content_type = m.render()
    assert content_type.startswith("text/plain; version=0.0.4")
    families = _families(body)
    for name in ("apiserver_request", "apiserver_request_duration_seconds", "apiserver_registered_watchers",
                 "apiserver_longrunning_requests", "etcd_request_duration_seconds",
                 "apiserver_storage_objects", "process_resident_memory_bytes"):
        assert name in families, name

    get = m.registry.get_sample_value
    labels = {"verb": "GET", "group": "apps", "version": "v1", "resource": "deployments", "subresource": "",
              "scope": "namespace", "component": "apiserver"}
    assert get("apiserver_request_total", {**labels, "code": "200"}) == 2
    assert get("apiserver_request_total", {**labels, "code": "404"}) == 1
    assert get("apiserver_request_duration_seconds_count", labels) == 3
    assert get("apiserver_request_duration_seconds_sum", labels) == pytest.approx(100.31)
    assert get("apiserver_request_duration_seconds_bucket", {**labels, "le": "0.025"}) == 1
    assert get("apiserver_request_duration_seconds_bucket", {**labels, "le": "0.4"}) == 2
    assert get("apiserver_request_duration_seconds_bucket", {**labels, "le": "60"}) == 2
    assert get("apiserver_request_duration_seconds_bucket", {**labels, "le": "+Inf"}) == 3
    assert get("apiserver_registered_watchers", {"group": "apps", "version": "v1", "kind": "Deployment"}) == 1
    assert get("etcd_request_duration_seconds_count", {"operation": "list", "type": "pods"}) == 1
    assert get("apiserver_storage_objects", {"resource": "pods"}) == 7


def test_fast_render_matches_prometheus_client() -> None:
    m = Metrics()
    m.observe_request("LIST", "", "v1", "pods", "", "cluster", 200, 0.005)  # on a bucket bound
    m.observe_request("PATCH", "", "v1", "pods", "status", "namespace", "422", 0.7)
    m.watch_started("", "v1", 'Weird"Kind\\\n')
    m.observe_storage("update", "pods", 61.0)
    bucket = {"verb": "LIST", "group": "", "version": "v1", "resource": "pods", "subresource": "",
              "scope": "cluster", "component": "apiserver", "le": "0.005"}
    assert m.registry.get_sample_value("apiserver_request_duration_seconds_bucket", bucket) == 1
    ours = _samples(m.render()[0])
    reference = _samples(generate_latest(m.registry))
    assert ours == reference
    assert len(ours) > 50

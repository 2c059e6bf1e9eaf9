"""The API server's checks on pods/log, exec, attach and port-forward before it reaches a kubelet."""

from __future__ import annotations

import pytest
from multidict import MultiDict

from kubelite.apiserver import errors
from kubelite.apiserver.kubeletclient import DEFAULT_KUBELET_PORT, KubeletRefused, NoAddress, node_endpoint
from kubelite.apiserver.podproxy import _container, _stream_query, log_query, refused

POD = {"metadata": {"name": "web", "namespace": "default"},
       "spec": {"containers": [{"name": "app"}, {"name": "sidecar"}], "initContainers": [{"name": "setup"}]}}
SINGLE = {"metadata": {"name": "solo"}, "spec": {"containers": [{"name": "only"}]}}


def bad_request(call: object, *args: object) -> str:
    with pytest.raises(errors.StatusError) as raised:
        call(*args)  # type: ignore[operator]
    assert (raised.value.code, raised.value.reason) == (400, "BadRequest")
    return raised.value.message


def test_container_choice_and_upstreams_messages() -> None:
    assert _container(SINGLE, "") == "only"
    assert _container(POD, "sidecar") == "sidecar" and _container(POD, "setup") == "setup"
    assert bad_request(_container, POD, "") == ("a container name must be specified for pod web, choose one of: "
                                                "[app sidecar] or one of the init containers: [setup]")
    assert bad_request(_container, POD, "nope") == "container nope is not valid for pod web"
    empty = {"metadata": {"name": "empty"}, "spec": {}}
    assert bad_request(_container, empty, "") == "a container name must be specified for pod empty"


def test_log_options_pass_through() -> None:
    query = MultiDict(follow="true", previous="1", timestamps="false", tailLines="10", limitBytes="5",
                      sinceTime="2024-01-02T03:04:05Z", container="app")
    assert log_query(POD, query) == {"follow": "true", "previous": "true", "tailLines": "10", "limitBytes": "5",
                                     "sinceTime": "2024-01-02T03:04:05Z"}
    assert log_query(POD, MultiDict(sinceSeconds="30")) == {"sinceSeconds": "30"}


def test_log_options_that_do_not_parse_are_bad_requests() -> None:
    assert "invalid syntax" in bad_request(log_query, POD, MultiDict(tailLines="ten"))
    assert "invalid syntax" in bad_request(log_query, POD, MultiDict(follow="yes please"))
    assert "parsing time" in bad_request(log_query, POD, MultiDict(sinceTime="yesterday"))


def test_invalid_log_options_are_422_with_causes() -> None:
    with pytest.raises(errors.StatusError) as raised:
        log_query(POD, MultiDict(tailLines="-1", limitBytes="0", sinceSeconds="5", sinceTime="2024-01-02T03:04:05Z"))
    status = raised.value.status()
    assert (status["code"], status["reason"], status["details"]["kind"]) == (422, "Invalid", "PodLogOptions")
    assert [c["field"] for c in status["details"]["causes"]] == ["tailLines", "limitBytes", ""]
    with pytest.raises(errors.StatusError) as raised:
        log_query(POD, MultiDict(sinceSeconds="0"))
    status = raised.value.status()
    assert status["details"]["causes"][0] == {"reason": "FieldValueInvalid", "field": "sinceSeconds",
                                              "message": "Invalid value: 0: must be greater than 0"}
    assert "sinceSeconds: Invalid value: 0: must be greater than 0" in status["message"]


def test_stream_queries_for_the_kubelet() -> None:
    query = MultiDict([("stdin", "true"), ("stdout", "1"), ("tty", "false"), ("command", "sh"), ("command", "-c"),
                       ("container", "app")])
    assert _stream_query(query, "exec") == [("stdin", "1"), ("stdout", "1"), ("command", "sh"), ("command", "-c")]
    assert _stream_query(query, "attach") == [("stdin", "1"), ("stdout", "1")]
    assert _stream_query(MultiDict([("ports", "80"), ("ports", "443")]), "portforward") == [("ports", "80,443")]
    assert _stream_query(MultiDict(), "portforward") == []


def test_node_endpoints() -> None:
    node = {"status": {"addresses": [{"type": "Hostname", "address": "n1"}, {"type": "InternalIP",
                                                                              "address": "10.0.0.7"}],
                       "daemonEndpoints": {"kubeletEndpoint": {"Port": 10255}}}}
    assert node_endpoint(node) == ("10.0.0.7", 10255)
    assert node_endpoint({"status": {"addresses": [{"type": "Hostname", "address": "n1"}]}}) == (
        "n1", DEFAULT_KUBELET_PORT)
    with pytest.raises(NoAddress):
        node_endpoint({"status": {"addresses": [{"type": "ExternalIP", "address": "1.2.3.4"}]}})


def test_kubelet_refusals_become_statuses() -> None:
    assert (refused(KubeletRefused(400, "container not found")).status()["reason"]) == "BadRequest"
    notfound = refused(KubeletRefused(404, 'pod "x" does not exist')).status()
    assert (notfound["code"], notfound["reason"], notfound["message"]) == (404, "NotFound", 'pod "x" does not exist')
    assert refused(KubeletRefused(302, "")).status()["code"] == 500

"""The API server in-process over HTTP (memory backend): protocol details kubectl alone cannot reach."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import datetime, timedelta
from pathlib import Path

import orjson
import pytest
from aiohttp.test_utils import TestClient, TestServer

from kubelite.apiserver.app import ApiServer, ApiServerConfig
from kubelite.apiserver.authn import UserInfo
from kubelite.storage.memory import MemoryBackend

TOKEN = "test-token"
AUTH = {"Authorization": f"Bearer {TOKEN}", "Content-Type": "application/json"}
CMS = "/api/v1/namespaces/default/configmaps"
TABLE = "application/json;as=Table;v=v1;g=meta.k8s.io,application/json"


@pytest.fixture
async def api(tmp_path: Path) -> AsyncIterator[tuple[ApiServer, TestClient]]:
    config = ApiServerConfig(data_dir=tmp_path, disable_admission_plugins=["ServiceAccount"])
    server = ApiServer(config, backend=MemoryBackend())
    await server.open()
    server.authenticator.add_token(TOKEN, UserInfo("admin", groups=("system:masters",)))
    client = TestClient(TestServer(server.application()), headers=AUTH)
    await client.start_server()
    yield server, client
    await client.close()
    await server.stop()


async def _create_cm(client: TestClient, name: str, labels: dict[str, str] | None = None) -> dict:
    body = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": name, "labels": labels or {}},
            "data": {"k": "v"}}
    response = await client.post(CMS, data=orjson.dumps(body), headers={"Content-Type": "application/json"})
    assert response.status == 201, await response.text()
    return await response.json()


async def _watch_lines(client: TestClient, query: str, count: int, headers: dict[str, str] | None = None) -> list:
    response = await client.get(f"{CMS}?watch=1&{query}", headers=headers or {})
    assert response.status == 200
    lines = []
    async for line in response.content:
        lines.append(orjson.loads(line))
        if len(lines) >= count:
            break
    response.close()
    return lines


async def test_watch_from_compacted_revision_gets_410(api: tuple[ApiServer, TestClient]) -> None:
    server, client = api
    first = await _create_cm(client, "old")
    for i in range(5):
        await _create_cm(client, f"newer-{i}")
    await server.backend.compact(await server.backend.current_revision())
    [event] = await _watch_lines(client, f"resourceVersion={first['metadata']['resourceVersion']}", 1)
    assert event["type"] == "ERROR"
    assert event["object"]["code"] == 410 and event["object"]["reason"] == "Expired"
    listing = await client.get(f"{CMS}?resourceVersion={first['metadata']['resourceVersion']}"
                               f"&resourceVersionMatch=Exact")
    assert listing.status == 410
    assert (await listing.json())["reason"] == "Expired"


async def test_watch_resume_and_selector_transitions(api: tuple[ApiServer, TestClient]) -> None:
    _, client = api
    created = await _create_cm(client, "mover", {"team": "a"})
    rv = created["metadata"]["resourceVersion"]
    patch = {"Content-Type": "application/merge-patch+json"}
    for team in ("b", "a"):
        response = await client.patch(f"{CMS}/mover", data=orjson.dumps({"metadata": {"labels": {"team": team}}}),
                                      headers=patch)
        assert response.status == 200
    events = await _watch_lines(client, f"resourceVersion={rv}&labelSelector=team%3Da", 2)
    assert [e["type"] for e in events] == ["DELETED", "ADDED"]
    assert int(events[1]["object"]["metadata"]["resourceVersion"]) > int(rv)


async def test_watch_initial_state_then_bookmark(api: tuple[ApiServer, TestClient]) -> None:
    _, client = api
    await _create_cm(client, "present")
    events = await _watch_lines(client, "sendInitialEvents=true&allowWatchBookmarks=true"
                                        "&resourceVersionMatch=NotOlderThan&resourceVersion=", 2)
    assert events[0]["type"] == "ADDED" and events[0]["object"]["metadata"]["name"] == "present"
    assert events[1]["type"] == "BOOKMARK"
    assert events[1]["object"]["metadata"]["annotations"] == {"k8s.io/initial-events-end": "true"}


async def test_table_list_and_table_watch(api: tuple[ApiServer, TestClient]) -> None:
    _, client = api
    await _create_cm(client, "tabled")
    response = await client.get(CMS, headers={"Accept": TABLE})
    table = await response.json()
    assert table["kind"] == "Table"
    assert [c["name"] for c in table["columnDefinitions"]] == ["Name", "Data", "Age"]
    row = next(r for r in table["rows"] if r["cells"][0] == "tabled")
    assert row["cells"][1] == 1 and row["object"]["kind"] == "PartialObjectMetadata"
    [event] = await _watch_lines(client, "fieldSelector=metadata.name%3Dtabled", 1, {"Accept": TABLE})
    assert event["object"]["kind"] == "Table" and event["object"]["rows"][0]["cells"][0] == "tabled"


async def test_paging_with_limit_and_continue(api: tuple[ApiServer, TestClient]) -> None:
    _, client = api
    for i in range(7):
        await _create_cm(client, f"page-{i}")
    names: list[str] = []
    token = ""
    pages = 0
    while True:
        response = await client.get(f"{CMS}?limit=3" + (f"&continue={token}" if token else ""))
        body = await response.json()
        names += [item["metadata"]["name"] for item in body["items"]]
        pages += 1
        token = body["metadata"].get("continue", "")
        if not token:
            break
    assert names == [f"page-{i}" for i in range(7)] and pages == 3


async def test_generation_bumps_on_spec_only_and_status_subresource(api: tuple[ApiServer, TestClient]) -> None:
    _, client = api
    deployments = "/apis/apps/v1/namespaces/default/deployments"
    body = {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "gen"},
            "spec": {"selector": {"matchLabels": {"a": "b"}},
                     "template": {"metadata": {"labels": {"a": "b"}},
                                  "spec": {"containers": [{"name": "c", "image": "busybox"}]}}}}
    created = await (await client.post(deployments, data=orjson.dumps(body))).json()
    assert created["metadata"]["generation"] == 1
    merge = {"Content-Type": "application/merge-patch+json"}
    labelled = await (await client.patch(f"{deployments}/gen", data=b'{"metadata":{"labels":{"x":"y"}}}',
                                         headers=merge)).json()
    assert labelled["metadata"]["generation"] == 1
    ignored = await (await client.patch(f"{deployments}/gen", data=b'{"status":{"replicas":7}}',
                                        headers=merge)).json()
    assert ignored.get("status", {}).get("replicas") is None
    status = await (await client.patch(f"{deployments}/gen/status", data=b'{"status":{"replicas":7}}',
                                       headers=merge)).json()
    assert status["status"]["replicas"] == 7 and status["metadata"]["generation"] == 1
    scaled = await (await client.patch(f"{deployments}/gen", data=b'{"spec":{"replicas":3}}',
                                       headers=merge)).json()
    assert scaled["metadata"]["generation"] == 2 and scaled["status"]["replicas"] == 7


async def test_pod_graceful_delete_and_binding(api: tuple[ApiServer, TestClient]) -> None:
    _, client = api
    pods = "/api/v1/namespaces/default/pods"
    pod = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p"},
           "spec": {"containers": [{"name": "c", "image": "busybox"}]}}
    created = await (await client.post(pods, data=orjson.dumps(pod))).json()
    assert created["spec"]["restartPolicy"] == "Always" and created["status"]["phase"] == "Pending"
    binding = {"apiVersion": "v1", "kind": "Binding", "metadata": {"name": "p"}, "target": {"name": "node-1"}}
    response = await client.post(f"{pods}/p/binding", data=orjson.dumps(binding))
    assert response.status == 201, await response.text()
    again = await client.post(f"{pods}/p/binding", data=orjson.dumps(binding))
    assert again.status == 409
    deleting = await (await client.delete(f"{pods}/p")).json()
    assert deleting["metadata"]["deletionTimestamp"] and deleting["metadata"]["deletionGracePeriodSeconds"] == 30
    assert (await client.get(f"{pods}/p")).status == 200
    sooner = await (await client.delete(f"{pods}/p", data=b'{"gracePeriodSeconds":10}')).json()
    assert sooner["metadata"]["deletionGracePeriodSeconds"] == 10
    moved = (datetime.fromisoformat(deleting["metadata"]["deletionTimestamp"])
             - datetime.fromisoformat(sooner["metadata"]["deletionTimestamp"]))
    assert moved == timedelta(seconds=20), "a shorter grace period moves the deletionTimestamp as much earlier"
    longer = await (await client.delete(f"{pods}/p", data=b'{"gracePeriodSeconds":60}')).json()
    assert longer["metadata"]["deletionTimestamp"] == sooner["metadata"]["deletionTimestamp"]
    assert longer["metadata"]["deletionGracePeriodSeconds"] == 10
    final = await client.delete(f"{pods}/p", data=b'{"gracePeriodSeconds":0}')
    assert final.status == 200
    assert (await client.get(f"{pods}/p")).status == 404


async def test_pod_ephemeral_containers_are_added_only_through_their_subresource(
        api: tuple[ApiServer, TestClient]) -> None:
    _, client = api
    pods = "/api/v1/namespaces/default/pods"
    pod = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "e"},
           "spec": {"containers": [{"name": "app", "image": "busybox"}]}}
    early = {**pod, "spec": {**pod["spec"], "ephemeralContainers": [{"name": "dbg", "image": "busybox"}]}}
    refused = await client.post(pods, data=orjson.dumps(early))
    assert refused.status == 422 and "cannot be set on create" in (await refused.json())["message"]
    assert (await client.post(pods, data=orjson.dumps(pod))).status == 201
    strategic = {"Content-Type": "application/strategic-merge-patch+json"}
    debugger = {"name": "debugger", "image": "busybox", "stdin": True, "tty": True, "targetContainerName": "app"}
    added = await client.patch(f"{pods}/e/ephemeralcontainers", headers=strategic,
                               data=orjson.dumps({"spec": {"ephemeralContainers": [debugger]}}))
    assert added.status == 200, await added.text()
    (stored,) = (await added.json())["spec"]["ephemeralContainers"]
    assert stored["name"] == "debugger" and stored["terminationMessagePolicy"] == "File"
    viewed = await (await client.get(f"{pods}/e/ephemeralcontainers")).json()
    assert viewed["spec"]["ephemeralContainers"] == [stored]

    current = await (await client.get(f"{pods}/e")).json()
    current["spec"].pop("ephemeralContainers")
    current["metadata"]["labels"] = {"a": "b"}
    put = await (await client.put(f"{pods}/e", data=orjson.dumps(current))).json()
    assert put["metadata"]["labels"] == {"a": "b"} and put["spec"]["ephemeralContainers"] == [stored], \
        "a write of the pod itself leaves its ephemeral containers alone"

    changed = dict(stored, image="alpine")
    for bad in ({"spec": {"ephemeralContainers": [changed]}},
                {"spec": {"ephemeralContainers": [stored, {"name": "web", "image": "busybox",
                                                           "ports": [{"containerPort": 80}]}]}},
                {"spec": {"ephemeralContainers": [stored, {"name": "x", "image": "busybox",
                                                           "targetContainerName": "nope"}]}},
                {"spec": {"ephemeralContainers": [stored, {"name": "app", "image": "busybox"}]}}):
        refused = await client.put(f"{pods}/e/ephemeralcontainers", data=orjson.dumps({**put, **bad}))
        assert refused.status == 422, (bad, await refused.text())
    removed = await client.put(f"{pods}/e/ephemeralcontainers",
                               data=orjson.dumps({**put, "spec": {**put["spec"], "ephemeralContainers": []}}))
    assert removed.status == 422 and "may not be removed" in (await removed.json())["message"]
    discovery = await (await client.get("/api/v1")).json()
    assert "pods/ephemeralcontainers" in {r["name"] for r in discovery["resources"]}


async def test_service_allocation_unique(api: tuple[ApiServer, TestClient]) -> None:
    _, client = api
    services = "/api/v1/namespaces/default/services"
    seen_ips, seen_ports = set(), set()
    for i in range(20):
        svc = {"apiVersion": "v1", "kind": "Service", "metadata": {"name": f"s{i}"},
               "spec": {"type": "NodePort", "ports": [{"port": 80}], "selector": {"a": "b"}}}
        created = await (await client.post(services, data=orjson.dumps(svc))).json()
        seen_ips.add(created["spec"]["clusterIP"])
        seen_ports.add(created["spec"]["ports"][0]["nodePort"])
        assert 30000 <= created["spec"]["ports"][0]["nodePort"] <= 32767
    assert len(seen_ips) == 20 and len(seen_ports) == 20
    clash = {"apiVersion": "v1", "kind": "Service", "metadata": {"name": "clash"},
             "spec": {"type": "NodePort", "ports": [{"port": 80, "nodePort": seen_ports.pop()}]}}
    response = await client.post(services, data=orjson.dumps(clash))
    assert response.status == 422
    assert "already allocated" in (await response.json())["message"]


async def test_namespace_terminating_refuses_new_objects(api: tuple[ApiServer, TestClient]) -> None:
    _, client = api
    ns = {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "doomed"}}
    assert (await client.post("/api/v1/namespaces", data=orjson.dumps(ns))).status == 201
    deleted = await (await client.delete("/api/v1/namespaces/doomed")).json()
    assert deleted["status"]["phase"] == "Terminating"
    cm = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "late"}}
    response = await client.post("/api/v1/namespaces/doomed/configmaps", data=orjson.dumps(cm))
    assert response.status == 403 and (await response.json())["reason"] == "Forbidden"


async def test_versions_sharing_storage_convert(api: tuple[ApiServer, TestClient]) -> None:
    _, client = api
    hpa = {"apiVersion": "autoscaling/v1", "kind": "HorizontalPodAutoscaler", "metadata": {"name": "h"},
           "spec": {"scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": "web"},
                    "minReplicas": 1, "maxReplicas": 5, "targetCPUUtilizationPercentage": 70}}
    response = await client.post("/apis/autoscaling/v1/namespaces/default/horizontalpodautoscalers",
                                 data=orjson.dumps(hpa))
    assert response.status == 201, await response.text()
    v2 = await (await client.get("/apis/autoscaling/v2/namespaces/default/horizontalpodautoscalers/h")).json()
    assert v2["apiVersion"] == "autoscaling/v2"
    assert v2["spec"]["metrics"][0]["resource"]["target"]["averageUtilization"] == 70
    event = {"apiVersion": "v1", "kind": "Event", "metadata": {"name": "e1"}, "reason": "Tested",
             "message": "hello", "involvedObject": {"kind": "Pod", "name": "p", "namespace": "default"},
             "type": "Normal"}
    response = await client.post("/api/v1/namespaces/default/events", data=orjson.dumps(event))
    assert response.status == 201, await response.text()
    converted = await (await client.get("/apis/events.k8s.io/v1/namespaces/default/events/e1")).json()
    assert converted["note"] == "hello" and converted["regarding"]["name"] == "p"


async def test_metrics_count_requests_by_verb_and_resource(api: tuple[ApiServer, TestClient]) -> None:
    _, client = api
    await _create_cm(client, "counted")
    assert (await client.get(f"{CMS}/counted")).status == 200
    text = await (await client.get("/metrics")).text()
    created = [line for line in text.splitlines() if line.startswith("apiserver_request_total{")
               and 'verb="CREATE"' in line and 'resource="configmaps"' in line and 'code="201"' in line]
    assert created and float(created[0].rsplit(" ", 1)[1]) >= 1
    assert "apiserver_request_duration_seconds_bucket{" in text
    assert 'etcd_request_duration_seconds_count{operation="create",type="configmaps"}' in text


async def test_protobuf_request_and_protobuf_only_response(api: tuple[ApiServer, TestClient]) -> None:
    _, client = api
    from kubelite.api import protobuf
    body = protobuf.encode({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "pb"}, "data": {"a": "b"}})
    response = await client.post(CMS, data=body, headers={"Content-Type": protobuf.MEDIA_TYPE,
                                                          "Accept": protobuf.MEDIA_TYPE})
    assert response.status == 201
    assert response.headers["Content-Type"] == protobuf.MEDIA_TYPE
    created = protobuf.decode(await response.read())
    assert created["data"] == {"a": "b"} and created["metadata"]["uid"]
    garbage = await client.post(CMS, data=protobuf.MAGIC + b"\xff\xff", headers={"Content-Type": protobuf.MEDIA_TYPE})
    assert garbage.status == 400 and (await garbage.json())["reason"] == "BadRequest"


async def test_priority_class_admission_and_binding_condition(api: tuple[ApiServer, TestClient]) -> None:
    _, client = api
    pc = {"apiVersion": "scheduling.k8s.io/v1", "kind": "PriorityClass", "metadata": {"name": "high"}, "value": 1000}
    assert (await client.post("/apis/scheduling.k8s.io/v1/priorityclasses", data=orjson.dumps(pc))).status == 201
    pods = "/api/v1/namespaces/default/pods"

    def pod(name: str, priority_class: str) -> bytes:
        return orjson.dumps({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name},
                             "spec": {"priorityClassName": priority_class,
                                      "containers": [{"name": "c", "image": "busybox"}]}})

    created = await (await client.post(pods, data=pod("important", "high"))).json()
    assert created["spec"]["priority"] == 1000
    missing = await client.post(pods, data=pod("orphan", "nope"))
    assert missing.status == 403 and "no PriorityClass with name nope" in (await missing.json())["message"]
    binding = {"apiVersion": "v1", "kind": "Binding", "metadata": {"name": "important"}, "target": {"name": "n1"}}
    assert (await client.post(f"{pods}/important/binding", data=orjson.dumps(binding))).status == 201
    bound = await (await client.get(f"{pods}/important")).json()
    scheduled = [c for c in bound["status"]["conditions"] if c["type"] == "PodScheduled"]
    assert bound["spec"]["nodeName"] == "n1" and scheduled[0]["status"] == "True"
    node = {"apiVersion": "v1", "kind": "Node", "metadata": {"name": "n1"},
            "status": {"allocatable": {"cpu": "4", "pods": "110"}}}
    created_node = await (await client.post("/api/v1/nodes", data=orjson.dumps(node))).json()
    assert created_node["status"]["allocatable"]["cpu"] == "4"


async def test_status_write_returns_the_new_resource_version(api: tuple[ApiServer, TestClient]) -> None:
    _, client = api
    hpa = {"apiVersion": "autoscaling/v1", "kind": "HorizontalPodAutoscaler", "metadata": {"name": "st"},
           "spec": {"scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": "web"},
                    "maxReplicas": 3}, "status": {}}
    created = await (await client.post("/apis/autoscaling/v1/namespaces/default/horizontalpodautoscalers",
                                       data=orjson.dumps(hpa))).json()
    assert created["metadata"]["resourceVersion"], created
    created["status"] = {"currentReplicas": 2, "desiredReplicas": 2}
    url = "/apis/autoscaling/v1/namespaces/default/horizontalpodautoscalers/st"
    updated = await (await client.put(f"{url}/status", data=orjson.dumps(created))).json()
    again = await (await client.get(url)).json()
    assert updated["metadata"]["resourceVersion"] == again["metadata"]["resourceVersion"]
    assert int(updated["metadata"]["resourceVersion"]) > int(created["metadata"]["resourceVersion"])

"""The client library against a real `kubelite server`: REST verbs, watches, informers, controllers,
leader election and events (plus the pure 410/relist logic with a scripted client)."""

from __future__ import annotations

import asyncio
import copy
import os
import re
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import yaml
from aiohttp.test_utils import TestServer

from kubelite.apiserver.app import ApiServer, ApiServerConfig
from kubelite.apiserver.authn import UserInfo
from kubelite.client import (
    ApiClient,
    ApiError,
    ClientConfig,
    ConfigError,
    Controller,
    EventRecorder,
    GoneError,
    Informer,
    LeaderElectionConfig,
    LeaderElector,
    Requeue,
    SharedInformerFactory,
    is_already_exists,
    is_conflict,
    is_gone,
    is_not_found,
    load_config,
    load_incluster,
    load_kubeconfig,
    resource,
)
from kubelite.client.resources import CONFIGMAPS, EVENTS, LEASES, NAMESPACES, PODS
from kubelite.client.store import NAMESPACE_INDEX, NODE_NAME_INDEX, OWNER_UID_INDEX
from kubelite.client.watch import decode_events
from kubelite.storage.memory import MemoryBackend
from tests.e2e.conftest import API_ONLY, Cluster, free_port, start_server, stop_server

Obj = dict[str, Any]
MICRO_TIME = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z$")



async def _namespace(client: ApiClient, name: str) -> str:
    await client.create(NAMESPACES, {"metadata": {"name": name}})
    return name


def _cm(name: str, **meta: Any) -> Obj:
    return {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": name, **meta}, "data": {"k": "v"}}


def _pod(name: str, node: str = "") -> Obj:
    spec: Obj = {"containers": [{"name": "c", "image": "busybox"}]}
    if node:
        spec["nodeName"] = node
    return {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name}, "spec": spec}


async def _eventually(check: Any, within: float = 10.0) -> None:
    """Wait until check() (plain or async) is true; fail after `within` seconds."""
    deadline = time.monotonic() + within
    while True:
        result = check()
        if asyncio.iscoroutine(result):
            result = await result
        if result:
            return
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met in {within}s")
        await asyncio.sleep(0.05)


# --- configuration --------------------------------------------------------------------------------------------


async def test_token_kubeconfig_with_relative_ca_file_and_contexts(server: Cluster, tmp_path: Path) -> None:
    token = (server.data_dir / "server" / "token").read_text().strip()
    (tmp_path / "ca.crt").write_bytes((server.data_dir / "server" / "tls" / "server-ca.crt").read_bytes())
    config = {
        "apiVersion": "v1", "kind": "Config", "current-context": "good",
        "clusters": [{"name": "c", "cluster": {"server": f"https://127.0.0.1:{server.port}",
                                               "certificate-authority": "ca.crt"}}],
        "users": [{"name": "admin", "user": {"token": token}}, {"name": "bad", "user": {"token": "wrong"}}],
        "contexts": [{"name": "good", "context": {"cluster": "c", "user": "admin"}},
                     {"name": "bad", "context": {"cluster": "c", "user": "bad"}}],
    }
    path = tmp_path / "kubeconfig"
    path.write_text(yaml.safe_dump(config))
    async with ApiClient(load_config(path)) as api:
        assert (await api.get(NAMESPACES, "default"))["metadata"]["name"] == "default"
    async with ApiClient(load_kubeconfig(path, context="bad")) as api:
        with pytest.raises(ApiError) as caught:
            await api.get(NAMESPACES, "default")
        assert caught.value.code == 401
    with pytest.raises(ConfigError):
        load_kubeconfig(path, context="missing")


def test_kubeconfig_env_merges_files_first_wins(server: Cluster, tmp_path: Path,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    override = tmp_path / "first"
    override.write_text(yaml.safe_dump({"current-context": "default", "clusters": [], "users": []}))
    monkeypatch.setenv("KUBECONFIG", f"{override}:{server.kubeconfig}")
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
    config = load_config()
    assert config.server == f"https://127.0.0.1:{server.port}"
    assert config.ssl_context is not None


def test_in_cluster_config_reads_env_and_rotating_token(server: Cluster, tmp_path: Path,
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "token").write_text("first\n")
    (tmp_path / "ca.crt").write_bytes((server.data_dir / "server" / "tls" / "server-ca.crt").read_bytes())
    monkeypatch.setenv("KUBERNETES_SERVICE_HOST", "10.43.0.1")
    monkeypatch.setenv("KUBERNETES_SERVICE_PORT", "443")
    config = load_incluster(tmp_path)
    assert config.server == "https://10.43.0.1:443"
    assert config.request_headers()["Authorization"] == "Bearer first"
    (tmp_path / "token").write_text("second\n")
    monkeypatch.setattr("kubelite.client.config.TOKEN_REFRESH_SECONDS", 0.0)
    assert config.request_headers()["Authorization"] == "Bearer second"
    monkeypatch.delenv("KUBERNETES_SERVICE_PORT")
    with pytest.raises(ConfigError):
        load_incluster(tmp_path)


# --- REST verbs and errors ---------------------------------------------------------------------------------------


def test_builtin_resources_resolve_by_kind_or_plural() -> None:
    for api_version, kind, plural in [
        ("v1", "Pod", "pods"), ("v1", "Node", "nodes"), ("apps/v1", "Deployment", "deployments"),
        ("discovery.k8s.io/v1", "EndpointSlice", "endpointslices"), ("coordination.k8s.io/v1", "Lease", "leases"),
        ("batch/v1", "CronJob", "cronjobs"), ("policy/v1", "PodDisruptionBudget", "poddisruptionbudgets"),
        ("autoscaling/v2", "HorizontalPodAutoscaler", "horizontalpodautoscalers"),
        ("scheduling.k8s.io/v1", "PriorityClass", "priorityclasses"), ("v1", "Secret", "secrets"),
    ]:
        assert resource(api_version, kind) == resource(api_version, plural)
        assert resource(api_version, kind).plural == plural
    assert resource("v1", "nodes").namespaced is False
    assert PODS.path("ns", "p", "status") == "/api/v1/namespaces/ns/pods/p/status"
    assert resource("apps/v1", "ReplicaSet").path() == "/apis/apps/v1/replicasets"
    with pytest.raises(KeyError):
        resource("v1", "Deployment")


async def test_crud_patch_types_and_error_codes(client: ApiClient) -> None:
    ns = await _namespace(client, "crud")
    created = await client.create(CONFIGMAPS, _cm("one", namespace=ns))
    assert created["metadata"]["uid"] and created["metadata"]["resourceVersion"]
    assert (await client.get(CONFIGMAPS, "one", ns))["data"] == {"k": "v"}

    with pytest.raises(ApiError) as exists:
        await client.create(CONFIGMAPS, _cm("one"), ns)
    assert exists.value.code == 409 and is_already_exists(exists.value) and not is_conflict(exists.value)

    created["data"]["k"] = "v2"
    updated = await client.update(CONFIGMAPS, created)
    assert updated["data"]["k"] == "v2"
    with pytest.raises(ApiError) as stale:
        await client.update(CONFIGMAPS, created)
    assert is_conflict(stale.value) and stale.value.reason == "Conflict"

    await client.patch(CONFIGMAPS, "one", {"data": {"merge": "1"}}, ns)
    await client.patch(CONFIGMAPS, "one", {"data": {"strategic": "1"}}, ns, type="strategic")
    patched = await client.patch(CONFIGMAPS, "one", [{"op": "remove", "path": "/data/k"}], ns, type="json")
    assert patched["data"] == {"merge": "1", "strategic": "1"}

    for index in range(3):
        await client.create(CONFIGMAPS, _cm(f"page-{index}"), ns)
    page = await client.list(CONFIGMAPS, ns, limit=2)
    assert len(page["items"]) == 2 and page["metadata"]["continue"]
    everything = await client.list_all(CONFIGMAPS, ns, page_size=2)
    assert sorted(o["metadata"]["name"] for o in everything["items"]) == ["one", "page-0", "page-1", "page-2"]
    selected = await client.list(CONFIGMAPS, ns, field_selector="metadata.name=page-1")
    assert [o["metadata"]["name"] for o in selected["items"]] == ["page-1"]

    deleted = await client.delete(CONFIGMAPS, "one", ns)
    assert deleted["metadata"]["name"] == "one"
    with pytest.raises(ApiError) as missing:
        await client.get(CONFIGMAPS, "one", ns)
    assert missing.value.code == 404 and missing.value.reason == "NotFound" and is_not_found(missing.value)
    with pytest.raises(ApiError) as invalid:
        await client.create(CONFIGMAPS, _cm("Not_Valid"), ns)
    assert invalid.value.code == 422 and invalid.value.status["details"]["causes"]
    with pytest.raises(ValueError):
        await client.get(CONFIGMAPS, "no-namespace")


async def test_update_status_changes_only_status(client: ApiClient) -> None:
    ns = await _namespace(client, "status")
    pod = await client.create(PODS, _pod("p"), ns)
    pod["status"] = {"phase": "Running"}
    pod["metadata"]["labels"] = {"ignored": "true"}
    written = await client.update_status(PODS, pod)
    assert written["status"]["phase"] == "Running"
    assert "labels" not in written["metadata"]


async def test_delete_preconditions_and_rate_limit(server: Cluster, client: ApiClient) -> None:
    ns = await _namespace(client, "deletes")
    await client.create(CONFIGMAPS, _cm("held"), ns)
    with pytest.raises(ApiError) as failed:
        await client.delete(CONFIGMAPS, "held", ns, preconditions={"uid": "not-the-uid"})
    assert is_conflict(failed.value)
    async with ApiClient(load_kubeconfig(server.kubeconfig), qps=20, burst=1) as slow:
        started = time.monotonic()
        for _ in range(11):
            await slow.get(CONFIGMAPS, "held", ns)
        assert time.monotonic() - started >= 0.45, "qps=20 burst=1 must pace 11 requests over >= 0.5 s"


# --- watch --------------------------------------------------------------------------------------------------------


async def test_watch_streams_changes_after_a_resource_version(client: ApiClient) -> None:
    ns = await _namespace(client, "watching")
    first = await client.create(CONFIGMAPS, _cm("w"), ns)
    seen: list[tuple[str, str]] = []

    async def consume() -> None:
        async for type_, obj in client.watch(CONFIGMAPS, ns, resource_version=first["metadata"]["resourceVersion"],
                                             timeout_seconds=30):
            seen.append((type_, obj["metadata"]["name"]))
            if type_ == "DELETED":
                return

    watcher = asyncio.create_task(consume())
    await client.patch(CONFIGMAPS, "w", {"data": {"k": "2"}}, ns)
    await client.create(CONFIGMAPS, _cm("x"), ns)
    await client.delete(CONFIGMAPS, "w", ns)
    await asyncio.wait_for(watcher, 10)
    assert seen == [("MODIFIED", "w"), ("ADDED", "x"), ("DELETED", "w")]


async def test_watch_ends_at_timeout_seconds(client: ApiClient) -> None:
    started = time.monotonic()
    events = [e async for e in client.watch(NAMESPACES, timeout_seconds=1)]
    assert time.monotonic() - started < 5
    assert {obj["metadata"]["name"] for _, obj in events} >= {"default", "kube-system"}


def _connections_to(port: int) -> int:
    """This process's established TCP connections to a local port (from /proc: socket inodes among its fds)."""
    fds = Path("/proc/self/fd")
    inodes = set()
    for fd in fds.iterdir():
        try:
            target = os.readlink(fd)
        except OSError:
            continue
        if target.startswith("socket:["):
            inodes.add(target[8:-1])
    found = 0
    for table in ("/proc/self/net/tcp", "/proc/self/net/tcp6"):
        for line in Path(table).read_text().splitlines()[1:]:
            fields = line.split()
            if fields[3] == "01" and int(fields[2].rsplit(":", 1)[1], 16) == port and fields[9] in inodes:
                found += 1
    return found


async def test_requests_share_a_bounded_pool_and_watches_never_wait_for_it(server: Cluster) -> None:
    async with ApiClient(load_kubeconfig(server.kubeconfig), qps=0, max_connections=2) as api:
        ns = await _namespace(api, "pooled")
        seen = [0, 0, 0]

        async def watch(i: int) -> None:
            async for type_, _ in api.watch(CONFIGMAPS, ns, timeout_seconds=30):
                seen[i] += type_ == "ADDED"
                if seen[i] == 30:
                    return

        watchers = [asyncio.create_task(watch(i)) for i in range(3)]
        await asyncio.sleep(0.5)
        created = await asyncio.wait_for(asyncio.gather(*(api.create(CONFIGMAPS, _cm(f"c{i}"), ns)
                                                         for i in range(30))), 20)
        assert len(created) == 30
        assert _connections_to(server.port) <= 2 + 3
        await asyncio.wait_for(asyncio.gather(*watchers), 10)
        assert seen == [30, 30, 30]


async def _chunks(*parts: bytes) -> AsyncIterator[bytes]:
    for part in parts:
        yield part


async def test_decode_events_splits_lines_across_chunks_and_raises_on_error_events() -> None:
    stream = _chunks(b'{"type":"ADDED","object":{"metadata":{"name":"a"}}}\n{"type":"MOD',
                     b'IFIED","object":{"metadata":{"name":"a"}}}\n\n{"type":"BOOKMARK","object":',
                     b'{"metadata":{"resourceVersion":"9"}}}\n',
                     b'{"type":"ERROR","object":{"kind":"Status","code":410,"reason":"Expired","message":"old"}}\n')
    received = []
    with pytest.raises(GoneError) as gone:
        async for event in decode_events(stream):
            received.append(event[0])
    assert received == ["ADDED", "MODIFIED", "BOOKMARK"]
    assert is_gone(gone.value) and gone.value.reason == "Expired"
    with pytest.raises(ApiError) as other:
        async for _ in decode_events(_chunks(b'{"type":"ERROR","object":{"code":500,"reason":"InternalError"}}\n')):
            pass
    assert other.value.code == 500 and not isinstance(other.value, GoneError)
    cut = [e async for e in decode_events(_chunks(b'{"type":"ADDED","object":{}}\n{"type":"ADD'))]
    assert cut == [("ADDED", {})], "a line cut by a broken connection is dropped"


@pytest.fixture
async def memory_api(tmp_path: Path) -> AsyncIterator[tuple[ApiServer, ApiClient]]:
    """An in-process apiserver on plain HTTP whose datastore the test can compact."""
    config = ApiServerConfig(data_dir=tmp_path, disable_admission_plugins=["ServiceAccount"])
    api = ApiServer(config, backend=MemoryBackend())
    await api.open()
    api.authenticator.add_token("t", UserInfo("admin", groups=("system:masters",)))
    http = TestServer(api.application())
    await http.start_server()
    config = ClientConfig(server=str(http.make_url("")).rstrip("/"), headers={"Authorization": "Bearer t"})
    async with ApiClient(config) as client:
        yield api, client
    await http.close()
    await api.stop()


async def test_watch_from_a_compacted_version_raises_gone(memory_api: tuple[ApiServer, ApiClient]) -> None:
    api, client = memory_api
    old = await client.create(CONFIGMAPS, _cm("old"), "default")
    await client.create(CONFIGMAPS, _cm("new"), "default")
    await api.backend.compact(await api.backend.current_revision())
    with pytest.raises(GoneError):
        async for _ in client.watch(CONFIGMAPS, "default", resource_version=old["metadata"]["resourceVersion"]):
            pass


# --- informers ----------------------------------------------------------------------------------------------------


class Recorder:
    """Handlers that log what an informer told them."""

    def __init__(self) -> None:
        self.events: list[tuple[str, str]] = []

    def add(self, obj: Obj) -> None:
        self.events.append(("add", obj["metadata"]["name"]))

    def update(self, old: Obj, new: Obj) -> None:
        self.events.append(("update", new["metadata"]["name"]))

    def delete(self, obj: Obj) -> None:
        self.events.append(("delete", obj["metadata"]["name"]))

    def attach(self, informer: Informer) -> Recorder:
        informer.add_handlers(self.add, self.update, self.delete)
        return self


async def test_informer_lists_then_watches_with_indexes(client: ApiClient) -> None:
    ns = await _namespace(client, "informed")
    other = await _namespace(client, "informed-other")
    owner = await client.create(CONFIGMAPS, _cm("owner"), ns)
    ref = {"apiVersion": "v1", "kind": "ConfigMap", "name": "owner", "uid": owner["metadata"]["uid"]}
    await client.create(CONFIGMAPS, _cm("owned", ownerReferences=[ref]), ns)
    await client.create(CONFIGMAPS, _cm("elsewhere"), other)
    await client.create(PODS, _pod("on-n1", node="n1"), ns)

    factory = SharedInformerFactory(client)
    cms = factory.informer(CONFIGMAPS)
    assert factory.informer(CONFIGMAPS) is cms, "one shared informer per resource and selection"
    assert factory.informer(CONFIGMAPS, namespace=ns) is not cms
    pods = factory.informer(PODS, namespace=ns)
    seen = Recorder().attach(cms)
    cms.store.add_indexer("data", lambda o: sorted((o.get("data") or {}).values()))
    factory.start()
    try:
        async with asyncio.timeout(10):
            await factory.wait_for_sync()
        assert cms.has_synced and pods.has_synced
        initial = {name for kind, name in seen.events if kind == "add"}
        assert {"owner", "owned", "elsewhere"} <= initial
        assert all(kind == "add" for kind, _ in seen.events)
        assert cms.store.get(f"{ns}/owned")["kind"] == "ConfigMap", "listed items carry kind and apiVersion"

        assert {o["metadata"]["name"] for o in cms.store.by_index(NAMESPACE_INDEX, other)} == {"elsewhere"}
        assert [o["metadata"]["name"] for o in cms.store.by_index(OWNER_UID_INDEX, owner["metadata"]["uid"])] == [
            "owned"]
        assert [o["metadata"]["name"] for o in pods.store.by_index(NODE_NAME_INDEX, "n1")] == ["on-n1"]

        seen.events.clear()
        await client.create(CONFIGMAPS, _cm("fresh"), ns)
        await client.patch(CONFIGMAPS, "fresh", {"data": {"k": "changed"}}, ns)
        await client.patch(CONFIGMAPS, "fresh", {"data": {"k": "changed"}}, ns)  # no change: same RV, no event
        await client.delete(CONFIGMAPS, "fresh", ns)
        await _eventually(lambda: ("delete", "fresh") in seen.events)
        assert seen.events == [("add", "fresh"), ("update", "fresh"), ("delete", "fresh")]
        assert cms.store.get(f"{ns}/fresh") is None
        assert not cms.store.by_index("data", "changed"), "indexes forget deleted objects"

        late = Recorder().attach(cms)
        assert {"owner", "owned", "elsewhere"} <= {name for _, name in late.events}, "late handlers get adds"
        await client.patch(CONFIGMAPS, "owned", {"data": {"k": "indexed"}}, ns)
        await _eventually(lambda: cms.store.by_index("data", "indexed"))
        assert not [o for o in cms.store.by_index("data", "v") if o["metadata"]["name"] == "owned"]
    finally:
        await factory.stop()


async def test_informer_resyncs_periodically(client: ApiClient) -> None:
    ns = await _namespace(client, "resync")
    await client.create(CONFIGMAPS, _cm("r"), ns)
    informer = Informer(client, CONFIGMAPS, namespace=ns, resync_period=0.2)
    seen = Recorder().attach(informer)
    informer.start()
    try:
        await _eventually(lambda: seen.events.count(("update", "r")) >= 2, within=5)
    finally:
        await informer.stop()


async def test_informer_resumes_after_server_restart(tmp_path: Path) -> None:
    cluster = start_server(tmp_path, free_port(), *API_ONLY)
    try:
        async with ApiClient(load_kubeconfig(cluster.kubeconfig)) as client:
            informer = Informer(client, CONFIGMAPS, namespace="default", max_backoff=1.0)
            seen = Recorder().attach(informer)
            lists = 0
            list_all = client.list_all

            async def counting_list_all(*args: Any, **kwargs: Any) -> Obj:
                nonlocal lists
                lists += 1
                return await list_all(*args, **kwargs)

            client.list_all = counting_list_all  # type: ignore[method-assign]
            informer.start()
            try:
                async with asyncio.timeout(10):
                    await informer.wait_synced()
                await client.create(CONFIGMAPS, _cm("before"), "default")
                await _eventually(lambda: ("add", "before") in seen.events)
                await asyncio.to_thread(stop_server, cluster)
                cluster = await asyncio.to_thread(start_server, tmp_path, cluster.port, *API_ONLY)
                await client.create(CONFIGMAPS, _cm("after"), "default")
                await _eventually(lambda: ("add", "after") in seen.events, within=20)
                assert lists == 1, "a restart with history intact resumes the watch, it does not relist"
                assert informer.store.get("default/before") is not None
            finally:
                await informer.stop()
    finally:
        stop_server(cluster)


class ScriptedClient:
    """An ApiClient stand-in: lists and watch streams scripted by the test."""

    def __init__(self, lists: list[Obj], watches: list[list[tuple[str, Obj] | BaseException]]):
        self.lists = lists
        self.watches = watches
        self.watch_versions: list[str] = []

    async def list_all(self, *args: Any, **kwargs: Any) -> Obj:
        return self.lists.pop(0)

    async def watch(self, *args: Any, resource_version: str = "", **kwargs: Any) -> AsyncIterator[tuple[str, Obj]]:
        self.watch_versions.append(resource_version)
        script = self.watches.pop(0) if self.watches else []
        for step in script:
            if isinstance(step, BaseException):
                raise step
            yield step
        if not self.watches:
            await asyncio.Event().wait()


def _obj(name: str, rv: str) -> Obj:
    return {"metadata": {"name": name, "namespace": "ns", "resourceVersion": rv}}


def _listed(rv: str, *items: Obj) -> Obj:
    return {"kind": "ConfigMapList", "metadata": {"resourceVersion": rv}, "items": list(items)}


async def test_informer_resumes_from_bookmarks_and_relists_after_gone() -> None:
    gone = GoneError({"code": 410, "reason": "Expired", "message": "too old resource version"})
    scripted = ScriptedClient(
        lists=[_listed("10", _obj("a", "5"), _obj("b", "6"), _obj("e", "7")),
               _listed("30", _obj("a", "25"), _obj("c", "26"), _obj("e", "7"))],
        watches=[[("MODIFIED", _obj("a", "11")), ("BOOKMARK", {"metadata": {"resourceVersion": "15"}}),
                  aiohttp.ServerDisconnectedError()],
                 [("ADDED", _obj("d", "16")), gone],
                 [("BOOKMARK", {"metadata": {"resourceVersion": "31"}})]])
    informer = Informer(scripted, CONFIGMAPS, max_backoff=0.01)  # type: ignore[arg-type]
    seen = Recorder().attach(informer)
    informer.start()
    try:
        await _eventually(lambda: informer.resource_version == "31", within=5)
    finally:
        await informer.stop()
    assert scripted.watch_versions == ["10", "15", "30"], "resume from the bookmark; after 410 from the new list"
    assert seen.events == [("add", "a"), ("add", "b"), ("add", "e"), ("update", "a"), ("add", "d"),
                           ("update", "a"), ("add", "c"), ("delete", "b"), ("delete", "d")], \
        "the relist updates changed objects only, and deletes what vanished"
    assert sorted(informer.store.keys()) == ["ns/a", "ns/c", "ns/e"]
    assert informer.store.get("ns/c")["kind"] == "ConfigMap"


async def test_informer_backs_off_when_watches_end_at_once() -> None:
    scripted = ScriptedClient(lists=[_listed("1")], watches=[[], [], [], []])
    informer = Informer(scripted, CONFIGMAPS, max_backoff=0.2)  # type: ignore[arg-type]
    started = time.monotonic()
    informer.start()
    try:
        await _eventually(lambda: len(scripted.watch_versions) == 4, within=5)
    finally:
        await informer.stop()
    assert time.monotonic() - started >= 0.5, "three empty, instant watches must cost three backoff delays"


# --- controller ---------------------------------------------------------------------------------------------------


class MirrorController(Controller):
    """Copies labelled ConfigMaps' data into `<name>-mirror`; fails its first attempt on purpose."""

    name = "mirror"

    def setup(self) -> None:
        self.sources = self.watch(CONFIGMAPS, label_selector="mirror=yes")
        self.attempts: dict[str, int] = {}

    async def reconcile(self, key: str) -> Requeue | None:
        self.attempts[key] = self.attempts.get(key, 0) + 1
        if self.attempts[key] == 1:
            raise RuntimeError("first attempt fails")
        source = self.sources.store.get(key)
        if source is None:
            return None
        namespace = source["metadata"]["namespace"]
        mirror = _cm(f"{source['metadata']['name']}-mirror")
        mirror["data"] = source.get("data") or {}
        try:
            await self.client.create(CONFIGMAPS, mirror, namespace)
        except ApiError as exc:
            if not is_already_exists(exc):
                raise
            await self.client.patch(CONFIGMAPS, mirror["metadata"]["name"], {"data": mirror["data"]}, namespace)
        return Requeue(after=0.05) if self.attempts[key] == 2 else None


async def test_controller_reconciles_retries_and_requeues(client: ApiClient) -> None:
    ns = await _namespace(client, "mirrored")
    await client.create(CONFIGMAPS, _cm("src", labels={"mirror": "yes"}), ns)
    controller = MirrorController(client, workers=2)
    stop = asyncio.Event()
    running = asyncio.create_task(controller.run(stop))
    try:
        await _eventually(lambda: _mirror_is(client, ns, "v"))
        key = f"{ns}/src"
        await _eventually(lambda: controller.attempts.get(key, 0) >= 3, within=5)
        assert controller.queue.num_requeues(key) == 0, "success forgets the backoff"
        await client.patch(CONFIGMAPS, "src", {"data": {"k": "new"}}, ns)
        await _eventually(lambda: _mirror_is(client, ns, "new"))
    finally:
        stop.set()
        await asyncio.wait_for(running, 10)
    assert controller.queue.shutting_down


async def _mirror_is(client: ApiClient, ns: str, value: str) -> bool:
    try:
        return (await client.get(CONFIGMAPS, "src-mirror", ns))["data"] == {"k": value}
    except ApiError:
        return False


# --- leader election ----------------------------------------------------------------------------------------------


async def test_one_leader_and_takeover_after_renewals_stop(client: ApiClient) -> None:
    timing = {"lease_duration": 6.0, "renew_deadline": 4.0, "retry_period": 0.5}
    leading: list[str] = []
    stopped: list[str] = []

    def elector(identity: str, release: bool) -> tuple[LeaderElector, asyncio.Task[None]]:
        config = LeaderElectionConfig(name="test-lock", namespace="default", identity=identity,
                                      release_on_cancel=release, **timing)
        candidate = LeaderElector(client, config)

        async def lead() -> None:
            leading.append(identity)
            await asyncio.Event().wait()

        return candidate, asyncio.create_task(candidate.run(lead, lambda: stopped.append(identity)))

    a, a_task = elector("a", release=False)
    await _eventually(lambda: leading == ["a"])
    b, b_task = elector("b", release=True)
    await asyncio.sleep(2.5)
    assert leading == ["a"] and a.is_leader and not b.is_leader and b.leader == "a"
    lease = await client.get(LEASES, "test-lock", "default")
    assert lease["spec"]["holderIdentity"] == "a" and lease["spec"]["leaseDurationSeconds"] == 6
    assert MICRO_TIME.match(lease["spec"]["renewTime"]) and MICRO_TIME.match(lease["spec"]["acquireTime"])

    a_task.cancel()  # a stops renewing without releasing: b must wait out the lease
    stopped_at = time.monotonic()
    await _eventually(lambda: leading == ["a", "b"], within=10)
    waited = time.monotonic() - stopped_at
    assert 4.0 < waited < 10.0, f"takeover after {waited:.1f}s, expected about one lease duration"
    assert stopped == ["a"]
    lease = await client.get(LEASES, "test-lock", "default")
    assert lease["spec"]["holderIdentity"] == "b" and lease["spec"]["leaseTransitions"] == 1

    c, c_task = elector("c", release=False)
    await asyncio.sleep(1.0)
    b_task.cancel()  # b releases on cancel: c gets the lease well before a full lease duration
    released_at = time.monotonic()
    await _eventually(lambda: leading == ["a", "b", "c"], within=10)
    assert time.monotonic() - released_at < 3.5, "a released lease is free after 1 s, not 6"
    assert stopped == ["a", "b"]
    c_task.cancel()
    await asyncio.gather(a_task, b_task, c_task, return_exceptions=True)
    lease = await client.get(LEASES, "test-lock", "default")
    assert lease["spec"]["holderIdentity"] == "c" and lease["spec"]["leaseTransitions"] == 2


class OneLease:
    """An ApiClient stand-in holding one Lease, with resourceVersion preconditions like the server."""

    def __init__(self) -> None:
        self.lease: Obj | None = None

    async def get(self, *args: Any) -> Obj:
        if self.lease is None:
            raise ApiError({"code": 404, "reason": "NotFound"})
        return copy.deepcopy(self.lease)

    async def create(self, _resource: Any, obj: Obj) -> Obj:
        self.lease = {**obj, "metadata": {**obj["metadata"], "resourceVersion": "1"}}
        return copy.deepcopy(self.lease)

    async def update(self, _resource: Any, obj: Obj) -> Obj:
        assert self.lease is not None
        if obj["metadata"]["resourceVersion"] != self.lease["metadata"]["resourceVersion"]:
            raise ApiError({"code": 409, "reason": "Conflict"})
        self.bump()
        self.lease["spec"] = obj["spec"]
        return copy.deepcopy(self.lease)

    def bump(self) -> None:
        assert self.lease is not None
        self.lease["metadata"]["resourceVersion"] = str(int(self.lease["metadata"]["resourceVersion"]) + 1)


async def test_release_retries_when_a_lost_renewal_answer_left_a_stale_version() -> None:
    fake = OneLease()
    config = LeaderElectionConfig(name="l", namespace="ns", identity="me", lease_duration=3, renew_deadline=2,
                                  retry_period=0.5)
    elector = LeaderElector(fake, config)  # type: ignore[arg-type]

    async def lead() -> None:
        await asyncio.sleep(0.1)  # after the first renewal
        fake.bump()  # a renewal was stored but its answer never reached us

    await asyncio.wait_for(elector.run(lead), 5)
    assert fake.lease is not None
    assert fake.lease["spec"]["holderIdentity"] == "" and fake.lease["spec"]["leaseDurationSeconds"] == 1


def test_leader_election_rejects_inconsistent_timing() -> None:
    with pytest.raises(ValueError):
        LeaderElectionConfig(name="x", lease_duration=10, renew_deadline=10)


# --- events -------------------------------------------------------------------------------------------------------


async def test_event_recorder_aggregates_repeats(client: ApiClient) -> None:
    ns = await _namespace(client, "evented")
    target = await client.create(CONFIGMAPS, _cm("target"), ns)
    recorder = EventRecorder(client, "test-controller", "host-1")
    try:
        recorder.event(target, "Normal", "Synced", "all good")
        recorder.event(target, "Normal", "Synced", "all good")
        recorder.event(target, "Warning", "Failed", "not good")
        node = {"apiVersion": "v1", "kind": "Node", "metadata": {"name": "n1", "uid": "u1"}}
        recorder.event(node, "Normal", "Ready", "node ready")
        async with asyncio.timeout(10):
            await recorder.flush()
    finally:
        await recorder.close()
    events = (await client.list(EVENTS, ns))["items"]
    by_reason = {e["reason"]: e for e in events}
    assert sorted(by_reason) == ["Failed", "Synced"] and len(events) == 2
    synced = by_reason["Synced"]
    assert synced["count"] == 2 and synced["type"] == "Normal" and synced["message"] == "all good"
    assert synced["metadata"]["name"].startswith("target.")
    assert synced["source"] == {"component": "test-controller", "host": "host-1"}
    assert synced["firstTimestamp"] <= synced["lastTimestamp"]
    involved = synced["involvedObject"]
    assert involved == {"kind": "ConfigMap", "namespace": ns, "name": "target", "uid": target["metadata"]["uid"],
                        "apiVersion": "v1", "resourceVersion": target["metadata"]["resourceVersion"]}
    assert by_reason["Failed"]["count"] == 1
    node_events = (await client.list(EVENTS, "default", field_selector="involvedObject.name=n1"))["items"]
    assert [(e["reason"], e["involvedObject"]["kind"]) for e in node_events] == [("Ready", "Node")]


async def test_event_recorder_never_raises(client: ApiClient) -> None:
    recorder = EventRecorder(client, "test", queue_size=1)
    try:
        bad = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "x", "namespace": "no-such-ns"}}
        for _ in range(5):
            recorder.event(bad, "Normal", "Overflow", "dropped or rejected")
        recorder.event({"metadata": {}}, "Normal", "NoName", "dropped")
        async with asyncio.timeout(10):
            await recorder.flush()
    finally:
        await recorder.close()
    assert not (await client.list(EVENTS, "no-such-ns"))["items"]

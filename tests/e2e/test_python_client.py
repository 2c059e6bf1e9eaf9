"""The official `kubernetes` Python client works against kubelite unchanged."""

from __future__ import annotations

import threading
import time

import pytest
from kubernetes import client, config, watch
from kubernetes.client.rest import ApiException

from tests.e2e.conftest import Cluster


@pytest.fixture(scope="module")
def core(cluster: Cluster) -> client.CoreV1Api:
    api_client = config.new_client_from_config(str(cluster.kubeconfig))
    return client.CoreV1Api(api_client)


def test_list_create_patch(core: client.CoreV1Api) -> None:
    names = [ns.metadata.name for ns in core.list_namespace().items]
    assert "kube-system" in names
    body = client.V1ConfigMap(metadata=client.V1ObjectMeta(name="pyclient", labels={"via": "python"}),
                              data={"a": "1"})
    created = core.create_namespaced_config_map("default", body)
    assert created.metadata.uid and created.metadata.resource_version
    patched = core.patch_namespaced_config_map("pyclient", "default", {"data": {"b": "2"}})
    assert patched.data == {"a": "1", "b": "2"}
    listed = core.list_namespaced_config_map("default", label_selector="via=python")
    assert [cm.metadata.name for cm in listed.items] == ["pyclient"]
    with pytest.raises(ApiException) as info:
        core.read_namespaced_config_map("absent", "default")
    assert info.value.status == 404


def test_watch_helper_with_resume(core: client.CoreV1Api) -> None:
    listed = core.list_namespaced_config_map("default")
    start_rv = listed.metadata.resource_version

    def writer() -> None:
        time.sleep(0.5)
        for i in range(3):
            core.create_namespaced_config_map(
                "default", client.V1ConfigMap(metadata=client.V1ObjectMeta(name=f"watched-py-{i}")))

    thread = threading.Thread(target=writer)
    thread.start()
    seen: list[str] = []
    last_rv = start_rv
    w = watch.Watch()
    for event in w.stream(core.list_namespaced_config_map, "default", resource_version=start_rv,
                          timeout_seconds=10):
        name = event["object"].metadata.name
        if name.startswith("watched-py-"):
            seen.append(name)
            last_rv = event["object"].metadata.resource_version
        if len(seen) == 2:
            w.stop()
    thread.join()
    # Resume from the last event seen: only what came after it arrives.
    resumed = []
    w = watch.Watch()
    for event in w.stream(core.list_namespaced_config_map, "default", resource_version=last_rv, timeout_seconds=5):
        resumed.append(event["object"].metadata.name)
        w.stop()
    assert seen == ["watched-py-0", "watched-py-1"]
    assert resumed == ["watched-py-2"]

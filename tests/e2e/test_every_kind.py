"""create, get, describe and delete one object of every built-in kind with the real kubectl."""

from __future__ import annotations

from pathlib import Path

import yaml

from tests.e2e.conftest import Cluster

MANIFEST = Path(__file__).parent / "manifests" / "every-kind.yaml"


def _refs() -> list[tuple[str, str, str | None]]:
    """(kubectl resource name, object name, namespace) for every document of the manifest."""
    refs = []
    for doc in yaml.safe_load_all(MANIFEST.read_text()):
        group = doc["apiVersion"].rpartition("/")[0]
        kind = doc["kind"].lower() + (f".{group}" if group else "")
        refs.append((kind, doc["metadata"]["name"], doc["metadata"].get("namespace")))
    return refs


def test_every_kind_create_get_describe_delete(cluster: Cluster) -> None:
    created = cluster.kubectl("create", "-f", str(MANIFEST)).stdout
    refs = _refs()
    assert created.count(" created") == len(refs), created
    for kind, name, namespace in refs:
        scope = ["-n", namespace] if namespace else []
        table = cluster.kubectl("get", kind, name, *scope).stdout.splitlines()
        if kind.startswith("event"):  # events print LAST SEEN TYPE REASON OBJECT MESSAGE, as upstream
            assert table[0].split()[:3] == ["LAST", "SEEN", "TYPE"] and "Tested" in table[1], table
        else:
            assert table[0].startswith("NAME") and table[1].split()[0] == name, (kind, table)
        wide = cluster.kubectl("get", kind, name, *scope, "-o", "wide").stdout
        assert name in wide
        described = cluster.kubectl("describe", kind, name, *scope).stdout
        assert name in described, (kind, described)
    listed = cluster.kubectl("get", "all", "-n", "every", "-o", "name").stdout.split()
    assert {"pod/pod1", "service/svc1", "deployment.apps/deploy1", "cronjob.batch/cj1"} <= set(listed)
    for kind, name, namespace in reversed(refs[1:]):
        scope = ["-n", namespace] if namespace else []
        cluster.kubectl("delete", kind, name, *scope, "--wait=false")
        if kind != "pod":
            assert cluster.kubectl("get", kind, name, *scope, check=False).returncode != 0, kind
    cluster.kubectl("delete", "namespace", "every", "--wait=false")

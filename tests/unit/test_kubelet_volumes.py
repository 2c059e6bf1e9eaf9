"""Where the volume manager lays out a pod's volumes: secrets, downward API and projected files apart from the rest
(on the node's tmpfs), written atomically, and gone after teardown."""

from __future__ import annotations

import base64
from pathlib import Path

from kubelite.kubelet.volumes import VolumeManager

POD = {"metadata": {"uid": "u1", "name": "p", "namespace": "ns"},
       "spec": {"volumes": [{"name": "cm", "configMap": {"name": "settings"}},
                            {"name": "sec", "secret": {"secretName": "creds"}},
                            {"name": "down", "downwardAPI": {"items": [
                                {"path": "name", "fieldRef": {"fieldPath": "metadata.name"}}]}},
                            {"name": "scratch", "emptyDir": {}}]}}
OBJECTS = {("configmaps", "settings"): {"data": {"greeting": "hello"}},
           ("secrets", "creds"): {"data": {"password": base64.b64encode(b"s3cret").decode()}}}


async def fetch(plural: str, name: str) -> dict | None:
    return OBJECTS.get((plural, name))


async def test_secrets_and_downward_files_live_under_the_memory_root(tmp_path: Path) -> None:
    disk, memory = tmp_path / "disk", tmp_path / "memory"
    manager = VolumeManager(disk, memory)
    paths = await manager.setup(POD, fetch, {})
    assert paths["sec"].is_relative_to(memory) and (paths["sec"] / "password").read_bytes() == b"s3cret"
    assert paths["down"].is_relative_to(memory) and (paths["down"] / "name").read_text() == "p"
    assert paths["cm"].is_relative_to(disk) and (paths["cm"] / "greeting").read_text() == "hello"
    assert paths["scratch"].is_relative_to(disk) and paths["scratch"].is_dir()
    assert not any(p.name == "password" for p in disk.rglob("*")), "no secret on the disk root"
    await manager.teardown("u1")
    assert not (disk / "u1").exists() and not (memory / "u1").exists()

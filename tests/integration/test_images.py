"""The image store against a real docker-registry: pulls (auth, mirrors, indexes, bad content), imports, removal."""

from __future__ import annotations

import asyncio
import base64
import json
import os
import secrets
import stat
import subprocess
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import TYPE_CHECKING

import pytest
from click.testing import CliRunner

from kubelite.cli.image import image as image_cli
from kubelite.client import ApiClient, ClientConfig, EventRecorder
from kubelite.kubelet.imagepull import ImagePuller
from kubelite.kubelet.images import (
    AuthConfig,
    DigestMismatch,
    ImageNotFound,
    ImageStore,
    PullProgress,
    RegistryError,
    credentials_from_secrets,
)
from kubelite.kubelet.images.config import parse_registries
from kubelite.kubelet.images.manifest import host_platform
from tests import images as built

if TYPE_CHECKING:
    from tests.registry import Registry


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[ImageStore]:
    """An empty store for one test."""
    async with ImageStore(tmp_path / "images") as opened:
        yield opened


def settled_requests(registry: Registry, contains: str, method: str = "GET") -> list[tuple[str, int]]:
    """The registry's requests matching `contains`, once its access log has stopped growing."""
    previous = None
    for _ in range(50):
        current = registry.requests(method, contains)
        if current == previous:
            return current
        previous = current
        time.sleep(0.05)
    return current


async def run(*argv: str) -> subprocess.CompletedProcess[str]:
    """Run a command (in a thread, off the event loop); a failure shows its output."""
    result = await asyncio.to_thread(subprocess.run, argv, capture_output=True, text=True)
    assert result.returncode == 0, f"{argv} failed: {result.stdout}{result.stderr}"
    return result


def unique_file() -> built.Entry:
    """A file that makes an image (and its top layer) unlike any other in the run."""
    return built.file("etc/unique", secrets.token_hex(16))


def blob_files(store: ImageStore) -> set[str]:
    return {f"sha256:{path.name}" for path in store.blobs.iterdir()}


def layer_names(store: ImageStore) -> set[str]:
    return {path.name for path in store.layers.iterdir()}


async def test_pull_busybox(registry: Registry, store: ImageStore) -> None:
    image = built.busybox_image([unique_file()], cmd=("sleep", "3600"), env=(built.PATH_ENV, "GREETING=hi"),
                                workdir="/tmp", user="65534", exposed_ports=("8080/tcp",))
    digest = built.push(registry.url, "test/busybox", "v1", image)
    events: list[PullProgress] = []

    pulled = await store.pull(f"{registry.host}/test/busybox:v1", progress=events.append)

    assert pulled.id == image.config_digest
    assert pulled.names == [f"{registry.host}/test/busybox:v1"]
    assert pulled.digests == [f"{registry.host}/test/busybox@{digest}"]
    assert pulled.size == image.size
    assert pulled.config == {"Env": [built.PATH_ENV, "GREETING=hi"], "Cmd": ["sleep", "3600"], "WorkingDir": "/tmp",
                             "User": "65534", "ExposedPorts": {"8080/tcp": {}}}
    assert [d.name for d in pulled.layer_dirs] == [layer.diff_id.split(":")[1] for layer in image.layers]
    base = pulled.layer_dirs[0]
    busybox = base / "bin/busybox"
    assert busybox.read_bytes() == built.BUSYBOX.read_bytes() and os.access(busybox, os.X_OK)
    assert os.readlink(base / "bin/sh") == "busybox" and os.readlink(base / "bin/wget") == "busybox"
    assert stat.S_IMODE((base / "tmp").stat().st_mode) == 0o1777
    assert "root:x:0:0" in (base / "etc/passwd").read_text()
    result = await run(str(base / "bin/sh"), "-c", "echo $((6*7))")
    assert result.stdout == "42\n", "the unpacked busybox runs"
    assert blob_files(store) == {digest, image.config_digest, *(layer.digest for layer in image.layers)}
    assert {e.status for e in events if e.kind == "layer"} >= {"downloading", "downloaded", "unpacking", "unpacked"}

    index = json.loads((store.root / "index.json").read_text())
    assert json.loads((store.root / "oci-layout").read_text()) == {"imageLayoutVersion": "1.0.0"}
    named = {m["annotations"]["io.containerd.image.name"]: m["digest"] for m in index["manifests"]}
    assert named == {f"{registry.host}/test/busybox:v1": digest, f"{registry.host}/test/busybox@{digest}": digest}

    for key in (f"{registry.host}/test/busybox:v1", f"{registry.host}/test/busybox@{digest}", image.config_digest,
                image.config_digest.split(":")[1][:12], image.config_digest[:16]):
        found = await store.get(key)
        assert found is not None and found.id == image.config_digest, key
    assert await store.get(f"{registry.host}/test/busybox:v2") is None
    assert await store.get("busybox") is None
    assert [i.id for i in await store.list()] == [image.config_digest]


async def test_second_pull_downloads_nothing(registry: Registry, store: ImageStore) -> None:
    image = built.busybox_image([unique_file()])
    built.push(registry.url, "test/again", "v1", image)
    first = await store.pull(f"{registry.host}/test/again:v1")
    blob_gets = len(settled_requests(registry, "/v2/test/again/blobs/"))
    inodes = [d.stat().st_ino for d in first.layer_dirs]
    events: list[PullProgress] = []

    second = await store.pull(f"{registry.host}/test/again:v1", progress=events.append)

    assert second == first
    assert len(settled_requests(registry, "/v2/test/again/blobs/")) == blob_gets, "no blob fetched again"
    assert {e.status for e in events} == {"exists"}
    assert [d.stat().st_ino for d in second.layer_dirs] == inodes, "layers are not unpacked again"


async def test_shared_layers_are_unpacked_once(registry: Registry, store: ImageStore) -> None:
    one, two = built.busybox_image([unique_file()]), built.busybox_image([unique_file()])
    built.push(registry.url, "test/shared-one", "v1", one)
    built.push(registry.url, "test/shared-two", "v1", two)
    first = await store.pull(f"{registry.host}/test/shared-one:v1")
    base_inode = first.layer_dirs[0].stat().st_ino

    second = await store.pull(f"{registry.host}/test/shared-two:v1")

    assert second.layer_dirs[0] == first.layer_dirs[0]
    assert second.layer_dirs[0].stat().st_ino == base_inode
    assert second.layer_dirs[1] != first.layer_dirs[1]
    assert settled_requests(registry, f"/v2/test/shared-two/blobs/{built.busybox_layer().digest}") == [], \
        "the shared layer blob is not downloaded for the second image"
    assert len(layer_names(store)) == 3


async def test_concurrent_pulls_share_one_download(registry: Registry, store: ImageStore) -> None:
    image = built.busybox_image([unique_file()])
    built.push(registry.url, "test/concurrent", "v1", image)

    results = await asyncio.gather(*(store.pull(f"{registry.host}/test/concurrent:v1") for _ in range(4)))

    assert {r.id for r in results} == {image.config_digest}
    assert len(settled_requests(registry, "/v2/test/concurrent/manifests/v1")) == 1
    for blob in (image.config_digest, *(layer.digest for layer in image.layers)):
        assert len(settled_requests(registry, f"/v2/test/concurrent/blobs/{blob}")) == 1, blob


async def test_whiteouts_hide_lower_layers_under_overlayfs(registry: Registry, store: ImageStore,
                                                           tmp_path: Path) -> None:
    image = built.busybox_image(
        [built.file("etc/removed", "old"), built.file("data/dir/a", "a"), built.file("data/dir/b", "b"), unique_file()],
        [built.whiteout("etc/removed"), built.opaque("data/dir"), built.file("data/dir/c", "c")],
    )
    built.push(registry.url, "test/whiteouts", "v1", image)

    pulled = await store.pull(f"{registry.host}/test/whiteouts:v1")

    top = pulled.layer_dirs[2]
    info = (top / "etc/removed").lstat()
    assert stat.S_ISCHR(info.st_mode) and info.st_rdev == 0
    assert os.getxattr(top / "data/dir", "trusted.overlay.opaque") == b"y"
    merged = tmp_path / "merged"
    merged.mkdir()
    lower = ":".join(str(d) for d in reversed(pulled.layer_dirs))
    await run("mount", "-t", "overlay", "overlay", "-o", f"lowerdir={lower}", str(merged))
    try:
        assert not (merged / "etc/removed").exists()
        assert sorted(os.listdir(merged / "data/dir")) == ["c"]
        assert (merged / "etc/passwd").exists() and (merged / "bin/busybox").exists()
    finally:
        await run("umount", str(merged))


async def test_index_gives_this_node_its_platform(registry: Registry, store: ImageStore) -> None:
    arch = host_platform()["architecture"]
    other = "arm64" if arch != "arm64" else "amd64"
    native = built.busybox_image([unique_file()], architecture=arch)
    foreign = built.build_image([built.layer([unique_file()])], architecture=other)
    index_digest = built.push_index(registry.url, "test/multiarch", "v1",
                                    [(foreign, {"os": "linux", "architecture": other}),
                                     (native, {"os": "linux", "architecture": arch})])

    pulled = await store.pull(f"{registry.host}/test/multiarch:v1")

    assert pulled.id == native.config_digest
    assert pulled.digests == [f"{registry.host}/test/multiarch@{index_digest}"], "the repo digest is the index's"
    assert settled_requests(registry, foreign.layers[0].digest) == [], "the other platform is not downloaded"
    by_digest = await store.pull(f"{registry.host}/test/multiarch@{index_digest}")
    assert by_digest.id == native.config_digest


async def test_docker_v2_manifest_and_pull_by_digest(registry: Registry, store: ImageStore) -> None:
    image = built.build_image([built.busybox_layer(), built.layer([unique_file()], media_type=built.DOCKER_LAYER_GZIP)],
                              docker=True)
    digest = built.push(registry.url, "test/docker", "v1", image)

    pulled = await store.pull(f"{registry.host}/test/docker@{digest}")

    assert pulled.id == image.config_digest
    assert pulled.names == [] and pulled.digests == [f"{registry.host}/test/docker@{digest}"]
    assert (pulled.layer_dirs[1] / "etc/unique").exists()


async def test_unknown_tag_and_repository(registry: Registry, store: ImageStore) -> None:
    built.push(registry.url, "test/known", "v1", built.busybox_image())
    with pytest.raises(RegistryError, match="not found: MANIFEST_UNKNOWN: manifest unknown") as caught:
        await store.pull(f"{registry.host}/test/known:nope")
    assert caught.value.status == 404 and caught.value.codes == ("MANIFEST_UNKNOWN",)
    assert f'"{registry.host}/test/known:nope"' in str(caught.value)
    with pytest.raises(RegistryError, match="not found") as unknown:
        await store.pull(f"{registry.host}/test/never-pushed:v1")
    assert unknown.value.status == 404
    assert await store.list() == []


async def test_corrupt_blob_is_rejected_and_nothing_stored(registry: Registry, store: ImageStore) -> None:
    image = built.busybox_image([built.file("etc/big", secrets.token_bytes(200_000))])
    built.push(registry.url, "test/corrupt", "v1", image)
    data = registry.blob_file(image.layers[1].digest)
    content = bytearray(data.read_bytes())
    content[len(content) // 2] ^= 0xFF
    data.write_bytes(bytes(content))

    with pytest.raises(DigestMismatch, match=image.layers[1].digest):
        await store.pull(f"{registry.host}/test/corrupt:v1")

    assert not store.blob_path(image.layers[1].digest).exists()
    assert image.layers[1].diff_id.split(":")[1] not in layer_names(store)
    assert await store.list() == [] and list(store.tmp.iterdir()) == []


async def test_token_auth_as_docker_hub_does(token_registry: Registry, store: ImageStore) -> None:
    image = built.busybox_image([unique_file()])
    built.push(token_registry.url, "private/app", "v1", image, token_registry.push_authorization("private/app"))
    ref = f"{token_registry.host}/private/app:v1"
    [(username, password)] = token_registry.users.items()

    with pytest.raises(RegistryError, match="UNAUTHORIZED") as anonymous:
        await store.pull(ref)
    assert anonymous.value.status == 401
    with pytest.raises(RegistryError, match="token server") as wrong:
        await store.pull(ref, credentials={token_registry.host: AuthConfig(username, "wrong")})
    assert wrong.value.status == 401

    pulled = await store.pull(ref, credentials={token_registry.host: AuthConfig(username, password)})

    assert pulled.id == image.config_digest
    assert token_registry.authority is not None
    issued = token_registry.authority.issued[-1]
    assert issued["subject"] == username and issued["scopes"] == ["repository:private/app:pull"]


async def test_token_auth_anonymous_and_identity_token(token_registry: Registry, tmp_path: Path) -> None:
    public, private = built.busybox_image([unique_file()]), built.busybox_image([unique_file()])
    built.push(token_registry.url, "public/tool", "v1", public, token_registry.push_authorization("public/tool"))
    built.push(token_registry.url, "private/tool", "v1", private, token_registry.push_authorization("private/tool"))
    [(identity_token, username)] = token_registry.identity_tokens.items()
    registries = parse_registries({"configs": {token_registry.host: {"auth": {"identitytoken": identity_token}}}})
    async with ImageStore(tmp_path / "anonymous") as anonymous, \
            ImageStore(tmp_path / "identity", registries) as configured:
        assert (await anonymous.pull(f"{token_registry.host}/public/tool:v1")).id == public.config_digest
        assert (await configured.pull(f"{token_registry.host}/private/tool:v1")).id == private.config_digest
    assert token_registry.authority is not None
    anonymous_grant, identity_grant = token_registry.authority.issued[-2:]
    assert anonymous_grant["subject"] == "" and anonymous_grant["access"] == [("repository", "public/tool", ["pull"])]
    assert identity_grant["subject"] == username


async def test_basic_auth_with_an_image_pull_secret(basic_registry: Registry, store: ImageStore) -> None:
    image = built.busybox_image([unique_file()])
    built.push(basic_registry.direct_url, "private/basic", "v1", image)
    ref = f"{basic_registry.host}/private/basic:v1"
    with pytest.raises(RegistryError, match="requires a username and password") as anonymous:
        await store.pull(ref)
    assert anonymous.value.status == 401
    [(username, password)] = basic_registry.users.items()
    config = {"auths": {basic_registry.host: {"auth": base64.b64encode(f"{username}:{password}".encode()).decode()}}}
    secret = {"type": "kubernetes.io/dockerconfigjson",
              "data": {".dockerconfigjson": base64.b64encode(json.dumps(config).encode()).decode()}}

    pulled = await store.pull(ref, credentials=credentials_from_secrets([secret]))

    assert pulled.id == image.config_digest


async def test_mirrors_are_tried_in_order(registry: Registry, tmp_path: Path) -> None:
    image, app = built.busybox_image([unique_file()]), built.busybox_image([unique_file()])
    built.push(registry.url, "library/busybox", "mirrored", image)
    built.push(registry.url, "team/app", "v1", app)
    dead = "http://127.0.0.1:9"
    registries = parse_registries({"mirrors": {"docker.io": {"endpoint": [dead, registry.url]},
                                               "registry.invalid": {"endpoint": [registry.url]}}})
    async with ImageStore(tmp_path / "images", registries) as store:
        from_hub = await store.pull("busybox:mirrored")
        from_private = await store.pull("registry.invalid/team/app:v1")

    assert from_hub.names == ["docker.io/library/busybox:mirrored"] and from_hub.id == image.config_digest
    assert from_private.names == ["registry.invalid/team/app:v1"] and from_private.id == app.config_digest


async def test_image_gc_frees_the_target_from_unused_images_largest_first(registry: Registry,
                                                                          store: ImageStore) -> None:
    refs = {}
    for name, size in (("small", 300_000), ("large", 3_000_000), ("used", 4_000_000)):
        image = built.busybox_image([built.file("data/blob", os.urandom(size))])
        built.push(registry.url, f"test/gc-{name}", "v1", image)
        refs[name] = f"{registry.host}/test/gc-{name}:v1"
        await store.pull(refs[name])
    puller = ImagePuller(store, EventRecorder(ApiClient(ClientConfig(server="https://unused.invalid")), "kubelet"))
    before = await store.usage()

    freed = await puller.collect({refs["used"]}, 1_000_000)
    assert 3_000_000 <= freed == before - await store.usage()
    assert await store.get(refs["large"]) is None, "the largest unused image goes first"
    assert await store.get(refs["small"]) is not None, "and is enough"

    await puller.collect({refs["used"]}, 10**12)
    assert await store.get(refs["small"]) is None
    assert await store.get(refs["used"]) is not None, "an image a container uses is never collected"


async def test_remove_collects_unused_content(registry: Registry, store: ImageStore) -> None:
    one, two = built.busybox_image([unique_file()]), built.busybox_image([unique_file()])
    built.push(registry.url, "test/gc-one", "v1", one)
    built.push(registry.url, "test/gc-two", "v1", two)
    first = await store.pull(f"{registry.host}/test/gc-one:v1")
    second = await store.pull(f"{registry.host}/test/gc-two:v1")
    used = await store.usage()
    assert used > one.size + len(two.layers[1].blob)

    assert await store.remove(f"{registry.host}/test/gc-one:v1") == sorted(first.names + first.digests)

    assert await store.get(first.id) is None
    assert first.layer_dirs[0].is_dir() and not first.layer_dirs[1].exists(), "only the shared layer stays"
    assert blob_files(store) == {second.digests[0].split("@")[1], two.config_digest,
                                 *(layer.digest for layer in two.layers)}
    await store.hold("container-1", second)
    assert await store.remove(second.id) == sorted(second.names + second.digests)
    assert all(d.is_dir() for d in second.layer_dirs), "a held image's layers stay for its containers"
    await store.release("container-1")
    await asyncio.to_thread(store.collect_garbage)
    assert layer_names(store) == set() and blob_files(store) == set()
    assert await store.usage() < used / 10
    with pytest.raises(ImageNotFound):
        await store.remove(second.id)


async def test_removing_a_tag_keeps_an_image_with_other_tags(registry: Registry, store: ImageStore) -> None:
    image = built.busybox_image([unique_file()])
    built.push(registry.url, "test/tags", "a", image)
    built.push(registry.url, "test/tags", "b", image)
    await store.pull(f"{registry.host}/test/tags:a")
    await store.pull(f"{registry.host}/test/tags:b")

    assert await store.remove(f"{registry.host}/test/tags:a") == [f"{registry.host}/test/tags:a"]

    left = await store.get(image.config_digest)
    assert left is not None and left.names == [f"{registry.host}/test/tags:b"]
    assert all(d.is_dir() for d in left.layer_dirs)


async def test_import_docker_save_archive(store: ImageStore, tmp_path: Path) -> None:
    one = built.busybox_image([unique_file()], cmd=("echo", "one"))
    two = built.busybox_image([unique_file()])
    archive = built.docker_save(tmp_path / "saved.tar", [(one, ["busybox:one", "example.com/team/one:v1"]),
                                                         (two, [])])

    imported = await store.import_archive(archive)

    assert [i.id for i in imported] == [one.config_digest, two.config_digest]
    assert imported[0].names == ["docker.io/library/busybox:one", "example.com/team/one:v1"]
    assert imported[0].digests == [] and imported[0].config["Cmd"] == ["echo", "one"]
    assert imported[1].names == [] and imported[1].digests == []
    assert (imported[0].layer_dirs[0] / "bin/busybox").exists()
    assert imported[0].layer_dirs[0] == imported[1].layer_dirs[0]
    found = await store.get("busybox:one")
    assert found is not None and found.id == one.config_digest
    assert {i.id for i in await store.list()} == {one.config_digest, two.config_digest}
    again = await store.import_archive(archive)
    assert [i.id for i in again] == [i.id for i in imported], "importing twice changes nothing"
    assert len(await store.list()) == 2


async def test_import_oci_layout_archive(store: ImageStore, tmp_path: Path) -> None:
    arch = host_platform()["architecture"]
    native = built.busybox_image([unique_file()], architecture=arch)
    plain = built.busybox_image([unique_file()])
    index = built.build_index([(native, {"os": "linux", "architecture": arch})])
    archive = built.oci_archive(tmp_path / "oci.tar", [
        (index, {"io.containerd.image.name": "registry.example.com/multi:v2"}),
        (plain, {"org.opencontainers.image.ref.name": "example.com/plain:v1"}),
    ], extra=[native])

    imported = await store.import_archive(archive)

    assert {i.id: i.names for i in imported} == {native.config_digest: ["registry.example.com/multi:v2"],
                                                 plain.config_digest: ["example.com/plain:v1"]}
    assert all((i.layer_dirs[1] / "etc/unique").exists() for i in imported)


async def test_import_rejects_bad_archives(store: ImageStore, tmp_path: Path) -> None:
    not_tar = tmp_path / "x.tar"
    not_tar.write_text("hello")
    with pytest.raises(Exception, match="not a readable tar"):
        await store.import_archive(not_tar)
    image = built.busybox_image([unique_file()])
    archive = built.oci_archive(tmp_path / "bad.tar", [(image, {"io.containerd.image.name": "bad:v1"})])
    tampered = tmp_path / "tampered.tar"
    raw = archive.read_bytes()
    marker = image.config[:40]
    tampered.write_bytes(raw.replace(marker, marker.replace(b"amd64", b"AMD64")))
    with pytest.raises(DigestMismatch):
        await store.import_archive(tampered)
    assert await store.list() == []


# The CLI (sync tests: the commands run their own event loop)

def run_cli(*args: str) -> tuple[int, str]:
    """Invoke `kubelite image ARGS` (the group as the lead will register it); exit code and output."""
    result = CliRunner().invoke(image_cli, list(args), catch_exceptions=False)
    return result.exit_code, result.output


def test_cli(registry: Registry, tmp_path: Path) -> None:
    image = built.busybox_image([unique_file()])
    built.push(registry.url, "test/cli", "v1", image)
    data = str(tmp_path / "data")
    missing = str(tmp_path / "registries.yaml")
    short_id = image.config_digest.split(":")[1][:12]

    code, output = run_cli("pull", "-d", data, "--private-registry", missing, f"{registry.host}/test/cli:v1")
    assert code == 0, output
    assert f"layer {image.layers[1].digest[7:19]}: downloading" in output
    assert f"pulled {registry.host}/test/cli:v1: image id {image.config_digest}" in output
    assert (tmp_path / "data/agent/images/blobs/sha256").is_dir()

    code, output = run_cli("ls", "-d", data)
    header, row = output.splitlines()
    assert header.split() == ["IMAGE", "TAG", "IMAGE", "ID", "SIZE"]
    assert row.split()[:3] == [f"{registry.host}/test/cli", "v1", short_id]
    assert run_cli("ls", "-q", "-d", data) == (0, f"{image.config_digest}\n")

    code, output = run_cli("pull", "-d", data, f"{registry.host}/test/cli:nope")
    assert code == 1 and "MANIFEST_UNKNOWN" in output and "check the image name and tag" in output
    code, output = run_cli("pull", "-d", data, "Not A Reference")
    assert code == 1 and "invalid reference format" in output and "[REGISTRY/]NAME[:TAG]" in output

    archive = built.docker_save(tmp_path / "saved.tar", [(built.busybox_image([unique_file()]), ["saved:v1"])])
    code, output = run_cli("import", "-d", data, str(archive))
    assert code == 0 and output.startswith("imported docker.io/library/saved:v1: image id sha256:")

    code, output = run_cli("rm", "-d", data, f"{registry.host}/test/cli:v1", "saved:v1", "missing:v1")
    assert code == 1
    assert f"Deleted: {registry.host}/test/cli:v1" in output and "Deleted: docker.io/library/saved:v1" in output
    assert "no image 'missing:v1'" in output and "kubelite image ls" in output
    assert run_cli("ls", "-q", "-d", data) == (0, "")
    assert list((tmp_path / "data/agent/images/layers/sha256").iterdir()) == []

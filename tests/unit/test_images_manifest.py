"""Manifests and indexes (platform choice, media types, layers) and the registry's auth challenges and error bodies."""

from __future__ import annotations

import json

import pytest

from kubelite.kubelet.images.errors import ManifestError
from kubelite.kubelet.images.manifest import (
    DOCKER_LIST,
    OCI_INDEX,
    OCI_MANIFEST,
    diff_ids,
    manifest_parts,
    parse_document,
    select_platform,
)
from kubelite.kubelet.images.registry import error_text, parse_challenge

AMD64 = {"os": "linux", "architecture": "amd64"}
ARM64 = {"os": "linux", "architecture": "arm64", "variant": "v8"}


def digest(n: int) -> str:
    return f"sha256:{n:064x}"


def entry(n: int, platform: dict[str, str], media_type: str = OCI_MANIFEST) -> dict:
    """An index entry for a platform."""
    return {"mediaType": media_type, "digest": digest(n), "size": 100 + n, "platform": platform}


def test_index_picks_the_node_platform() -> None:
    index = {"manifests": [
        entry(1, {"os": "unknown", "architecture": "unknown"}),
        entry(2, {"os": "linux", "architecture": "arm", "variant": "v7"}),
        entry(3, {"os": "linux", "architecture": "arm64", "variant": "v8"}),
        entry(4, AMD64),
        entry(5, {"os": "windows", "architecture": "amd64"}),
    ]}
    assert select_platform(index, AMD64).digest == digest(4)
    assert select_platform(index, ARM64).digest == digest(3)
    unvaried = {"manifests": [entry(6, {"os": "linux", "architecture": "arm64"})]}
    assert select_platform(unvaried, ARM64).digest == digest(6), "an entry without a variant fits any variant"


def test_index_without_the_node_platform() -> None:
    index = {"manifests": [entry(3, ARM64), entry(5, {"os": "windows", "architecture": "amd64"})]}
    with pytest.raises(ManifestError, match=r"no image for linux/amd64 .*linux/arm64/v8, windows/amd64"):
        select_platform(index, AMD64)


def test_document_types() -> None:
    kind, doc = parse_document(json.dumps({"schemaVersion": 2, "manifests": []}).encode(), f"{DOCKER_LIST}; x=y")
    assert kind == DOCKER_LIST, "the Content-Type names the type when the document does not"
    kind, _ = parse_document(json.dumps({"mediaType": OCI_INDEX, "manifests": []}).encode(), "text/plain")
    assert kind == OCI_INDEX
    with pytest.raises(ManifestError, match="schema 1"):
        parse_document(json.dumps({"schemaVersion": 1, "fsLayers": []}).encode(),
                       "application/vnd.docker.distribution.manifest.v1+prettyjws")
    with pytest.raises(ManifestError, match="not JSON"):
        parse_document(b"<html>", "")
    with pytest.raises(ManifestError, match="unsupported manifest media type"):
        parse_document(b'{"mediaType": "application/vnd.example+json"}', "")


def test_manifest_layers() -> None:
    layer = {"mediaType": "application/vnd.docker.image.rootfs.diff.tar.gzip", "digest": digest(7), "size": 7}
    config, layers = manifest_parts({"config": {"mediaType": "x", "digest": digest(8), "size": 8}, "layers": [layer]})
    assert config.digest == digest(8) and [d.digest for d in layers] == [digest(7)]
    with pytest.raises(ManifestError, match="zstd"):
        manifest_parts({"config": config.to_dict(), "layers": [{**layer, "mediaType": OCI_MANIFEST + "+zstd"}]})
    with pytest.raises(ManifestError, match="only sha256"):
        manifest_parts({"config": {**config.to_dict(), "digest": "md5:abc"}, "layers": []})
    with pytest.raises(ManifestError, match="2 diff_ids for 1 layers"):
        diff_ids({"rootfs": {"diff_ids": [digest(1), digest(2)]}}, 1)


def test_auth_challenges() -> None:
    scheme, params = parse_challenge('Bearer realm="https://auth.docker.io/token",service="registry.docker.io",'
                                     'scope="repository:library/busybox:pull,push"')
    assert scheme == "bearer"
    assert params == {"realm": "https://auth.docker.io/token", "service": "registry.docker.io",
                      "scope": "repository:library/busybox:pull,push"}
    assert parse_challenge('Basic realm="Registry \\"Realm\\""') == ("basic", {"realm": 'Registry "Realm"'})
    assert parse_challenge("Bearer realm=https://x/token, service=reg") == (
        "bearer", {"realm": "https://x/token", "service": "reg"})


def test_registry_error_bodies() -> None:
    body = json.dumps({"errors": [{"code": "MANIFEST_UNKNOWN", "message": "manifest unknown",
                                   "detail": {"Tag": "nope"}}]}).encode()
    assert error_text(404, body) == ("not found: MANIFEST_UNKNOWN: manifest unknown", ("MANIFEST_UNKNOWN",))
    text, codes = error_text(401, b'{"errors":[{"code":"UNAUTHORIZED","message":"authentication required"}]}')
    assert text == "unauthorized: UNAUTHORIZED: authentication required" and codes == ("UNAUTHORIZED",)
    assert error_text(502, b"<html>bad gateway</html>") == ("HTTP 502", ())

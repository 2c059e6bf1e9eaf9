"""Image references normalized as Docker and Kubernetes do (distribution/reference's ParseDockerRef)."""

from __future__ import annotations

import pytest

from kubelite.kubelet.images.config import default_endpoint
from kubelite.kubelet.images.reference import InvalidReference, is_image_id, is_local_host, parse_reference

DIGEST = "sha256:" + "ab" * 32


@pytest.mark.parametrize(("text", "registry", "repository", "tag", "digest"), [
    ("busybox", "docker.io", "library/busybox", "latest", None),
    ("busybox:1.36", "docker.io", "library/busybox", "1.36", None),
    ("library/busybox", "docker.io", "library/busybox", "latest", None),
    ("bitnami/redis:7.2", "docker.io", "bitnami/redis", "7.2", None),
    ("docker.io/busybox", "docker.io", "library/busybox", "latest", None),
    ("index.docker.io/library/busybox", "docker.io", "library/busybox", "latest", None),
    ("registry-1.docker.io/nginx", "docker.io", "library/nginx", "latest", None),
    ("127.0.0.1:5000/x/y:tag", "127.0.0.1:5000", "x/y", "tag", None),
    ("localhost/app", "localhost", "app", "latest", None),
    ("localhost:5000/app:v1", "localhost:5000", "app", "v1", None),
    ("quay.io/coreos/etcd:v3.5.0", "quay.io", "coreos/etcd", "v3.5.0", None),
    ("registry.k8s.io/pause:3.10", "registry.k8s.io", "pause", "3.10", None),
    ("Example.com/a/b", "Example.com", "a/b", "latest", None),
    ("[::1]:5000/app:v1", "[::1]:5000", "app", "v1", None),
    (f"busybox@{DIGEST}", "docker.io", "library/busybox", None, DIGEST),
    (f"busybox:1.36@{DIGEST}", "docker.io", "library/busybox", "1.36", DIGEST),
    (f"127.0.0.1:5000/x@{DIGEST}", "127.0.0.1:5000", "x", None, DIGEST),
    ("my-org/my_app.v2:latest", "docker.io", "my-org/my_app.v2", "latest", None),
    ("a/b/c/d:e", "docker.io", "a/b/c/d", "e", None),
])
def test_parse(text: str, registry: str, repository: str, tag: str | None, digest: str | None) -> None:
    ref = parse_reference(text)
    assert (ref.registry, ref.repository, ref.tag, ref.digest) == (registry, repository, tag, digest)


def test_names() -> None:
    ref = parse_reference("busybox")
    assert str(ref) == "docker.io/library/busybox:latest"
    assert ref.name == "docker.io/library/busybox"
    assert ref.store_name == "docker.io/library/busybox:latest"
    assert ref.object == "latest"
    both = parse_reference(f"busybox:1.36@{DIGEST}")
    assert str(both) == f"docker.io/library/busybox:1.36@{DIGEST}"
    assert both.store_name == f"docker.io/library/busybox@{DIGEST}", "the digest wins, as in Docker"
    assert both.object == DIGEST


@pytest.mark.parametrize("text", [
    "", " busybox", "Busybox", "busybox:", "busybox:-bad", "busybox:" + "t" * 129, "busybox@sha256:abc",
    "busybox@" + DIGEST + "x", "a//b", "a/b/", "-a/b", "a..b", "a/B", "a:b:c", "bad_host:5000x/a",
    "host:port/a", "x" * 256,
])
def test_invalid(text: str) -> None:
    with pytest.raises(InvalidReference, match="invalid reference format"):
        parse_reference(text)


def test_image_ids_and_local_hosts() -> None:
    assert is_image_id("sha256:" + "0" * 64)
    assert not is_image_id("0" * 64)
    assert not is_image_id("sha256:" + "0" * 63)
    assert all(is_local_host(h) for h in ("localhost", "localhost:5000", "127.0.0.1:5000", "127.0.0.2", "[::1]:80"))
    assert not any(is_local_host(h) for h in ("docker.io", "10.0.0.1:5000", "localhost.example.com"))


def test_default_endpoints() -> None:
    assert default_endpoint("docker.io").url == "https://registry-1.docker.io"
    assert default_endpoint("quay.io").url == "https://quay.io"
    assert default_endpoint("127.0.0.1:5000").url == "http://127.0.0.1:5000"
    assert default_endpoint("localhost:5000").url == "http://localhost:5000"

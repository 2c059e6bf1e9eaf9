"""registries.yaml (k3s's format) and pull credentials from imagePullSecrets."""

from __future__ import annotations

import base64
import json
import ssl
from pathlib import Path

import pytest
import yaml

from kubelite.kubelet.images.config import (
    AuthConfig,
    Endpoint,
    RegistryConfigError,
    credentials_from_docker_config,
    credentials_from_secrets,
    load_registries,
    match_credentials,
    parse_registries,
)

REGISTRIES_YAML = """
mirrors:
  docker.io:
    endpoint:
      - "http://127.0.0.1:5000"
      - "https://mirror.example.com/v2"
  "registry.example.com:5443":
    endpoint: ["mirror2.example.com:8443/prefix"]
  "*":
    endpoint: ["http://localhost:6000"]
configs:
  "mirror.example.com":
    auth:
      username: mirroruser
      password: mirrorpass
    tls:
      insecure_skip_verify: true
  "registry.example.com:5443":
    auth:
      auth: dXNlcjpwYXNzOndpdGg6Y29sb25z
  "ghcr.io":
    auth:
      identitytoken: refresh-me
"""


def test_missing_file_is_defaults(tmp_path: Path) -> None:
    config = load_registries(tmp_path / "absent.yaml")
    assert config.mirrors == {} and config.auths == {}
    assert [e.url for e in config.endpoints("docker.io")] == ["https://registry-1.docker.io"]
    assert load_registries(None).mirrors == {}


def test_mirrors_then_upstream(tmp_path: Path) -> None:
    path = tmp_path / "registries.yaml"
    path.write_text(REGISTRIES_YAML)
    config = load_registries(path)
    assert config.endpoints("docker.io") == [
        Endpoint("http://127.0.0.1:5000", "127.0.0.1:5000", False),
        Endpoint("https://mirror.example.com", "mirror.example.com", False),
        Endpoint("https://registry-1.docker.io", "registry-1.docker.io", True),
    ]
    assert [e.url for e in config.endpoints("registry.example.com:5443")] == [
        "https://mirror2.example.com:8443/prefix", "https://registry.example.com:5443"]
    assert [e.url for e in config.endpoints("quay.io")] == ["http://localhost:6000", "https://quay.io"], \
        "the wildcard mirror serves registries without their own entry"


def test_auth_and_tls() -> None:
    config = parse_registries(yaml.safe_load(REGISTRIES_YAML))
    assert config.auths["mirror.example.com"] == AuthConfig("mirroruser", "mirrorpass")
    assert config.auths["registry.example.com:5443"] == AuthConfig("user", "pass:with:colons")
    assert config.auths["ghcr.io"] == AuthConfig(identity_token="refresh-me")
    context = config.ssl_for("mirror.example.com")
    assert isinstance(context, ssl.SSLContext) and context.verify_mode == ssl.CERT_NONE
    assert config.ssl_for("quay.io") is True
    mirror = config.endpoints("docker.io")[1]
    assert config.auth_for(mirror, "docker.io") == AuthConfig("mirroruser", "mirrorpass")


def test_pull_credentials_win_and_stay_with_their_registry() -> None:
    config = parse_registries({"mirrors": {"docker.io": {"endpoint": ["https://mirror.example.com"]}},
                               "configs": {"docker.io": {"auth": {"username": "node", "password": "n"}}}})
    mirror, upstream = config.endpoints("docker.io")
    pod = {"docker.io": AuthConfig("pod", "p")}
    assert config.auth_for(upstream, "docker.io", pod) == AuthConfig("pod", "p")
    assert config.auth_for(upstream, "docker.io") == AuthConfig("node", "n"), "registries.yaml keys docker.io too"
    assert config.auth_for(mirror, "docker.io", pod) is None, "a pod's Docker Hub password is not sent to a mirror"


@pytest.mark.parametrize(("text", "message"), [
    ("mirrors: [1, 2]", "mirrors must be a mapping"),
    ("configs:\n  x.io: [1]", "configs.x.io must be a mapping"),
    ("- a\n- b", "expected a mapping"),
    ("mirrors:\n  docker.io:\n    endpoint: http://x", "must be a list"),
    ("mirrors:\n  docker.io:\n    endpoint: ['ftp://x']", "http:// or https://"),
    ("configs:\n  x.io:\n    auth:\n      auth: '%%%'", "base64"),
    ("mirrors: {", "not valid YAML"),
])
def test_bad_files(tmp_path: Path, text: str, message: str) -> None:
    path = tmp_path / "registries.yaml"
    path.write_text(text)
    with pytest.raises(RegistryConfigError, match=message):
        load_registries(path)


def dockerconfigjson(auths: dict) -> dict:
    """A kubernetes.io/dockerconfigjson Secret object."""
    encoded = base64.b64encode(json.dumps({"auths": auths}).encode()).decode()
    return {"metadata": {"name": "pull"}, "type": "kubernetes.io/dockerconfigjson",
            "data": {".dockerconfigjson": encoded}}


def test_credentials_from_pull_secrets() -> None:
    secrets = [
        dockerconfigjson({"https://index.docker.io/v1/": {"auth": base64.b64encode(b"hub:hubpass").decode()},
                          "127.0.0.1:5000": {"username": "u", "password": "p"}}),
        dockerconfigjson({"127.0.0.1:5000": {"username": "second", "password": "ignored"},
                          "*.example.com": {"username": "wild", "password": "w"}}),
        {"type": "kubernetes.io/dockercfg",
         "data": {".dockercfg": base64.b64encode(json.dumps({"http://quay.io/v1/": {"username": "q",
                                                                                    "password": "qp"}}).encode())}},
        {"type": "Opaque", "data": {"other": "eA=="}},
    ]
    found = credentials_from_secrets(secrets)
    assert found["docker.io"] == AuthConfig("hub", "hubpass")
    assert found["127.0.0.1:5000"] == AuthConfig("u", "p"), "the first secret naming a host wins"
    assert found["quay.io"] == AuthConfig("q", "qp")
    assert match_credentials(found, "registry-1.docker.io") == AuthConfig("hub", "hubpass")
    assert match_credentials(found, "a.example.com") == AuthConfig("wild", "w")
    assert match_credentials(found, "a.b.example.com") is None, "a glob label matches one label, as in Kubernetes"
    assert match_credentials(found, "other.io") is None


def test_bad_docker_configs() -> None:
    with pytest.raises(RegistryConfigError, match="not JSON"):
        credentials_from_docker_config("{")
    with pytest.raises(RegistryConfigError, match="not base64"):
        credentials_from_secrets([{"metadata": {"name": "s"}, "data": {".dockerconfigjson": "!!"}}])
    assert credentials_from_docker_config({"auths": {"h": {"identitytoken": "t"}}}) == {"h": AuthConfig(
        identity_token="t")}

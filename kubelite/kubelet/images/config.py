"""Registry settings in k3s's registries.yaml format (mirrors, auth, TLS) and pull credentials from imagePullSecrets."""

from __future__ import annotations

import base64
import binascii
import fnmatch
import json
import ssl
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from kubelite.kubelet.images.errors import RegistryConfigError
from kubelite.kubelet.images.reference import DOCKER_HUB, DOCKER_HUB_ALIASES, DOCKER_HUB_ENDPOINT, is_local_host

DEFAULT_REGISTRIES_PATH = Path("/etc/kubelite/registries.yaml")
WILDCARD = "*"
"""A mirror entry for every registry that has none of its own (k3s's wildcard)."""


@dataclass(frozen=True, slots=True)
class AuthConfig:
    """Credentials for one registry host: username and password, or an identity (refresh) token."""

    username: str = ""
    password: str = ""
    identity_token: str = ""

    @classmethod
    def from_mapping(cls, data: Mapping[str, Any], where: str) -> AuthConfig:
        """Read `username`/`password`, or `auth` (base64 of `user:password`), and `identitytoken`."""
        username, password = str(data.get("username") or ""), str(data.get("password") or "")
        if data.get("auth") and not username:
            try:
                username, _, password = base64.b64decode(str(data["auth"]), validate=True).decode().partition(":")
            except (binascii.Error, UnicodeDecodeError) as err:
                raise RegistryConfigError(f"{where}: `auth` is not base64 of user:password") from err
        return cls(username, password, str(data.get("identitytoken") or data.get("identityToken") or ""))


@dataclass(frozen=True, slots=True)
class TLSConfig:
    """TLS settings for one registry host: extra CA, client certificate, or no verification at all."""

    ca_file: str = ""
    cert_file: str = ""
    key_file: str = ""
    insecure_skip_verify: bool = False

    def ssl_context(self) -> ssl.SSLContext:
        """A client context: the system CAs plus ca_file (as containerd does), with the client certificate if any."""
        context = ssl.create_default_context()
        if self.ca_file:
            context.load_verify_locations(self.ca_file)
        if self.cert_file:
            context.load_cert_chain(self.cert_file, self.key_file or None)
        if self.insecure_skip_verify:
            context.check_hostname = False
            context.verify_mode = ssl.CERT_NONE
        return context


@dataclass(frozen=True, slots=True)
class Endpoint:
    """One place to pull a registry's images from: a mirror or the registry itself (`upstream`)."""

    url: str
    """scheme://host[:port][/prefix], without the trailing /v2."""
    host: str
    upstream: bool


@dataclass
class RegistryConfig:
    """Mirrors per registry (tried in order, then the registry itself) and auth/TLS per endpoint host."""

    mirrors: dict[str, list[str]] = field(default_factory=dict)
    auths: dict[str, AuthConfig] = field(default_factory=dict)
    tls: dict[str, TLSConfig] = field(default_factory=dict)
    _contexts: dict[str, ssl.SSLContext] = field(default_factory=dict, repr=False)

    def endpoints(self, registry: str) -> list[Endpoint]:
        """Where to look for an image of `registry`: its mirrors in order, then its default endpoint."""
        urls = self.mirrors.get(registry, self.mirrors.get(WILDCARD, []))
        found = [endpoint_from_url(url) for url in urls]
        found.append(default_endpoint(registry))
        unique: dict[str, Endpoint] = {}
        for endpoint in found:
            unique.setdefault(endpoint.url, endpoint)
        return list(unique.values())

    def ssl_for(self, host: str) -> ssl.SSLContext | bool:
        """The TLS setting for an endpoint host: its configured context, or True for default verification."""
        tls = self.tls.get(host)
        if tls is None:
            return True
        if host not in self._contexts:
            self._contexts[host] = tls.ssl_context()
        return self._contexts[host]

    def auth_for(self, endpoint: Endpoint, registry: str,
                 credentials: Mapping[str, AuthConfig] | None = None) -> AuthConfig | None:
        """Credentials for an endpoint: the pull's own (for the endpoint host, or the image's registry when the
        endpoint is the registry itself), else registries.yaml's for the endpoint host."""
        if credentials:
            auth = match_credentials(credentials, endpoint.host)
            if auth is None and endpoint.upstream:
                auth = match_credentials(credentials, registry)
            if auth is not None:
                return auth
        return self.auths.get(endpoint.host)


def default_endpoint(registry: str) -> Endpoint:
    """The registry's own endpoint: Docker Hub's API host for docker.io; plain HTTP for loopback."""
    if registry == DOCKER_HUB:
        return Endpoint(f"https://{DOCKER_HUB_ENDPOINT}", DOCKER_HUB_ENDPOINT, True)
    scheme = "http" if is_local_host(registry) else "https"
    return Endpoint(f"{scheme}://{registry}", registry, True)


def endpoint_from_url(url: str) -> Endpoint:
    """A mirror endpoint from registries.yaml; without a scheme it is HTTPS (HTTP for loopback)."""
    text = url.strip().rstrip("/")
    if "://" not in text:
        text = f"{'http' if is_local_host(text.split('/', 1)[0]) else 'https'}://{text}"
    scheme, _, rest = text.partition("://")
    if scheme not in ("http", "https") or not rest:
        raise RegistryConfigError(f"mirror endpoint {url!r} must be an http:// or https:// URL")
    text = text.removesuffix("/v2")
    return Endpoint(text, rest.split("/", 1)[0], False)


def normalize_host(key: str) -> str:
    """A credential key as a host: `https://index.docker.io/v1/` → `docker.io`, `http://reg:5000/x` → `reg:5000`."""
    host = key.strip().split("://", 1)[-1].split("/", 1)[0].lower()
    return DOCKER_HUB if host in DOCKER_HUB_ALIASES else host


def match_credentials(credentials: Mapping[str, AuthConfig], host: str) -> AuthConfig | None:
    """Credentials whose key names the host, exactly or by a Kubernetes-style glob like `*.example.com`."""
    host = normalize_host(host)
    if host in credentials:
        return credentials[host]
    for pattern, auth in credentials.items():
        if "*" in pattern and pattern.count(".") == host.count(".") and fnmatch.fnmatchcase(host, pattern):
            return auth
    return None


def _mapping(value: Any, where: str) -> dict[str, Any]:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise RegistryConfigError(f"{where} must be a mapping")
    return value


def parse_registries(data: Any, where: str = "registries.yaml") -> RegistryConfig:
    """Build the configuration from registries.yaml's parsed content (`mirrors` and `configs`)."""
    if data is None:
        return RegistryConfig()
    if not isinstance(data, dict):
        raise RegistryConfigError(f"{where}: expected a mapping with `mirrors` and `configs`")
    config = RegistryConfig()
    for registry, mirror in _mapping(data.get("mirrors"), f"{where}: mirrors").items():
        endpoints = _mapping(mirror, f"{where}: mirrors.{registry}").get("endpoint") or []
        if not isinstance(endpoints, list):
            raise RegistryConfigError(f"{where}: mirrors.{registry}.endpoint must be a list of URLs")
        key = WILDCARD if registry == WILDCARD else normalize_host(registry)
        config.mirrors[key] = [str(url) for url in endpoints]
        for url in config.mirrors[key]:
            endpoint_from_url(url)
    for host, settings in _mapping(data.get("configs"), f"{where}: configs").items():
        settings = _mapping(settings, f"{where}: configs.{host}")
        key = normalize_host(host)
        if key == DOCKER_HUB:
            key = DOCKER_HUB_ENDPOINT
        if settings.get("auth"):
            auth = _mapping(settings["auth"], f"{where}: configs.{host}.auth")
            config.auths[key] = AuthConfig.from_mapping(auth, f"{where}: configs.{host}.auth")
        if settings.get("tls"):
            tls = _mapping(settings["tls"], f"{where}: configs.{host}.tls")
            config.tls[key] = TLSConfig(str(tls.get("ca_file") or ""), str(tls.get("cert_file") or ""),
                                        str(tls.get("key_file") or ""), bool(tls.get("insecure_skip_verify")))
    return config


def load_registries(path: Path | str | None = DEFAULT_REGISTRIES_PATH) -> RegistryConfig:
    """Read registries.yaml; a missing file means no mirrors and no credentials."""
    if path is None:
        return RegistryConfig()
    path = Path(path)
    try:
        text = path.read_text()
    except FileNotFoundError:
        return RegistryConfig()
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as err:
        raise RegistryConfigError(f"{path}: not valid YAML: {err}") from err
    return parse_registries(data, str(path))


def credentials_from_docker_config(document: Mapping[str, Any] | str | bytes) -> dict[str, AuthConfig]:
    """Credentials per host from a Docker config (`{"auths": {host: {...}}}`) or a legacy .dockercfg (`{host: ...}`)."""
    if isinstance(document, str | bytes):
        try:
            document = json.loads(document)
        except ValueError as err:
            raise RegistryConfigError("docker config is not JSON") from err
    if not isinstance(document, Mapping):
        raise RegistryConfigError("docker config must be a JSON object")
    auths = document.get("auths", document)
    if not isinstance(auths, Mapping):
        raise RegistryConfigError("docker config `auths` must be an object")
    found: dict[str, AuthConfig] = {}
    for host, entry in auths.items():
        if isinstance(entry, Mapping):
            found.setdefault(normalize_host(host), AuthConfig.from_mapping(entry, f"docker config auths.{host}"))
    return found


def credentials_from_secrets(secrets: Iterable[Mapping[str, Any]]) -> dict[str, AuthConfig]:
    """Credentials from a pod's imagePullSecrets (Secret objects of type dockerconfigjson or dockercfg), first wins."""
    found: dict[str, AuthConfig] = {}
    for secret in secrets:
        data = secret.get("data") or {}
        encoded = data.get(".dockerconfigjson") or data.get(".dockercfg")
        if not encoded:
            continue
        try:
            decoded = base64.b64decode(encoded, validate=True)
        except binascii.Error as err:
            name = (secret.get("metadata") or {}).get("name", "?")
            raise RegistryConfigError(f"secret {name}: docker config is not base64") from err
        for host, auth in credentials_from_docker_config(decoded).items():
            found.setdefault(host, auth)
    return found

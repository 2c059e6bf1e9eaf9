"""Where the API server is and how to authenticate to it: kubeconfig files or in-cluster settings."""

from __future__ import annotations

import base64
import os
import ssl
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

SERVICE_ACCOUNT_DIR = Path("/var/run/secrets/kubernetes.io/serviceaccount")
TOKEN_REFRESH_SECONDS = 60.0
"""How often a token file is read again (service account tokens rotate), as client-go does."""


class ConfigError(Exception):
    """The kubeconfig or in-cluster environment cannot produce a usable client configuration."""


@dataclass
class ClientConfig:
    """Everything an ApiClient needs: server URL, TLS context (None for http://) and auth headers."""

    server: str
    ssl_context: ssl.SSLContext | None = None
    headers: dict[str, str] = field(default_factory=dict)
    token_file: str = ""
    tls_server_name: str = ""
    _token: str = field(default="", init=False, repr=False)
    _token_read: float = field(default=float("-inf"), init=False, repr=False)

    def request_headers(self) -> dict[str, str]:
        """The static headers plus a bearer token from token_file, re-read once a minute so rotation works."""
        if not self.token_file:
            return self.headers
        now = time.monotonic()
        if now - self._token_read >= TOKEN_REFRESH_SECONDS:
            self._token = Path(self.token_file).read_text().strip()
            self._token_read = now
        return {**self.headers, "Authorization": f"Bearer {self._token}"}


def load_config(kubeconfig: str | os.PathLike[str] | None = None, context: str | None = None) -> ClientConfig:
    """client-go's order: an explicit kubeconfig, else in-cluster, else $KUBECONFIG or ~/.kube/config."""
    if kubeconfig:
        return load_kubeconfig(kubeconfig, context)
    if os.environ.get("KUBERNETES_SERVICE_HOST") and (SERVICE_ACCOUNT_DIR / "token").exists():
        return load_incluster()
    return load_kubeconfig(None, context)


def load_incluster(sa_dir: Path = SERVICE_ACCOUNT_DIR) -> ClientConfig:
    """The pod's service account: KUBERNETES_SERVICE_HOST/PORT, its token file and the cluster CA."""
    host = os.environ.get("KUBERNETES_SERVICE_HOST", "")
    port = os.environ.get("KUBERNETES_SERVICE_PORT", "")
    if not host or not port:
        raise ConfigError("not in a cluster: KUBERNETES_SERVICE_HOST and KUBERNETES_SERVICE_PORT must be set")
    token = sa_dir / "token"
    if not token.exists():
        raise ConfigError(f"not in a cluster: {token} does not exist")
    if ":" in host:
        host = f"[{host}]"
    ctx = ssl.create_default_context(cafile=str(sa_dir / "ca.crt"))
    return ClientConfig(server=f"https://{host}:{port}", ssl_context=ctx, token_file=str(token))


def kubeconfig_paths(path: str | os.PathLike[str] | None = None) -> list[Path]:
    """The files to merge: the explicit one, else each of $KUBECONFIG, else ~/.kube/config."""
    if path:
        return [Path(path)]
    env = os.environ.get("KUBECONFIG", "")
    if env:
        return [Path(p) for p in env.split(os.pathsep) if p]
    return [Path.home() / ".kube" / "config"]


def load_kubeconfig(path: str | os.PathLike[str] | None = None, context: str | None = None) -> ClientConfig:
    """The configuration of a kubeconfig context (the current one unless named)."""
    merged = _merge(kubeconfig_paths(path))
    name = context or merged["current-context"]
    if not name:
        raise ConfigError("kubeconfig has no current-context")
    ctx, _ = _named(merged, "contexts", name)
    cluster, cluster_dir = _named(merged, "clusters", ctx.get("cluster", ""))
    user, user_dir = _named(merged, "users", ctx["user"]) if ctx.get("user") else ({}, Path("."))
    server = cluster.get("server", "")
    if not server:
        raise ConfigError(f"cluster {ctx.get('cluster')!r} has no server")
    if user.get("exec") or user.get("auth-provider"):
        raise ConfigError("kubeconfig credential plugins (exec, auth-provider) are not supported")
    headers: dict[str, str] = {}
    if user.get("token"):
        headers["Authorization"] = f"Bearer {user['token']}"
    elif user.get("username"):
        basic = base64.b64encode(f"{user['username']}:{user.get('password', '')}".encode()).decode()
        headers["Authorization"] = f"Basic {basic}"
    token_file = "" if user.get("token") else _path(user.get("tokenFile"), user_dir)
    ssl_context = None
    if server.startswith("https://"):
        ssl_context = _ssl_context(cluster, cluster_dir, user, user_dir)
    return ClientConfig(server=server.rstrip("/"), ssl_context=ssl_context, headers=headers, token_file=token_file,
                        tls_server_name=cluster.get("tls-server-name", ""))


def _merge(paths: list[Path]) -> dict[str, Any]:
    """Merge kubeconfig files as kubectl does: the first file to define a name or current-context wins."""
    merged: dict[str, Any] = {"current-context": "", "clusters": {}, "users": {}, "contexts": {}}
    found = False
    for path in paths:
        if not path.exists():
            continue
        found = True
        data = yaml.safe_load(path.read_text()) or {}
        if not isinstance(data, dict):
            raise ConfigError(f"{path}: not a kubeconfig")
        merged["current-context"] = merged["current-context"] or data.get("current-context", "")
        for section, inner in (("clusters", "cluster"), ("users", "user"), ("contexts", "context")):
            for entry in data.get(section) or []:
                merged[section].setdefault(entry["name"], (entry.get(inner) or {}, path.parent))
    if not found:
        raise ConfigError(f"no kubeconfig found at {', '.join(map(str, paths))}")
    return merged


def _named(merged: dict[str, Any], section: str, name: str) -> tuple[dict[str, Any], Path]:
    try:
        return merged[section][name]
    except KeyError:
        raise ConfigError(f"kubeconfig has no {section[:-1]} named {name!r}") from None


def _path(value: str | None, base: Path) -> str:
    """A file named in a kubeconfig, relative to the kubeconfig's own folder."""
    return str(base / Path(value).expanduser()) if value else ""


def _data(entry: dict[str, Any], key: str, base: Path) -> bytes | None:
    """The PEM of `key`-data (base64) or of the file `key` names."""
    if entry.get(f"{key}-data"):
        return base64.b64decode(entry[f"{key}-data"])
    if entry.get(key):
        return Path(_path(entry[key], base)).read_bytes()
    return None


def _ssl_context(cluster: dict[str, Any], cluster_dir: Path, user: dict[str, Any], user_dir: Path) -> ssl.SSLContext:
    """Verify the server by the cluster CA (system CAs without one) and present the user's certificate."""
    ca = _data(cluster, "certificate-authority", cluster_dir)
    ctx = ssl.create_default_context(cadata=ca.decode() if ca else None)
    if cluster.get("insecure-skip-tls-verify"):
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
    cert = _data(user, "client-certificate", user_dir)
    key = _data(user, "client-key", user_dir)
    if cert and key:
        with tempfile.TemporaryDirectory() as tmp:
            cert_path, key_path = Path(tmp) / "tls.crt", Path(tmp) / "tls.key"
            cert_path.write_bytes(cert)
            key_path.touch(mode=0o600)
            key_path.write_bytes(key)
            ctx.load_cert_chain(cert_path, key_path)
    elif cert or key:
        raise ConfigError("a client certificate needs both client-certificate and client-key")
    return ctx

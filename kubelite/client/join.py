"""Join a cluster with a server URL and its node token (k3s's `--server URL --token TOKEN`)."""

from __future__ import annotations

import asyncio
import hashlib
import http.client
import ssl
from pathlib import Path
from urllib.parse import urlsplit

from kubelite.client.config import ClientConfig, ConfigError
from kubelite.client.rest import ApiClient

CLIENT_CA_PATH = "/v1-kubelite/client-ca"
"""For authenticated agents: the CA of client certificates, so a kubelet can verify the API server's (k3s serves
the same as /v1-k3s/client-ca.crt)."""
NODE_CREDENTIALS_PATH = "/v1-kubelite/node-credentials"
"""POST {"nodeName": NAME} with the node token: the node's own client certificate and key."""


def parse_token(token: str) -> tuple[str, str]:
    """(CA hash or "", secret) from `K10<sha256 of the CA>::server:<secret>` or a bare secret."""
    if token.startswith("K10") and "::" in token:
        ca_hash, _, credentials = token[3:].partition("::")
        return ca_hash, credentials.partition(":")[2] or credentials
    return "", token


def fetch_ca(server: str) -> bytes:
    """The server CA from GET /cacerts; the TLS peer is not trusted yet, so the caller must pin the result."""
    parts = urlsplit(server)
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    conn = http.client.HTTPSConnection(parts.hostname or "", parts.port or 443, context=context, timeout=10)
    try:
        conn.request("GET", "/cacerts")
        response = conn.getresponse()
        body = response.read()
    except OSError as exc:
        raise ConfigError(f"cannot reach {server}: {exc}; check --server and that the server is running") from None
    finally:
        conn.close()
    if response.status != 200:
        raise ConfigError(f"{server}/cacerts answered {response.status}: is this a kubelite server?")
    return body


def join_config(server: str, token: str) -> ClientConfig:
    """A client configuration trusting the server's CA (checked against the token's hash) with the token."""
    ca_hash, secret = parse_token(token)
    ca = fetch_ca(server)
    if ca_hash and hashlib.sha256(ca).hexdigest() != ca_hash:
        raise ConfigError("the server's CA does not match the token's hash: wrong --token for this --server, or "
                          "someone is in between; copy the token again from DATA/server/node-token")
    context = ssl.create_default_context(cadata=ca.decode())
    return ClientConfig(server=server.rstrip("/"), ssl_context=context, headers={"Authorization": f"Bearer {secret}"})


def _store_credentials(cert: Path, key: Path, issued: dict[str, str]) -> None:
    """Keep the issued certificate and its key (mode 0600) for the agent's next start."""
    key.parent.mkdir(parents=True, exist_ok=True)
    key.touch(mode=0o600)
    key.write_text(issued["key"])
    cert.write_text(issued["cert"])


async def node_client_config(config: ClientConfig, node_name: str, directory: Path) -> ClientConfig:
    """The agent's own identity: a client certificate for system:node:NAME, obtained once with the node token and
    kept in directory; the returned configuration talks with it instead of the token."""
    cert, key = directory / "client-kubelet.crt", directory / "client-kubelet.key"
    if not all(await asyncio.gather(asyncio.to_thread(cert.exists), asyncio.to_thread(key.exists))):
        async with ApiClient(config) as client:
            issued = await client.request("POST", NODE_CREDENTIALS_PATH, body={"nodeName": node_name})
        await asyncio.to_thread(_store_credentials, cert, key, issued)
    assert config.ssl_context is not None
    config.ssl_context.load_cert_chain(cert, key)
    headers = {k: v for k, v in config.headers.items() if k.lower() != "authorization"}
    return ClientConfig(server=config.server, ssl_context=config.ssl_context, headers=headers)

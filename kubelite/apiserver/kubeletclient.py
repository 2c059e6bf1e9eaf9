"""The API server as a client of kubelets: its kubelet-client certificate, node endpoints, HTTPS and raw upgrades.

The certificate (user `kube-apiserver-kubelet-client`, group `system:masters`) is issued once from the cluster's
client CA and kept with the server's TLS files. Kubelet serving certificates are not verified, as upstream's
API server does not verify them unless given a kubelet CA.
"""

from __future__ import annotations

import asyncio
import datetime
import os
import ssl
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
from cryptography import x509
from cryptography.exceptions import InvalidSignature

from kubelite.apiserver import pki
from kubelite.client.bodies import read_at_most

KUBELET_CLIENT_USER = "kube-apiserver-kubelet-client"
KUBELET_CLIENT_GROUPS = ["system:masters"]
CERT_STEM = "client-kube-apiserver-kubelet"
DEFAULT_KUBELET_PORT = 10250
RENEW_BEFORE = datetime.timedelta(days=90)
MAX_ERROR_BODY = 64 * 1024

Obj = dict[str, Any]


class KubeletRefused(Exception):
    """The kubelet answered with an error instead of what was asked (its code and plain-text message)."""

    def __init__(self, code: int, message: str):
        super().__init__(message)
        self.code = code
        self.message = message


class NoAddress(Exception):
    """The node reports no address to reach its kubelet at."""


def _usable(cert_pem: bytes, ca_pem: bytes) -> bool:
    try:
        cert = x509.load_pem_x509_certificate(cert_pem)
        cert.verify_directly_issued_by(x509.load_pem_x509_certificate(ca_pem))
    except (ValueError, TypeError, InvalidSignature):
        return False
    return cert.not_valid_after_utc - datetime.datetime.now(datetime.UTC) > RENEW_BEFORE


def _write(path: Path, data: bytes, mode: int) -> None:
    """Replace a file atomically with the given mode."""
    scratch = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(scratch, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    try:
        os.write(fd, data)
    finally:
        os.close(fd)
    os.replace(scratch, path)


def ensure_client_certificate(tls: pki.Pki) -> tuple[str, str]:
    """The kubelet-client certificate and key files in the TLS directory, (re)issued when missing or expiring."""
    cert_path, key_path = tls.tls_dir / f"{CERT_STEM}.crt", tls.tls_dir / f"{CERT_STEM}.key"
    try:
        if _usable(cert_path.read_bytes(), tls.client_ca.cert_pem) and key_path.exists():
            return str(cert_path), str(key_path)
    except FileNotFoundError:
        pass
    cert_pem, key_pem = pki.issue_client_cert(tls, KUBELET_CLIENT_USER, KUBELET_CLIENT_GROUPS)
    _write(key_path, key_pem, 0o600)
    _write(cert_path, cert_pem, 0o644)
    return str(cert_path), str(key_path)


def node_endpoint(node: Obj) -> tuple[str, int]:
    """Where the node's kubelet listens: its InternalIP (else Hostname) and daemonEndpoints' kubelet port."""
    status = node.get("status") or {}
    addresses = status.get("addresses") or []
    by_type = {a.get("type"): a.get("address") for a in addresses if isinstance(a, dict) and a.get("address")}
    host = by_type.get("InternalIP") or by_type.get("Hostname")
    if not host:
        raise NoAddress(f"no preferred addresses found; known addresses: {addresses}")
    port = ((status.get("daemonEndpoints") or {}).get("kubeletEndpoint") or {}).get("Port") or DEFAULT_KUBELET_PORT
    return host, int(port)


def host_port(host: str, port: int) -> str:
    """host:port, with brackets for IPv6."""
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


async def _read_refusals(request: aiohttp.ClientRequest, handler: Any) -> aiohttp.ClientResponse:
    """Client middleware: an upgrade the kubelet refuses raises KubeletRefused with the kubelet's message."""
    response = await handler(request)
    if request.headers.get("Upgrade") and response.status != 101:
        body = (await read_at_most(response.content, MAX_ERROR_BODY))[:MAX_ERROR_BODY]
        response.release()
        raise KubeletRefused(response.status, body.decode(errors="replace").strip())
    return response


@dataclass
class UpgradedConnection:
    """A raw connection to a kubelet after its 101 answer."""

    reader: asyncio.StreamReader
    writer: asyncio.StreamWriter
    headers: dict[str, str]


class KubeletClient:
    """HTTPS and WebSocket requests to kubelets with the API server's kubelet-client certificate."""

    def __init__(self, tls: pki.Pki):
        self.cert_file, self.key_file = ensure_client_certificate(tls)
        self.ssl = ssl.create_default_context()
        self.ssl.check_hostname = False
        self.ssl.verify_mode = ssl.CERT_NONE
        self.ssl.load_cert_chain(self.cert_file, self.key_file)
        self._session: aiohttp.ClientSession | None = None

    @property
    def session(self) -> aiohttp.ClientSession:
        """The shared client session (created in the running loop on first use)."""
        if self._session is None or self._session.closed:
            self._session = aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(ssl=self.ssl, limit=0),
                timeout=aiohttp.ClientTimeout(total=None, sock_connect=10),
                middlewares=(_read_refusals,), auto_decompress=False)
        return self._session

    async def close(self) -> None:
        """Close the session and its connections."""
        if self._session is not None:
            await self._session.close()

    async def upgrade(self, host: str, port: int, method: str, path_qs: str,
                      headers: list[tuple[str, str]]) -> UpgradedConnection:
        """Send a raw upgrade request (legacy SPDY) and return the connection after 101; KubeletRefused otherwise."""
        reader, writer = await asyncio.open_connection(host, port, ssl=self.ssl, server_hostname=host)
        try:
            head = [f"{method} {path_qs} HTTP/1.1", f"Host: {host_port(host, port)}", "Content-Length: 0",
                    *(f"{name}: {value}" for name, value in headers)]
            writer.write(("\r\n".join(head) + "\r\n\r\n").encode())
            await writer.drain()
            status_line, *lines = (await reader.readuntil(b"\r\n\r\n")).decode("latin-1").split("\r\n")
            parts = status_line.split(" ", 2)
            code = int(parts[1]) if len(parts) > 1 and parts[1].isdigit() else 502
            answer = {}
            for line in lines:
                name, sep, value = line.partition(":")
                if sep:
                    answer[name.strip().lower()] = value.strip()
            if code != 101:
                length = int(answer.get("content-length", MAX_ERROR_BODY) or 0)
                body = await reader.read(min(length, MAX_ERROR_BODY)) if length else b""
                raise KubeletRefused(code, body.decode(errors="replace").strip())
            return UpgradedConnection(reader, writer, answer)
        except BaseException:
            writer.close()
            raise

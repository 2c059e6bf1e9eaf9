"""PKI: certificates created once with the right modes and SANs, reused, reissued; TLS and kubeconfig work."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import ipaddress
import json
import shutil
import socket
import ssl
import stat
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest
import yaml
from aiohttp import web
from cryptography import x509
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from kubelite.apiserver.authn import Authenticator, UserInfo
from kubelite.apiserver.pki import (
    Pki,
    ensure_pki,
    ensure_token,
    issue_client_cert,
    node_token,
    server_ssl_context,
    write_kubeconfig,
)

KEYS = ("server-ca.key", "client-ca.key", "serving-kube-apiserver.key", "client-admin.key")
CERTS = ("server-ca.crt", "client-ca.crt", "serving-kube-apiserver.crt", "client-admin.crt")


def _cert(pem: bytes) -> x509.Certificate:
    return x509.load_pem_x509_certificate(pem)


def _sans(pem: bytes) -> tuple[set[str], set[str]]:
    ext = _cert(pem).extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    ips = {str(ip) for ip in ext.get_values_for_type(x509.IPAddress)}
    return set(ext.get_values_for_type(x509.DNSName)), ips


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


@pytest.fixture
def pki(tmp_path: Path) -> Pki:
    return ensure_pki(tmp_path / "server" / "tls", ["192.0.2.10", "api.example.test"])


def test_creates_files_with_modes(pki: Pki) -> None:
    for name in KEYS:
        assert _mode(pki.tls_dir / name) == 0o600, name
    for name in CERTS:
        assert (pki.tls_dir / name).is_file(), name
        assert _mode(pki.tls_dir / name) & 0o077 in (0o044, 0o000), name
    assert pki.serving.cert_pem == (pki.tls_dir / "serving-kube-apiserver.crt").read_bytes()
    assert pki.admin.key_path == pki.tls_dir / "client-admin.key"


def test_certificate_contents(pki: Pki) -> None:
    server_ca, client_ca = _cert(pki.server_ca.cert_pem), _cert(pki.client_ca.cert_pem)
    assert _cn(pki.server_ca.cert_pem).startswith("kubelite-server-ca@")
    assert server_ca.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    assert (server_ca.not_valid_after_utc - server_ca.not_valid_before_utc).days >= 3649
    assert server_ca.subject != client_ca.subject

    serving = _cert(pki.serving.cert_pem)
    serving.verify_directly_issued_by(server_ca)
    assert 364 <= (serving.not_valid_after_utc - serving.not_valid_before_utc).days <= 366
    eku = serving.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert ExtendedKeyUsageOID.SERVER_AUTH in eku

    admin = _cert(pki.admin.cert_pem)
    admin.verify_directly_issued_by(client_ca)
    assert _cn(pki.admin.cert_pem) == "system:admin"
    orgs = admin.subject.get_attributes_for_oid(NameOID.ORGANIZATION_NAME)
    assert [a.value for a in orgs] == ["system:masters"]
    eku = admin.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert ExtendedKeyUsageOID.CLIENT_AUTH in eku


def test_serving_sans(pki: Pki) -> None:
    dns, ips = _sans(pki.serving.cert_pem)
    assert {
        "localhost", "kubernetes", "kubernetes.default", "kubernetes.default.svc",
        "kubernetes.default.svc.cluster.local", socket.gethostname(), "api.example.test",
    } <= dns
    assert {"127.0.0.1", "::1", "10.43.0.1", "192.0.2.10"} <= ips
    assert not any(_is_ip(name) for name in dns)


def _is_ip(text: str) -> bool:
    try:
        ipaddress.ip_address(text)
    except ValueError:
        return False
    return True


def test_reused_on_second_call(pki: Pki) -> None:
    again = ensure_pki(pki.tls_dir, ["192.0.2.10", "api.example.test"])
    assert again == pki
    assert ensure_pki(pki.tls_dir, []).serving.cert_pem == pki.serving.cert_pem  # fewer hosts: still covered


def test_reissued_when_a_host_is_added(pki: Pki) -> None:
    again = ensure_pki(pki.tls_dir, ["198.51.100.7", "new.example.test"])
    assert again.server_ca == pki.server_ca and again.client_ca == pki.client_ca and again.admin == pki.admin
    assert again.serving.cert_pem != pki.serving.cert_pem
    _cert(again.serving.cert_pem).verify_directly_issued_by(_cert(pki.server_ca.cert_pem))
    dns, ips = _sans(again.serving.cert_pem)
    assert {"new.example.test", "api.example.test"} <= dns  # names already in use are kept
    assert {"198.51.100.7", "192.0.2.10"} <= ips


def test_unusable_leaf_is_reissued(pki: Pki) -> None:
    pki.admin.key_path.write_bytes(b"garbage")
    again = ensure_pki(pki.tls_dir, [])
    assert again.admin.cert_pem != pki.admin.cert_pem
    assert _mode(again.admin.key_path) == 0o600
    (pki.tls_dir / "server-ca.key").unlink()  # a new server CA: the serving cert must follow it
    third = ensure_pki(pki.tls_dir, [])
    assert third.server_ca.cert_pem != pki.server_ca.cert_pem
    _cert(third.serving.cert_pem).verify_directly_issued_by(_cert(third.server_ca.cert_pem))


def test_issue_client_cert(pki: Pki) -> None:
    cert_pem, key_pem = issue_client_cert(pki, "system:node:worker-1", ["system:nodes"])
    cert = _cert(cert_pem)
    cert.verify_directly_issued_by(_cert(pki.client_ca.cert_pem))
    assert cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value == "system:node:worker-1"
    assert b"PRIVATE KEY" in key_pem
    ctx = ssl.create_default_context()
    ctx.load_cert_chain(_write(pki.tls_dir / "n.crt", cert_pem), _write(pki.tls_dir / "n.key", key_pem))


def _write(path: Path, data: bytes) -> Path:
    path.write_bytes(data)
    return path


def test_token_and_node_token(tmp_path: Path) -> None:
    path = tmp_path / "server" / "token"
    token = ensure_token(path)
    assert len(token) == 32 and int(token, 16) >= 0
    assert _mode(path) == 0o600
    assert ensure_token(path) == token
    ca = b"-----BEGIN CERTIFICATE-----\nabc\n-----END CERTIFICATE-----\n"
    assert node_token(ca, token) == f"K10{hashlib.sha256(ca).hexdigest()}::server:{token}"


def test_kubeconfig_file(pki: Pki, tmp_path: Path) -> None:
    path = tmp_path / "deep" / "dir" / "kubeconfig.yaml"
    write_kubeconfig(path, "https://127.0.0.1:6443", pki)
    assert _mode(path) == 0o600
    config = yaml.safe_load(path.read_text())
    assert config["current-context"] == "default"
    cluster = config["clusters"][0]["cluster"]
    assert cluster["server"] == "https://127.0.0.1:6443"
    assert base64.b64decode(cluster["certificate-authority-data"]) == pki.server_ca.cert_pem
    user = config["users"][0]["user"]
    admin = _cert(base64.b64decode(user["client-certificate-data"]))
    admin.verify_directly_issued_by(_cert(pki.client_ca.cert_pem))
    assert base64.b64decode(user["client-key-data"]) == pki.admin.key_pem
    assert config["contexts"][0] == {"name": "default", "context": {"cluster": "default", "user": "default"}}


def test_server_context_settings(pki: Pki) -> None:
    ctx = server_ssl_context(pki)
    assert ctx.verify_mode == ssl.CERT_OPTIONAL
    assert ctx.minimum_version == ssl.TLSVersion.TLSv1_2
    (ca,) = ctx.get_ca_certs()
    assert dict(rdn[0] for rdn in ca["subject"])["commonName"] == _cn(pki.client_ca.cert_pem)


def _cn(pem: bytes) -> str:
    return str(_cert(pem).subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value)


# --- a real TLS server on loopback -----------------------------------------------------------

TOKEN = "0123456789abcdef0123456789abcdef"


@pytest.fixture
async def server(pki: Pki) -> AsyncIterator[str]:
    authn = Authenticator({TOKEN: UserInfo("system:admin", groups=("system:masters",))})

    async def whoami(request: web.Request) -> web.Response:
        user = authn.authenticate(request)
        if user is None:
            return web.json_response({"kind": "Status", "code": 401}, status=401)
        return web.json_response({"username": user.username, "groups": list(user.groups)})

    app = web.Application()
    app.router.add_get("/whoami", whoami)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0, ssl_context=server_ssl_context(pki))
    await site.start()
    port = runner.addresses[0][1]
    yield f"https://127.0.0.1:{port}"
    await runner.cleanup()


def _client_context(pki: Pki, cert: Path | None = None, key: Path | None = None) -> ssl.SSLContext:
    ctx = ssl.create_default_context(cadata=pki.server_ca.cert_pem.decode())
    if cert is not None:
        ctx.load_cert_chain(cert, key)
    return ctx


async def _get(url: str, ctx: ssl.SSLContext, headers: dict[str, str] | None = None) -> tuple[int, dict]:
    async with aiohttp.ClientSession() as session:
        async with session.get(f"{url}/whoami", ssl=ctx, headers=headers) as resp:
            return resp.status, await resp.json()


async def test_admin_client_certificate(pki: Pki, server: str) -> None:
    status, body = await _get(server, _client_context(pki, pki.admin.cert_path, pki.admin.key_path))
    assert status == 200
    assert body == {"username": "system:admin", "groups": ["system:masters", "system:authenticated"]}


async def test_issued_client_certificate(pki: Pki, server: str, tmp_path: Path) -> None:
    cert, key = issue_client_cert(pki, "system:node:n1", ["system:nodes"])
    ctx = _client_context(pki, _write(tmp_path / "n.crt", cert), _write(tmp_path / "n.key", key))
    status, body = await _get(server, ctx)
    assert status == 200
    assert body == {"username": "system:node:n1", "groups": ["system:nodes", "system:authenticated"]}


async def test_bearer_token(pki: Pki, server: str) -> None:
    status, body = await _get(server, _client_context(pki), {"Authorization": f"Bearer {TOKEN}"})
    assert (status, body["username"]) == (200, "system:admin")
    status, _ = await _get(server, _client_context(pki), {"Authorization": "Bearer wrong"})
    assert status == 401


async def test_no_credentials(pki: Pki, server: str) -> None:
    status, body = await _get(server, _client_context(pki))
    assert status == 401 and body["code"] == 401


async def test_foreign_client_certificate_is_rejected(pki: Pki, server: str, tmp_path: Path) -> None:
    foreign = ensure_pki(tmp_path / "foreign", [])
    ctx = _client_context(pki, foreign.admin.cert_path, foreign.admin.key_path)
    with pytest.raises(aiohttp.ClientError):
        await _get(server, ctx)


async def test_alpn_is_http11_only(pki: Pki, server: str) -> None:
    ctx = _client_context(pki)
    ctx.set_alpn_protocols(["h2", "http/1.1"])
    host, port = server.removeprefix("https://").split(":")
    _, writer = await asyncio.open_connection(
        host, int(port), ssl=ctx, server_hostname="kubernetes.default.svc"
    )
    assert writer.get_extra_info("ssl_object").selected_alpn_protocol() == "http/1.1"
    writer.close()
    await writer.wait_closed()


async def test_kubeconfig_with_kubernetes_client(pki: Pki, server: str, tmp_path: Path) -> None:
    from kubernetes import client, config

    path = tmp_path / "kubeconfig.yaml"
    write_kubeconfig(path, server, pki)
    configuration = client.Configuration()
    config.load_kube_config(config_file=str(path), client_configuration=configuration)

    def call() -> object:
        with client.ApiClient(configuration) as api:
            method, url, headers, _, _ = api.param_serialize("GET", "/whoami", auth_settings=["BearerToken"])
            response = api.call_api(method, url, header_params=headers)
            response.read()
            return json.loads(response.data)

    body = await asyncio.to_thread(call)
    assert body == {"username": "system:admin", "groups": ["system:masters", "system:authenticated"]}


@pytest.mark.skipif(shutil.which("kubectl") is None, reason="kubectl not installed")
async def test_kubeconfig_with_kubectl(pki: Pki, server: str, tmp_path: Path) -> None:
    path = tmp_path / "kubeconfig.yaml"
    write_kubeconfig(path, server, pki)
    proc = await asyncio.create_subprocess_exec(
        "kubectl", "--kubeconfig", str(path), "get", "--raw", "/whoami",
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(proc.communicate(), 30)
    assert proc.returncode == 0, err.decode()
    assert json.loads(out)["username"] == "system:admin"

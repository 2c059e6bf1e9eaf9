"""The cluster's certificates, tokens and admin kubeconfig: created on first start, reused after."""

from __future__ import annotations

import base64
import contextlib
import datetime
import fcntl
import hashlib
import ipaddress
import os
import secrets
import socket
import ssl
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import yaml
from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

KUBERNETES_SERVICE_IP = "10.43.0.1"
DEFAULT_SANS = (
    "127.0.0.1", "::1", "localhost", "kubernetes", "kubernetes.default", "kubernetes.default.svc",
    "kubernetes.default.svc.cluster.local", KUBERNETES_SERVICE_IP,
)
CA_DAYS = 3650
LEAF_DAYS = 365
RENEW_BEFORE = datetime.timedelta(days=90)  # k3s renews leaf certificates expiring within 90 days at start

SanName = x509.DNSName | x509.IPAddress


@dataclass(frozen=True)
class KeyPair:
    """One certificate and its private key: where they live and their PEM bytes."""

    cert_path: Path
    key_path: Path
    cert_pem: bytes
    key_pem: bytes


@dataclass(frozen=True)
class Pki:
    """Every certificate the apiserver needs, as files (for ssl) and PEM bytes (for kubeconfigs)."""

    tls_dir: Path
    server_ca: KeyPair
    client_ca: KeyPair
    serving: KeyPair
    admin: KeyPair


def _now() -> datetime.datetime:
    """The current time in UTC, as cryptography wants it."""
    return datetime.datetime.now(datetime.UTC)


def _new_key() -> ec.EllipticCurvePrivateKey:
    """A fresh ECDSA P-256 key: small and fast to sign and verify, as k3s uses."""
    return ec.generate_private_key(ec.SECP256R1())


def _key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    """PEM of a private key in the SEC1 'EC PRIVATE KEY' form k3s writes."""
    fmt = serialization.PrivateFormat.TraditionalOpenSSL
    return key.private_bytes(serialization.Encoding.PEM, fmt, serialization.NoEncryption())


def _cert_pem(cert: x509.Certificate) -> bytes:
    """PEM of a certificate."""
    return cert.public_bytes(serialization.Encoding.PEM)


def _write(path: Path, data: bytes, mode: int) -> None:
    """Write a file atomically with the given mode, so a crash never leaves half a key behind."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    try:
        os.write(fd, data)
        os.fchmod(fd, mode)
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(tmp, path)


@contextlib.contextmanager
def _locked(directory: Path) -> Iterator[None]:
    """Hold an exclusive lock on the directory so two processes starting together create one PKI."""
    fd = os.open(directory / ".lock", os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


def _name(common_name: str, organizations: tuple[str, ...] | list[str] = ()) -> x509.Name:
    """An X.509 subject with organizations (groups) and a common name (user)."""
    attrs = [x509.NameAttribute(NameOID.ORGANIZATION_NAME, o) for o in organizations]
    attrs.append(x509.NameAttribute(NameOID.COMMON_NAME, common_name))
    return x509.Name(attrs)


def _new_ca(common_name: str) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
    """A self-signed CA certificate valid for ten years."""
    key = _new_key()
    now = _now()
    name = _name(common_name)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=CA_DAYS))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True, content_commitment=False, key_encipherment=False,
                data_encipherment=False, key_agreement=False, key_cert_sign=True, crl_sign=True,
                encipher_only=False, decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(key, hashes.SHA256())
    )
    return cert, key


def _new_leaf(
    ca_cert: x509.Certificate,
    ca_key: ec.EllipticCurvePrivateKey,
    subject: x509.Name,
    usage: x509.ObjectIdentifier,
    sans: list[SanName] | None = None,
) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
    """A one-year leaf certificate for server or client use, signed by the CA."""
    key = _new_key()
    now = _now()
    builder = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(ca_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(min(now + datetime.timedelta(days=LEAF_DAYS), ca_cert.not_valid_after_utc))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True, content_commitment=False, key_encipherment=False,
                data_encipherment=False, key_agreement=False, key_cert_sign=False, crl_sign=False,
                encipher_only=False, decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False
        )
    )
    if sans:
        builder = builder.add_extension(x509.SubjectAlternativeName(sans), critical=False)
    return builder.sign(ca_key, hashes.SHA256()), key


def _san(entry: str) -> SanName:
    """An IP SAN for an address, a DNS SAN for anything else."""
    try:
        return x509.IPAddress(ipaddress.ip_address(entry))
    except ValueError:
        return x509.DNSName(entry)


def _sans_of(cert: x509.Certificate) -> list[SanName]:
    """The DNS and IP SANs a certificate carries."""
    try:
        ext = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return []
    return [n for n in ext if isinstance(n, x509.DNSName | x509.IPAddress)]


def _load_pair(cert_path: Path, key_path: Path) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey] | None:
    """Load a certificate and its key if both exist, parse and belong together; None otherwise."""
    try:
        cert = x509.load_pem_x509_certificate(cert_path.read_bytes())
        key = serialization.load_pem_private_key(key_path.read_bytes(), password=None)
    except (OSError, ValueError):
        return None
    if not isinstance(key, ec.EllipticCurvePrivateKey) or key.public_key() != cert.public_key():
        return None
    return cert, key


def _store(
    cert_path: Path, key_path: Path, cert: x509.Certificate, key: ec.EllipticCurvePrivateKey
) -> KeyPair:
    """Write a certificate (0644) and its key (0600) and return them as a KeyPair."""
    key_pem, cert_pem = _key_pem(key), _cert_pem(cert)
    _write(key_path, key_pem, 0o600)
    _write(cert_path, cert_pem, 0o644)
    return KeyPair(cert_path, key_path, cert_pem, key_pem)


def _ensure_ca(tls_dir: Path, stem: str) -> tuple[KeyPair, x509.Certificate, ec.EllipticCurvePrivateKey]:
    """Load the CA `<stem>.crt/.key`, or create it (CN `kubelite-<stem>@<unix time>`) if unusable."""
    cert_path, key_path = tls_dir / f"{stem}.crt", tls_dir / f"{stem}.key"
    loaded = _load_pair(cert_path, key_path)
    if loaded is None:
        loaded = _new_ca(f"kubelite-{stem}@{int(time.time())}")
        pair = _store(cert_path, key_path, *loaded)
    else:
        pair = KeyPair(cert_path, key_path, cert_path.read_bytes(), key_path.read_bytes())
    return pair, loaded[0], loaded[1]


def _leaf_usable(cert: x509.Certificate, ca_cert: x509.Certificate) -> bool:
    """Whether a leaf was signed by this CA and is not about to expire."""
    try:
        cert.verify_directly_issued_by(ca_cert)
    except (ValueError, TypeError, InvalidSignature):
        return False
    return cert.not_valid_after_utc - _now() > RENEW_BEFORE


def _ensure_leaf(
    tls_dir: Path,
    stem: str,
    ca: tuple[x509.Certificate, ec.EllipticCurvePrivateKey],
    subject: x509.Name,
    usage: x509.ObjectIdentifier,
    sans: list[SanName] | None = None,
) -> KeyPair:
    """Reuse the leaf `<stem>.crt/.key` if valid, from this CA and covering `sans`; (re)issue it otherwise."""
    cert_path, key_path = tls_dir / f"{stem}.crt", tls_dir / f"{stem}.key"
    loaded = _load_pair(cert_path, key_path)
    if loaded is not None and _leaf_usable(loaded[0], ca[0]):
        have = _sans_of(loaded[0])
        missing = [s for s in sans or () if s not in have]
        if not missing:
            return KeyPair(cert_path, key_path, cert_path.read_bytes(), key_path.read_bytes())
        sans = have + missing  # keep names clients already use, as k3s does
    cert, key = _new_leaf(ca[0], ca[1], subject, usage, sans)
    return _store(cert_path, key_path, cert, key)


def serving_sans(hosts: list[str]) -> list[SanName]:
    """The serving certificate's SANs: loopback, the kubernetes Service names and IP, the host, `hosts`."""
    sans: list[SanName] = []
    for entry in (*DEFAULT_SANS, socket.gethostname(), *hosts):
        if entry.strip() and (san := _san(entry.strip())) not in sans:
            sans.append(san)
    return sans


def ensure_pki(tls_dir: Path, hosts: list[str]) -> Pki:
    """Create the CAs, serving and admin certificates in tls_dir if missing or unusable; reuse them after."""
    tls_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    with _locked(tls_dir):
        server_ca, server_ca_cert, server_ca_key = _ensure_ca(tls_dir, "server-ca")
        client_ca, client_ca_cert, client_ca_key = _ensure_ca(tls_dir, "client-ca")
        serving = _ensure_leaf(
            tls_dir, "serving-kube-apiserver", (server_ca_cert, server_ca_key), _name("kube-apiserver"),
            ExtendedKeyUsageOID.SERVER_AUTH, serving_sans(hosts),
        )
        admin = _ensure_leaf(
            tls_dir, "client-admin", (client_ca_cert, client_ca_key),
            _name("system:admin", ["system:masters"]), ExtendedKeyUsageOID.CLIENT_AUTH,
        )
    return Pki(tls_dir, server_ca, client_ca, serving, admin)


def ensure_signing_key(path: Path) -> ec.EllipticCurvePrivateKey:
    """The key that signs service account tokens, created once (mode 0600) and reused after."""
    with _locked(path.parent):
        if path.exists():
            key = serialization.load_pem_private_key(path.read_bytes(), password=None)
            if not isinstance(key, ec.EllipticCurvePrivateKey):
                raise TypeError(f"{path} is not an ECDSA key")
            return key
        key = _new_key()
        _write(path, _key_pem(key), 0o600)
        return key


def issue_client_cert(pki: Pki, common_name: str, organizations: list[str]) -> tuple[bytes, bytes]:
    """Issue a client certificate (CN user, O groups) from the client CA; returns (cert PEM, key PEM)."""
    ca_cert = x509.load_pem_x509_certificate(pki.client_ca.cert_pem)
    ca_key = serialization.load_pem_private_key(pki.client_ca.key_pem, password=None)
    if not isinstance(ca_key, ec.EllipticCurvePrivateKey):
        raise TypeError("client CA key is not an ECDSA key")
    cert, key = _new_leaf(ca_cert, ca_key, _name(common_name, organizations), ExtendedKeyUsageOID.CLIENT_AUTH)
    return _cert_pem(cert), _key_pem(key)


def ensure_token(path: Path) -> str:
    """Return the server token stored at path, creating it once (random hex, mode 0600)."""
    try:
        token = path.read_text().strip()
    except FileNotFoundError:
        token = ""
    if token:
        return token
    path.parent.mkdir(parents=True, exist_ok=True)
    token = secrets.token_hex(16)
    _write(path, f"{token}\n".encode(), 0o600)
    return token


def node_token(server_ca_pem: bytes, token: str) -> str:
    """The join token in k3s's format, pinning the server CA: `K10<sha256 of CA PEM>::server:<token>`."""
    return f"K10{hashlib.sha256(server_ca_pem).hexdigest()}::server:{token}"


def write_kubeconfig(path: Path, server_url: str, pki: Pki, client: tuple[bytes, bytes] | None = None) -> None:
    """Write a kubeconfig (cluster, user and context `default`) with mode 0600: the admin's, or `client`'s
    (cert PEM, key PEM)."""
    cert_pem, key_pem = client or (pki.admin.cert_pem, pki.admin.key_pem)

    def b64(data: bytes) -> str:
        return base64.b64encode(data).decode()

    config = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [
            {
                "name": "default",
                "cluster": {"server": server_url, "certificate-authority-data": b64(pki.server_ca.cert_pem)},
            }
        ],
        "users": [
            {
                "name": "default",
                "user": {
                    "client-certificate-data": b64(cert_pem),
                    "client-key-data": b64(key_pem),
                },
            }
        ],
        "contexts": [{"name": "default", "context": {"cluster": "default", "user": "default"}}],
        "current-context": "default",
        "preferences": {},
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    _write(path, yaml.safe_dump(config, sort_keys=False).encode(), 0o600)


def server_ssl_context(pki: Pki) -> ssl.SSLContext:
    """TLS 1.2+ server context: serving cert, optional client certs checked by the client CA, http/1.1."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.load_cert_chain(pki.serving.cert_path, pki.serving.key_path)
    ctx.load_verify_locations(cadata=pki.client_ca.cert_pem.decode())
    ctx.verify_mode = ssl.CERT_OPTIONAL
    ctx.set_alpn_protocols(["http/1.1"])
    return ctx

"""Service account tokens: the JWTs the API server signs for TokenRequest and accepts as bearer tokens.

Signed ES256 with the server's service-account key (kube-apiserver's --service-account-signing-key-file), with the
claims Kubernetes writes: iss, sub (system:serviceaccount:NS:NAME), aud, iat, nbf, exp, and a "kubernetes.io"
claim naming the namespace, the ServiceAccount and the object the token is bound to.
"""

from __future__ import annotations

import base64
import hashlib
import time
from typing import Any

import orjson
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature, encode_dss_signature

ISSUER = "https://kubernetes.default.svc.cluster.local"
"""Also the audience of tokens meant for the API server itself (the default audience)."""
MIN_EXPIRATION = 600
DEFAULT_EXPIRATION = 3600
SKEW = 60
"""Seconds of clock difference tolerated on nbf."""
_COORDINATE = 32


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def subject(namespace: str, name: str) -> str:
    """The username of a service account."""
    return f"system:serviceaccount:{namespace}:{name}"


class TokenSigner:
    """Issues and verifies service account tokens with one ECDSA P-256 key."""

    def __init__(self, key: ec.EllipticCurvePrivateKey, issuer: str = ISSUER):
        self.key = key
        self.public = key.public_key()
        self.issuer = issuer
        der = self.public.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
        self.key_id = _b64(hashlib.sha256(der).digest())

    def issue(self, namespace: str, name: str, uid: str, audiences: list[str], expires: int,
              bound: dict[str, str] | None = None) -> str:
        """A token for the service account, valid from now until `expires` (seconds since the epoch); `bound`
        names the object ({kind, name, uid}) whose lifetime the token is bound to."""
        now = int(time.time())
        scope: dict[str, Any] = {"namespace": namespace, "serviceaccount": {"name": name, "uid": uid}}
        if bound:
            scope[bound["kind"].lower()] = {"name": bound["name"], "uid": bound["uid"]}
        claims = {"iss": self.issuer, "sub": subject(namespace, name), "aud": audiences, "iat": now, "nbf": now,
                  "exp": expires, "kubernetes.io": scope}
        signing_input = (_b64(orjson.dumps({"alg": "ES256", "kid": self.key_id, "typ": "JWT"})) + "."
                         + _b64(orjson.dumps(claims)))
        r, s = decode_dss_signature(self.key.sign(signing_input.encode(), ec.ECDSA(hashes.SHA256())))
        signature = r.to_bytes(_COORDINATE, "big") + s.to_bytes(_COORDINATE, "big")
        return signing_input + "." + _b64(signature)

    def verify(self, token: str, audience: str = ISSUER) -> dict[str, Any] | None:
        """The claims of a token this signer issued, still valid and meant for `audience`; None otherwise."""
        parts = token.split(".")
        if len(parts) != 3:
            return None
        try:
            header = orjson.loads(_unb64(parts[0]))
            signature = _unb64(parts[2])
            if not isinstance(header, dict) or header.get("alg") != "ES256" or len(signature) != 2 * _COORDINATE:
                return None
            der = encode_dss_signature(int.from_bytes(signature[:_COORDINATE], "big"),
                                       int.from_bytes(signature[_COORDINATE:], "big"))
            self.public.verify(der, f"{parts[0]}.{parts[1]}".encode(), ec.ECDSA(hashes.SHA256()))
            claims = orjson.loads(_unb64(parts[1]))
        except (ValueError, InvalidSignature, orjson.JSONDecodeError):
            return None
        if not isinstance(claims, dict) or claims.get("iss") != self.issuer:
            return None
        now = time.time()
        audiences = claims.get("aud")
        audiences = [audiences] if isinstance(audiences, str) else audiences
        if not isinstance(audiences, list) or audience not in audiences:
            return None
        if not isinstance(claims.get("exp"), int) or claims["exp"] <= now or claims.get("nbf", 0) > now + SKEW:
            return None
        return claims

"""Service account tokens: what the signer issues, and every way a token stops being accepted."""

from __future__ import annotations

import base64
import time

import orjson
from cryptography.hazmat.primitives.asymmetric import ec

from kubelite.apiserver.authn import Authenticator
from kubelite.apiserver.satokens import ISSUER, TokenSigner

POD = {"kind": "Pod", "name": "web-0", "uid": "pod-uid"}


def _new_key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


def _claims(token: str) -> dict:
    payload = token.split(".")[1]
    return orjson.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))


def test_issued_token_carries_kubernetes_claims_and_verifies() -> None:
    signer = TokenSigner(_new_key())
    expires = int(time.time()) + 600
    token = signer.issue("ns", "robot", "sa-uid", [ISSUER], expires, POD)
    claims = signer.verify(token)
    assert claims is not None and claims == _claims(token)
    assert claims["sub"] == "system:serviceaccount:ns:robot" and claims["exp"] == expires
    assert claims["kubernetes.io"] == {"namespace": "ns", "serviceaccount": {"name": "robot", "uid": "sa-uid"},
                                       "pod": {"name": "web-0", "uid": "pod-uid"}}


def test_tokens_rejected_when_expired_foreign_tampered_or_for_another_audience() -> None:
    signer = TokenSigner(_new_key())
    now = int(time.time())
    assert signer.verify(signer.issue("ns", "robot", "u", [ISSUER], now - 1)) is None, "expired"
    assert signer.verify(TokenSigner(_new_key()).issue("ns", "robot", "u", [ISSUER], now + 600)) is None, "other key"
    assert signer.verify(signer.issue("ns", "robot", "u", ["vault"], now + 600)) is None, "other audience"
    assert signer.verify(signer.issue("ns", "robot", "u", ["vault"], now + 600), "vault") is not None
    header, payload, signature = signer.issue("ns", "robot", "u", [ISSUER], now + 600).split(".")
    claims = _claims(f"{header}.{payload}.{signature}")
    claims["sub"] = "system:serviceaccount:kube-system:admin"
    forged = base64.urlsafe_b64encode(orjson.dumps(claims)).rstrip(b"=").decode()
    assert signer.verify(f"{header}.{forged}.{signature}") is None, "payload changed after signing"
    for garbage in ("", "a.b", "a.b.c", f"{header}.{payload}.", "x" * 50):
        assert signer.verify(garbage) is None


def test_authenticator_maps_a_pod_bound_token_to_the_service_account() -> None:
    signer = TokenSigner(_new_key())
    authenticator = Authenticator()
    token = signer.issue("ns", "robot", "sa-uid", [ISSUER], int(time.time()) + 600, POD)
    assert authenticator.user_from_authorization(f"Bearer {token}") is None, "no signer: no service accounts"
    authenticator.signer = signer
    user = authenticator.user_from_authorization(f"Bearer {token}")
    assert user is not None and user.username == "system:serviceaccount:ns:robot" and user.uid == "sa-uid"
    assert set(user.groups) == {"system:serviceaccounts", "system:serviceaccounts:ns", "system:authenticated"}
    assert user.extra == {"authentication.kubernetes.io/pod-name": ["web-0"],
                          "authentication.kubernetes.io/pod-uid": ["pod-uid"]}

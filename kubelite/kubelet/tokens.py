"""Service account tokens for projected volumes, as the kubelet's token manager keeps them.

Each is requested from the API server (TokenRequest for the pod's ServiceAccount, bound to the pod) and reused
until 80 % of its lifetime has passed; the volume resync then writes the fresh one into the pod.
"""

from __future__ import annotations

import time
from datetime import datetime
from typing import Any

from kubelite.client import ApiClient
from kubelite.client.resources import SERVICEACCOUNTS

Obj = dict[str, Any]
REFRESH_AT = 0.8


class TokenManager:
    """Tokens by (pod uid, ServiceAccount, audience, lifetime); expired ones are dropped as new ones arrive."""

    def __init__(self, client: ApiClient):
        self.client = client
        self._tokens: dict[tuple[str, str, str, int], tuple[str, float, float]] = {}

    async def token(self, pod: Obj, audience: str, seconds: int) -> str:
        """A valid token for the pod's ServiceAccount (the API server's own audience when audience is "")."""
        meta = pod["metadata"]
        account = (pod.get("spec") or {}).get("serviceAccountName") or "default"
        key = (meta["uid"], account, audience, seconds)
        now = time.time()
        cached = self._tokens.get(key)
        if cached is not None and now < cached[1] + REFRESH_AT * (cached[2] - cached[1]):
            return cached[0]
        request = {"apiVersion": "authentication.k8s.io/v1", "kind": "TokenRequest", "metadata": {"name": account},
                   "spec": {"audiences": [audience] if audience else [], "expirationSeconds": seconds,
                            "boundObjectRef": {"kind": "Pod", "apiVersion": "v1", "name": meta["name"],
                                               "uid": meta["uid"]}}}
        status = (await self.client.create(SERVICEACCOUNTS, request, meta["namespace"], subresource="token"))["status"]
        expires = datetime.fromisoformat(status["expirationTimestamp"]).timestamp()
        self._tokens = {k: v for k, v in self._tokens.items() if v[2] > now}
        self._tokens[key] = (status["token"], now, expires)
        return status["token"]

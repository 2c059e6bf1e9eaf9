"""Root CA certificate publisher: a `kube-root-ca.crt` ConfigMap with the cluster CA in every namespace."""

from __future__ import annotations

import logging
import ssl
from typing import Any

from kubelite.client.controller import Controller
from kubelite.client.errors import ApiError, is_already_exists
from kubelite.client.informer import SharedInformerFactory
from kubelite.client.resources import CONFIGMAPS, NAMESPACES
from kubelite.client.rest import ApiClient
from kubelite.controllers.serviceaccount import active

log = logging.getLogger(__name__)

Obj = dict[str, Any]
CONFIGMAP = "kube-root-ca.crt"
KEY = "ca.crt"
DESCRIPTION = "kubernetes.io/description"
DESCRIPTION_TEXT = ("Contains a CA bundle that can be used to verify the kube-apiserver when using internal endpoints "
                    "such as the internal service IP or kubernetes.default.svc. No other usage is guaranteed across "
                    "distributions of Kubernetes clusters.")


def client_ca(client: ApiClient) -> str:
    """The PEM of the CA certificates the client verifies the API server with (from its kubeconfig)."""
    ctx = client.config.ssl_context
    return "".join(ssl.DER_cert_to_PEM_cert(der) for der in ctx.get_ca_certs(binary_form=True)) if ctx else ""


class RootCACertPublisher(Controller):
    """Keys are namespace names, queued by namespaces and by changes to their kube-root-ca.crt."""

    name = "root-ca-cert-publisher"

    def __init__(self, client: ApiClient, informers: SharedInformerFactory | None = None, *,
                 ca_pem: str | None = None, workers: int | None = None):
        """The CA to publish: ca_pem, else the one the client trusts."""
        self.ca_pem = ca_pem or client_ca(client)
        super().__init__(client, informers, workers=workers)

    def setup(self) -> None:
        """Namespaces and ConfigMaps (those named kube-root-ca.crt); nothing at all without a CA to publish."""
        if not self.ca_pem:
            log.error("%s: the controller-manager's kubeconfig has no certificate authority: nothing to publish",
                      self.name)
            return
        self.namespaces = self.watch(NAMESPACES)
        self.configmaps = self.watch(CONFIGMAPS, keys=lambda cm: [cm["metadata"]["namespace"]]
                                     if cm["metadata"]["name"] == CONFIGMAP else [])

    async def reconcile(self, key: str) -> None:
        """Create the ConfigMap, or put back its CA data and description if someone changed them."""
        if not active(self.namespaces.store.get(key)):
            return
        data = {KEY: self.ca_pem}
        current = self.configmaps.store.get_by_name(key, CONFIGMAP)
        try:
            if current is None:
                await self.client.create(CONFIGMAPS, {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {
                    "name": CONFIGMAP, "namespace": key, "annotations": {DESCRIPTION: DESCRIPTION_TEXT}},
                    "data": data})
            elif current.get("data") != data or not (current["metadata"].get("annotations") or {}).get(DESCRIPTION):
                meta = current["metadata"]
                await self.client.update(CONFIGMAPS, {**current, "data": data, "metadata": {
                    **meta, "annotations": {**(meta.get("annotations") or {}), DESCRIPTION: DESCRIPTION_TEXT}}})
        except ApiError as exc:
            if not (is_already_exists(exc) or exc.code in (403, 404)):
                raise

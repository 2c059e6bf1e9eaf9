"""ServiceAccounts controller: every active namespace has a `default` ServiceAccount, recreated if deleted."""

from __future__ import annotations

from typing import Any

from kubelite.client.controller import Controller
from kubelite.client.errors import ApiError, is_already_exists
from kubelite.client.resources import NAMESPACES, SERVICEACCOUNTS

Obj = dict[str, Any]
DEFAULT = "default"


def active(namespace: Obj | None) -> bool:
    """A namespace that exists and is not being deleted (objects may be created in it)."""
    return (namespace is not None and not namespace["metadata"].get("deletionTimestamp")
            and (namespace.get("status") or {}).get("phase") != "Terminating")


class ServiceAccountsController(Controller):
    """Keys are namespace names, queued by namespaces and by changes to their default ServiceAccount."""

    name = "serviceaccount"

    def setup(self) -> None:
        """Namespaces, and ServiceAccounts mapped to their namespace when named default."""
        self.namespaces = self.watch(NAMESPACES)
        self.accounts = self.watch(SERVICEACCOUNTS, keys=lambda sa: [sa["metadata"]["namespace"]]
                                   if sa["metadata"]["name"] == DEFAULT else [])

    async def reconcile(self, key: str) -> None:
        """Create the namespace's default ServiceAccount if it is missing."""
        if not active(self.namespaces.store.get(key)) or self.accounts.store.get_by_name(key, DEFAULT):
            return
        try:
            await self.client.create(SERVICEACCOUNTS, {"apiVersion": "v1", "kind": "ServiceAccount",
                                                       "metadata": {"name": DEFAULT, "namespace": key}})
        except ApiError as exc:
            # Already there (our cache lags), or the namespace began terminating meanwhile.
            if not (is_already_exists(exc) or exc.code in (403, 404)):
                raise

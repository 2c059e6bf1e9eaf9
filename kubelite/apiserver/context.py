"""What every request handler needs, built once by the application."""

from __future__ import annotations

from dataclasses import dataclass

from kubelite.api.registry import Registry
from kubelite.api.schema import Schemas
from kubelite.apiserver.metrics import Metrics
from kubelite.apiserver.objects import ObjectStore
from kubelite.apiserver.satokens import TokenSigner
from kubelite.storage import Backend


@dataclass
class ApiContext:
    registry: Registry
    schemas: Schemas
    backend: Backend
    store: ObjectStore
    metrics: Metrics
    tokens: TokenSigner | None = None
    """Signs service account tokens (TokenRequest); set once the server has its key."""

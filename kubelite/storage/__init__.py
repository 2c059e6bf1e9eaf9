"""The datastore: a revisioned key-value store with etcd semantics, and the choice of backend from an endpoint."""

import os

from kubelite.storage.backend import (
    ADDED,
    DELETED,
    MODIFIED,
    Backend,
    CompactedError,
    ConflictError,
    Event,
    FutureRevisionError,
    KeyExistsError,
    KeyNotFoundError,
    KeyValue,
    StorageError,
    WatchOverflowError,
)
from kubelite.storage.etcd import EtcdBackend
from kubelite.storage.memory import MemoryBackend
from kubelite.storage.sqlite import SqliteBackend

__all__ = [
    "ADDED", "DELETED", "MODIFIED", "Backend", "CompactedError", "ConflictError", "EtcdBackend", "Event",
    "FutureRevisionError", "KeyExistsError", "KeyNotFoundError", "KeyValue", "MemoryBackend", "SqliteBackend",
    "StorageError", "WatchOverflowError", "open_backend",
]


def open_backend(endpoint: str, data_dir: str) -> Backend:
    """The backend an endpoint names: "" or "sqlite" (the default file), sqlite:///path, memory://, or etcd's
    client URLs (http://HOST:2379, comma-separated for several members of one cluster)."""
    if endpoint in ("", "sqlite"):
        return SqliteBackend(os.path.join(data_dir, "server", "db", "state.db"))
    if endpoint.startswith("sqlite://"):
        path = endpoint.removeprefix("sqlite://")
        if not path:
            raise StorageError(f"datastore endpoint {endpoint!r} names no file")
        return SqliteBackend(path)
    if endpoint == "memory://":
        return MemoryBackend()
    if endpoint.startswith(("http://", "https://")):
        urls = [url.strip() for url in endpoint.split(",")]
        if not all(url.startswith(("http://", "https://")) for url in urls):
            raise StorageError(f"datastore endpoint {endpoint!r}: every etcd endpoint must be an http(s):// URL")
        return EtcdBackend(urls)
    raise StorageError(f"unsupported datastore endpoint {endpoint!r} "
                       "(use sqlite, sqlite:///path, memory:// or http://ETCD:2379)")

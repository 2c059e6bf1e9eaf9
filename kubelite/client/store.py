"""The informer's in-memory cache: objects by namespace/name key, with secondary indexes."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

Obj = dict[str, Any]
IndexFunc = Callable[[Obj], list[str]]

NAMESPACE_INDEX = "namespace"
NODE_NAME_INDEX = "nodeName"
OWNER_UID_INDEX = "ownerUid"


def key_of(obj: Obj) -> str:
    """client-go's MetaNamespaceKeyFunc: "namespace/name", or "name" for cluster-scoped objects."""
    meta = obj["metadata"]
    namespace = meta.get("namespace")
    return f"{namespace}/{meta['name']}" if namespace else meta["name"]


def split_key(key: str) -> tuple[str | None, str]:
    """(namespace or None, name) of a key made by key_of."""
    namespace, sep, name = key.rpartition("/")
    return (namespace, name) if sep else (None, name)


def by_namespace(obj: Obj) -> list[str]:
    """Index by metadata.namespace (cluster-scoped objects are not indexed)."""
    namespace = obj["metadata"].get("namespace")
    return [namespace] if namespace else []


def by_node_name(obj: Obj) -> list[str]:
    """Index by spec.nodeName: the pods bound to a node."""
    node = (obj.get("spec") or {}).get("nodeName")
    return [node] if node else []


def by_owner_uid(obj: Obj) -> list[str]:
    """Index by the uid of each owner reference: the dependents of an object."""
    return [ref["uid"] for ref in obj["metadata"].get("ownerReferences") or [] if ref.get("uid")]


DEFAULT_INDEXERS: dict[str, IndexFunc] = {
    NAMESPACE_INDEX: by_namespace,
    NODE_NAME_INDEX: by_node_name,
    OWNER_UID_INDEX: by_owner_uid,
}


class Store:
    """Objects by key plus inverted indexes; single-threaded (asyncio), callers treat objects as read-only."""

    def __init__(self, indexers: dict[str, IndexFunc] | None = None):
        self._items: dict[str, Obj] = {}
        self._indexers: dict[str, IndexFunc] = {}
        self._indices: dict[str, dict[str, set[str]]] = {}
        for name, fn in (DEFAULT_INDEXERS if indexers is None else indexers).items():
            self.add_indexer(name, fn)

    def __len__(self) -> int:
        return len(self._items)

    def __contains__(self, key: str) -> bool:
        return key in self._items

    def add_indexer(self, name: str, fn: IndexFunc) -> None:
        """Register an index (a function from object to index values) and build it over current items."""
        if name in self._indexers:
            raise ValueError(f"indexer {name!r} already exists")
        self._indexers[name] = fn
        self._indices[name] = {}
        for key, obj in self._items.items():
            self._index_one(name, key, obj)

    def get(self, key: str) -> Obj | None:
        """The cached object of a namespace/name key, or None."""
        return self._items.get(key)

    def get_by_name(self, namespace: str | None, name: str) -> Obj | None:
        """The cached object of a namespace (None when cluster-scoped) and name, or None."""
        return self._items.get(f"{namespace}/{name}" if namespace else name)

    def list(self) -> list[Obj]:
        """Every cached object."""
        return list(self._items.values())

    def keys(self) -> list[str]:
        """Every cached key."""
        return list(self._items)

    def by_index(self, index: str, value: str) -> list[Obj]:
        """Objects whose index function returned `value` (KeyError for an unknown index)."""
        return [self._items[key] for key in self._indices[index].get(value, ())]

    def put(self, obj: Obj) -> Obj | None:
        """Add or replace an object; returns the previous version."""
        key = key_of(obj)
        old = self._items.get(key)
        if old is not None:
            self._unindex(key, old)
        self._items[key] = obj
        for name in self._indexers:
            self._index_one(name, key, obj)
        return old

    def delete(self, key: str) -> Obj | None:
        """Remove an object; returns what was stored."""
        old = self._items.pop(key, None)
        if old is not None:
            self._unindex(key, old)
        return old

    def replace(self, objs: Iterable[Obj]) -> dict[str, Obj]:
        """Swap in a complete list (a relist); returns the previous contents by key."""
        previous = self._items
        self._items = {}
        self._indices = {name: {} for name in self._indexers}
        for obj in objs:
            self.put(obj)
        return previous

    def _index_one(self, name: str, key: str, obj: Obj) -> None:
        index = self._indices[name]
        for value in self._indexers[name](obj):
            index.setdefault(value, set()).add(key)

    def _unindex(self, key: str, obj: Obj) -> None:
        for name, fn in self._indexers.items():
            index = self._indices[name]
            for value in fn(obj):
                keys = index.get(value)
                if keys is not None:
                    keys.discard(key)
                    if not keys:
                        del index[value]

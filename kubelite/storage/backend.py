"""The datastore interface: a revisioned key-value store with etcd semantics, modelled on kine's Backend.

One global revision counts every successful write: the first write gets revision 1, so an empty store
reports revision 0. Each key carries the revision that created it and the one that last changed it.
"""

from __future__ import annotations

import abc
from collections.abc import AsyncIterator
from dataclasses import dataclass

ADDED = "ADDED"
MODIFIED = "MODIFIED"
DELETED = "DELETED"


@dataclass(frozen=True, slots=True)
class KeyValue:
    """One version of one key: its value and the revisions that created and last modified it."""

    key: str
    value: bytes
    create_revision: int
    mod_revision: int


@dataclass(frozen=True, slots=True)
class Event:
    """One committed change; DELETED carries the last value with mod_revision set to the delete's revision."""

    type: str
    kv: KeyValue
    prev: KeyValue | None

    @property
    def revision(self) -> int:
        """The revision at which this change happened."""
        return self.kv.mod_revision


class StorageError(Exception):
    """Any datastore failure; the specific subclasses below are the ones callers act on."""


class KeyExistsError(StorageError):
    """A create named a key that already exists."""

    def __init__(self, key: str):
        super().__init__(f"key already exists: {key}")
        self.key = key


class KeyNotFoundError(StorageError):
    """An update or delete named a key that does not exist."""

    def __init__(self, key: str):
        super().__init__(f"key not found: {key}")
        self.key = key


class ConflictError(StorageError):
    """A write's expected revision did not match; .current is the value it lost to."""

    def __init__(self, key: str, expected_revision: int, current: KeyValue):
        super().__init__(f"revision conflict on {key}: expected {expected_revision}, "
                         f"current is {current.mod_revision}")
        self.key = key
        self.current = current


class CompactedError(StorageError):
    """A read or watch asked for history older than the compact revision; the caller must re-list."""

    def __init__(self, revision: int, compact_revision: int):
        super().__init__(f"revision {revision} has been compacted (compact revision {compact_revision})")
        self.revision = revision
        self.compact_revision = compact_revision


class FutureRevisionError(StorageError):
    """A read asked for a revision the store has not reached yet."""

    def __init__(self, revision: int, current_revision: int):
        super().__init__(f"revision {revision} is newer than the current revision {current_revision}")
        self.revision = revision
        self.current_revision = current_revision


class WatchOverflowError(StorageError):
    """A watcher fell too far behind and was dropped so that it never slows writers; re-list and re-watch."""


class Backend(abc.ABC):
    """A revisioned key-value store; the apiserver must behave the same whichever backend is below."""

    @abc.abstractmethod
    async def start(self) -> None:
        """Open the store, recover its state and start background work (compaction)."""

    @abc.abstractmethod
    async def close(self) -> None:
        """Finish pending writes, end watches and release the store; safe to call twice."""

    @abc.abstractmethod
    async def get(self, key: str, revision: int = 0) -> KeyValue | None:
        """The key's value at `revision` (0 = current), or None if it did not exist then."""

    @abc.abstractmethod
    async def create(self, key: str, value: bytes) -> KeyValue:
        """Store a new key; raises KeyExistsError if it exists."""

    @abc.abstractmethod
    async def update(self, key: str, value: bytes, expected_revision: int) -> KeyValue:
        """Replace a key's value if its mod_revision is expected_revision (0 = any); raises KeyNotFoundError,
        ConflictError."""

    @abc.abstractmethod
    async def delete(self, key: str, expected_revision: int = 0) -> KeyValue:
        """Remove a key, returning its last value with mod_revision = the delete's revision; raises
        KeyNotFoundError, ConflictError."""

    @abc.abstractmethod
    async def list(self, prefix: str, start_key: str = "", limit: int = 0,
                   revision: int = 0) -> tuple[int, list[KeyValue], bool]:
        """Keys with `prefix` and >= start_key, sorted, as of `revision` (0 = current): (revision the list is
        consistent at, at most `limit` items (0 = all), whether more remain)."""

    @abc.abstractmethod
    async def count(self, prefix: str) -> tuple[int, int]:
        """(current revision, number of live keys with the prefix)."""

    @abc.abstractmethod
    def watch(self, prefix: str, after_revision: int) -> AsyncIterator[list[Event]]:
        """Every change under prefix after after_revision in revision order: the log first, then live batches."""

    @abc.abstractmethod
    async def current_revision(self) -> int:
        """The revision of the newest committed write (0 for a store never written)."""

    @abc.abstractmethod
    async def compact(self, revision: int) -> None:
        """Forget history older than `revision`, keeping each key's newest version at or before it."""

    @property
    @abc.abstractmethod
    def compact_revision(self) -> int:
        """The oldest revision that reads and watches may still ask for."""

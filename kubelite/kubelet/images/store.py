"""The node's content-addressed image store: an OCI image layout of blobs and names, plus layers unpacked once each.

Layout under the root: `oci-layout`, `index.json` (names → manifests), `blobs/sha256/<hex>`, `layers/sha256/<diff_id
hex>/` (one directory per layer, an overlayfs lowerdir), `leases/` (what in-flight pulls and running containers keep
from garbage collection, across processes), `tmp/` (downloads and unpacks before their atomic rename).
"""

from __future__ import annotations

import asyncio
import builtins
import contextlib
import fcntl
import hashlib
import io
import json
import logging
import os
import re
import secrets
import shutil
from collections.abc import Awaitable, Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any, TypeVar

import aiohttp

from kubelite.kubelet.images.archive import read_archive
from kubelite.kubelet.images.config import AuthConfig, RegistryConfig
from kubelite.kubelet.images.errors import DigestMismatch, ImageError, ImageNotFound, ManifestError
from kubelite.kubelet.images.index import Entry, read_index, write_index, write_json
from kubelite.kubelet.images.manifest import (
    INDEX_TYPES,
    MANIFEST_TYPES,
    Descriptor,
    diff_ids,
    digest_hex,
    manifest_parts,
    parse_document,
    select_platform,
)
from kubelite.kubelet.images.reference import InvalidReference, Reference, is_image_id, parse_reference
from kubelite.kubelet.images.registry import RegistryClient
from kubelite.kubelet.images.unpack import unpack_layer

log = logging.getLogger(__name__)

T = TypeVar("T")
MAX_CONCURRENT_DOWNLOADS = 3
"""As containerd's default: enough to fill a link, few enough to finish the first layers early."""
SHORT_ID_MIN = 4
_HEX = re.compile(r"(?:sha256:)?([0-9a-f]+)")
_HTTP_TIMEOUT = aiohttp.ClientTimeout(total=None, connect=30, sock_connect=30, sock_read=120)


@dataclass
class Image:
    """An image in the store: id (config digest), names, repo digests, size, runtime config, and its layer dirs."""

    id: str
    names: list[str]
    """repo:tag names, e.g. `docker.io/library/busybox:latest`."""
    digests: list[str]
    """repo@digest names of the manifest (or index) as the registry serves it."""
    size: int
    """Bytes of content: the config and the (compressed) layers."""
    config: dict[str, Any]
    """The image config's `config` section: Env, Entrypoint, Cmd, WorkingDir, User, ExposedPorts, Labels…"""
    layer_dirs: list[Path] = field(default_factory=list)
    """Unpacked layers, bottom first: the overlayfs lowerdirs of a container (overlay wants them top first)."""


@dataclass(frozen=True, slots=True)
class PullProgress:
    """One step of a pull for one blob: `exists`, `waiting`, `downloading`, `downloaded`, `unpacking`, `unpacked`."""

    digest: str
    kind: str
    """`config` or `layer`."""
    status: str
    current: int
    total: int


ProgressCallback = Callable[[PullProgress], None]
PUT_STREAM_CHUNK = 1 << 20


@dataclass(frozen=True, slots=True)
class _Record:
    """What an index.json target resolves to on this node: the platform manifest, config and layers."""

    manifest: str
    config: Descriptor
    config_doc: dict[str, Any]
    layers: tuple[Descriptor, ...]
    diff_ids: tuple[str, ...]

    @property
    def size(self) -> int:
        return self.config.size + sum(layer.size for layer in self.layers)

    def blobs(self) -> set[str]:
        return {self.manifest, self.config.digest, *(layer.digest for layer in self.layers)}


@dataclass
class _Flight:
    """Work shared by concurrent callers, and how many of them still wait for it."""

    task: asyncio.Future[Any]
    waiters: int = 0


class _Lease:
    """A file under leases/ naming blobs and layers that garbage collection must keep during one pull or import."""

    def __init__(self, store: ImageStore) -> None:
        self.store = store
        self.path = store.leases / f"{os.getpid()}-{secrets.token_hex(8)}.json"
        self.blobs: set[str] = set()
        self.layers: set[str] = set()

    def add(self, blobs: Iterable[str] = (), layers: Iterable[str] = ()) -> None:
        """Record more content; under the store lock, so no collection runs between this and the caller's check."""
        self.blobs.update(blobs)
        self.layers.update(layers)
        with self.store.locked():
            write_json(self.path, {"pid": os.getpid(), "blobs": sorted(self.blobs), "layers": sorted(self.layers)})

    def release(self) -> None:
        self.path.unlink(missing_ok=True)


class ImageStore:
    """Pull, import, look up and remove images; blobs are kept once by digest and layers unpacked once by diff_id."""

    def __init__(self, root: str | Path, registries: RegistryConfig | None = None,
                 max_concurrent_downloads: int = MAX_CONCURRENT_DOWNLOADS) -> None:
        self.root = Path(root)
        self.registries = registries or RegistryConfig()
        self.blobs = self.root / "blobs" / "sha256"
        self.layers = self.root / "layers" / "sha256"
        self.leases = self.root / "leases"
        self.tmp = self.root / "tmp"
        self._session: aiohttp.ClientSession | None = None
        self._flights: dict[tuple[str, str], _Flight] = {}
        self._records: dict[str, _Record] = {}
        self._downloads = asyncio.Semaphore(max_concurrent_downloads)
        self._ready = False

    async def __aenter__(self) -> ImageStore:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def close(self) -> None:
        """Close the HTTP session (the store's files need no closing)."""
        if self._session is not None:
            await self._session.close()
            self._session = None

    # Public API

    async def pull(self, ref: str | Reference, credentials: Mapping[str, AuthConfig] | None = None,
                   progress: ProgressCallback | None = None) -> Image:
        """Pull an image from its registry (or mirrors): only missing blobs are downloaded, only new layers unpacked.
        Concurrent pulls of the same reference (and credentials) share one pull; progress goes to the first caller."""
        reference = ref if isinstance(ref, Reference) else parse_reference(ref)
        await self._prepare()
        key = reference.store_name + (f" {sorted(credentials.items())!r}" if credentials else "")
        await self._shared(("pull", key), lambda: self._pull(reference, credentials, progress))
        image = await self.get(reference.store_name)
        if image is None:
            raise ImageNotFound(f"{reference} was removed while it was being pulled")
        return image

    async def get(self, ref_or_id: str) -> Image | None:
        """An image by name (`busybox`, `name:tag`, `name@digest`) or id (`sha256:…`, or a unique id prefix)."""
        found = await asyncio.to_thread(self._find, ref_or_id)
        return found[0] if found else None

    async def list(self) -> list[Image]:
        """Every image in the store, in name order (unnamed ones last)."""
        catalog = await asyncio.to_thread(self._catalog)
        return sorted((image for image, _ in catalog.values()), key=lambda i: (not i.names, i.names, i.digests, i.id))

    async def remove(self, ref_or_id: str) -> builtins.list[str]:
        """Remove a name (by id: every name of the image); an image left without a tag goes entirely. Content no
        image or lease uses is then deleted. Returns the names removed."""
        await self._prepare()
        removed = await asyncio.to_thread(self._remove, ref_or_id)
        await asyncio.to_thread(self.collect_garbage)
        return removed

    async def import_archive(self, path: str | Path) -> builtins.list[Image]:
        """Load a `docker save` tarball or an OCI image-layout archive and tag its images with their names."""
        await self._prepare()
        lease = _Lease(self)
        try:
            found = await asyncio.to_thread(read_archive, path, lambda stream, digest: self._put(lease, stream, digest))
            ids = []
            for names, top in found:
                record = await asyncio.to_thread(self._record, top)
                await asyncio.to_thread(lease.add, (), record.diff_ids)
                pairs = zip(record.layers, record.diff_ids, strict=True)
                await _all([self._unpacked(diff_id, layer, None) for layer, diff_id in pairs])
                await asyncio.to_thread(self._tag, names, top)
                ids.append(record.config.digest)
        finally:
            await asyncio.to_thread(lease.release)
        catalog = await asyncio.to_thread(self._catalog)
        return [catalog[image_id][0] for image_id in dict.fromkeys(ids)]

    async def usage(self) -> int:
        """Bytes the store takes on disk (blobs, unpacked layers, in-flight files); hardlinks counted once."""
        return await asyncio.to_thread(_disk_usage, self.root)

    async def hold(self, holder: str, image: Image) -> None:
        """Keep an image's content (its unpacked layers above all) even if the image is removed, until release(holder):
        for the runtime, whose containers use the layers as overlay lowerdirs."""
        await self._prepare()

        def write() -> None:
            with self.locked():
                found = self._catalog().get(image.id)
                if found is None:
                    raise ImageNotFound(f"no image {image.id} in the store")
                blobs = {entry.target.digest for entry in found[1]}
                record = self._record(found[1][0].target)
                write_json(self._hold_path(holder), {"blobs": sorted(blobs | record.blobs()),
                                                      "layers": list(record.diff_ids)})
        await asyncio.to_thread(write)

    async def release(self, holder: str) -> None:
        """Drop what hold(holder) kept; the content goes at the next collection if no image uses it."""
        await asyncio.to_thread(self._hold_path(holder).unlink, True)

    def _hold_path(self, holder: str) -> Path:
        return self.leases / f"hold-{re.sub(r'[^A-Za-z0-9_.-]', '_', holder)}.json"

    def blob_path(self, digest: str) -> Path:
        """Where a blob lives: blobs/sha256/<hex>."""
        return self.blobs / digest_hex(digest)

    def layer_path(self, diff_id: str) -> Path:
        """Where a layer is unpacked: layers/sha256/<hex of its diff_id>."""
        return self.layers / digest_hex(diff_id)

    @contextlib.contextmanager
    def locked(self) -> Iterator[None]:
        """The store-wide lock (flock, so it holds across processes): index writes, leases and collection."""
        fd = os.open(self.root / "index.lock", os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            os.close(fd)

    def collect_garbage(self) -> None:
        """Delete blobs and layer directories no named image and no live lease uses, and leftovers of dead processes."""
        with self.locked():
            keep_blobs, keep_layers = self._in_use()
            for path in _listdir(self.blobs):
                if f"sha256:{path.name}" not in keep_blobs:
                    path.unlink(missing_ok=True)
            for path in _listdir(self.layers):
                if f"sha256:{path.name}" not in keep_layers:
                    doomed = self.tmp / f"{os.getpid()}-gc-{secrets.token_hex(8)}"
                    os.rename(path, doomed)
                    shutil.rmtree(doomed)
            for path in _listdir(self.tmp):
                if not _pid_alive(path.name.split("-", 1)[0]):
                    _remove_path(path)

    # Pulling

    async def _pull(self, reference: Reference, credentials: Mapping[str, AuthConfig] | None,
                    progress: ProgressCallback | None) -> None:
        client = RegistryClient(self._http(), self.registries, reference, credentials)
        top = await client.resolve()
        manifest = top
        if top.media_type in INDEX_TYPES:
            try:
                chosen = select_platform(top.doc)
            except ManifestError as err:
                raise ManifestError(f'failed to pull "{reference}": {err}') from err
            manifest = await client.manifest(chosen.digest)
            if manifest.media_type not in MANIFEST_TYPES:
                raise ManifestError(f'failed to pull "{reference}": nested image indexes are not supported')
        try:
            config, layers = manifest_parts(manifest.doc)
        except ManifestError as err:
            raise ManifestError(f'failed to pull "{reference}": {err}') from err
        lease = _Lease(self)
        try:
            await asyncio.to_thread(lease.add, {top.digest, manifest.digest, config.digest,
                                                *(layer.digest for layer in layers)})
            for document in {top.digest: top, manifest.digest: manifest}.values():
                await asyncio.to_thread(self._put, lease, io.BytesIO(document.raw), document.digest)
            await self._blob(client, config, "config", progress)
            config_doc = await asyncio.to_thread(self._read_json, config.digest)
            ids = diff_ids(config_doc, len(layers))
            await asyncio.to_thread(lease.add, (), ids)
            await _all([self._layer(client, layer, diff_id, progress)
                        for layer, diff_id in zip(layers, ids, strict=True)])
            names = [reference.store_name]
            if not reference.digest:
                names.append(f"{reference.name}@{top.digest}")
            await asyncio.to_thread(self._tag, names, Descriptor(top.media_type, top.digest, len(top.raw)))
        finally:
            await asyncio.to_thread(lease.release)

    async def _layer(self, client: RegistryClient, layer: Descriptor, diff_id: str,
                     progress: ProgressCallback | None) -> None:
        if await asyncio.to_thread(self._present, layer.digest, diff_id):
            _report(progress, layer, "layer", "exists", layer.size)
            return
        await self._blob(client, layer, "layer", progress)
        await self._unpacked(diff_id, layer, progress)

    async def _blob(self, client: RegistryClient, blob: Descriptor, kind: str,
                    progress: ProgressCallback | None) -> None:
        if await asyncio.to_thread(self.blob_path(blob.digest).exists):
            _report(progress, blob, kind, "exists", blob.size)
            return
        if ("blob", blob.digest) in self._flights:
            _report(progress, blob, kind, "waiting", 0)

        async def download() -> None:
            async with self._downloads:
                _report(progress, blob, kind, "downloading", 0)
                await client.fetch_blob(blob.digest, blob.size, self.blob_path(blob.digest), self.tmp,
                                        lambda done: _report(progress, blob, kind, "downloading", done))
        await self._shared(("blob", blob.digest), download)
        _report(progress, blob, kind, "downloaded", blob.size)

    async def _unpacked(self, diff_id: str, layer: Descriptor, progress: ProgressCallback | None) -> None:
        if await asyncio.to_thread(self.layer_path(diff_id).is_dir):
            return
        _report(progress, layer, "layer", "unpacking", layer.size)
        await self._shared(("layer", diff_id), lambda: _in_thread(self._unpack, layer.digest, diff_id))
        _report(progress, layer, "layer", "unpacked", layer.size)

    def _unpack(self, digest: str, diff_id: str) -> None:
        target = self.layer_path(diff_id)
        if target.is_dir():
            return
        work = self.tmp / f"{os.getpid()}-{secrets.token_hex(8)}"
        try:
            unpack_layer(self.blob_path(digest), work, diff_id)
            try:
                os.rename(work, target)
            except OSError:
                if not target.is_dir():
                    raise
        finally:
            _remove_path(work)

    async def _shared(self, key: tuple[str, str], start: Callable[[], Awaitable[T]]) -> T:
        """Run start() once for concurrent callers with the same key; it is cancelled (and waited for) only when
        its last caller is."""
        flight = self._flights.get(key)
        if flight is None:
            flight = self._flights[key] = _Flight(asyncio.ensure_future(start()))
            flight.task.add_done_callback(lambda _: self._flights.pop(key, None))
        flight.waiters += 1
        try:
            return await asyncio.shield(flight.task)
        except asyncio.CancelledError:
            if flight.waiters == 1 and not flight.task.done():
                flight.task.cancel()
                await asyncio.wait([flight.task])
            raise
        finally:
            flight.waiters -= 1

    def _http(self) -> aiohttp.ClientSession:
        if self._session is None:
            self._session = aiohttp.ClientSession(timeout=_HTTP_TIMEOUT)
        return self._session

    # Files (these run in worker threads)

    async def _prepare(self) -> None:
        if not self._ready:
            await asyncio.to_thread(self._make_dirs)
            self._ready = True

    def _make_dirs(self) -> None:
        for path in (self.blobs, self.layers, self.leases, self.tmp):
            path.mkdir(parents=True, exist_ok=True)
        layout = self.root / "oci-layout"
        if not layout.exists():
            write_json(layout, {"imageLayoutVersion": "1.0.0"})

    def _present(self, digest: str, diff_id: str) -> bool:
        return self.blob_path(digest).exists() and self.layer_path(diff_id).is_dir()

    def _put(self, lease: _Lease, stream: IO[bytes], digest: str | None) -> tuple[str, int]:
        """Store a blob from a stream under its (verified) digest, leased before it appears; returns digest and size."""
        if digest is not None:
            lease.add((digest,))
            path = self.blob_path(digest)
            if path.exists():
                return digest, path.stat().st_size
        work = self.tmp / f"{os.getpid()}-{secrets.token_hex(8)}"
        hasher, size = hashlib.sha256(), 0
        try:
            with open(work, "wb") as out:
                while chunk := stream.read(PUT_STREAM_CHUNK):
                    hasher.update(chunk)
                    out.write(chunk)
                    size += len(chunk)
            actual = f"sha256:{hasher.hexdigest()}"
            if digest is not None and actual != digest:
                raise DigestMismatch(f"content of {digest} has digest {actual}")
            lease.add((actual,))
            os.replace(work, self.blob_path(actual))
        finally:
            work.unlink(missing_ok=True)
        return actual, size

    def _read_json(self, digest: str) -> dict[str, Any]:
        try:
            doc = json.loads(self.blob_path(digest).read_bytes())
        except ValueError as err:
            raise ManifestError(f"{digest} is not JSON: {err}") from err
        if not isinstance(doc, dict):
            raise ManifestError(f"{digest} is not a JSON object")
        return doc

    def _record(self, top: Descriptor) -> _Record:
        """Resolve a name's target to this node's manifest, config and layers (cached: content never changes)."""
        cached = self._records.get(top.digest)
        if cached is not None:
            return cached
        kind, doc = parse_document(self.blob_path(top.digest).read_bytes(), top.media_type)
        manifest = top.digest
        if kind in INDEX_TYPES:
            chosen = select_platform(doc)
            manifest = chosen.digest
            kind, doc = parse_document(self.blob_path(manifest).read_bytes(), chosen.media_type)
        config, layers = manifest_parts(doc)
        config_doc = self._read_json(config.digest)
        record = _Record(manifest, config, config_doc, tuple(layers), tuple(diff_ids(config_doc, len(layers))))
        self._records[top.digest] = record
        return record

    def _read_index(self) -> builtins.list[Entry]:
        return read_index(self.root / "index.json")

    def _write_index(self, entries: Iterable[Entry]) -> None:
        write_index(self.root / "index.json", entries)

    def _tag(self, names: Sequence[str], target: Descriptor) -> None:
        """Point names at a target (moving them from older targets); with no names, keep the target unnamed."""
        with self.locked():
            entries = [e for e in self._read_index() if e.name not in names and not
                       (e.name is None and e.target.digest == target.digest)]
            if names:
                entries += [Entry(name, target) for name in names]
            elif not any(e.target.digest == target.digest for e in entries):
                entries.append(Entry(None, target))
            self._write_index(entries)

    def _catalog(self) -> dict[str, tuple[Image, builtins.list[Entry]]]:
        """Images by id, each with the index entries that name it."""
        grouped: dict[str, list[Entry]] = {}
        records: dict[str, _Record] = {}
        for entry in self._read_index():
            try:
                record = self._record(entry.target)
            except (ImageError, OSError) as err:
                log.warning("image %s (%s) is unusable: %s", entry.name, entry.target.digest, err)
                continue
            grouped.setdefault(record.config.digest, []).append(entry)
            records[record.config.digest] = record
        catalog = {}
        for image_id, entries in grouped.items():
            record = records[image_id]
            names = sorted(e.name for e in entries if e.name and "@" not in e.name)
            digests = sorted(e.name for e in entries if e.name and "@" in e.name)
            image = Image(image_id, names, digests, record.size, dict(record.config_doc.get("config") or {}),
                          [self.layer_path(diff_id) for diff_id in record.diff_ids])
            catalog[image_id] = (image, entries)
        return catalog

    def _find(self, text: str) -> tuple[Image, builtins.list[Entry], str | None] | None:
        """Look an image up: full id, then name (the matched name is returned), then unique id prefix."""
        catalog = self._catalog()
        if is_image_id(text):
            return (*catalog[text], None) if text in catalog else None
        with contextlib.suppress(InvalidReference):
            reference = parse_reference(text)
            for image, entries in catalog.values():
                for entry in entries:
                    if entry.name == reference.store_name:
                        return image, entries, entry.name
            if reference.digest:
                for image, entries in catalog.values():
                    for entry in entries:
                        if (entry.name and entry.name.startswith(reference.name + "@")
                                and reference.digest in (entry.target.digest, self._record(entry.target).manifest)):
                            return image, entries, entry.name
        match = _HEX.fullmatch(text)
        if match and len(match.group(1)) >= SHORT_ID_MIN:
            hits = [image_id for image_id in catalog if image_id.startswith(f"sha256:{match.group(1)}")]
            if len(hits) == 1:
                return (*catalog[hits[0]], None)
        return None

    def _remove(self, text: str) -> builtins.list[str]:
        with self.locked():
            found = self._find(text)
            if found is None:
                raise ImageNotFound(f"no image {text!r} in the store")
            image, entries, name = found
            doomed = {e.name for e in entries} if name is None else {name}
            if not any(e.name and "@" not in e.name and e.name not in doomed for e in entries):
                doomed = {e.name for e in entries}
            remaining = [e for e in self._read_index() if not (e.name in doomed and e in entries)]
            self._write_index(remaining)
        return sorted(n for n in doomed if n)

    def _in_use(self) -> tuple[set[str], set[str]]:
        """Blobs and layer diff_ids that named images and live leases use."""
        blobs: set[str] = set()
        layers: set[str] = set()
        for entry in self._read_index():
            blobs.add(entry.target.digest)
            try:
                record = self._record(entry.target)
            except (ImageError, OSError):
                continue
            blobs |= record.blobs()
            layers.update(record.diff_ids)
        for path in _listdir(self.leases):
            try:
                lease = json.loads(path.read_bytes())
            except (OSError, ValueError):
                continue
            if lease.get("pid") is not None and not _pid_alive(str(lease["pid"])):
                path.unlink(missing_ok=True)
                continue
            blobs.update(lease.get("blobs") or [])
            layers.update(lease.get("layers") or [])
        return blobs, layers


async def _in_thread(function: Callable[..., T], *args: Any) -> T:
    """Run blocking work in a thread; cancellation waits for the thread to finish, since it cannot be interrupted."""
    future = asyncio.ensure_future(asyncio.to_thread(function, *args))
    try:
        return await asyncio.shield(future)
    except asyncio.CancelledError:
        await asyncio.wait([future])
        raise


async def _all(coroutines: list[Awaitable[Any]]) -> None:
    """Run coroutines together; the first failure cancels the rest and is raised as itself."""
    try:
        async with asyncio.TaskGroup() as group:
            for coroutine in coroutines:
                group.create_task(coroutine)  # type: ignore[arg-type]
    except BaseExceptionGroup as group_error:
        raise group_error.exceptions[0] from None


def _report(progress: ProgressCallback | None, blob: Descriptor, kind: str, status: str, current: int) -> None:
    if progress is not None:
        progress(PullProgress(blob.digest, kind, status, current, blob.size))


def _listdir(path: Path) -> list[Path]:
    try:
        return list(path.iterdir())
    except FileNotFoundError:
        return []


def _remove_path(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        path.unlink(missing_ok=True)


def _pid_alive(pid: str) -> bool:
    """Whether the process that left a lease or temporary file still runs (unparsable owners count as alive)."""
    if not pid.isdigit():
        return True
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _disk_usage(root: Path) -> int:
    total, seen = 0, set()
    for directory, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            info = os.lstat(os.path.join(directory, name))
            if info.st_nlink > 1:
                if (info.st_dev, info.st_ino) in seen:
                    continue
                seen.add((info.st_dev, info.st_ino))
            total += info.st_blocks * 512
    return total

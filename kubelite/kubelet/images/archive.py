"""Read `docker save` tarballs and OCI image-layout archives, handing every blob to the store as it goes."""

from __future__ import annotations

import io
import json
import tarfile
from collections.abc import Callable
from pathlib import Path
from typing import IO, Any

from kubelite.kubelet.images.errors import ImageError, ManifestError
from kubelite.kubelet.images.index import NAME_ANNOTATION, REF_NAME_ANNOTATION
from kubelite.kubelet.images.manifest import (
    INDEX_TYPES,
    MANIFEST_MAX,
    OCI_CONFIG,
    OCI_LAYER,
    OCI_LAYER_GZIP,
    OCI_MANIFEST,
    Descriptor,
    diff_ids,
    digest_hex,
    manifest_parts,
    parse_document,
    select_platform,
    sha256_digest,
)
from kubelite.kubelet.images.reference import parse_reference

PutBlob = Callable[[IO[bytes], str | None], tuple[str, int]]
"""Store a blob from a stream; with a digest, verify it (and skip the copy if present); returns (digest, size)."""
Found = tuple[list[str], Descriptor]
"""An image found in an archive: its store names and the manifest or index its names point at."""


def read_archive(path: str | Path, put: PutBlob) -> list[Found]:
    """Store the blobs of every image in the archive (gzip-compressed or not) and list the images found."""
    try:
        tar = tarfile.open(path, "r:*")
    except (tarfile.TarError, OSError) as err:
        raise ImageError(f"{path}: not a readable tar archive: {err}") from err
    with tar:
        members = {_normalize(member.name): member for member in tar.getmembers()}
        reader = _Archive(str(path), tar, members, put)
        if "oci-layout" in members and "index.json" in members:
            return reader.oci()
        if "manifest.json" in members:
            return reader.docker()
    raise ImageError(f"{path}: neither a `docker save` archive (manifest.json) nor an OCI image layout "
                     "(oci-layout and index.json)")


def _normalize(name: str) -> str:
    return "/".join(part for part in name.split("/") if part not in ("", "."))


class _Archive:
    """One open archive: member lookup and the two formats."""

    def __init__(self, path: str, tar: tarfile.TarFile, members: dict[str, tarfile.TarInfo], put: PutBlob) -> None:
        self.path = path
        self.tar = tar
        self.members = members
        self.put = put

    def open(self, name: str) -> IO[bytes]:
        """A member's content (links followed), or ImageError naming what is missing."""
        member = self.members.get(_normalize(name))
        stream = self.tar.extractfile(member) if member is not None else None
        if stream is None:
            raise ImageError(f"{self.path}: the archive has no file {name!r}")
        return stream

    def small(self, name: str) -> bytes:
        """A JSON document's bytes, refused beyond the manifest size limit."""
        data = self.open(name).read(MANIFEST_MAX + 1)
        if len(data) > MANIFEST_MAX:
            raise ImageError(f"{self.path}: {name} is larger than {MANIFEST_MAX} bytes")
        return data

    def json(self, name: str) -> Any:
        try:
            return json.loads(self.small(name))
        except ValueError as err:
            raise ImageError(f"{self.path}: {name} is not JSON: {err}") from err

    def blob(self, descriptor: Descriptor) -> None:
        self.put(self.open(f"blobs/sha256/{digest_hex(descriptor.digest)}"), descriptor.digest)

    def document(self, descriptor: Descriptor) -> tuple[str, dict[str, Any]]:
        """Store a manifest or index blob and return its type and content."""
        raw = self.small(f"blobs/sha256/{digest_hex(descriptor.digest)}")
        self.put(io.BytesIO(raw), descriptor.digest)
        return parse_document(raw, descriptor.media_type)

    def oci(self) -> list[Found]:
        """An OCI image layout: index.json's entries, named by their annotations; this node's platform from indexes."""
        index = self.json("index.json")
        found: list[Found] = []
        for item in (index.get("manifests") or []) if isinstance(index, dict) else []:
            top = Descriptor.from_dict(item)
            kind, doc = self.document(top)
            if kind in INDEX_TYPES:
                kind, doc = self.document(select_platform(doc))
                if kind in INDEX_TYPES:
                    raise ManifestError(f"{self.path}: nested image indexes are not supported")
            config, layers = manifest_parts(doc)
            for descriptor in (config, *layers):
                self.blob(descriptor)
            found.append((_oci_names(top.annotations), Descriptor(top.media_type or kind, top.digest, top.size)))
        return found

    def docker(self) -> list[Found]:
        """A `docker save` archive: manifest.json's entries; an OCI manifest is written for each image."""
        entries = self.json("manifest.json")
        if not isinstance(entries, list):
            raise ImageError(f"{self.path}: manifest.json is not a list")
        found: list[Found] = []
        for entry in entries:
            if not isinstance(entry, dict) or not entry.get("Config"):
                raise ImageError(f"{self.path}: a manifest.json entry has no Config")
            config_raw = self.small(entry["Config"])
            config_digest, config_size = self.put(io.BytesIO(config_raw), None)
            layers = [self.docker_layer(name) for name in entry.get("Layers") or []]
            try:
                diff_ids(json.loads(config_raw), len(layers))
            except ValueError as err:
                raise ImageError(f"{self.path}: {entry['Config']}: {err}") from err
            manifest = {"schemaVersion": 2, "mediaType": OCI_MANIFEST,
                        "config": Descriptor(OCI_CONFIG, config_digest, config_size).to_dict(),
                        "layers": [layer.to_dict() for layer in layers]}
            raw = json.dumps(manifest, separators=(",", ":")).encode()
            digest, size = self.put(io.BytesIO(raw), sha256_digest(raw))
            names = [parse_reference(tag).store_name for tag in entry.get("RepoTags") or []]
            found.append((names, Descriptor(OCI_MANIFEST, digest, size)))
        return found

    def docker_layer(self, name: str) -> Descriptor:
        """Store a `docker save` layer tar (plain or gzip) and describe it for the written manifest."""
        stream = self.open(name)
        gzipped = stream.read(2) == b"\x1f\x8b"
        stream.seek(0)
        digest, size = self.put(stream, None)
        return Descriptor(OCI_LAYER_GZIP if gzipped else OCI_LAYER, digest, size)


def _oci_names(annotations: dict[str, str]) -> list[str]:
    """containerd's full-name annotation, else ref.name when it is a whole reference rather than just a tag."""
    name = annotations.get(NAME_ANNOTATION) or ""
    if not name:
        ref_name = annotations.get(REF_NAME_ANNOTATION) or ""
        name = ref_name if ("/" in ref_name or ":" in ref_name) else ""
    return [parse_reference(name).store_name] if name else []

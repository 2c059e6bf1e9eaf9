"""The store's index.json: an OCI image index whose entries name images (containerd's name annotation), kept atomic."""

from __future__ import annotations

import json
import os
import secrets
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from kubelite.kubelet.images.manifest import OCI_INDEX, Descriptor

NAME_ANNOTATION = "io.containerd.image.name"
REF_NAME_ANNOTATION = "org.opencontainers.image.ref.name"


@dataclass(frozen=True, slots=True)
class Entry:
    """One image name (None for an unnamed import) and the manifest or index it points at."""

    name: str | None
    target: Descriptor


def read_index(path: Path) -> list[Entry]:
    """The entries of index.json; a missing file has none."""
    try:
        doc = json.loads(path.read_bytes())
    except FileNotFoundError:
        return []
    entries = []
    for item in doc.get("manifests") or []:
        target = Descriptor.from_dict(item)
        entries.append(Entry(target.annotations.get(NAME_ANNOTATION),
                             Descriptor(target.media_type, target.digest, target.size)))
    return entries


def write_index(path: Path, entries: Iterable[Entry]) -> None:
    """Replace index.json atomically; a tagged name also gets the OCI ref.name annotation (its tag)."""
    manifests = []
    for entry in sorted(entries, key=lambda e: (e.name is None, e.name or "", e.target.digest)):
        item = entry.target.to_dict()
        if entry.name:
            item["annotations"] = {NAME_ANNOTATION: entry.name}
            if "@" not in entry.name:
                item["annotations"][REF_NAME_ANNOTATION] = entry.name.rsplit(":", 1)[1]
        manifests.append(item)
    write_json(path, {"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": manifests})


def write_json(path: Path, doc: Any) -> None:
    """Write a small JSON file atomically: a temporary file beside it, fsynced, renamed over it."""
    work = path.with_name(f".{path.name}.{os.getpid()}-{secrets.token_hex(4)}")
    with open(work, "wb") as out:
        out.write(json.dumps(doc, indent=1, sort_keys=True).encode())
        out.flush()
        os.fsync(out.fileno())
    os.replace(work, path)

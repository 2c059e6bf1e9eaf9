"""Build real OCI images from the host's busybox-static; push them over the distribution API or save them as archives.

An image is a few JSON documents and tar layers; everything here is deterministic (fixed mtimes, gzip without
timestamps), so the same content always gets the same digests and images built alike share layers.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import subprocess
import tarfile
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import Any

BUSYBOX = Path("/usr/bin/busybox")
MTIME = 1_700_000_000
PATH_ENV = "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_INDEX = "application/vnd.oci.image.index.v1+json"
OCI_CONFIG = "application/vnd.oci.image.config.v1+json"
OCI_LAYER = "application/vnd.oci.image.layer.v1.tar"
OCI_LAYER_GZIP = "application/vnd.oci.image.layer.v1.tar+gzip"
DOCKER_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"
DOCKER_CONFIG = "application/vnd.docker.container.image.v1+json"
DOCKER_LAYER_GZIP = "application/vnd.docker.image.rootfs.diff.tar.gzip"
PASSWD = "root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/home:/bin/false\n"
GROUP = "root:x:0:\nnobody:x:65534:\n"


def sha256(data: bytes) -> str:
    """The OCI digest of bytes."""
    return f"sha256:{hashlib.sha256(data).hexdigest()}"


@dataclass(frozen=True)
class Entry:
    """One tar member to put in a layer."""

    path: str
    kind: str = "file"
    """file, dir, symlink, hardlink, fifo or chardev."""
    data: bytes = b""
    mode: int = 0o644
    uid: int = 0
    gid: int = 0
    target: str = ""
    """A symlink's target, or the path a hardlink shares its inode with."""
    xattrs: dict[str, bytes] = field(default_factory=dict)


def file(path: str, data: bytes | str = b"", mode: int = 0o644, uid: int = 0, gid: int = 0,
         xattrs: dict[str, bytes] | None = None) -> Entry:
    """A regular file."""
    return Entry(path, "file", data.encode() if isinstance(data, str) else data, mode, uid, gid, "", xattrs or {})


def directory(path: str, mode: int = 0o755, uid: int = 0, gid: int = 0) -> Entry:
    """A directory."""
    return Entry(path, "dir", b"", mode, uid, gid)


def symlink(path: str, target: str) -> Entry:
    """A symbolic link to target (stored as written)."""
    return Entry(path, "symlink", b"", 0o777, 0, 0, target)


def hardlink(path: str, target: str) -> Entry:
    """A hard link to the earlier entry at target."""
    return Entry(path, "hardlink", b"", 0o644, 0, 0, target)


def whiteout(path: str) -> Entry:
    """An OCI whiteout: `dir/.wh.name` deletes `dir/name` of the layers below."""
    parent, _, name = path.rstrip("/").rpartition("/")
    return file(f"{parent}/.wh.{name}" if parent else f".wh.{name}", mode=0o600)


def opaque(path: str) -> Entry:
    """An OCI opaque whiteout: hides everything the layers below had in this directory."""
    return file(f"{path.rstrip('/')}/.wh..wh..opq", mode=0o600)


@dataclass(frozen=True)
class Layer:
    """A layer: its tar (whose digest is the diff_id) and the blob as pushed (gzip-compressed unless plain)."""

    tar: bytes
    blob: bytes
    media_type: str

    @property
    def digest(self) -> str:
        """The blob's digest, as the manifest names it."""
        return sha256(self.blob)

    @property
    def diff_id(self) -> str:
        """The uncompressed tar's digest, as the config's rootfs names it."""
        return sha256(self.tar)

    def descriptor(self) -> dict[str, Any]:
        """The layer's descriptor for a manifest."""
        return {"mediaType": self.media_type, "digest": self.digest, "size": len(self.blob)}


def layer(entries: Iterable[Entry], compress: bool = True, media_type: str | None = None) -> Layer:
    """A tar layer of the entries (in order), gzip-compressed with no timestamp unless compress is False."""
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for entry in entries:
            info = tarfile.TarInfo(entry.path)
            info.mode, info.uid, info.gid, info.mtime = entry.mode, entry.uid, entry.gid, MTIME
            info.uname = info.gname = ""
            if entry.xattrs:
                info.pax_headers = {f"SCHILY.xattr.{k}": v.decode("utf-8", "surrogateescape")
                                    for k, v in entry.xattrs.items()}
            data = None
            if entry.kind == "file":
                info.size, data = len(entry.data), io.BytesIO(entry.data)
            else:
                info.type = {"dir": tarfile.DIRTYPE, "symlink": tarfile.SYMTYPE, "hardlink": tarfile.LNKTYPE,
                             "fifo": tarfile.FIFOTYPE, "chardev": tarfile.CHRTYPE}[entry.kind]
                info.linkname = entry.target
            tar.addfile(info, data)
    raw = out.getvalue()
    if not compress:
        return Layer(raw, raw, media_type or OCI_LAYER)
    return Layer(raw, gzip.compress(raw, compresslevel=6, mtime=0), media_type or OCI_LAYER_GZIP)


@cache
def busybox_applets() -> tuple[str, ...]:
    """The applets of the host's busybox-static."""
    listed = subprocess.run([str(BUSYBOX), "--list"], capture_output=True, text=True, check=True).stdout
    return tuple(sorted(name for name in listed.split() if name and name != "busybox"))


def busybox_entries() -> list[Entry]:
    """A minimal root filesystem: /bin/busybox with a symlink per applet, /etc/passwd and /etc/group, /tmp and /root."""
    entries = [directory("bin"), file("bin/busybox", BUSYBOX.read_bytes(), 0o755)]
    entries += [symlink(f"bin/{applet}", "busybox") for applet in busybox_applets()]
    entries += [directory("etc"), file("etc/passwd", PASSWD), file("etc/group", GROUP),
                directory("tmp", 0o1777), directory("root", 0o700), directory("home"), directory("var"),
                directory("usr"), directory("usr/bin"), symlink("usr/bin/env", "/bin/env")]
    return entries


@cache
def busybox_layer() -> Layer:
    """The busybox root filesystem layer (built once per test run; the same bytes every time)."""
    return layer(busybox_entries())


@dataclass(frozen=True)
class BuiltImage:
    """An image ready to push or save: layers, config JSON and manifest JSON."""

    layers: tuple[Layer, ...]
    config: bytes
    manifest: bytes
    media_type: str = OCI_MANIFEST

    @property
    def config_digest(self) -> str:
        """The image id."""
        return sha256(self.config)

    @property
    def manifest_digest(self) -> str:
        """The repo digest a registry reports for the image."""
        return sha256(self.manifest)

    @property
    def size(self) -> int:
        """Config plus compressed layers, as the store reports an image's size."""
        return len(self.config) + sum(len(layer.blob) for layer in self.layers)

    def descriptor(self, platform: dict[str, str] | None = None) -> dict[str, Any]:
        """The manifest's descriptor for an index (with its platform) or an OCI layout."""
        out: dict[str, Any] = {"mediaType": self.media_type, "digest": self.manifest_digest, "size": len(self.manifest)}
        if platform:
            out["platform"] = platform
        return out


def build_image(layers: Sequence[Layer], cmd: Sequence[str] = ("sh",), entrypoint: Sequence[str] | None = None,
                env: Sequence[str] = (PATH_ENV,), workdir: str = "/", user: str = "",
                exposed_ports: Sequence[str] = (), architecture: str = "amd64", docker: bool = False) -> BuiltImage:
    """An image of the layers (bottom first) with an OCI (or, with docker=True, Docker v2) manifest."""
    runtime: dict[str, Any] = {"Env": list(env), "Cmd": list(cmd), "WorkingDir": workdir}
    if entrypoint is not None:
        runtime["Entrypoint"] = list(entrypoint)
    if user:
        runtime["User"] = user
    if exposed_ports:
        runtime["ExposedPorts"] = {port: {} for port in exposed_ports}
    config = {"architecture": architecture, "os": "linux", "created": "2023-11-14T22:13:20Z", "config": runtime,
              "rootfs": {"type": "layers", "diff_ids": [item.diff_id for item in layers]},
              "history": [{"created": "2023-11-14T22:13:20Z", "created_by": "tests/images.py"} for _ in layers]}
    config_raw = json.dumps(config, separators=(",", ":")).encode()
    manifest = {"schemaVersion": 2, "mediaType": DOCKER_MANIFEST if docker else OCI_MANIFEST,
                "config": {"mediaType": DOCKER_CONFIG if docker else OCI_CONFIG, "digest": sha256(config_raw),
                           "size": len(config_raw)},
                "layers": [item.descriptor() for item in layers]}
    return BuiltImage(tuple(layers), config_raw, json.dumps(manifest, separators=(",", ":")).encode(),
                      DOCKER_MANIFEST if docker else OCI_MANIFEST)


def busybox_image(*extra_layers: Sequence[Entry], cmd: Sequence[str] = ("sh",), **options: Any) -> BuiltImage:
    """The busybox image, with more layers on top (each a list of entries, e.g. files or whiteouts)."""
    return build_image([busybox_layer(), *(layer(entries) for entries in extra_layers)], cmd=cmd, **options)


def build_index(images: Sequence[tuple[BuiltImage, dict[str, str]]]) -> bytes:
    """An OCI image index of (image, platform) pairs."""
    index = {"schemaVersion": 2, "mediaType": OCI_INDEX,
             "manifests": [image.descriptor(platform) for image, platform in images]}
    return json.dumps(index, separators=(",", ":")).encode()


# The distribution API (push)

def _request(method: str, url: str, data: bytes | None = None, headers: dict[str, str] | None = None,
             ) -> tuple[int, Any, bytes]:
    request = urllib.request.Request(url, data=data, method=method, headers=headers or {})
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status, response.headers, response.read()
    except urllib.error.HTTPError as err:
        return err.code, err.headers, err.read()


def push_blob(registry_url: str, name: str, data: bytes, authorization: str | None = None) -> str:
    """Upload a blob unless the registry has it: POST /v2/NAME/blobs/uploads/, then PUT the data with ?digest=."""
    auth = {"Authorization": authorization} if authorization else {}
    digest = sha256(data)
    status, _, _ = _request("HEAD", f"{registry_url}/v2/{name}/blobs/{digest}", headers=auth)
    if status == 200:
        return digest
    status, headers, body = _request("POST", f"{registry_url}/v2/{name}/blobs/uploads/", b"", auth)
    if status != 202:
        raise RuntimeError(f"starting an upload to {name} failed: {status} {body!r}")
    location = urllib.parse.urljoin(registry_url, headers["Location"])
    location += ("&" if "?" in location else "?") + "digest=" + urllib.parse.quote(digest)
    status, _, body = _request("PUT", location, data, {**auth, "Content-Type": "application/octet-stream"})
    if status != 201:
        raise RuntimeError(f"uploading {digest} to {name} failed: {status} {body!r}")
    return digest


def push_manifest(registry_url: str, name: str, reference: str, raw: bytes, media_type: str,
                  authorization: str | None = None) -> str:
    """PUT a manifest or index under a tag or its digest."""
    headers = {"Content-Type": media_type, **({"Authorization": authorization} if authorization else {})}
    status, _, body = _request("PUT", f"{registry_url}/v2/{name}/manifests/{reference}", raw, headers)
    if status != 201:
        raise RuntimeError(f"pushing manifest {name}:{reference} failed: {status} {body!r}")
    return sha256(raw)


def push(registry_url: str, name: str, tag: str, image: BuiltImage, authorization: str | None = None) -> str:
    """Push an image's blobs and manifest as NAME:TAG; returns the manifest digest."""
    for item in image.layers:
        push_blob(registry_url, name, item.blob, authorization)
    push_blob(registry_url, name, image.config, authorization)
    return push_manifest(registry_url, name, tag, image.manifest, image.media_type, authorization)


def push_index(registry_url: str, name: str, tag: str, images: Sequence[tuple[BuiltImage, dict[str, str]]],
               authorization: str | None = None) -> str:
    """Push several images by digest and an index of them as NAME:TAG; returns the index digest."""
    for image, _ in images:
        push(registry_url, name, image.manifest_digest, image, authorization)
    return push_manifest(registry_url, name, tag, build_index(images), OCI_INDEX, authorization)


# Archives

def _add_bytes(tar: tarfile.TarFile, name: str, data: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size, info.mtime, info.mode = len(data), MTIME, 0o644
    tar.addfile(info, io.BytesIO(data))


def docker_save(path: Path, images: Sequence[tuple[BuiltImage, Sequence[str]]]) -> Path:
    """A `docker save` tarball (Docker before 25): manifest.json, <id>.json configs and <id>/layer.tar uncompressed."""
    entries = []
    with tarfile.open(path, "w") as tar:
        written: set[str] = set()
        for image, tags in images:
            config_name = f"{image.config_digest.split(':')[1]}.json"
            layer_names = []
            for item in image.layers:
                layer_name = f"{item.diff_id.split(':')[1]}/layer.tar"
                if layer_name not in written:
                    _add_bytes(tar, layer_name, item.tar)
                    written.add(layer_name)
                layer_names.append(layer_name)
            _add_bytes(tar, config_name, image.config)
            entries.append({"Config": config_name, "RepoTags": list(tags), "Layers": layer_names})
        _add_bytes(tar, "manifest.json", json.dumps(entries).encode())
    return path


def oci_archive(path: Path, images: Sequence[tuple[BuiltImage | bytes, dict[str, str]]],
                extra: Sequence[BuiltImage] = ()) -> Path:
    """An OCI image-layout tarball: oci-layout, index.json (entries with these annotations) and blobs/sha256/.
    An entry may be an index (raw bytes); the images it lists go in `extra`."""
    blobs: dict[str, bytes] = {}
    manifests = []
    for item, notes in images:
        if isinstance(item, bytes):
            blobs[sha256(item)] = item
            manifests.append({"mediaType": OCI_INDEX, "digest": sha256(item), "size": len(item), "annotations": notes})
        else:
            manifests.append({**item.descriptor(), "annotations": notes})
    for image in [item for item, _ in images if not isinstance(item, bytes)] + list(extra):
        blobs[image.manifest_digest] = image.manifest
        blobs[image.config_digest] = image.config
        blobs.update({item.digest: item.blob for item in image.layers})
    with tarfile.open(path, "w") as tar:
        _add_bytes(tar, "oci-layout", b'{"imageLayoutVersion":"1.0.0"}')
        _add_bytes(tar, "index.json", json.dumps({"schemaVersion": 2, "mediaType": OCI_INDEX,
                                                  "manifests": manifests}).encode())
        for digest, data in blobs.items():
            _add_bytes(tar, f"blobs/sha256/{digest.split(':')[1]}", data)
    return path

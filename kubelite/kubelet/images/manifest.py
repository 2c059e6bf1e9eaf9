"""OCI and Docker v2 manifests: media types, descriptors, digests, and picking this node's platform from an index."""

from __future__ import annotations

import hashlib
import json
import platform
import re
from dataclasses import dataclass, field
from typing import Any

from kubelite.kubelet.images.errors import ManifestError

OCI_INDEX = "application/vnd.oci.image.index.v1+json"
OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_CONFIG = "application/vnd.oci.image.config.v1+json"
OCI_LAYER = "application/vnd.oci.image.layer.v1.tar"
OCI_LAYER_GZIP = "application/vnd.oci.image.layer.v1.tar+gzip"
DOCKER_LIST = "application/vnd.docker.distribution.manifest.list.v2+json"
DOCKER_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"
DOCKER_CONFIG = "application/vnd.docker.container.image.v1+json"
DOCKER_LAYER_GZIP = "application/vnd.docker.image.rootfs.diff.tar.gzip"

INDEX_TYPES = frozenset({OCI_INDEX, DOCKER_LIST})
MANIFEST_TYPES = frozenset({OCI_MANIFEST, DOCKER_MANIFEST})
ACCEPT = ", ".join([OCI_INDEX, DOCKER_LIST, DOCKER_MANIFEST, OCI_MANIFEST])
"""What a pull accepts from a registry's manifests endpoint (no schema 1)."""
LAYER_TYPES = {
    OCI_LAYER: "none",
    OCI_LAYER_GZIP: "gzip",
    DOCKER_LAYER_GZIP: "gzip",
    "application/vnd.oci.image.layer.nondistributable.v1.tar": "none",
    "application/vnd.oci.image.layer.nondistributable.v1.tar+gzip": "gzip",
    "application/vnd.docker.image.rootfs.foreign.diff.tar.gzip": "gzip",
}
"""Layer media types this store unpacks, with their compression."""
MANIFEST_MAX = 4 << 20
"""The largest manifest or config accepted, as containerd limits them."""

_DIGEST = re.compile(r"sha256:([0-9a-f]{64})")
_ARCHES = {"x86_64": "amd64", "aarch64": "arm64", "armv7l": "arm", "armv6l": "arm", "i686": "386", "ppc64le": "ppc64le",
           "s390x": "s390x", "riscv64": "riscv64"}


@dataclass(frozen=True, slots=True)
class Descriptor:
    """A pointer to content: media type, digest and size (and for index entries, the platform)."""

    media_type: str
    digest: str
    size: int
    platform: dict[str, Any] = field(default_factory=dict)
    annotations: dict[str, str] = field(default_factory=dict)

    @classmethod
    def from_dict(cls, data: Any) -> Descriptor:
        """Read a descriptor; only sha256 digests are accepted."""
        if not isinstance(data, dict):
            raise ManifestError("descriptor is not an object")
        size = data.get("size")
        if not isinstance(size, int) or size < 0:
            raise ManifestError(f"descriptor {data.get('digest')!r} has no valid size")
        return cls(str(data.get("mediaType") or ""), check_digest(data.get("digest")), size,
                   dict(data.get("platform") or {}), dict(data.get("annotations") or {}))

    def to_dict(self) -> dict[str, Any]:
        """The descriptor as it appears in JSON documents."""
        out: dict[str, Any] = {"mediaType": self.media_type, "digest": self.digest, "size": self.size}
        if self.platform:
            out["platform"] = self.platform
        if self.annotations:
            out["annotations"] = self.annotations
        return out


def sha256_digest(data: bytes) -> str:
    """The content digest of bytes, `sha256:<hex>`."""
    return f"sha256:{hashlib.sha256(data).hexdigest()}"


def check_digest(digest: Any) -> str:
    """Return the digest if it is `sha256:` and 64 lowercase hex digits, else raise ManifestError."""
    if not isinstance(digest, str) or not _DIGEST.fullmatch(digest):
        raise ManifestError(f"unsupported or malformed digest {digest!r} (only sha256 is supported)")
    return digest


def digest_hex(digest: str) -> str:
    """The hex part of a checked digest, used as a file name."""
    return check_digest(digest).split(":", 1)[1]


def parse_document(raw: bytes, media_type: str = "") -> tuple[str, dict[str, Any]]:
    """Parse a manifest or index; its type comes from the document's mediaType, else the HTTP Content-Type."""
    if len(raw) > MANIFEST_MAX:
        raise ManifestError(f"manifest is larger than {MANIFEST_MAX} bytes")
    try:
        doc = json.loads(raw)
    except ValueError as err:
        raise ManifestError(f"manifest is not JSON: {err}") from err
    if not isinstance(doc, dict):
        raise ManifestError("manifest is not a JSON object")
    kind = doc.get("mediaType") or media_type.split(";", 1)[0].strip()
    if not kind:
        kind = OCI_INDEX if "manifests" in doc else OCI_MANIFEST
    if kind not in INDEX_TYPES and kind not in MANIFEST_TYPES:
        if doc.get("schemaVersion") == 1:
            raise ManifestError("Docker schema 1 manifests are not supported; push the image again with a current tool")
        raise ManifestError(f"unsupported manifest media type {kind!r}")
    return kind, doc


def host_platform() -> dict[str, str]:
    """This node's platform in OCI terms: `{"os": "linux", "architecture": "amd64"}` (plus variant on arm)."""
    machine = platform.machine()
    found = {"os": "linux", "architecture": _ARCHES.get(machine, machine)}
    if machine == "aarch64":
        found["variant"] = "v8"
    elif machine.startswith("armv"):
        found["variant"] = machine[3:5]
    return found


def select_platform(index: dict[str, Any], wanted: dict[str, str] | None = None) -> Descriptor:
    """The index entry for this node's os/architecture (an entry without a variant matches any variant)."""
    wanted = wanted or host_platform()
    entries = [Descriptor.from_dict(item) for item in index.get("manifests") or []]
    candidates = []
    for entry in entries:
        plat = entry.platform
        if plat.get("os") != wanted["os"] or plat.get("architecture") != wanted["architecture"]:
            continue
        if entry.media_type and entry.media_type not in MANIFEST_TYPES:
            continue
        variant = plat.get("variant")
        if variant and wanted.get("variant") and variant != wanted["variant"]:
            continue
        candidates.append((0 if variant == wanted.get("variant") else 1, entry))
    if not candidates:
        have = sorted({"/".join(filter(None, (e.platform.get("os"), e.platform.get("architecture"),
                                              e.platform.get("variant")))) or "unknown" for e in entries})
        raise ManifestError(f"no image for {wanted['os']}/{wanted['architecture']} in the index "
                            f"(it has: {', '.join(have) or 'nothing'})")
    return min(candidates, key=lambda pair: pair[0])[1]


def manifest_parts(manifest: dict[str, Any]) -> tuple[Descriptor, list[Descriptor]]:
    """The config descriptor and the layer descriptors (bottom first) of an image manifest."""
    config = Descriptor.from_dict(manifest.get("config"))
    layers = [Descriptor.from_dict(item) for item in manifest.get("layers") or []]
    for layer in layers:
        compression(layer.media_type)
    return config, layers


def compression(media_type: str) -> str:
    """The compression of a layer media type, or ManifestError for a type this store cannot unpack."""
    if media_type in LAYER_TYPES:
        return LAYER_TYPES[media_type]
    if media_type.endswith("+zstd"):
        raise ManifestError(f"zstd-compressed layers are not supported ({media_type}); use a gzip image")
    raise ManifestError(f"unsupported layer media type {media_type!r}")


def diff_ids(config: dict[str, Any], layer_count: int) -> list[str]:
    """The uncompressed layer digests from an image config; one per manifest layer."""
    ids = ((config.get("rootfs") or {}).get("diff_ids")) or []
    if not isinstance(ids, list) or len(ids) != layer_count:
        raise ManifestError(f"image config lists {len(ids) if isinstance(ids, list) else 0} diff_ids "
                            f"for {layer_count} layers")
    return [check_digest(item) for item in ids]

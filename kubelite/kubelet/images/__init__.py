"""The node's image store: OCI image references, registry pulls, archive imports and unpacked layers for overlayfs."""

from kubelite.kubelet.images.config import (
    AuthConfig,
    RegistryConfig,
    credentials_from_docker_config,
    credentials_from_secrets,
    load_registries,
)
from kubelite.kubelet.images.errors import (
    DigestMismatch,
    ImageError,
    ImageNotFound,
    InvalidReference,
    ManifestError,
    RegistryConfigError,
    RegistryError,
    UnpackError,
)
from kubelite.kubelet.images.reference import Reference, parse_reference
from kubelite.kubelet.images.store import Image, ImageStore, PullProgress

__all__ = [
    "AuthConfig",
    "DigestMismatch",
    "Image",
    "ImageError",
    "ImageNotFound",
    "ImageStore",
    "InvalidReference",
    "ManifestError",
    "PullProgress",
    "Reference",
    "RegistryConfig",
    "RegistryConfigError",
    "RegistryError",
    "UnpackError",
    "credentials_from_docker_config",
    "credentials_from_secrets",
    "load_registries",
    "parse_reference",
]

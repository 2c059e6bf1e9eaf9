"""The image store's exceptions: one base class, so the kubelet can turn any of them into an ErrImagePull message."""

from __future__ import annotations


class ImageError(Exception):
    """Something about an image failed: a bad reference, a registry error, bad content, a missing image."""


class InvalidReference(ImageError, ValueError):
    """The text is not an image reference (Docker's "invalid reference format")."""


class RegistryConfigError(ImageError, ValueError):
    """registries.yaml or a pull secret cannot be used as written."""


class ManifestError(ImageError, ValueError):
    """A manifest, index or config that cannot be used: malformed, unsupported, or for another platform."""


class RegistryError(ImageError):
    """A pull failed at the registry; the message carries the registry's own error codes and messages."""

    def __init__(self, message: str, status: int | None = None, codes: tuple[str, ...] = ()) -> None:
        super().__init__(message)
        self.status = status
        self.codes = codes


class DigestMismatch(ImageError):
    """Content does not match its digest or size; nothing was stored."""


class UnpackError(ImageError):
    """A layer tar cannot be unpacked safely: corrupt, escaping its directory, or not matching its diff_id."""


class ImageNotFound(ImageError, LookupError):
    """No image in the store has this name, digest or id."""
